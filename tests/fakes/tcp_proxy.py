#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A TCP proxy for partition tests: put it between a dhaf node and etcd, then cut and heal.

Usage:
    tcp_proxy.py --listen 127.0.0.1:PORT --target HOST:PORT [--watch-stdin]

Prints "LISTENING <port>" on stdout (flushed) once it accepts connections; port 0 in --listen
picks a free port. Every accepted connection gets its own connection to --target, and bytes
are copied both ways as they come, unchanged (etcd's gRPC over HTTP/2 goes through it as if
it were not there); a half-close (EOF) on one side is passed on as a half-close to the other.
Threaded (two threads per connection), quiet, exits on SIGTERM or SIGINT.

Control: lines on stdin, each answered with one line on stdout (read the answer: when it
arrives, the command has taken effect):
    cut     closes every open connection (both sides), and from now on accepts new
            connections but holds them: nothing is read from them or forwarded, so a client
            sees a hang (a blackhole), not a refusal. Answer: "CUT <connections closed>".
    heal    closes the connections held while cut (their clients reconnect) and forwards new
            ones again. Answer: "HEALED <held connections closed>".
    stats   answer: "STATS open=<forwarded connections> held=<held> cut=<0|1>
            accepted=<total>".
Anything else is answered "ERROR unknown command". With --watch-stdin the proxy exits when
stdin reaches EOF (so a crashed test cannot leave it behind: give it a pipe and keep the
write end open); without it, EOF only ends the control channel.
"""

import argparse
import os
import signal
import socket
import threading

LOCK = threading.Lock()
STATE = {
    "cut": False,
    "pairs": set(),  # (client socket, target socket) being forwarded
    "held": set(),   # client sockets accepted while cut
    "accepted": 0,
}
BUF = 64 * 1024


def addr(text):
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT, got %r" % text)
    return host.strip("[]"), int(port)


def kill_socket(s):
    """Wakes every thread blocked on s (shutdown) and closes it."""
    try:
        s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


def pump(src, dst, pair, done):
    """Copies src to dst until EOF or an error; passes a clean EOF on as a half-close."""
    try:
        while True:
            data = src.recv(BUF)
            if not data:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
                break
            dst.sendall(data)
    except OSError:
        # one side failed: the other side must not wait for bytes that will never come
        for s in pair:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
    with LOCK:
        done.append(1)
        last = len(done) == 2
        if last:
            STATE["pairs"].discard(pair)
    if last:
        for s in pair:
            kill_socket(s)


def serve_client(client, target):
    try:
        upstream = socket.create_connection(target, timeout=5)
        upstream.settimeout(None)
    except OSError:
        kill_socket(client)
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pair = (client, upstream)
    with LOCK:
        if STATE["cut"]:  # cut while we were connecting
            STATE["held"].add(client)
            kill_socket(upstream)
            return
        STATE["pairs"].add(pair)
    done = []
    threading.Thread(target=pump, args=(client, upstream, pair, done), daemon=True).start()
    threading.Thread(target=pump, args=(upstream, client, pair, done), daemon=True).start()


def accept_loop(listener, target):
    while True:
        try:
            client, _ = listener.accept()
        except OSError:
            return
        with LOCK:
            STATE["accepted"] += 1
            if STATE["cut"]:
                STATE["held"].add(client)  # held open, never read: the client hangs
                continue
        threading.Thread(target=serve_client, args=(client, target), daemon=True).start()


def command(line):
    cmd = line.strip()
    if cmd == "cut":
        with LOCK:
            STATE["cut"] = True
            pairs = list(STATE["pairs"])
            STATE["pairs"].clear()
        for pair in pairs:
            for s in pair:
                kill_socket(s)
        return "CUT %d" % len(pairs)
    if cmd == "heal":
        with LOCK:
            STATE["cut"] = False
            held = list(STATE["held"])
            STATE["held"].clear()
        for s in held:
            kill_socket(s)
        return "HEALED %d" % len(held)
    if cmd == "stats":
        with LOCK:
            return "STATS open=%d held=%d cut=%d accepted=%d" % (
                len(STATE["pairs"]), len(STATE["held"]), int(STATE["cut"]), STATE["accepted"])
    return "ERROR unknown command"


def control(watch):
    # os.read on the raw fd: a buffered stdin would hold its lock at shutdown
    pending = b""
    while True:
        chunk = os.read(0, 4096)
        if not chunk:
            break
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                print(command(line.decode(errors="replace")), flush=True)
    if watch:
        os._exit(0)


def main():
    ap = argparse.ArgumentParser(description="TCP proxy with cut/heal for dhaf tests.")
    ap.add_argument("--listen", type=addr, required=True, help="HOST:PORT (port 0: any)")
    ap.add_argument("--target", type=addr, required=True, help="HOST:PORT")
    ap.add_argument("--watch-stdin", action="store_true",
                    help="exit when stdin reaches EOF (the parent died)")
    args = ap.parse_args()

    def stop(_sig, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    family = socket.AF_INET6 if ":" in args.listen[0] else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(args.listen)
    listener.listen(128)
    threading.Thread(target=accept_loop, args=(listener, args.target), daemon=True).start()
    threading.Thread(target=control, args=(args.watch_stdin,), daemon=True).start()
    print("LISTENING %d" % listener.getsockname()[1], flush=True)
    try:
        threading.Event().wait()
    finally:
        listener.close()


if __name__ == "__main__":
    main()
