#!/usr/bin/env bash
# Copy the metrics of finished runs (runs/<grid>/**/metrics.json; provenance.json of generated sets; small
# JSON) into results/, which is
# committed: the result tables are regenerated from results/ on any machine, and the grid scripts skip a
# run whose metrics are there. Models stay in runs/ (not committed).
#   scripts/keep_results.sh [GRID ...]      (default: teachers schemes transfer)
set -euo pipefail
cd "$(dirname "$0")/.."
for grid in "${@:-teachers schemes transfer}"; do
  for g in $grid; do
    [ -d "runs/$g" ] || continue
    find "runs/$g" \( -name metrics.json -o -name provenance.json \) -not -path '*/.*' | while read -r f; do
      dest="results/${f#runs/}"
      mkdir -p "$(dirname "$dest")"
      cp "$f" "$dest"
    done
  done
done
find results -name metrics.json | wc -l | xargs echo "results/: metrics.json files:"
