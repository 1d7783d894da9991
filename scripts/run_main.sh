#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install packages, build (release preset), start a
# simulated OPU (realistic 8-bit camera) with opu-serve on loopback, train the paper's
# Fashion-MNIST MLP (784-256-256-10) with DFA whose feedback comes through it over gRPC, then the
# controls (digital DFA, BP, shallow), print a summary, stop the server.
#
#   scripts/run_main.sh                 # 2 epochs per run
#   EPOCHS=15 scripts/run_main.sh       # the paper's setting
# Results: out/main/*.jsonl (per-epoch records), out/main/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cmake --preset release
cmake --build --preset release -j "$(nproc)" --target opu-serve opu-train

readonly BIN=build/release
readonly OUT=${OUT:-out/main}
readonly EPOCHS=${EPOCHS:-2}
mkdir -p "$OUT"

# The server prints its bound address as the first line of stdout; port 0 = any free port.
coproc SERVER { exec "$BIN/offload/opu-serve" --listen 127.0.0.1:0 --seed 7 --n-in 1024 \
  --n-out 256 --camera realistic 2>"$OUT/opu-serve.log"; }
SERVER_PID=$SERVER_PID
trap 'kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true' EXIT
read -r -t 30 ADDRESS <&"${SERVER[0]}" || { echo "opu-serve did not start:"; cat "$OUT/opu-serve.log"; exit 1; }
echo "opu-serve: simulated OPU (realistic camera) at $ADDRESS"

train() {  # name, then opu-train flags; keeps the final JSON line
  local name=$1
  shift
  echo
  echo "=== $name ==="
  "$BIN/trainer/opu-train" --model mlp --epochs "$EPOCHS" --metrics "$OUT/$name.jsonl" "$@" \
    | tee "$OUT/$name.log"
  tail -n 1 "$OUT/$name.log" > "$OUT/$name.result.json"
}

train dfa-opu --method dfa --feedback "grpc://$ADDRESS"
train dfa-digital --method dfa --feedback digital
train bp --method bp
train shallow --method shallow

field() { grep -o "\"$2\":[^,}]*" "$OUT/$1.result.json" | head -n 1 | cut -d: -f2- | tr -d '"'; }
{
  echo
  echo "Fashion-MNIST, 784-256-256-10, $EPOCHS epochs (docs/design.md §4; 15 epochs: docs/results.md)"
  printf '%-12s %-30s %14s\n' run feedback test_accuracy
  for run in dfa-opu dfa-digital bp shallow; do
    printf '%-12s %-30s %14s\n' "$run" "$(field "$run" feedback)" "$(field "$run" test_accuracy)"
  done
} | tee "$OUT/summary.txt"
