#!/usr/bin/env bash
# The README demo: a teacher and four 3-layer students (FT, KD, PKD-Skip, TinyBERT + augmented) on SST-2,
# about 15 minutes on 2 CPU cores (14 m 35 s on a fresh clone whose .venv scripts/setup.sh had made, 12-06).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
exec .venv/bin/textdistill demo "$@"
