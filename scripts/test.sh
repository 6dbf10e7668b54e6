#!/usr/bin/env bash
# The test suite (about 5 minutes on 2 CPU cores). Uses ../shared/data/glue when it is there.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest -q "$@"
