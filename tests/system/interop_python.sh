#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Wire compatibility of lib/rpc: a Python grpcio client (tests/interop/echo_client.py) calls
# dhaf-test-echo-server over plaintext and over mTLS, and the server must stop cleanly on SIGTERM.
# usage: interop_python.sh BUILD_BIN_DIR SOURCE_DIR
set -u
server=$1/dhaf-test-echo-server
src=$2
client=$src/tests/interop/echo_client.py
python=/usr/bin/python3 # the interpreter with grpcio (a pyenv python3 on PATH may lack it)
tmp=$(mktemp -d)
server_pid=
hold_pid=
pass=0
fail=0

cleanup() {
    if [ -n "$hold_pid" ] && kill -0 "$hold_pid" 2>/dev/null; then
        kill -KILL "$hold_pid" 2>/dev/null
        wait "$hold_pid" 2>/dev/null
    fi
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ok() {
    pass=$((pass + 1))
    echo "ok   $*"
}
bad() {
    fail=$((fail + 1))
    echo "FAIL $*"
}
now_ms() {
    local t=${EPOCHREALTIME/./}
    echo $((t / 1000))
}
# show_log FILE: the tail of a server log, indented, for a failure report.
show_log() {
    tail -n 20 "$1" | sed 's/^/     | /'
}

finish() {
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
    exit
}

for f in "$server" "$client" "$python"; do
    if [ ! -e "$f" ]; then
        bad "missing $f"
        finish
    fi
done

# A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate whose CN
# the server must report.
make_certs() {
    local d=$tmp/pki
    mkdir -p "$d" || return 1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -keyout "$d/ca.key" -out "$d/ca.pem" -subj "/CN=dhaf-test-ca" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" || return 1
    # leaf NAME SUBJECT EXTENSIONS
    leaf() {
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -keyout "$d/$1.key" -out "$d/$1.csr" -subj "$2" || return 1
        printf '%b' "$3" >"$d/$1.ext"
        openssl x509 -req -in "$d/$1.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
            -days 1 -extfile "$d/$1.ext" -out "$d/$1.pem" || return 1
    }
    leaf server "/CN=localhost" \
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n" || return 1
    leaf client "/CN=probe-1" "extendedKeyUsage=clientAuth\n" || return 1
}

# start_server NAME ARGS...: starts the server and waits (at most 10 s) for "LISTENING <port>".
# Sets server_pid and port; returns 1 if it exited or said nothing in time.
start_server() {
    local name=$1
    shift
    local fifo=$tmp/$name.fifo line=
    mkfifo "$fifo"
    "$server" "$@" >"$fifo" 2>"$tmp/$name.log" &
    server_pid=$!
    exec 3<"$fifo"
    # read returns on the line, on EOF (the server died) or at the deadline.
    read -r -t 10 -u 3 line
    exec 3<&-
    port=${line#LISTENING }
    if [[ "$line" =~ ^LISTENING\ [1-9][0-9]*$ ]]; then
        return 0
    fi
    echo "     server said \"$line\" instead of LISTENING <port>"
    return 1
}

# stop_server NAME: SIGTERM, then the server must exit with status 0 within 2 s.
stop_server() {
    local name=$1 t0 waited rc
    t0=$(now_ms)
    kill -TERM "$server_pid"
    while kill -0 "$server_pid" 2>/dev/null && [ $(($(now_ms) - t0)) -lt 2000 ]; do
        sleep 0.02
    done
    waited=$(($(now_ms) - t0))
    if kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid"
        wait "$server_pid" 2>/dev/null
        server_pid=
        bad "$name: server still running 2 s after SIGTERM (killed)"
        show_log "$tmp/$name.log"
        return
    fi
    wait "$server_pid"
    rc=$?
    server_pid=
    if [ "$rc" -eq 0 ]; then
        ok "$name: server exited 0 ${waited} ms after SIGTERM"
    else
        bad "$name: server exited $rc after SIGTERM"
        show_log "$tmp/$name.log"
    fi
}

# run_client NAME ARGS...: runs echo_client.py and adds its counts to ours.
run_client() {
    local name=$1 out rc summary
    shift
    out=$("$python" "$client" --proto-dir "$src/tests/proto" "$@" 2>&1)
    rc=$?
    sed 's/^/     /' <<<"$out"
    summary=$(tail -n 1 <<<"$out")
    if [[ "$summary" =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        pass=$((pass + BASH_REMATCH[1]))
        fail=$((fail + BASH_REMATCH[2]))
        if [ "$rc" -ne 0 ] && [ "${BASH_REMATCH[2]}" -eq 0 ]; then
            bad "$name: python client exited $rc although nothing failed"
        fi
    else
        bad "$name: python client ended without a summary (exit $rc)"
    fi
}

# wait_for_log NAME PATTERN MS: polls the server log until PATTERN appears (at most MS).
wait_for_log() {
    local t0
    t0=$(now_ms)
    until grep -q -- "$2" "$tmp/$1.log"; do
        [ $(($(now_ms) - t0)) -lt "$3" ] || return 1
        sleep 0.02
    done
}

# wait_hold NAME: the --hold-slow client must end within 5 s with an error status.
wait_hold() {
    local t0 rc
    t0=$(now_ms)
    while kill -0 "$hold_pid" 2>/dev/null && [ $(($(now_ms) - t0)) -lt 5000 ]; do
        sleep 0.02
    done
    if kill -0 "$hold_pid" 2>/dev/null; then
        kill -KILL "$hold_pid"
        wait "$hold_pid" 2>/dev/null
        hold_pid=
        bad "$1: the in-flight call was still waiting 5 s after the server stopped"
        return
    fi
    wait "$hold_pid"
    rc=$?
    hold_pid=
    if [ "$rc" -eq 0 ]; then
        ok "$1: the in-flight call ended when the server stopped: $(tail -n 1 "$tmp/$1.hold")"
    else
        bad "$1: the in-flight call did not end with an error status (exit $rc):"
        sed 's/^/     | /' "$tmp/$1.hold"
    fi
}

# check_slow_cancelled NAME: the Slow handler saw the 300 ms deadline, well before the stop.
check_slow_cancelled() {
    local name=$1 line ms
    line=$(grep -m1 'event=slow-cancelled' "$tmp/$name.log")
    ms=$(sed -n 's/.*elapsed_ms=\([0-9]*\).*/\1/p' <<<"$line")
    if [ -n "$ms" ] && [ "$ms" -lt 1000 ]; then
        ok "$name: Slow handler noticed the client's deadline after $ms ms"
    else
        bad "$name: no event=slow-cancelled with elapsed_ms < 1000 in the server log"
        show_log "$tmp/$name.log"
    fi
}

token=$(openssl rand -hex 16)
if make_certs >"$tmp/openssl.log" 2>&1; then
    ok "throwaway CA, server (IP:127.0.0.1, DNS:localhost) and client (CN=probe-1) certificates"
else
    bad "openssl could not make the test certificates"
    show_log "$tmp/openssl.log"
    finish
fi
pki=$tmp/pki

echo "# plaintext with a bearer token"
if start_server plain --addr 127.0.0.1:0 --token "$token"; then
    ok "plain: server listening on port $port"
    run_client plain --addr "127.0.0.1:$port" --token "$token"
    check_slow_cancelled plain
    # SO_REUSEPORT must be off: a second server on the same port has to fail, not share it.
    # (timeout only matters when that is broken and the second server keeps serving.)
    out=$(timeout -s TERM 5 "$server" --addr "127.0.0.1:$port" 2>&1 </dev/null)
    rc=$?
    if [ "$rc" -eq 1 ] && ! grep -q '^LISTENING' <<<"$out"; then
        ok "plain: a second server on port $port is refused: $(tail -n 1 <<<"$out" | head -c 200)"
    else
        bad "plain: a second server on port $port was not refused (exit $rc): $out"
    fi
    # Stop with a call in flight: the server must cancel it and still exit 0 within 2 s, and the
    # client must get an error status at once, not at its 30 s deadline.
    "$python" "$client" --proto-dir "$src/tests/proto" --addr "127.0.0.1:$port" \
        --token "$token" --hold-slow 20000 >"$tmp/plain.hold" 2>&1 &
    hold_pid=$!
    if wait_for_log plain 'event=slow-start sleep_ms=20000' 10000; then
        ok "plain: a Slow(20000) call is in flight"
    else
        bad "plain: the Slow(20000) call did not reach its handler within 10 s"
        show_log "$tmp/plain.log"
    fi
    stop_server plain
    wait_hold plain
else
    bad "plain: server did not start"
    show_log "$tmp/plain.log"
fi

echo "# mTLS with a bearer token"
if start_server mtls --addr 127.0.0.1:0 --token "$token" --tls-cert "$pki/server.pem" \
    --tls-key "$pki/server.key" --client-ca "$pki/ca.pem"; then
    ok "mtls: server listening on port $port"
    run_client mtls --addr "127.0.0.1:$port" --token "$token" --tls-ca "$pki/ca.pem" \
        --tls-cert "$pki/client.pem" --tls-key "$pki/client.key" --expect-cn probe-1
    check_slow_cancelled mtls
    stop_server mtls
else
    bad "mtls: server did not start"
    show_log "$tmp/mtls.log"
fi

finish
