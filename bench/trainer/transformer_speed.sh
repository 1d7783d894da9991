#!/usr/bin/env bash
# Training speed of the Transformer language model: opu-train against the same model and batch in
# PyTorch (Debian's python3-torch), both on one thread, in the same run; BP and macro DFA.
# Prints tokens per second, the ratio opu-train / PyTorch, and each one's model FLOP rate as a
# fraction of the float GEMM's rate (torch.mm 1024^3, one thread, measured in the same run).
#
# Usage: bench/trainer/transformer_speed.sh [STEPS]        (default 20 timed steps per run)
#   OPU_TRAIN   the opu-train binary (default build/release/trainer/opu-train, else build/dev/...)
#   TEXT        the text file (default data/tinyshakespeare/input.txt)
# Sizes are the reference's: 4 blocks, width 128, 4 heads, FFN 512, context 128, batch 32.
set -euo pipefail
cd "$(dirname "$0")/../.."
steps="${1:-20}"
text="${TEXT:-data/tinyshakespeare/input.txt}"
train="${OPU_TRAIN:-}"
for candidate in build/release/trainer/opu-train build/dev/trainer/opu-train; do
  if [ -z "$train" ] && [ -x "$candidate" ]; then train="$candidate"; fi
done
[ -x "$train" ] || { echo "transformer_speed: no opu-train (build first or set OPU_TRAIN)" >&2; exit 2; }
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

for method in bp dfa; do
  "$train" --model transformer --method "$method" --data "$text" --steps "$steps" \
    --eval-every 0 --eval-chars 1024 --threads 1 --metrics "$out/opu-$method.jsonl" > /dev/null
  /usr/bin/python3 bench/trainer/transformer_torch.py --text "$text" --method "$method" \
    --steps "$steps" > "$out/torch-$method.json"
done

/usr/bin/python3 - "$out" <<'PY'
import json, os, sys
out = sys.argv[1]
print(f"{'method':8} {'opu-train tok/s':>16} {'pytorch tok/s':>14} {'ratio':>6} "
      f"{'opu GEMM frac':>13} {'torch GEMM frac':>15}")
for method in ("bp", "dfa"):
    with open(os.path.join(out, f"opu-{method}.jsonl")) as f:
        ours = [json.loads(l) for l in f if '"type":"summary"' in l][-1]
    with open(os.path.join(out, f"torch-{method}.json")) as f:
        theirs = json.loads(f.read())
    tokens_per_step = 32 * 128
    flops_per_token = theirs["model_flops_per_step"] / tokens_per_step
    gemm = theirs["gemm_gflops"] * 1e9
    print(f"{method:8} {ours['tokens_per_s']:16.0f} {theirs['tokens_per_s']:14.0f} "
          f"{ours['tokens_per_s'] / theirs['tokens_per_s']:6.2f} "
          f"{ours['tokens_per_s'] * flops_per_token / gemm:13.2f} "
          f"{theirs['tokens_per_s'] * flops_per_token / gemm:15.2f}")
print(f"float GEMM (torch.mm 1024^3, 1 thread): {gemm / 1e9:.1f} GFLOP/s; model FLOPs per token "
      f"{flops_per_token / 1e6:.1f} M (3x forward, attention counted dense)")
PY
