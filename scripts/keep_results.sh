#!/usr/bin/env bash
# Copy the metrics of finished runs (runs/<grid>/**/metrics.json, their out-of-domain ood.json, a suite run's
# teacher.json, the recipe.yaml each run saved (what it ran: e.g. the precision auto chose); provenance.json of generated sets; a suite's summary.md/.csv: small text;
# each run's dev_predictions.jsonl, gzipped: ~10-30 KB, for `textdistill significance`) into results/, which is
# committed: the result tables are regenerated from results/ on any machine, and the grid scripts skip a
# run whose metrics are there. Models stay in runs/ (not committed).
#   scripts/keep_results.sh [GRID ...]      (default: teachers schemes transfer and the suites' folders)
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p results
exec 9> results/.keep.lock && flock 9  # (two result scripts side by side: one copies at a time)
for grid in "${@:-teachers schemes transfer suite-mpnet12 suite-qqp-paws}"; do
  for g in $grid; do
    [ -d "runs/$g" ] || continue
    # -L: a suite's teachers may be links to runs/teachers/; model folders and hidden ones hold nothing to keep
    { find -L "runs/$g" \( -name model -o -name '.*' -o -name cache \) -prune -o \( -name metrics.json \
        -o -name provenance.json -o -name ood.json -o -name teacher.json -o -name recipe.yaml -o -path "runs/$g/summary.*" \
        -o -name dev_predictions.jsonl \) -print \
        || echo "keep_results: runs/$g: find reported a problem; kept what it listed" >&2; } | while read -r f; do
      dest="results/${f#runs/}"
      mkdir -p "$(dirname "$dest")"
      if [[ $f == *.jsonl ]]; then  # a run's dev predictions (textdistill significance reads them), gzipped;
        # rewritten unless the kept copy holds the same rows (whole or not at all: a temporary file, then mv)
        if ! gzip -dc "$dest.gz" 2>/dev/null | cmp -s - "$f"; then
          gzip -9 -n -c "$f" > "$dest.gz.tmp" && mv "$dest.gz.tmp" "$dest.gz"
        fi
      else
        cp "$f" "$dest.tmp" && mv "$dest.tmp" "$dest"  # (whole: a reader never sees half a file)
      fi
    done
  done
done
find results -name metrics.json | wc -l | xargs echo "results/: metrics.json files:"
