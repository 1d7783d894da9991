#!/usr/bin/env bash
# Compiles the project for instruction sets other than this machine's, with the `dev` preset's
# -Werror, so that a warning that only one CPU family's headers produce (GCC 12's AVX-512
# intrinsics, issue 16) cannot land unseen.
#
# Usage: scripts/check_targets.sh [--test] [TARGET...]
#   TARGET   a -march value (default: x86-64-v3 sapphirerapids, the narrowest and the widest
#            instruction sets of the machines we meet)
#   --test   also build opu_sim_tests and run them for every TARGET this CPU can execute: the
#            golden values and bit-for-bit tests must not depend on the instruction set
#
# Each target gets its own build folder, build/arch-TARGET. Compiling the libraries whose
# translation units include Eigen (opu_sim, trainer, calibration) and the tests is what finds
# such warnings; the gRPC code has no Eigen in it and its flags do not depend on the target.
set -euo pipefail
cd "$(dirname "$0")/.."

run_tests=0
targets=()
for arg in "$@"; do
  case "$arg" in
    --test) run_tests=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "check_targets: unknown option '$arg' (expected --test or a -march value)" >&2; exit 2 ;;
    *) targets+=("$arg") ;;
  esac
done
[ "${#targets[@]}" -gt 0 ] || targets=(x86-64-v3 sapphirerapids)

# Whether this CPU can run code compiled for -march=TARGET: every ISA macro the target defines
# must also be defined for -march=native.
cpu_runs() {
  local target_macros native_macros
  target_macros=$(echo | g++ -march="$1" -dM -E - | grep -E '#define __(AVX|SSE|FMA|BMI|F16C)' | sort)
  native_macros=$(echo | g++ -march=native -dM -E - | grep -E '#define __(AVX|SSE|FMA|BMI|F16C)' | sort)
  [ -z "$(comm -23 <(echo "$target_macros") <(echo "$native_macros"))" ]
}

launcher=()
if command -v ccache >/dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi

for target in "${targets[@]}"; do
  dir="build/arch-$target"
  echo "check_targets: -march=$target in $dir"
  cmake --preset dev -B "$dir" -DOPU_ARCH="$target" -DOPU_BUILD_BENCH=OFF "${launcher[@]}" >/dev/null
  build_targets=(opu_sim opu_trainer opu_calibration)
  if [ "$run_tests" -eq 1 ]; then build_targets+=(opu_sim_tests); fi
  cmake --build "$dir" -j "$(nproc)" --target "${build_targets[@]}"
  if [ "$run_tests" -eq 1 ]; then
    if cpu_runs "$target"; then
      OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 "$dir/tests/opu_sim_tests"
    else
      echo "check_targets: this CPU cannot run -march=$target code; compiled only"
    fi
  fi
done
echo "check_targets: ${targets[*]} compiled warning-free"
