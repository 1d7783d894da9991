#!/usr/bin/env bash
# Sets everything up on a fresh Debian 12 machine and runs the toolkit's main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
cmake --preset release
cmake --build --preset release -j "$(nproc)"
./build/release/bench/opu-bench --quick
