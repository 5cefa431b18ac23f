#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages dhaf needs to build, test and run its demo.
# Idempotent: does nothing when every package is present; runs `apt-get update`
# once, and only when something is missing.
set -euo pipefail

# Build and runtime libraries (DESIGN.md "Dependencies").
PKGS_BUILD=(
  build-essential cmake pkg-config
  libgrpc-dev protobuf-compiler-grpc
  libprotobuf-c-dev protobuf-c-compiler
  libyaml-dev libcurl4-openssl-dev libssl-dev libjansson-dev libmicrohttpd-dev
)
# Tests, the demo and code hygiene.
PKGS_TEST=(
  libcmocka-dev etcd-server etcd-client
  python3 python3-grpcio python3-protobuf python3-aiosmtpd python3-yaml
  clang-format cppcheck curl openssl
  # make fuzz: clang and its libFuzzer runtime (libclang_rt.fuzzer-x86_64.a)
  clang libclang-rt-14-dev
  # make chaos: network namespaces (iproute2), partitions (nftables), the soak's plot
  iproute2 nftables gnuplot-nox
)

missing=()
for p in "${PKGS_BUILD[@]}" "${PKGS_TEST[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS_BUILD[@]} build and ${#PKGS_TEST[@]} test packages are present"
  exit 0
fi

echo "install-deps: missing: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "install-deps: error: these packages are missing and installing them needs root." >&2
    echo "  run as root:  apt-get update && apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
echo "install-deps: installed ${#missing[@]} package(s)"
