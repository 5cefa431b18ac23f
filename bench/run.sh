#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Runs the benchmarks that print tables: the lib/rpc + lib/etcd benchmark
# (build/bin/dhaf-bench-rpc) beside the Python grpcio and etcdctl peers, then bench/probe.sh
# (the web checker beside blackbox_exporter on 1,000 local HTTP targets), then
# bench/failover.py (backend stop to switcher call over 20 rounds, beside HAProxy's DOWN),
# bench/decision.c (false and missed failovers over simulated outages), bench/api.py (status requests/s) and bench/scale.py (etcd load, CPU, RSS and failover time
# at N services).
# Builds nothing (run `make build` first).
# usage: bench/run.sh [dhaf-bench-rpc options, e.g. --seconds 5]
# Environment: BUILD (build dir, default build), TMPDIR (where etcd keeps its data: puts/s
# depend on that disk's fsync; TMPDIR=/dev/shm takes the disk out of the figures),
# PROBE_ARGS (options of bench/probe.sh, e.g. "--seconds 5"; PROBE_ARGS=skip leaves it out),
# FAILOVER_ARGS (options of bench/failover.py, e.g. "--rounds 5"; FAILOVER_ARGS=skip leaves it
# out), API_ARGS and SCALE_ARGS (below). Progress goes to stderr, the tables to stdout.
# bench/scale.py takes about 2 min of the whole with its default here.
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

# Each step runs in the background and is waited for, so that Ctrl-C or SIGTERM here is
# passed on at once: the step stops its own servers and peers before it exits.
child=
on_signal() {
    if [ -n "$child" ]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
step() {
    local rc=0
    "$@" &
    child=$!
    wait "$child" || rc=$?
    child=
    return $rc
}

rc=0
step "$bin" --source-dir "$src" "$@" || rc=$?
if [ "${PROBE_ARGS:-}" != skip ]; then
    echo
    # shellcheck disable=SC2086 # PROBE_ARGS is a list of options
    step env BUILD="$build" bash "$src/bench/probe.sh" ${PROBE_ARGS:-} || {
        prc=$?
        [ $rc -ne 0 ] || rc=$prc
    }
fi
if [ "${FAILOVER_ARGS:-}" != skip ]; then
    echo
    # shellcheck disable=SC2086 # FAILOVER_ARGS is a list of options
    step /usr/bin/python3 "$src/bench/failover.py" "$build/bin" ${FAILOVER_ARGS:-} || {
        frc=$?
        [ $rc -ne 0 ] || rc=$frc
    }
fi

# bench/decision.c: false and missed failovers of dhaf's rule, the original's and a local
# checker over 1,000 simulated outages (virtual time, about 1 s). DECISION_ARGS: its options,
# e.g. "--voters 5 --retries 0"; DECISION_ARGS=skip leaves it out.
if [ "${DECISION_ARGS:-}" != skip ]; then
    echo
    # shellcheck disable=SC2086 # DECISION_ARGS is a list of options
    step "$build/bin/dhaf-bench-decision" ${DECISION_ARGS:-} || {
        drc=$?
        [ $rc -ne 0 ] || rc=$drc
    }
fi

# bench/api.py: REST (wrk) and gRPC (dhaf-bench-api-grpc) status requests per second on one
# node. API_ARGS: its options, e.g. "--seconds 5"; API_ARGS=skip leaves it out. About 70 s.
if [ "${API_ARGS:-}" != skip ]; then
    echo
    # shellcheck disable=SC2086 # API_ARGS is a list of options
    step /usr/bin/python3 "$src/bench/api.py" "$build/bin" ${API_ARGS:-} || {
        arc=$?
        [ $rc -ne 0 ] || rc=$arc
    }
fi

# bench/scale.py: N services x 3 entry points, 3 nodes + 2 probers: etcd revisions and db
# growth, CPU and RSS per process, false failovers, failover time at N beside N=1; first one
# idle node's RSS with examples/config-n1.dhaf. SCALE_ARGS: its options (default below, about
# 2 min; the script's own default is the full "--services 1,1000 --steady 60
# --failover-rounds 5", about 4 min); SCALE_ARGS=skip leaves it out. bench/README.md has the
# 10-minute and soak variants.
if [ "${SCALE_ARGS:-}" != skip ]; then
    echo
    # shellcheck disable=SC2086 # SCALE_ARGS is a list of options
    step /usr/bin/python3 "$src/bench/scale.py" "$build/bin" \
        ${SCALE_ARGS:---services 1,100 --steady 30 --failover-rounds 3} || {
        scrc=$?
        [ $rc -ne 0 ] || rc=$scrc
    }
fi
exit $rc
