#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and runs the whole test suite:
# Debian packages (scripts/bootstrap.sh), configure + build with the `dev` preset, ctest.
# Tests run on one compute thread (the test preset sets OMP/OpenBLAS threads to 1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cmake --preset dev
cmake --build --preset dev -j "$(nproc)"
ctest --preset dev -j "$(nproc)"
