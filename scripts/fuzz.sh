#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ (the `fuzz` preset: clang, ASan + UBSan, every report
# fatal) and runs each for SECONDS seconds on a copy of its seed corpus (fuzz/corpus/<target>/ plus
# fuzz/regressions/<target>/), so the repository is never written to. See docs/fuzzing.md.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]     (default 60 seconds, every target)
#   OPU_FUZZ_JOBS=N    targets fuzzed at once (default: the number of cores)
#   OPU_FUZZ_OUT=DIR   where the runs go (default build/fuzz/runs): DIR/<target>/corpus (the grown
#                      corpus), DIR/<target>/artifacts (crashing inputs), DIR/<target>/log
#
# Exits non-zero when any target crashed, leaked, timed out (-timeout), ran out of memory
# (-rss_limit_mb) or hit undefined behaviour; the input is saved under DIR/<target>/artifacts/ and
# the summary prints how to replay it. Once the bug is fixed, copy the input to
# fuzz/regressions/<target>/ so every test build replays it (ctest -L fuzz).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-60}"
[ "$#" -gt 0 ] && shift
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
  echo "fuzz.sh: SECONDS is '$seconds', want a whole number >= 1" >&2
  exit 2
fi
jobs="${OPU_FUZZ_JOBS:-$(nproc)}"
out="$(realpath -m "${OPU_FUZZ_OUT:-build/fuzz/runs}")"
# A slow input is a finding (a request or file that ties the process up), but a generous one:
# instrumented code is several times slower than a release build.
timeout_s=30
rss_limit_mb=2048

bash scripts/bootstrap.sh  # clang, libFuzzer and the sanitizer runtimes among the rest

start=$SECONDS
launcher=()
if command -v ccache > /dev/null; then launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache); fi
cmake --preset fuzz "${launcher[@]}" > /dev/null
cmake --build --preset fuzz -j "$(nproc)"
echo "fuzz.sh: build done in $((SECONDS - start)) s"

if [ "$#" -eq 0 ]; then
  for source in fuzz/*_fuzz.cpp; do
    name="$(basename "$source" _fuzz.cpp)"
    [ -x "build/fuzz/fuzz/fuzz_$name" ] && set -- "$@" "$name"
  done
fi
[ "$#" -gt 0 ] || { echo "fuzz.sh: no fuzz target was built" >&2; exit 1; }

# Every sanitizer report ends the run with a saved input: UBSan halts (and the code is compiled
# with -fno-sanitize-recover=all), ASan aborts and reports leaks at exit.
export ASAN_OPTIONS="abort_on_error=1:detect_leaks=1:symbolize=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="halt_on_error=1:abort_on_error=1:print_stacktrace=1"
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

run_target() {  # run_target NAME: fuzzes one target; exit status 0 when nothing was found
  local name="$1"
  local work="$out/$name"
  rm -rf "$work"
  mkdir -p "$work/corpus" "$work/artifacts" "$work/scratch"
  cp fuzz/corpus/"$name"/* "$work/corpus/"
  if [ -d "fuzz/regressions/$name" ]; then
    find "fuzz/regressions/$name" -maxdepth 1 -type f ! -name '.*' ! -name '*.md' \
      -exec cp {} "$work/corpus/" \;
  fi
  local options=(-max_total_time="$seconds" -timeout="$timeout_s" -rss_limit_mb="$rss_limit_mb"
                 -artifact_prefix="$work/artifacts/" -print_final_stats=1 -use_value_profile=1)
  [ -f "fuzz/dict/$name.dict" ] && options+=(-dict="$(realpath "fuzz/dict/$name.dict")")
  local binary
  binary="$(realpath "build/fuzz/fuzz/fuzz_$name")"
  # In a scratch directory: inputs that name files (token=FILE in a URI) find nothing of ours.
  local status=0
  (cd "$work/scratch" && "$binary" "${options[@]}" "$work/corpus" > "$work/log" 2>&1) || status=$?
  # libFuzzer also saves inputs slower than 10 s (slow-unit-*): reported, not a failure; a hang is
  # -timeout's (timeout-*).
  local found slow
  found="$(find "$work/artifacts" -type f ! -name 'slow-unit-*' | head -n 1)"
  slow="$(find "$work/artifacts" -type f -name 'slow-unit-*' | head -n 1)"
  local runs
  runs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$work/log" | grep -o '[0-9]*$' || true)"
  if [ "$status" -ne 0 ] || [ -n "$found" ]; then
    echo "fuzz.sh: $name FAILED (exit $status) after ${runs:-?} runs; log: $work/log"
    grep -m 3 -E 'ERROR: |runtime error:|fuzz property broken|Test unit written' "$work/log" || true
    if [ -n "$found" ]; then
      echo "  input: $found"
      echo "  replay: $binary $found"
    fi
    return 1
  fi
  echo "fuzz.sh: $name ok, ${runs:-?} runs in $seconds s, corpus $(ls "$work/corpus" | wc -l) inputs"
  if [ -n "$slow" ]; then echo "  note: an input took over 10 s: $slow"; fi
}

echo "fuzz.sh: $# targets for $seconds s each, $jobs at a time: $*"
failed=()
running=0
declare -A pids
for name in "$@"; do
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
  run_target "$name" &
  pids[$name]=$!
  running=$((running + 1))
done
for name in "$@"; do
  wait "${pids[$name]}" || failed+=("$name")
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz.sh: ${#failed[@]} of $# targets found a problem: ${failed[*]} (after $((SECONDS - start)) s)"
  exit 1
fi
echo "fuzz.sh: all $# targets clean in $((SECONDS - start)) s"
