#!/usr/bin/env bash
# The camera-gap experiments of docs/camera-gap.md: DFA on Fashion-MNIST (and the GCN on Cora)
# with digital feedback, the literal ternary OPU scheme and the remedies, several seeds each; then
# a summary table (Markdown) and plots (gnuplot SVG) from the per-epoch metrics.
#
#   scripts/camera_gap.sh [OUT_DIR]        (default out/camera-gap)
#
# Environment: BUILD (a build folder with opu-train and opu-serve, default build/release),
# SEEDS (default "1 2 3"), EPOCHS (default 15), ONLY (a regular expression: train only the
# configurations whose name matches, e.g. ONLY='^std-(digital|opu-default)$' SEEDS="4 5 6"),
# TRAIN_RUNS=0 to only summarise and plot the runs already in OUT_DIR/runs. Finished runs are kept and skipped, so a killed script continues where
# it stopped. One run at a time, one thread each.
set -euo pipefail

cd "$(dirname "$0")/.."
OUT=${1:-out/camera-gap}
BUILD=${BUILD:-build/release}
SEEDS=${SEEDS:-1 2 3}
EPOCHS=${EPOCHS:-15}
TRAIN_RUNS=${TRAIN_RUNS:-1}
ONLY=${ONLY:-.}
TRAIN="$BUILD/trainer/opu-train"
SERVE="$BUILD/offload/opu-serve"
mkdir -p "$OUT/runs"

SERVER=
stop_server() {
  [[ -n $SERVER ]] || return 0
  kill -INT "$SERVER" 2>/dev/null || true
  wait "$SERVER" 2>/dev/null || true
  SERVER=
}
trap stop_server EXIT

# start_server LOG: a fresh realistic simulated OPU (the README main job's) on a free loopback
# port; its grpc:// URI in SERVER_URI.
start_server() {
  "$SERVE" --listen 127.0.0.1:0 --seed 7 --camera realistic > "$1" 2>&1 &
  SERVER=$!
  for _ in $(seq 100); do grep -q '^127.0.0.1:[0-9]' "$1" && break; sleep 0.1; done
  SERVER_URI="grpc://$(grep -m1 -o '^127.0.0.1:[0-9]*' "$1")"
  [[ $SERVER_URI != grpc:// ]] || { echo "camera_gap.sh: opu-serve did not start: $1" >&2; exit 1; }
}

# run NAME SEED OPU-TRAIN-ARGS...: metrics in runs/NAME.sSEED.jsonl, written only when finished.
# An argument "SERVED" becomes the URI of an opu-serve started for this run alone: a served run
# then sees the same device, and the same camera noise, as the in-process run, whatever ran
# before it (a server shared by several runs would give each run the noise its predecessors left).
run() {
  local name=$1 seed=$2
  shift 2
  local metrics="$OUT/runs/$name.s$seed.jsonl"
  [[ -s "$metrics" ]] && return 0
  [[ $name =~ $ONLY ]] || return 0
  echo "camera_gap.sh: $name seed $seed" >&2
  local epochs=$EPOCHS align=50 args=("$@") i
  [[ $name == gcn-* ]] && epochs=200 align=10
  for i in "${!args[@]}"; do
    if [[ ${args[i]} == SERVED ]]; then
      start_server "$OUT/runs/$name.s$seed.serve.log"
      args[i]=$SERVER_URI
    fi
  done
  "$TRAIN" --method dfa --seed "$seed" --epochs "$epochs" --align-every "$align" \
    --metrics "$metrics.part" "${args[@]}" > "$OUT/runs/$name.s$seed.out" 2>&1
  stop_server
  mv "$metrics.part" "$metrics"
}

train_all() {
  local tool
  for tool in "$TRAIN" "$SERVE"; do
    [[ -x "$tool" ]] || { echo "camera_gap.sh: $tool not found; build first (BUILD=...)" >&2; exit 2; }
  done
  # The realistic simulated OPU served over loopback, as the README's main job uses it.
  local served=SERVED
  local realistic="sim://?seed=7&camera=realistic" ideal="sim://?seed=7&camera=ideal"
  local raw=(--normalize 0 1) mnist=(--normalize 0.1307 0.3081)
  # The literal scheme and each remedy on its own; opu-train's defaults are the full combination.
  local literal=(--encoding ternary --no-share-frames --repeats 1 --reference-repeats 0)
  local single=(--repeats 1 --reference-repeats 0)
  local ref32=(--reference-repeats 32)  # the default before the standardised-input runs
  local seed
  for seed in $SEEDS; do
    run raw-digital "$seed" "${raw[@]}" --feedback digital
    run raw-opu-default "$seed" "${raw[@]}" --feedback "$served"
    run raw-opu-ref32 "$seed" "${raw[@]}" --feedback "$served" "${ref32[@]}"
    run raw-ternary "$seed" "${raw[@]}" --feedback "$realistic" "${literal[@]}"
    run raw-ternary-ideal "$seed" "${raw[@]}" --feedback "$ideal" "${literal[@]}"
    run raw-stochastic1 "$seed" "${raw[@]}" --feedback "$realistic" --encoding stochastic \
      --bitplanes 1 --no-share-frames "${single[@]}"
    run raw-stochastic2 "$seed" "${raw[@]}" --feedback "$realistic" --encoding stochastic \
      --bitplanes 2 --no-share-frames "${single[@]}"
    run raw-stochastic2-shared "$seed" "${raw[@]}" --feedback "$realistic" "${single[@]}"
    run raw-stochastic2-shared-ref32 "$seed" "${raw[@]}" --feedback "$realistic" --repeats 1
    # opu-train's default inputs: standardised with the training split's mean and std.
    run std-digital "$seed" --feedback digital
    run std-opu-default "$seed" --feedback "$served"
    run std-opu-ref32 "$seed" --feedback "$served" "${ref32[@]}"
    run std-ternary "$seed" --feedback "$realistic" "${literal[@]}"
    run std-stochastic2-shared "$seed" --feedback "$realistic" "${single[@]}"
    # MNIST's constants on Fashion-MNIST (inputs of mean 0.5): digital DFA itself is unstable at
    # lr 0.01, stable at 0.005.
    run mnist-digital "$seed" "${mnist[@]}" --feedback digital
    run mnist-opu-default "$seed" "${mnist[@]}" --feedback "$served"
    run mnist-opu-ref32 "$seed" "${mnist[@]}" --feedback "$served" "${ref32[@]}"
    run mnist-ternary "$seed" "${mnist[@]}" --feedback "$realistic" "${literal[@]}"
    run mnist-lr005-digital "$seed" "${mnist[@]}" --lr 0.005 --feedback digital
    run mnist-lr005-opu-default "$seed" "${mnist[@]}" --lr 0.005 --feedback "$served"
    run mnist-lr005-opu-ref32 "$seed" "${mnist[@]}" --lr 0.005 --feedback "$served" "${ref32[@]}"
    run mnist-stochastic2-shared "$seed" "${mnist[@]}" --feedback "$realistic" "${single[@]}"
    run gcn-digital "$seed" --model gcn --feedback digital
    run gcn-opu-default "$seed" --model gcn --feedback "$served"
    run gcn-opu-ref32 "$seed" --model gcn --feedback "$served" "${ref32[@]}"
    run gcn-ternary "$seed" --model gcn --feedback "$realistic" "${literal[@]}"
  done
}

[[ "$TRAIN_RUNS" == 0 ]] || train_all

# --- summary: one row per configuration, mean (and spread) over the seeds ---
# Per run: final, best and mean-of-last-5 test accuracy; training loss at the first of the last
# 10 epochs and at the last; final alignment; frames per training sample; device time per epoch.
summarise() {
  awk '
    function num(key,   m) {
      if (match($0, "\"" key "\":[-0-9.e]+")) return substr($0, RSTART + length(key) + 3, RLENGTH - length(key) - 3) + 0
      return 0
    }
    /"type":"epoch"/ {
      n++; acc[n] = num("test_accuracy"); loss[n] = num("loss"); frames += num("frames");
      device += num("device_time_s"); train = num("train_accuracy")
    }
    # The last alignment measurement (an epoch line has none when no step of it was measured).
    /"type":"alignment"/ {
      if (match($0, /"h1":\{"mean":[-0-9.e]+/)) h1 = substr($0, RSTART + 13, RLENGTH - 13) + 0
      if (match($0, /"h2":\{"mean":[-0-9.e]+/)) h2 = substr($0, RSTART + 13, RLENGTH - 13) + 0
      else h2 = "nan"  # one feedback point (the GCN)
    }
    END {
      best = 0; last5 = 0
      for (i = 1; i <= n; i++) { if (acc[i] > best) best = acc[i] }
      k = n < 5 ? n : 5
      for (i = n - k + 1; i <= n; i++) last5 += acc[i] / k
      first = n > 10 ? n - 9 : 1
      printf "%f %f %f %f %f %f %s %f %f\n", acc[n], best, last5, loss[first], loss[n], h1,
        h2 == "nan" ? "nan" : sprintf("%f", h2), frames, device / n
    }' "$1"
}

samples_per_epoch() {  # training samples behind one epoch's frames
  case $1 in gcn-*) echo 140 ;; *) echo 60000 ;; esac
}

{
  echo "| configuration | final test % (mean ± sd) | best % | mean of last 5 % | train loss: epoch n-9 → n | alignment h1 / h2 (last) | frames per sample | device s per epoch |"
  echo "|---|---|---|---|---|---|---|---|"
  for name in $(ls "$OUT/runs" | sed -n 's/\.s[0-9]*\.jsonl$//p' | sort -u); do
    for metrics in "$OUT/runs/$name".s*.jsonl; do summarise "$metrics"; done |
      awk -v name="$name" -v per="$(samples_per_epoch "$name")" -v epochs="$EPOCHS" '
        { n++; f[n] = $1 * 100; b += $2 * 100; l5 += $3 * 100; lf += $4; ll += $5; a1 += $6; a2 += $7;
          fr += $8; dev += $9 }
        END {
          for (i = 1; i <= n; i++) m += f[i] / n
          for (i = 1; i <= n; i++) v += (f[i] - m) ^ 2
          sd = n > 1 ? sqrt(v / (n - 1)) : 0
          ep = name ~ /^gcn-/ ? 200 : epochs
          second = $7 != "nan" ? sprintf(" / %.2f", a2 / n) : ""
          printf "| %s (%d seeds) | %.2f ± %.2f | %.2f | %.2f | %.3f → %.3f | %.2f%s | %.2f | %.1f |\n",
            name, n, m, sd, b / n, l5 / n, lf / n, ll / n, a1 / n, second, fr / n / (per * ep), dev / n
        }'
  done
} > "$OUT/summary.md"
cat "$OUT/summary.md"

# --- plots: training loss and test accuracy per epoch, mean over seeds ---
per_epoch() {  # NAME FIELD: "epoch mean" lines
  for metrics in "$OUT/runs/$1".s*.jsonl; do
    awk -v field="$2" '/"type":"epoch"/ {
      match($0, "\"epoch\":[0-9]+"); e = substr($0, RSTART + 8, RLENGTH - 8)
      match($0, "\"" field "\":[-0-9.e]+"); print e, substr($0, RSTART + length(field) + 3, RLENGTH - length(field) - 3) }' "$metrics"
  done | awk '{ s[$1] += $2; c[$1]++ } END { for (e in s) print e, s[e] / c[e] }' | sort -n
}
# plot FILE_STEM TITLE NAME=LABEL...: training loss and test accuracy per epoch of those runs.
plot() {
  local stem=$1 title=$2 field entry name lines
  shift 2
  for field in loss test_accuracy; do
    lines=()
    for entry in "$@"; do
      name=${entry%%=*}
      [[ -e "$OUT/runs/$name.s${SEEDS%% *}.jsonl" ]] || continue
      per_epoch "$name" "$field" > "$OUT/$name.$field.dat"
      lines+=("\"$OUT/$name.$field.dat\" with linespoints title \"${entry#*=}\"")
    done
    ((${#lines[@]})) || continue
    gnuplot <<EOF
set terminal svg size 720,420 font "sans,11"
set output "$OUT/$stem.$field.svg"
set title "Fashion-MNIST 784-256-256-10, DFA, $title: ${field/_/ } per epoch (mean over the seeds run)"
set xlabel "epoch"
set ylabel "${field/_/ }"
set key outside right
set grid
plot $(IFS=,; echo "${lines[*]}")
EOF
  done
}

if command -v gnuplot > /dev/null; then
  plot raw "inputs in [0, 1]" raw-digital="digital B" raw-ternary="OPU, ternary (literal)" \
    raw-ternary-ideal="ideal camera, ternary" raw-stochastic1="OPU, stochastic 1 plane" \
    raw-stochastic2="OPU, stochastic 2 planes" raw-stochastic2-shared="OPU, + shared frames" \
    raw-opu-ref32="OPU, + 4 repeats, 32 references (served)" \
    raw-opu-default="OPU default: + 4 repeats, 256 references (served)"
  plot std "standardised inputs" std-digital="digital B" std-ternary="OPU, ternary (literal)" \
    std-stochastic2-shared="OPU, stochastic 2 planes, shared frames" \
    std-opu-ref32="OPU, + 4 repeats, 32 references (served)" \
    std-opu-default="OPU default: 256 references (served)"
  plot mnist "MNIST's constants" mnist-digital="digital B" mnist-ternary="OPU, ternary (literal)" \
    mnist-opu-default="OPU default (served)" mnist-lr005-digital="digital B, lr 0.005" \
    mnist-lr005-opu-default="OPU default, lr 0.005 (served)"
  echo "camera_gap.sh: plots in $OUT/{raw,std,mnist}.{loss,test_accuracy}.svg" >&2
else
  echo "camera_gap.sh: gnuplot not found (scripts/bootstrap.sh installs it): no plots" >&2
fi
