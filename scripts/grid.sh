# Shared by the result grids (scheme_results.sh, transfer_results.sh, bilstm_results.sh):
#   source scripts/grid.sh "$@"     (from the repository root) sets up .venv, the environment (one thread unless
#                                   OMP_NUM_THREADS says otherwise), GLUE (argument 1, default ../shared/data/glue)
#                                   and SEEDS (argument 2, default 1 2 3), and defines job (below) and
#   in_tasks TASK                       true when TASK is in TASKS (a script's task list, overridable: TASKS=sst2)
#   check_names VAR KNOWN...            every name in $VAR is one of KNOWN, else one line and exit 2
#                                       (check_tasks KNOWN...: the same for TASKS)
#   job OUTPUT COMMAND RECIPE ARGS...   runs `textdistill COMMAND -r RECIPE -o OUTPUT ...` unless its metrics.json
#                                       is in runs/ or kept in results/; keeps the metrics (keep_results.sh);
#                                       an interrupted run with a checkpoint (or a chain with a finished link or
#                                       a checkpoint) is resumed, even across code versions (recorded in its
#                                       metrics.json), any other one restarts; a run keeps a checkpoint every
#                                       CHECKPOINT_EVERY steps (default 200; a script's own --set wins) and at
#                                       each epoch end but the last, until it finishes (a resume may change
#                                       these: checkpoint.BOOKKEEPING)
# Progress bars are filtered out of the log. KEEP lists the runs/ folders to keep (default: all grids).
scripts/setup.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
GLUE=${1:-${GLUE:-../shared/data/glue}}
SEEDS=${2:-${SEEDS:-1 2 3}}
in_tasks() { [[ " ${TASKS:-} " == *" $1 "* ]]; }
check_names() {  # VAR KNOWN...: every name in $VAR is one of them, else one line and exit 2
  local var=$1 n; shift
  for n in ${!var:-}; do
    [[ " $* " == *" $n "* ]] || { echo "$var: unknown '$n' (this script knows: $*)" >&2; exit 2; }
  done
}
check_tasks() { check_names TASKS "$@"; }  # KNOWN...: the names in TASKS
job() {
  local out=$1 cmd=$2 recipe=$3; shift 3
  [ -f "$out/metrics.json" ] || [ -f "results/${out#runs/}/metrics.json" ] && return
  [ -f "$recipe" ] || { echo "skip $out ($recipe absent)"; return; }
  local mode=(--overwrite)
  .venv/bin/python -c 'import sys; from textdistill.train import resumable; sys.exit(not resumable(sys.argv[1]))' \
    "$out" && mode=(--resume --resume-any-version)
  echo "=== $out $(date -u +%H:%M:%S) ${mode[*]}"
  .venv/bin/textdistill "$cmd" -r "$recipe" -o "$out" --data-dir "$GLUE" "${mode[@]}" \
    --set train.checkpoint_every="${CHECKPOINT_EVERY:-200}" "$@" 2>&1 | stdbuf -oL tr '\r' '\n' \
    | grep --line-buffered -v -E '^\s*(epoch|evaluate|augment|synthesize|teacher cache)[^:]*:\s+[0-9]+%' || true
  [ -f "$out/metrics.json" ] || echo "FAILED $out"
  scripts/keep_results.sh ${KEEP:-} > /dev/null
}
