#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# `make demo`'s script (scripts/demo.py) without a terminal, under `timeout 120`: the whole
# story with measured times, exit 0 on SIGINT after "Press Ctrl-C", and nothing left behind
# (no process of its session or naming its work dir, no work dir). Also --once, and a failure
# at start that still stops what was started.
# usage: test_demo.sh BUILD_BIN_DIR SOURCE_DIR
set -uo pipefail

BIN=$(realpath "${1:-build/bin}")
SRC=$(realpath "${2:-.}")
DEMO="$SRC/scripts/demo.py"
T=$(mktemp -d "${TMPDIR:-/tmp}/dhaf-test-demo.XXXXXX")
PIDS=()   # session ids of the demos started here, for the clean-up
passed=0
failed=0

cleanup() {
    local sid pid
    for sid in "${PIDS[@]}"; do
        for pid in $(pgrep -s "$sid" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    done
    for pid in $(pgrep -f "$T/" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    rm -rf "$T"
}
trap cleanup EXIT

ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() {
    failed=$((failed + 1))
    echo "FAIL $1"
    [ -n "${2:-}" ] && [ -f "$2" ] && sed 's/^/    | /' "$2"
    return 1
}

# Starts the demo in its own session (so that pgrep -s finds everything it started) with
# TMPDIR=$T/<name>/tmp; sets DEMO_PID (the session's id) and OUT.
start_demo() {
    local name=$1
    shift
    mkdir -p "$T/$name/tmp"
    OUT="$T/$name/out.txt"
    env TMPDIR="$T/$name/tmp" "$@" setsid timeout 120 /usr/bin/python3 "$DEMO" --bin "$BIN" \
        </dev/null >"$OUT" 2>&1 &
    DEMO_PID=$!
    PIDS+=("$DEMO_PID")
}

# wait_exit SECONDS: waits for the demo to end; sets RC to its exit code (999: still running).
wait_exit() {
    local deadline=$((SECONDS + $1))
    while kill -0 "$DEMO_PID" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    if kill -0 "$DEMO_PID" 2>/dev/null; then RC=999; return; fi
    wait "$DEMO_PID"
    RC=$?
}

workdir_of() { sed -n 's/^  work dir  \([^ ]*\) .*/\1/p' "$1" | head -n 1; }

# nothing_left NAME: no process of the demo's session or naming its work dir; the work dir
# and everything else under its TMPDIR gone.
nothing_left() {
    local name=$1 wd left
    wd=$(workdir_of "$OUT")
    [ -n "$wd" ] || { fail "$name: no work dir line in the output" "$OUT"; return 1; }
    left=$(pgrep -a -s "$DEMO_PID"; pgrep -af "$wd")
    [ -z "$left" ] || { fail "$name: processes left behind: $left"; return 1; }
    [ ! -e "$wd" ] || { fail "$name: work dir $wd left behind"; return 1; }
    [ -z "$(ls -A "$T/$name/tmp")" ] || { fail "$name: files left in TMPDIR: $(ls -A "$T/$name/tmp")"; return 1; }
    return 0
}

# 1. The story, then SIGINT (to `timeout`, which passes it on, as `timeout 120 make demo` would).
test_story_then_sigint() {
    local name=story deadline re running
    start_demo "$name"
    deadline=$((SECONDS + 100))
    until grep -q "Press Ctrl-C" "$OUT"; do
        if ! kill -0 "$DEMO_PID" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
            fail "$name: no \"Press Ctrl-C\" line (ended or 100 s passed)" "$OUT"
            return
        fi
        sleep 0.1
    done
    # everything it announced runs, so that "nothing left" below means something
    running=$(pgrep -a -s "$DEMO_PID")
    for re in 'dhaf-node --config .*/node-1\.dhaf' 'dhaf-node --config .*/node-2\.dhaf' \
              'dhaf-node --config .*/node-3\.dhaf' 'dhaf-prober --config' '/etcd ' \
              'backend\.py ep-1 127\.0\.0\.11' 'backend\.py ep-2 127\.0\.0\.12'; do
        grep -qE -- "$re" <<<"$running" || { fail "$name: /$re/ is not running: $running"; return; }
    done
    kill -INT "$DEMO_PID"
    wait_exit 30
    [ "$RC" = 0 ] || { fail "$name: exit code $RC after SIGINT (want 0)" "$OUT"; return; }

    local t='[0-9]+\.[0-9]{2} s'
    for re in \
        "^\[1/7\] cluster up in $t: etcd $t, leader node-[123] elected $t after the nodes started, probe-1 voting after $t" \
        'In production this would be Cloudflare DNS' \
        "^\[2/7\] traffic on ep-1 \(primary\): node-[123] wrote the hosts file $t after it was elected" \
        'GET http://site\.demo:[0-9]+/ -> 127\.0\.0\.11 \(hosts file\): 200 "hello from ep-1' \
        "^\[3/7\] stopped ep-1's backend -> failover to ep-2 in $t" \
        'ep-1 down for [0-9] of 4 voters \(connect' \
        'GET http://site\.demo:[0-9]+/ -> 127\.0\.0\.12 \(hosts file\): 200 "hello from ep-2' \
        "^\[4/7\] started ep-1's backend again -> switching back to ep-1 in $t" \
        "^\[5/7\] dhafctl switchover-to ep-2 -s site -> moved to ep-2 in $t" \
        'dhafctl: OK\. A request for a switchover to ep-2 has been sent\.' \
        "pinned: ep-1 is healthy and first, yet traffic stayed on ep-2 for $t" \
        "^\[6/7\] dhafctl switchover-purge -s site -> back to ep-1 in $t" \
        "^\[7/7\] dhafctl events -s site" \
        '\| failover +\| warning \| failover of site from ep-1 to ep-2' \
        '\| switchover +\| info +\| switchover of site from ep-1 to ep-2' \
        '^Press Ctrl-C to stop' \
        '^SIGINT received: stopping the demo\.' \
        "^Stopped the prober, 3 nodes, 2 backends, etcd in $t; removed "; do
        grep -qE -- "$re" "$OUT" || { fail "$name: no line matching /$re/" "$OUT"; return; }
    done
    if grep -q $'\033' "$OUT"; then fail "$name: escape sequences without a terminal" "$OUT"; return; fi
    nothing_left "$name" || return
    ok "no TTY: the story with measured times, exit 0 on SIGINT, nothing left behind ($(grep -oE 'failover to ep-2 in [0-9.]+ s' "$OUT"))"
}

# 2. DEMO_ONCE=1: the story, then it stops by itself.
test_once() {
    local name=once
    start_demo "$name" DEMO_ONCE=1
    wait_exit 110
    [ "$RC" = 0 ] || { fail "$name: exit code $RC (want 0)" "$OUT"; return; }
    if ! { grep -q '^--once: stopping now\.' "$OUT" && grep -qE '^\[6/7\] .* back to ep-1 in' "$OUT"; }; then
        fail "$name: the story or the --once line is missing" "$OUT"
        return
    fi
    nothing_left "$name" || return
    ok "DEMO_ONCE=1: the story, exit 0, nothing left behind"
}

# 3. etcd fails to start: exit 1 with a message naming its log; the backends already started
#    are stopped; DEMO_KEEP=0 removes the work dir even on failure.
test_failure_cleans_up() {
    local name=failure
    start_demo "$name" DEMO_ETCD=/bin/false DEMO_KEEP=0
    wait_exit 60
    [ "$RC" = 1 ] || { fail "$name: exit code $RC (want 1)" "$OUT"; return; }
    if ! { grep -q '^demo failed: etcd exited at start' "$OUT" &&
           grep -q 'last lines of .*/etcd\.log' "$OUT"; }; then
        fail "$name: no clear failure message naming etcd.log" "$OUT"
        return
    fi
    grep -qE '^Stopped 2 backends' "$OUT" || { fail "$name: the backends were not stopped" "$OUT"; return; }
    nothing_left "$name" || return
    ok "etcd fails at start: exit 1, its log shown, the backends stopped, nothing left behind"
}

# 4. No binaries: a message that says what to do, nothing started.
test_missing_binaries() {
    local out="$T/missing.txt" rc
    mkdir -p "$T/empty-bin"
    /usr/bin/python3 "$DEMO" --bin "$T/empty-bin" </dev/null >"$out" 2>&1
    rc=$?
    # shellcheck disable=SC2016 # the backquotes are part of the message
    if ! { [ "$rc" = 1 ] && grep -q 'not found: run `make build` first' "$out"; }; then
        fail "missing binaries: exit $rc, want 1 and a hint at make build" "$out"
        return
    fi
    ok "no binaries: exit 1 with a hint at make build"
}

test_story_then_sigint
test_once
test_failure_cleans_up
test_missing_binaries
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
