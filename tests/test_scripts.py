"""The result grids' shell options (scripts/*_results.sh): a task or row name the script does not know is one
line naming it and exit code 2, before anything runs (the check needs no data and no model)."""
import os
import subprocess

import pytest
from conftest import ROOT


def run(script: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / script), "no-glue-dir", "1"], capture_output=True,
                          text=True, env={**os.environ, **env}, cwd=ROOT, timeout=120)


@pytest.mark.parametrize("script,env,needle", [
    ("scheme_results.sh", {"TASKS": "sst2 qqp"}, "TASKS: unknown 'qqp' (this script knows: rte mrpc sst2)"),
    ("transfer_results.sh", {"TASKS": "cola"}, "TASKS: unknown 'cola' (this script knows: sst2-2k rte mrpc sst2-20k)"),
    ("scheme_results.sh", {"TASKS": "sst2", "PARTS": "multi dmll"},
     "PARTS: unknown 'dmll' (this script knows: ft kd dml born-again kd-bf16 self multi mpnet)"),
])
def test_unknown_names_fail_in_one_line(script, env, needle):
    r = run(script, **env)
    assert r.returncode == 2 and r.stderr.strip() == needle, (r.returncode, r.stderr)
