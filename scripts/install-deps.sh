#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian 12 packages dhaf needs to build, test and run its demo: a development
# or CI machine, not a production host (those install the .deb packages of `make deb`, which
# pull only the runtime libraries; docs/deploy.md).
#   install-deps.sh           build + test packages (make check, make demo)
#   install-deps.sh --build   build packages only (the container image's build stage, make deb)
# Idempotent: does nothing when every package is present; runs `apt-get update`
# once, and only when something is missing.
set -euo pipefail

only_build=false
case "${1:-}" in
  "") ;;
  --build) only_build=true ;;
  -h|--help) sed -n '3,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "install-deps: unknown option $1 (try --help)" >&2; exit 2 ;;
esac

# Build and runtime libraries (DESIGN.md "Dependencies").
PKGS_BUILD=(
  build-essential cmake pkg-config file
  libgrpc-dev protobuf-compiler-grpc
  libprotobuf-c-dev protobuf-c-compiler
  libyaml-dev libcurl4-openssl-dev libssl-dev libjansson-dev libmicrohttpd-dev
)
# Tests, the demo and code hygiene.
PKGS_TEST=(
  libcmocka-dev etcd-server etcd-client
  python3 python3-grpcio python3-protobuf python3-aiosmtpd python3-yaml
  # protoc: Python messages of proto/ for the gRPC tests (also pulled by protobuf-compiler-grpc)
  protobuf-compiler
  clang-format cppcheck curl openssl
  # dhafctl's zsh and fish completions are loaded by their shells (system_completion)
  zsh fish
  # make fuzz: clang and its libFuzzer runtime (libclang_rt.fuzzer-x86_64.a)
  clang libclang-rt-14-dev
  # make chaos: network namespaces (iproute2), partitions (nftables), the soak's plot
  iproute2 nftables gnuplot-nox
  # promtool checks and unit-tests deploy/monitoring's alert rules (monitoring_rules); Debian
  # ships it only in the server's package (whose service starts on :9090 where systemd runs)
  prometheus
)

if $only_build; then
  PKGS_TEST=()
fi
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
# prometheus was installed for promtool only: stop and disable the server it started.
if [[ " ${missing[*]} " == *" prometheus "* ]] && [ -d /run/systemd/system ]; then
  $SUDO systemctl disable --now prometheus >/dev/null 2>&1 || true
  echo "install-deps: the prometheus server the package started is stopped and disabled (promtool is what the tests use)"
fi
echo "install-deps: installed ${#missing[@]} package(s)"
