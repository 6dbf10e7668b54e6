#!/usr/bin/env bash
# The README demo: a teacher and four 3-layer students (FT, KD, PKD-Skip, TinyBERT + augmented) on SST-2,
# 12-14 minutes on 2 CPU cores (12 m 20 s on a fresh clone whose .venv scripts/setup.sh had made).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
exec .venv/bin/textdistill demo "$@"
