# SPDX-License-Identifier: MIT
"""Issue 15, REST limits: slow clients cannot take the REST port down.

- 200 slow-loris connections from 8 client addresses (127.0.1.x, 25 each), each holding a
  half-sent request head: /healthz and /readyz from another address still answer, within 1 s
  (before: 64 connections, one thread each, took the port down, /healthz included);
- a 33rd connection from one address is closed unanswered (32 per client address), while
  another address is served;
- a client trickling its request head one byte a second is cut within the 10 s request
  deadline (before: only 30 s without any byte closed a connection, so it was never cut).
usage: /usr/bin/python3 test_rest_limits.py BUILD_BIN_DIR"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
from dhafsys import Cluster, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
PER_IP = 32            # docs/api.md, Limits
REQ_DEADLINE_S = 10    # docs/api.md, Limits
HEAD = b"GET /api/v1/services HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # never finished


def connect(port, src, timeout=5):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((src, 0))
    s.connect(("127.0.0.1", port))
    return s


def get(port, path, src="127.0.0.1", timeout=1.0):
    """(status, seconds) of GET path from src, the whole exchange within timeout s; status None
    when the connection was refused, reset, closed unanswered or timed out."""
    t0 = time.monotonic()
    try:
        s = connect(port, src, timeout)
        try:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
                      .encode())
            data = b""
            while b"\r\n" not in data:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        finally:
            s.close()
    except OSError:
        return None, time.monotonic() - t0
    parts = data.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return status, time.monotonic() - t0


def closed_by_peer(s):
    """True when the server has closed s (EOF or reset), without waiting."""
    s.setblocking(False)
    try:
        return s.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True
    finally:
        s.setblocking(True)


def test_slow_loris(c):
    port = c.nodes[0].rest_port
    held = []
    try:
        for ip in range(1, 9):
            for _ in range(25):
                try:
                    s = connect(port, f"127.0.1.{ip}")
                    s.sendall(HEAD)
                    held.append(s)
                except OSError:
                    pass
        # every connection the server had is taken by now; the probes must still get through
        worst = 0.0
        for path, ok in (("/healthz", (200,)), ("/readyz", (200, 503)), ("/healthz", (200,)),
                         ("/readyz", (200, 503))):
            st, secs = get(port, path, "127.0.0.200", timeout=1.0)
            assert st in ok and secs < 1.0, f"{path} with 200 slow clients: status {st} " \
                f"after {secs:.2f} s"
            worst = max(worst, secs)
        still = sum(1 for s in held if not closed_by_peer(s))
    finally:
        for s in held:
            s.close()
    assert c.nodes[0].alive()
    return f"200 slow clients (8 addresses): /healthz and /readyz answered, slowest " \
        f"{worst * 1000:.0f} ms; {still} slow connections still open"


def test_per_ip_limit(c):
    port = c.nodes[0].rest_port
    held = []
    try:
        for _ in range(PER_IP):
            s = connect(port, "127.0.2.1")
            s.sendall(HEAD)
            held.append(s)
        # the server has registered them all once it answers a request after them
        st, _ = get(port, "/healthz", "127.0.2.2", timeout=5)
        assert st == 200, st
        st, secs = get(port, "/healthz", "127.0.2.1", timeout=5)
        assert st is None, f"connection {PER_IP + 1} from one address was answered: {st}"
        st, _ = get(port, "/healthz", "127.0.2.3", timeout=5)
        assert st == 200, f"another address was refused too: {st}"
    finally:
        for s in held:
            s.close()
    # the address gets its connections back once they are closed
    wait_until("127.0.2.1 served again", lambda: get(port, "/healthz", "127.0.2.1",
                                                     timeout=2)[0] == 200, 10)
    return f"{PER_IP} held from 127.0.2.1: its next one closed unanswered ({secs * 1000:.0f} " \
        "ms); other addresses served; served again after"


def test_trickled_head_cut(c):
    port = c.nodes[0].rest_port
    s = connect(port, "127.0.3.1", timeout=1.0)
    t0 = time.monotonic()
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    cut_after = None
    sent = 0
    try:
        while time.monotonic() - t0 < 25:
            try:  # a one-second wait for the server's close paces the trickle
                if s.recv(1) == b"":
                    cut_after = time.monotonic() - t0
                    break
            except socket.timeout:
                pass
            except OSError:
                cut_after = time.monotonic() - t0
                break
            try:
                s.sendall(b"a")
                sent += 1
            except OSError:
                cut_after = time.monotonic() - t0
                break
    finally:
        s.close()
    assert cut_after is not None, f"a head trickled for 25 s ({sent} bytes) was never cut"
    assert cut_after <= REQ_DEADLINE_S + 3, f"cut only after {cut_after:.1f} s"
    st, _ = get(port, "/healthz", "127.0.3.1", timeout=2)
    assert st == 200, st
    return f"a head trickled at 1 byte/s was cut after {cut_after:.1f} s ({sent} bytes sent; " \
        f"deadline {REQ_DEADLINE_S} s)"


def main():
    if not os.path.exists("/usr/bin/etcd"):
        print("skip: /usr/bin/etcd missing")
        return 77
    c = Cluster(BIN, n=1, ttl=3).start_all()
    try:
        wait_until("/healthz", lambda: get(c.nodes[0].rest_port, "/healthz", timeout=2)[0] ==
                   200, 20)
        return run_tests([
            ("slow-loris holds every connection: /healthz still answers within 1 s",
             lambda: test_slow_loris(c)),
            ("per-address connection limit", lambda: test_per_ip_limit(c)),
            ("a trickled request head is cut within the deadline",
             lambda: test_trickled_head_cut(c)),
        ])
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
