#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# The README's `make check` as on a bare Debian 12: in a container of a debootstrap minbase
# image (made once with debootstrap from Debian's archive, then kept in podman's store as
# localhost/debian:bookworm), with this tree mounted at its own path. Inside, only what the
# README says comes first: `apt-get update && apt-get install -y make`; everything else must
# come from `make check` itself (scripts/install-deps.sh), so a missing install step fails
# here instead of hiding behind a development machine's packages. .ci/run runs it.
#
# The build tree it leaves (build/) works on the host too (the same Debian 12 libraries), and
# the tests that need podman (tests/deploy/) skip inside (no podman there): run them on the
# host afterwards (`cd build && ctest -L deploy`).
#
# usage: scripts/fresh-check.sh [CTEST_ARGS...]     (root; podman, runc, debootstrap)
set -euo pipefail
cd "$(dirname "$0")/.."
for t in podman runc debootstrap; do
  command -v "$t" >/dev/null || {
    echo "fresh-check: $t is missing: apt-get install -y podman buildah runc debootstrap" >&2
    exit 2
  }
done
[ "$(id -u)" -eq 0 ] || { echo "fresh-check: needs root (podman with runc and cgroupfs)" >&2; exit 2; }

work=$(mktemp -d /tmp/dhaf-fresh-XXXXXX)
trap 'rm -rf "$work"' EXIT
printf '[containers]\ndefault_ulimits = []\n' > "$work/containers.conf"
export CONTAINERS_CONF="$work/containers.conf"
P=(podman --runtime runc --cgroup-manager=cgroupfs)
BASE=localhost/debian:bookworm

if ! "${P[@]}" image exists "$BASE"; then
  echo "fresh-check: making $BASE (debootstrap --variant=minbase bookworm)"
  debootstrap --variant=minbase bookworm "$work/rootfs" "${DHAF_DEBIAN_MIRROR:-http://deb.debian.org/debian}" \
    > "$work/debootstrap.log" 2>&1 || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  tar -C "$work/rootfs" -c . | "${P[@]}" import - "$BASE" >/dev/null
  rm -rf "$work/rootfs"
fi
for t in docker.io/library/debian:12 docker.io/library/debian:12-slim; do
  "${P[@]}" image exists "$t" || "${P[@]}" tag "$BASE" "$t"
done

ctest_args="${*:---output-on-failure}"
name="dhaf-fresh-$$"
echo "fresh-check: make check in a fresh $BASE container (CTEST_ARGS=$ctest_args)"
# --privileged: the tests that build network namespaces (fault tests) need what root has on a
# machine; --network=host: every test stays on loopback.
"${P[@]}" run --rm --name "$name" --privileged --network=host -v "$PWD:$PWD" -w "$PWD" \
  -e CTEST_ARGS="$ctest_args" "$BASE" \
  bash -c 'set -e; apt-get update -q >/dev/null; apt-get install -y -q make >/dev/null
           echo "fresh-check: make installed; the rest is make check"
           make check CTEST_ARGS="$CTEST_ARGS"'
