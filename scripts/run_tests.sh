#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and runs every test, in stages:
#   dev      Debian packages (scripts/bootstrap.sh), configure + build with the `dev` preset
#            (-Werror, this machine's instruction set), the whole ctest suite (fuzz corpora and
#            regression inputs included), one compute thread per test;
#   targets  the libraries compiled with -Werror for x86-64-v3 (AVX2) and sapphirerapids
#            (AVX-512 with FP16), and the simulator's golden-value and bit-for-bit tests run in
#            each build this CPU can execute (scripts/check_targets.sh);
#   asan     the simulator and offload suites under AddressSanitizer + UBSan (`asan` preset); the
#            trainer and calibration suites, mostly long training loops, run in `dev` only;
#   python   the Python package's tests (python/tests, pytest with Debian's python3): the client
#            against opu-serve and the C++ client bit for bit, the wire contract against opu-serve
#            and the Python adapter, opu-train against a Python device, DFA for PyTorch;
#   fuzz     every libFuzzer target for $OPU_FUZZ_SECONDS seconds (default 20; scripts/fuzz.sh).
# OPU_TEST_STAGES selects stages (default: all five, as CI runs them), e.g.
#   OPU_TEST_STAGES=dev scripts/run_tests.sh
set -euo pipefail
cd "$(dirname "$0")/.."
stages=" ${OPU_TEST_STAGES:-dev python targets asan fuzz} "
jobs="$(nproc)"

stage() {  # stage NAME: whether NAME was asked for; prints a banner with the time so far
  [[ "$stages" == *" $1 "* ]] || return 1
  echo "=== run_tests: stage $1 (${SECONDS} s so far)"
}

bash scripts/bootstrap.sh

if stage dev; then
  cmake --preset dev
  cmake --build --preset dev -j "$jobs"
  ctest --preset dev -j "$jobs"
fi

if stage python; then
  # The executables the tests start or compare against (already built by the dev stage).
  cmake --preset dev
  cmake --build --preset dev -j "$jobs" --target opu-serve opu-train opu-device-call
  # Stubs from proto/ (protoc + grpc_python_plugin), then the tests, with Debian's interpreter.
  (cd python && /usr/bin/python3 -c 'import opu_toolkit' &&
     OPU_SERVE="$PWD/../build/dev/offload/opu-serve" /usr/bin/python3 -m pytest -q)
fi

if stage targets; then
  bash scripts/check_targets.sh --test x86-64-v3 sapphirerapids
fi

if stage asan; then
  cmake --preset asan
  cmake --build --preset asan -j "$jobs" --target opu_sim_tests offload_tests
  ctest --preset asan -j "$jobs" -L 'opu_sim|offload'
fi

if stage fuzz; then
  # Open findings are listed in fuzz/findings/README.md; until they are fixed a finding is reported
  # loudly but does not fail the run (OPU_FUZZ_STRICT=1 makes it fail).
  if ! bash scripts/fuzz.sh "${OPU_FUZZ_SECONDS:-20}"; then
    echo "=== run_tests: THE FUZZ STAGE FOUND PROBLEMS (see above and fuzz/findings/README.md)"
    if [ "${OPU_FUZZ_STRICT:-0}" = 1 ]; then exit 1; fi
  fi
fi
echo "=== run_tests: done in ${SECONDS} s"
