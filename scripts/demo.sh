#!/usr/bin/env bash
# The README demo: teacher + FT / KD / PKD-Skip 3-layer students on SST-2, about 9 minutes on 2 CPU cores
# (7 m 38 s measured on a fresh clone, virtual environment set-up included, other jobs at nice 19 beside it).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
exec .venv/bin/textdistill demo "$@"
