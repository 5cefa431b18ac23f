#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the lib/rpc + lib/etcd benchmark (build/bin/dhaf-bench-rpc) and prints its figures beside
# the Python grpcio and etcdctl peers; builds nothing (run `make build` first).
# usage: bench/run.sh [dhaf-bench-rpc options, e.g. --seconds 5]
# Environment: BUILD (build dir, default build), TMPDIR (where etcd keeps its data: puts/s
# depend on that disk's fsync; TMPDIR=/dev/shm takes the disk out of the figures).
# Progress goes to stderr, the table to stdout. Takes about 45 s with the defaults.
set -eu
src=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-build}
case $build in
/*) ;;
*) build=$src/$build ;;
esac
bin=$build/bin/dhaf-bench-rpc
if [ ! -x "$bin" ]; then
    echo "bench/run.sh: $bin not found; run \`make build\` first" >&2
    exit 1
fi
# exec: Ctrl-C and SIGTERM reach the benchmark itself, which stops its peer, etcd and server.
exec "$bin" --source-dir "$src" "$@"
