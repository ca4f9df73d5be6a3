#!/usr/bin/env bash
# `make test-arm64`: the kernels' arm64 code (NEON), cross-compiled and run under qemu-user.
#
# Every tests/arm64/test_*.cpp is built with the MLX-free kernel sources listed in SOURCES
# (static, so qemu needs no arm64 libraries) and run under qemu-aarch64; each prints what it
# checked. To test new C++: add its sources to SOURCES and a test_<name>.cpp beside this file.
# What it needs (Debian's g++-aarch64-linux-gnu and qemu-user) is installed with apt-get when
# it is missing and this runs as root; where it cannot be, one line says so and it exits 0.
set -euo pipefail
cd "$(dirname "$0")/../.."

SOURCES=(
  model/kernels/pool.cpp
  model/kernels/qmv_scalar.cpp
  model/kernels/qmv_neon.cpp
  model/kernels/qmv_run.cpp
  model/kernels/attention_generic.cpp
  model/kernels/attention_run.cpp
)
# Per-source flags CMakeLists.txt also gives: the attention kernels may contract into FMAs.
declare -A SOURCE_FLAGS=([model/kernels/attention_generic.cpp]=-ffp-contract=fast)
CXX=aarch64-linux-gnu-g++
QEMU=qemu-aarch64
PACKAGES=(g++-aarch64-linux-gnu qemu-user)

skip() {
  echo "test-arm64: skipped ($1)"
  exit 0
}

have_tools() { command -v "$CXX" >/dev/null && command -v "$QEMU" >/dev/null; }

if ! have_tools; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    skip "no $CXX or $QEMU, and no apt-get as root to install ${PACKAGES[*]}"
  fi
  echo "test-arm64: installing ${PACKAGES[*]}"
  log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${PACKAGES[@]}"; } >"$log" 2>&1; then
    skip "apt-get could not install ${PACKAGES[*]}: $(tail -n 1 "$log")"
  fi
  have_tools || skip "${PACKAGES[*]} installed, but $CXX or $QEMU is still missing"
fi

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
# The kernels with the flags of model/kernels/CMakeLists.txt that matter to the numbers: C++20, -O3,
# no FMA contraction. The tests at -O1: GCC 12's vectorizer crashes on one of their loops.
objects=()
for source in "${SOURCES[@]}"; do
  object="$build/$(basename "$source" .cpp).o"
  "$CXX" -std=c++20 -O3 -ffp-contract=off ${SOURCE_FLAGS[$source]:-} -c "$source" -o "$object"
  objects+=("$object")
done
passed=0
failed=0
for test in tests/arm64/test_*.cpp; do
  name=$(basename "$test" .cpp)
  "$CXX" -std=c++20 -O1 -ffp-contract=off -static -pthread -Imodel/kernels "$test" "${objects[@]}" -o "$build/$name"
  echo "test-arm64: $name"
  if "$QEMU" "$build/$name"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
  fi
done
echo "arm64: $passed passed, $failed failed"
[ "$failed" = 0 ]
