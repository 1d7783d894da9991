#!/usr/bin/env bash
# Installs the Debian 12 packages the OPU toolkit needs to build, test and run. Idempotent: packages
# already present are skipped, and apt is not touched at all when nothing is missing.
#
# Usage: scripts/bootstrap.sh            (as root, or with sudo available)
set -euo pipefail

readonly PACKAGES=(
  # toolchain
  g++ cmake ninja-build pkg-config git
  # core libraries
  libeigen3-dev libfftw3-dev libopenblas-dev
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libspdlog-dev libfmt-dev doctest-dev libcli11-dev nlohmann-json3-dev zlib1g-dev
  libbenchmark-dev
  # data and tools used by tests, examples and TLS tests
  dataset-fashion-mnist openssl
  # opu-study renders its plots (SVG) with gnuplot
  gnuplot-nox
  # python/ (the opu_toolkit package for PyTorch users, docs/python.md) and its tests; Debian's
  # python3 with these, no pip: gRPC, protobuf, numpy, PyTorch (CPU) and pytest
  python3 python3-grpcio python3-protobuf python3-numpy python3-torch python3-pytest
  # scripts/fuzz.sh: clang with libFuzzer and the sanitizer runtimes, and clang's OpenMP
  clang libclang-rt-14-dev libomp-dev
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "bootstrap: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "bootstrap: installing ${#missing[@]} missing packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "bootstrap: done"
