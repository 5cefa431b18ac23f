# SPDX-License-Identifier: MIT
"""Issue 15, REST: cross-site requests, DNS rebinding, HEAD, %00 and /readyz details.

A node on loopback without a token (the default) with an exec switcher that records its calls:
- a switchover / purge / decommission with a foreign Host (DNS rebinding), a foreign Origin, or
  Sec-Fetch-Site cross-site / same-site is refused with 403 and a JSON error, and is NOT done:
  no switchover request in etcd, the switcher not called, no node decommissioned;
- HEAD on the original's changing GET paths answers 405 and changes nothing;
- serviceName=main%00evil is refused with 400 naming the parameter (it was taken as "main");
- the same request from the node's own origin is done (the control: the test can see it).
A node with an api-token, etcd stopped: /readyz without the token says "not ready: etcd" and
nothing more; with the token it gives the details.
usage: /usr/bin/python3 test_rest_csrf.py BUILD_BIN_DIR"""
import http.client
import json
import os
import signal
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
from dhafsys import Cluster, free_port, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
EP_IPS = ("127.0.0.91", "127.0.0.92")
TOKEN = "csrf-test-token-5d1c9e07"


def services_yaml(port, d):
    return f"""services:
  - name: main
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: {EP_IPS[0]}}}
      - {{name: ep-2, ip: {EP_IPS[1]}}}
    switcher: {{type: exec, init: {d}/init.sh, switch: {d}/switch.sh, timeout: 2}}
    health-checker: {{type: web, port: {port}, path: /ok, timeout: 1, retries: 0}}
"""


def scripts(d):
    with open(f"{d}/init.sh", "w") as f:
        f.write(f"#!/bin/sh\ncat {d}/current 2>/dev/null || echo ep-1\n")
    with open(f"{d}/switch.sh", "w") as f:
        f.write(f"#!/bin/sh\necho \"$1\" >> {d}/calls\necho \"$1\" > {d}/current\n")
    for s in ("init.sh", "switch.sh"):
        os.chmod(f"{d}/{s}", 0o755)


def calls(d):
    try:
        with open(f"{d}/calls") as f:
            return f.read().split()
    except FileNotFoundError:
        return []


def req(node, method, path, headers=None, body=None, token=None):
    """(status, headers, body bytes). Host is whatever headers say (default: the address)."""
    conn = http.client.HTTPConnection("127.0.0.1", node.rest_port, timeout=10)
    h = dict(headers or {})
    skip_host = "Host" in h
    try:
        conn.putrequest(method, path, skip_host=skip_host, skip_accept_encoding=True)
        if token:
            h["Authorization"] = f"Bearer {token}"
        if body is not None:
            body = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
            h["Content-Length"] = str(len(body))
        for k, v in h.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def pin(c):
    return c.etcd.get_json(c.prefix + "services/main/switchover")


def make(token=None):
    port = free_port()
    c = Cluster(BIN, n=1, ttl=3, services="")
    c.d = c.workdir
    scripts(c.d)
    n = c.nodes[0]
    n.services = services_yaml(port, c.d)
    n.write_config(c.name, c.etcd.endpoint, 3)
    if token:
        cfg = open(n.config).read().replace("  tact-interval: 1\n",
                                            f"  tact-interval: 1\n  api-token: {token}\n")
        open(n.config, "w").write(cfg)
    c.add_backend(EP_IPS[0], port)
    c.add_backend(EP_IPS[1], port)
    c.start_all()
    c.wait_leader(10)

    def ready():
        s, _, b = req(n, "GET", "/api/v1/services/main", token=token)
        if s != 200:
            return False
        j = json.loads(b)
        return j["current_entry_point"] == "ep-1" and all(e["healthy"]
                                                           for e in j["entry_points"])
    wait_until("ep-1 current, both entry points healthy", ready, 30)
    return c


FOREIGN = [
    ("a foreign Host (DNS rebinding)", {"Host": "evil.example"}),
    ("a foreign Host with our port", {"Host": "evil.example:%d"}),
    ("a foreign Origin", {"Origin": "http://evil.example"}),
    ("Origin null", {"Origin": "null"}),
    ("Origin on another port", {"Origin": "http://127.0.0.1:1"}),
    ("Sec-Fetch-Site: cross-site", {"Sec-Fetch-Site": "cross-site"}),
    ("Sec-Fetch-Site: same-site", {"Sec-Fetch-Site": "same-site"}),
    ("everything a browser sends cross-site", {"Host": "evil.example", "Origin":
                                               "http://evil.example",
                                               "Sec-Fetch-Site": "cross-site"}),
]


def headers_for(n, h):
    return {k: (v % n.rest_port if "%d" in v else v) for k, v in h.items()}


def refused_403(status, body, what):
    assert status == 403, (what, status, body[:300])
    j = json.loads(body)
    msg = j["error"]["message"] if "error" in j else j["errors"][0]["message"]
    assert msg, (what, j)


def test_cross_site_refused(c):
    n = c.nodes[0]
    tried = 0
    for what, h in FOREIGN:
        h = headers_for(n, h)
        for method, path, body in (
                ("GET", "/switchover?serviceName=main&entryPointId=ep-2", None),
                ("POST", "/api/v1/services/main/switchover", {"entry_point": "ep-2"}),
                ("GET", "/dhaf/node/decommission?name=node-9", None),
                ("DELETE", "/api/v1/nodes/node-9", None)):
            s, _, b = req(n, method, path, h, body)
            refused_403(s, b, (what, method, path))
            tried += 1
            assert pin(c) is None, (what, method, path, "the switchover was recorded", pin(c))
    # purge: a real pin first (from our own origin), then foreign purges leave it
    s, _, b = req(n, "GET", "/switchover?serviceName=main&entryPointId=ep-2",
                  {"Origin": f"http://127.0.0.1:{n.rest_port}", "Sec-Fetch-Site": "same-origin"})
    assert s == 200, (s, b)
    wait_until("the switcher called for ep-2", lambda: calls(c.d) == ["ep-2"], 15)
    for what, h in FOREIGN:
        h = headers_for(n, h)
        for method, path in (("GET", "/switchover/purge?serviceName=main"),
                             ("DELETE", "/api/v1/services/main/switchover")):
            s, _, b = req(n, method, path, h)
            refused_403(s, b, (what, method, path))
            tried += 1
            assert pin(c) is not None and pin(c)["ep"] == "ep-2", (what, path, "purged")
    s, _, b = req(n, "DELETE", "/api/v1/services/main/switchover")
    assert s == 200, (s, b)
    wait_until("back on ep-1", lambda: calls(c.d) == ["ep-2", "ep-1"], 15)
    assert pin(c) is None
    # reads stay open to any Host
    s, _, b = req(n, "GET", "/service/status?serviceName=main", {"Host": "evil.example"})
    assert s == 200, (s, b)
    return f"{tried} foreign requests refused with 403 and not done (switcher calls " \
        f"{calls(c.d)} are the same-origin control's); reads from any Host 200"


def test_extra_names(c):
    """dhaf.web-api.names: a name the node is reached by (a reverse proxy's public name)
    passes the Host check without a token; a reload applies it; others stay refused."""
    n = c.nodes[0]
    proxy = {"Host": f"dhaf.example.test:{n.rest_port}"}
    path = "/switchover?serviceName=main&entryPointId=ep-2"
    s, _, b = req(n, "GET", path, proxy)
    refused_403(s, b, "a name not configured yet")
    assert pin(c) is None, pin(c)
    saved = open(n.config).read()
    open(n.config, "w").write(saved.replace(
        f"web-api: {{host: 127.0.0.1, port: {n.rest_port}}}",
        f"web-api: {{host: 127.0.0.1, port: {n.rest_port}, names: [dhaf.example.test]}}"))
    seen = len(n.log_events("reloaded"))
    n.signal(signal.SIGHUP)
    wait_until("the reload", lambda: len(n.log_events("reloaded")) > seen, 10)
    s, _, b = req(n, "GET", path, {"Host": "evil.example"})
    refused_403(s, b, "a foreign Host after the reload")
    s, _, b = req(n, "GET", path, proxy)
    assert s == 200 and pin(c) and pin(c)["ep"] == "ep-2", (s, b, pin(c))
    s, _, b = req(n, "DELETE", "/api/v1/services/main/switchover", proxy)
    assert s == 200 and pin(c) is None, (s, b)
    wait_until("back on ep-1", lambda: calls(c.d)[-1:] == ["ep-1"], 15)
    open(n.config, "w").write(saved)
    n.signal(signal.SIGHUP)
    wait_until("the second reload", lambda: len(n.log_events("reloaded")) > seen + 1, 10)
    return "Host dhaf.example.test: 403 before, 200 after adding it to dhaf.web-api.names " \
        "(SIGHUP); evil.example still 403"


def test_head_changes_nothing(c):
    n = c.nodes[0]
    before = calls(c.d)
    for path in ("/switchover?serviceName=main&entryPointId=ep-2",
                 "/switchover/purge?serviceName=main",
                 "/dhaf/node/decommission?name=node-9"):
        s, h, _ = req(n, "HEAD", path)
        assert s == 405, (path, s)
        assert h.get("Allow") == "GET", (path, h)
    assert pin(c) is None, pin(c)
    # the control: GET does it; then HEAD purge leaves the pin
    s, _, b = req(n, "GET", "/switchover?serviceName=main&entryPointId=ep-2")
    assert s == 200, (s, b)
    wait_until("the switcher called", lambda: len(calls(c.d)) == len(before) + 1, 15)
    s, _, _ = req(n, "HEAD", "/switchover/purge?serviceName=main")
    assert s == 405 and pin(c) is not None, (s, pin(c))
    s, _, _ = req(n, "GET", "/switchover/purge?serviceName=main")
    assert s == 200 and pin(c) is None
    wait_until("back on ep-1", lambda: calls(c.d)[-1:] == ["ep-1"], 15)
    s, _, _ = req(n, "HEAD", "/service/status?serviceName=main")
    assert s == 200
    return "HEAD on /switchover, /switchover/purge, /dhaf/node/decommission: 405 Allow: GET, " \
        "nothing done; HEAD on a read 200"


def test_nul_refused(c):
    n = c.nodes[0]
    before = calls(c.d)
    for path, param in (("/service/status?serviceName=main%00evil", "serviceName"),
                        ("/switchover?serviceName=main%00evil&entryPointId=ep-2", "serviceName"),
                        ("/switchover?serviceName=main&entryPointId=ep-2%0a", "entryPointId"),
                        ("/api/v1/services/main/switchover?entry_point=ep-2%00x", "entry_point"),
                        ("/api/v1/services?x%01=1", "x?")):
        method = "POST" if path.startswith("/api/v1/services/main/switchover") else "GET"
        s, _, b = req(n, method, path)
        assert s == 400, (path, s, b[:300])
        j = json.loads(b)
        msg = j["error"]["message"] if "error" in j else j["errors"][0]["message"]
        assert f'"{param}"' in msg and "control" in msg, (path, msg)
    s, _, b = req(n, "GET", "/switchover%00x?serviceName=main&entryPointId=ep-2")
    assert s == 400, (s, b)
    assert pin(c) is None and calls(c.d) == before, (pin(c), calls(c.d))
    return "%00 / %0a / %01 in a parameter -> 400 naming it; %00 in the path -> 400; nothing done"


def test_readyz_details(c):
    n = c.nodes[0]
    s, _, b = req(n, "GET", "/readyz")
    assert s == 200 and b == b"ready\n", (s, b)
    c.etcd.stop()

    def not_ready():
        s, _, b = req(n, "GET", "/readyz")
        return (s, b) if s == 503 else None
    s, b = wait_until("/readyz 503", not_ready, 20)
    assert b == b"not ready: etcd\n", b
    s, _, full = req(n, "GET", "/readyz", token=TOKEN)
    assert s == 503 and full.startswith(b"not ready: etcd") and len(full) > len(b), full
    s, _, b2 = req(n, "GET", "/readyz", token="wrong-token-wrong-token")
    assert s == 503 and b2 == b"not ready: etcd\n", b2
    return f"unauthenticated: {b!r}; with the token: {full[:80]!r}"


def main():
    for tool in ("/usr/bin/etcd",):
        if not os.path.exists(tool):
            print(f"skip: {tool} missing")
            return 77
    c = make()
    try:
        rc = run_tests([
            ("cross-site / foreign Host / Origin refused, not done",
             lambda: test_cross_site_refused(c)),
            ("HEAD changes nothing", lambda: test_head_changes_nothing(c)),
            ("NUL and control bytes refused", lambda: test_nul_refused(c)),
            ("dhaf.web-api.names: a proxy's name passes", lambda: test_extra_names(c)),
        ])
    finally:
        c.close()
    c = make(TOKEN)
    try:
        rc |= run_tests([("/readyz details only with the token", lambda: test_readyz_details(c))])
    finally:
        c.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
