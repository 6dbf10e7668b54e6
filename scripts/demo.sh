#!/usr/bin/env bash
# The README demo: a teacher and four 3-layer students (FT, KD, PKD-Skip, TinyBERT + augmented) on SST-2,
# about 14 minutes on 2 CPU cores (13 m 26 s on a fresh clone whose .venv scripts/test.sh had made).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
exec .venv/bin/textdistill demo "$@"
