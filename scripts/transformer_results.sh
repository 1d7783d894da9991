#!/usr/bin/env bash
# The Transformer results of docs/results.md: BP, macro DFA, micro DFA and shallow on a text file,
# each at its best learning rate from a short sweep, over several seeds; a table (summary.md), the
# validation curves (curves.svg, mean and range over seeds) and a generated sample per method.
#
# Usage: scripts/transformer_results.sh [OUT_DIR]          (default: results/transformer)
# Environment (defaults in brackets):
#   OPU_TRAIN     the opu-train binary                     [build/release/trainer/opu-train,
#                                                           else build/dev/trainer/opu-train]
#   STEPS         training steps of the final runs          [2000]
#   SEEDS         seeds of the final runs                   ["0 1 2"]
#   SWEEP_STEPS   steps of each sweep run (seed 0)          [600]
#   BP_LRS        learning rates swept for BP               ["5e-4 1e-3 2e-3"]
#   DFA_LRS       ... for macro DFA, micro DFA and shallow  ["2.5e-4 5e-4 1e-3"]
#   JOBS          runs at once (each one thread)            [2]
#   EXTRA         more opu-train flags for every run, e.g. "--data my.txt"
# Every run is skipped when its metrics file already has a summary, so an interrupted study
# resumes where it stopped. Needs python3 (standard library) and gnuplot (scripts/bootstrap.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-results/transformer}"
steps="${STEPS:-2000}"
seeds="${SEEDS:-0 1 2}"
sweep_steps="${SWEEP_STEPS:-600}"
bp_lrs="${BP_LRS:-5e-4 1e-3 2e-3}"
dfa_lrs="${DFA_LRS:-2.5e-4 5e-4 1e-3}"
jobs="${JOBS:-2}"
extra="${EXTRA:-}"
train="${OPU_TRAIN:-}"
if [ -z "$train" ]; then
  for candidate in build/release/trainer/opu-train build/dev/trainer/opu-train; do
    if [ -x "$candidate" ]; then train="$candidate"; break; fi
  done
fi
if [ -z "$train" ] || [ ! -x "$train" ]; then
  echo "transformer_results: no opu-train binary (build first, or set OPU_TRAIN)" >&2
  exit 2
fi
mkdir -p "$out/sweep" "$out/runs"

method_flags() {  # method_flags NAME: opu-train flags of a method name of this study
  case "$1" in
    bp) echo "--method bp" ;;
    macro) echo "--method dfa --dfa-points macro" ;;
    micro) echo "--method dfa --dfa-points micro" ;;
    shallow) echo "--method shallow" ;;
    *) echo "transformer_results: unknown method '$1'" >&2; exit 2 ;;
  esac
}

# One line per run, "METRICS_FILE FLAGS...", executed $jobs at a time; a finished run is skipped.
run_queue() {
  local queue="$1"
  # shellcheck disable=SC2016  # $1 and $@ belong to the inner shell
  # (no line may end in a blank: xargs -L would join it to the next)
  xargs -P "$jobs" -L 1 bash -c '
    metrics="$1"; shift
    if [ -f "$metrics" ] && grep -q "\"type\":\"summary\"" "$metrics"; then exit 0; fi
    rm -f "$metrics"
    echo "transformer_results: $(date +%T) start $metrics"
    "$0" --model transformer --metrics "$metrics" "$@" > "${metrics%.jsonl}.log" 2>&1 ||
      { echo "transformer_results: FAILED $metrics (see ${metrics%.jsonl}.log)" >&2; exit 255; }
    echo "transformer_results: $(date +%T) done  $metrics"
  ' "$train" < "$queue"
}

# 1. The sweep: seed 0, every learning rate, $sweep_steps steps.
queue="$out/sweep/queue.txt"
: > "$queue"
for method in bp macro micro shallow; do
  lrs="$dfa_lrs"; [ "$method" = bp ] && lrs="$bp_lrs"
  for lr in $lrs; do
    echo "$out/sweep/$method-lr$lr.jsonl $(method_flags $method) --lr $lr --seed 0 \
--steps $sweep_steps --eval-every 0${extra:+ $extra}" >> "$queue"
  done
done
run_queue "$queue"

best_lr() {  # best_lr METHOD: the swept rate with the lowest final validation loss
  python3 - "$out/sweep" "$1" <<'EOF'
import glob, json, os, sys
sweep, method = sys.argv[1], sys.argv[2]
best = None
for path in glob.glob(os.path.join(sweep, method + "-lr*.jsonl")):
    with open(path) as f:
        summary = [json.loads(l) for l in f if '"type":"summary"' in l][-1]
    lr = os.path.basename(path)[len(method) + 3:-len(".jsonl")]
    if best is None or summary["val_loss"] < best[0]:
        best = (summary["val_loss"], lr)
print(best[1])
EOF
}

# 2. The final runs: every seed at each method's best rate, with a sample of the trained model.
queue="$out/runs/queue.txt"
rm -f "$out/runs/best_lr.txt.new"
: > "$queue"
for method in bp macro micro shallow; do
  lr="$(best_lr "$method")"
  echo "$method $lr" >> "$out/runs/best_lr.txt.new"
  for seed in $seeds; do
    echo "$out/runs/$method-seed$seed.jsonl $(method_flags $method) --lr $lr --seed $seed \
--steps $steps --sample 300${extra:+ $extra}" >> "$queue"
  done
done
mv "$out/runs/best_lr.txt.new" "$out/runs/best_lr.txt"
run_queue "$queue"

# 3. Table, curves and samples.
python3 scripts/transformer_summary.py "$out"
if command -v gnuplot > /dev/null; then
  (cd "$out" && gnuplot curves.gp)
  echo "transformer_results: wrote $out/curves.svg"
else
  echo "transformer_results: gnuplot missing, $out/curves.gp not rendered" >&2
fi
