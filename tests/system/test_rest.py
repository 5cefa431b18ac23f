# SPDX-License-Identifier: MIT
"""The REST gateway against three real nodes, a real etcd and real backends: every /api/v1
endpoint and every original dhaf path, each documented error (status code, error code and
envelope), the token, /metrics as Prometheus text, /healthz and /readyz, the same answers from
every node, hostile input that must not hurt the node, a reload of the token, decommission,
an etcd outage; and, on a node of its own, TLS with client certificates and a taken port.
usage: /usr/bin/python3 test_rest.py BUILD_BIN_DIR"""
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import (Cluster, free_port, make_pki, run_tests, wait_until,  # noqa: E402
                     web_service_yaml)

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
TOKEN = "rest-test-token-7f3a"
EP_IPS = ("127.0.0.81", "127.0.0.82")


class Reply:
    def __init__(self, status, headers, body):
        self.status, self.headers, self.body = status, headers, body
        self.text = body.decode("utf-8", "replace")

    def json(self):
        return json.loads(self.text)

    def __repr__(self):
        return f"<{self.status} {self.headers.get('Content-Type')} {self.text[:300]!r}>"


def http(node, path, method="GET", body=None, token=TOKEN, headers=None, ctx=None,
         scheme="http", timeout=10):
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(f"{scheme}://127.0.0.1:{node.rest_port}{path}", data=body,
                                 method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
            return Reply(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return Reply(e.code, e.headers, e.read())


def ok_json(r, status=200):
    assert r.status == status, r
    assert r.headers.get("Content-Type") == "application/json", r
    return r.json()


def v1_err(r, status, code):
    """An /api/v1 error: the status, {"error":{"code","message"}}; returns the message."""
    assert r.status == status, r
    e = ok_json(r, status)["error"]
    assert e["code"] == code and e["message"], r
    return e["message"]


def orig_err(r, code, status=400):
    """The original envelope of a failure; returns the message."""
    j = ok_json(r, status)
    assert j["success"] is False and len(j["errors"]) == 1, j
    assert j["errors"][0]["code"] == code, j
    return j["errors"][0]["message"]


def orig_ok(r):
    j = ok_json(r)
    assert j["success"] is True and j["errors"] == [], j
    return j


def set_in_dhaf_section(node, text):
    """Adds lines to the node's dhaf: section (after tact-interval)."""
    cfg = open(node.config).read().replace("  tact-interval: 1\n", f"  tact-interval: 1\n{text}")
    open(node.config, "w").write(cfg)


def services_yaml(port):
    return web_service_yaml(EP_IPS, port)


def service(c, node=0):
    return ok_json(http(c.nodes[node], "/api/v1/services/web"))


def current(c, node=0):
    return service(c, node)["current_entry_point"]


def make():
    port = free_port()
    c = Cluster(BIN, n=3, ttl=3, services=services_yaml(port))
    for n in c.nodes:
        set_in_dhaf_section(n, f"  api-token: {TOKEN}\n")
    c.b1 = c.add_backend(EP_IPS[0], port)
    c.b2 = c.add_backend(EP_IPS[1], port)
    c.start_all()
    c.wait_leader(5)
    # Every node's view, not only one: the tests read from any of them, and a node's watch may
    # trail another's by a moment on a busy machine.
    wait_until("ep-1 current with three voters on both entry points, on every node", lambda: all(
        current(c, i) == "ep-1" and
        all(e["voters"] == 3 and e["healthy"] for e in service(c, i)["entry_points"]) and
        len(ok_json(http(c.nodes[i], "/api/v1/cluster"))["nodes"]) == 3
        for i in range(len(c.nodes))), 20)
    return c


# ------------------------------------------------------------------ /api/v1


def test_v1_reads(c):
    n = c.nodes[1]
    cl = ok_json(http(n, "/api/v1/cluster"))
    assert cl["cluster"] == "c1" and cl["leader"] == c.leader() and cl["epoch"] > 0, cl
    assert cl["answered_by"] == "node-2"
    assert sorted(x["name"] for x in cl["nodes"]) == ["node-1", "node-2", "node-3"], cl
    assert all(x["healthy"] for x in cl["nodes"]), cl
    roles = {x["name"]: x["role"] for x in cl["nodes"]}
    assert roles[cl["leader"]] == "NODE_ROLE_LEADER", roles
    assert all(x["rest_endpoint"].startswith("127.0.0.1:") for x in cl["nodes"]), cl
    assert cl["probers"] == []

    ls = ok_json(http(n, "/api/v1/services"))
    assert [s["name"] for s in ls["services"]] == ["web"], ls
    s = ok_json(http(n, "/api/v1/services/web"))
    assert s["name"] == "web", s
    assert s["domain"] == "site.test" and s["current_entry_point"] == "ep-1" and s["up"], s
    assert s["switchover_requirement"] == "" and s["last_switch"]["to"] == "ep-1", s
    eps = s["entry_points"]
    assert [(e["name"], e["ip"], e["priority"]) for e in eps] == \
        [("ep-1", EP_IPS[0], 1), ("ep-2", EP_IPS[1], 2)], eps
    assert eps[0]["state"] == "ENTRY_POINT_STATE_CURRENT"
    assert eps[1]["state"] == "ENTRY_POINT_STATE_READY"
    assert (eps[0]["votes_healthy"], eps[0]["votes_unhealthy"], eps[0]["voters"]) == (3, 0, 3)
    # every field is there even when empty: stable shapes
    assert set(s) >= {"name", "domain", "current_entry_point", "up", "panic", "quorum",
                      "switchover_requirement", "entry_points", "last_switch", "switching_to",
                      "current_since_ms"}, s.keys()

    cand = ok_json(http(n, "/api/v1/services/web/candidates"))
    assert cand == {"candidates": [{"name": "ep-1", "priority": 1},
                                   {"name": "ep-2", "priority": 2}]}, cand
    ev = ok_json(http(n, "/api/v1/events?limit=50"))["events"]
    assert any(e["kind"] == "new-leader" for e in ev), ev
    assert all(e["service"] == "" for e in ev)
    sev = ok_json(http(n, "/api/v1/services/web/events?limit=2"))["events"]
    assert 1 <= len(sev) <= 2 and all(e["service"] == "web" for e in sev), sev
    assert sev[0]["seq"] > sev[-1]["seq"] or len(sev) == 1, "newest first"
    v = ok_json(http(n, "/api/v1/version"))
    assert v["version"] and v["node"] == "node-2" and v["cluster"] == "c1" and v["git_commit"], v
    # HEAD is GET without the body
    h = http(n, "/api/v1/version", method="HEAD")
    assert h.status == 200 and h.body == b"", h
    return "cluster, services, service, candidates, events (cluster and service), version, HEAD"


def test_v1_changes(c):
    n = c.nodes[2]
    r = ok_json(http(n, "/api/v1/services/web/switchover", "POST",
                     {"entry_point": "ep-2", "requested_by": "rest-test"}), 202)
    assert "ep-2" in r["message"], r
    wait_until("ep-2 current", lambda: current(c) == "ep-2", 10)
    s = service(c)
    assert s["switchover_requirement"] == "ep-2" and s["last_switch"]["kind"] == "switchover", s
    pin = c.etcd.get_json(c.prefix + "services/web/switchover")
    assert pin["ep"] == "ep-2" and pin["requested_by"] == "rest-test", pin
    r = ok_json(http(n, "/api/v1/services/web/switchover", "DELETE"))
    assert r["purged_entry_point"] == "ep-2" and "purged" in r["message"], r
    wait_until("back on ep-1", lambda: current(c) == "ep-1", 10)
    # the query form, without a comment: the authenticated identity is the requester
    ok_json(http(n, "/api/v1/services/web/switchover?entry_point=ep-2", "POST"), 202)
    pin = c.etcd.get_json(c.prefix + "services/web/switchover")
    assert pin["ep"] == "ep-2" and pin["requested_by"] == "api-token", pin
    assert pin["actor"] == "api-token", pin
    wait_until("ep-2 current", lambda: current(c) == "ep-2", 10)
    r = ok_json(http(n, "/api/v1/services/web/switchover", "DELETE"))
    assert r["purged_entry_point"] == "ep-2", r
    wait_until("back on ep-1", lambda: current(c) == "ep-1", 10)
    r = ok_json(http(n, "/api/v1/services/web/switchover", "DELETE"))
    assert r["purged_entry_point"] == "", r
    evs = ok_json(http(n, "/api/v1/services/web/events"))["events"]
    kinds = [e["kind"] for e in evs]
    assert "switchover" in kinds and "switching" in kinds, kinds
    # the audit trail: each request and purge is an event naming who asked, from where
    asked = [e for e in evs if e["kind"] in ("switchover-requested", "switchover-purged")]
    assert [e["kind"] for e in asked] == ["switchover-purged", "switchover-purged",
                                          "switchover-requested", "switchover-purged",
                                          "switchover-requested"], kinds
    for e in asked:
        assert e["actor"] == "api-token" and e["role"] == "admin", e
        assert e["peer"] == "127.0.0.1", e
        assert "by api-token from 127.0.0.1" in e["message"], e
    assert asked[-1]["comment"] == "rest-test" and asked[-1]["to"] == "ep-2", asked[-1]
    assert "comment" not in asked[-3] or not asked[-3]["comment"], asked[-3]
    assert "no switchover request was pending" in asked[0]["message"], asked[0]
    return ("switchover by body and by query (202, pin in etcd), purge (200), events recorded "
            "with the caller's identity, address and comment")


# ------------------------------------------------------------------ the original's paths


def test_original_paths(c):
    n = c.nodes[0]
    r = http(n, "/ping", token=None)
    assert r.status == 200 and r.json() == "pong", r
    d = orig_ok(http(n, "/dhaf/status"))["data"]
    assert d["leader"] == c.leader(), d
    assert sorted((x["name"], x["healthy"]) for x in d["nodes"]) == \
        [("node-1", True), ("node-2", True), ("node-3", True)], d
    d = orig_ok(http(n, "/services/status"))["data"]
    want = {"name": "web", "domain": "site.test", "currentEntryPointName": "ep-1",
            "entryPoints": [{"name": "ep-1", "healthy": True, "priority": 1},
                            {"name": "ep-2", "healthy": True, "priority": 2}],
            "switchoverRequirement": None}
    assert d == [want], d
    d = orig_ok(http(n, "/service/status?serviceName=web"))["data"]
    assert d == want, d
    d = orig_ok(http(n, "/switchover/candidates?serviceName=web"))["data"]
    assert d == [{"name": "ep-1", "priority": 1}, {"name": "ep-2", "priority": 2}], d
    j = orig_ok(http(n, "/switchover?serviceName=web&entryPointId=ep-2"))
    assert "data" not in j, j
    wait_until("ep-2 current", lambda: orig_ok(http(n, "/service/status?serviceName=web"))[
        "data"]["currentEntryPointName"] == "ep-2", 10)
    d = orig_ok(http(n, "/service/status?serviceName=web"))["data"]
    assert d["switchoverRequirement"] == "ep-2", d
    j = orig_ok(http(n, "/switchover/purge?serviceName=web"))
    assert "data" not in j, j
    wait_until("back on ep-1", lambda: current(c) == "ep-1", 10)
    assert orig_ok(http(n, "/service/status?serviceName=web"))["data"][
        "switchoverRequirement"] is None
    return "/ping, /dhaf/status, /services/status, /service/status, /switchover/candidates, " \
        "/switchover, /switchover/purge (decommission: below)"


# ------------------------------------------------------------------ errors


def test_errors(c):
    n = c.nodes[1]
    checks = 0

    def v1(path, method, status, code, body=None, token=TOKEN, contains=None):
        nonlocal checks
        msg = v1_err(http(n, path, method, body=body, token=token), status, code)
        assert contains is None or contains in msg, (path, msg)
        checks += 1

    def orig(path, code, status=400, token=TOKEN, contains=None):
        nonlocal checks
        msg = orig_err(http(n, path, token=token), code, status)
        assert contains is None or contains in msg, (path, msg)
        checks += 1

    v1("/api/v1/services/nope", "GET", 404, "NOT_FOUND", contains='no service named "nope"')
    v1("/api/v1/services/nope/candidates", "GET", 404, "NOT_FOUND")
    v1("/api/v1/services/nope/events", "GET", 404, "NOT_FOUND")
    v1("/api/v1/services/nope/switchover", "DELETE", 404, "NOT_FOUND")
    v1("/api/v1/services/nope/switchover", "POST", 404, "NOT_FOUND", {"entry_point": "ep-1"})
    v1("/api/v1/services/bad%20name", "GET", 400, "INVALID_ARGUMENT", contains="not a valid")
    v1("/api/v1/services/web/switchover", "POST", 404, "NOT_FOUND", {"entry_point": "ep-9"},
       contains='no entry point "ep-9"')
    v1("/api/v1/services/web/switchover", "POST", 400, "INVALID_ARGUMENT", {},
       contains="entry_point is required")
    v1("/api/v1/services/web/switchover", "POST", 400, "INVALID_ARGUMENT", b'{"entry_point": ',
       contains="invalid JSON")
    v1("/api/v1/services/web/switchover", "POST", 400, "INVALID_ARGUMENT", b'["ep-2"]',
       contains="expected a JSON object")
    v1("/api/v1/services/web/switchover", "POST", 400, "INVALID_ARGUMENT", {"entryPoint": "ep-2"},
       contains="unknown field")
    v1("/api/v1/services/web/switchover", "POST", 400, "INVALID_ARGUMENT", {"entry_point": 2})
    v1("/api/v1/services/web/switchover", "POST", 400, "INVALID_ARGUMENT",
       {"entry_point": "../x"})
    v1("/api/v1/services/web/switchover?entry_point=ep-1", "POST", 400, "INVALID_ARGUMENT",
       {"entry_point": "ep-2"}, contains="the body says")
    v1("/api/v1/services/web/switchover", "POST", 413, "PAYLOAD_TOO_LARGE",
       b'{"entry_point": "' + b"x" * (1 << 20) + b'"}')
    v1("/api/v1/nodes/node-2", "DELETE", 409, "FAILED_PRECONDITION", contains="is alive")
    v1("/api/v1/nodes/node-9", "DELETE", 404, "NOT_FOUND", contains='no dhaf node named "node-9"')
    v1("/api/v1/events?limit=abc", "GET", 400, "INVALID_ARGUMENT", contains="limit")
    v1("/api/v1/events?limit=1001", "GET", 400, "INVALID_ARGUMENT")
    v1("/api/v1/nope", "GET", 404, "NOT_FOUND")
    v1("/api/v1/services/web/nope", "GET", 404, "NOT_FOUND")
    v1("/api/v1/services?" + "&".join(f"k{i}=v" for i in range(40)), "GET", 400,
       "INVALID_ARGUMENT", contains="query parameters")
    r = http(n, "/api/v1/services", "PUT", body=b"{}")
    v1_err(r, 405, "METHOD_NOT_ALLOWED")
    assert r.headers.get("Allow") == "GET, HEAD", r.headers
    r = http(n, "/api/v1/services/web/switchover", "GET")
    v1_err(r, 405, "METHOD_NOT_ALLOWED")
    assert r.headers.get("Allow") == "POST, DELETE", r.headers
    checks += 2
    # the token
    for tok, why in ((None, "missing"), ("wrong", "invalid token"), (TOKEN + "x", "invalid")):
        r = http(n, "/api/v1/services", token=tok)
        assert why in v1_err(r, 401, "UNAUTHENTICATED"), r
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer"), r.headers
        checks += 1
    r = http(n, "/api/v1/services", token=None, headers={"Authorization": f"Basic {TOKEN}"})
    v1_err(r, 401, "UNAUTHENTICATED")
    r = http(n, "/api/v1/nope", token=None)  # no path discovery without the token
    v1_err(r, 401, "UNAUTHENTICATED")
    r = http(n, "/metrics", token=None)
    v1_err(r, 401, "UNAUTHENTICATED")
    for path in ("/healthz", "/readyz", "/ping"):
        assert http(n, path, token=None).status == 200, path
    checks += 6
    assert not any(TOKEN in line for node in c.nodes for line in node.log_lines()), \
        "the token appears in a log"

    # the original's paths and codes
    orig("/service/status?serviceName=nope", 1301, contains="nope")
    orig("/service/status?serviceName=%3Cscript%3E", 1301)
    orig("/switchover/purge?serviceName=nope", 1301)
    orig("/switchover/candidates?serviceName=nope", 1301)
    orig("/switchover?serviceName=nope&entryPointId=ep-1", 1301)
    orig("/switchover?serviceName=web&entryPointId=ep-9", 1101, contains="ep-9")
    orig("/dhaf/node/decommission?name=node-2", 1202, contains="alive")
    orig("/dhaf/node/decommission?name=node-9", 1201, contains="node-9")
    orig("/service/status", 400, contains="serviceName")
    orig("/service/status?serviceName=", 400)
    orig("/switchover?serviceName=web", 400, contains="entryPointId")
    orig("/switchover/purge", 400)
    orig("/switchover/candidates", 400)
    orig("/dhaf/node/decommission", 400, contains="name")
    orig("/nope", 404, contains="Endpoint not found.")
    orig("/dhaf/status/x", 404, contains="Endpoint not found.")
    orig("/dhaf/status", 401, status=401, token=None)
    orig("/services/status", 401, status=401, token="wrong")
    r = http(n, "/ping", "POST", body=b"")
    assert orig_err(r, 405) and r.headers.get("Allow") == "GET, HEAD", r

    # an unhealthy target
    c.b2.stop()
    wait_until("ep-2 unhealthy", lambda: not service(c, 1)["entry_points"][1]["healthy"], 10)
    v1("/api/v1/services/web/switchover", "POST", 409, "FAILED_PRECONDITION",
       {"entry_point": "ep-2"}, contains="not healthy")
    orig("/switchover?serviceName=web&entryPointId=ep-2", 1102, contains="not healthy")
    cand = ok_json(http(n, "/api/v1/services/web/candidates"))["candidates"]
    assert cand == [{"name": "ep-1", "priority": 1}], cand
    assert c.etcd.get_json(c.prefix + "services/web/switchover") is None
    c.b2.start()
    wait_until("ep-2 healthy again", lambda: service(c, 1)["entry_points"][1]["healthy"], 10)
    return f"{checks + 4} error replies: status, code, message, envelope, Allow, " \
        "WWW-Authenticate; unhealthy target 409/1102; no token in the logs"


# ------------------------------------------------------------------ /metrics, probes

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"'
                    r'(?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*")*)?\})? '
                    r'(-?[0-9.eE+-]+|NaN|\+Inf|-Inf)$')


def parse_prometheus(text):
    """{(name, frozenset(labels)): value}, with every line checked against the format."""
    samples, types = {}, {}
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram", "summary", "untyped"), line
            types[name] = kind
            continue
        m = SAMPLE.match(line)
        assert m, f"not Prometheus text: {line!r}"
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"',
                                      m.group(2) or ""))
        key = (m.group(1), labels)
        assert key not in samples, f"duplicate series {line!r}"
        samples[key] = float(m.group(3))
        base = re.sub(r"_(bucket|sum|count)$", "", m.group(1))
        assert m.group(1) in types or base in types, f"no TYPE for {line!r}"
    return samples, types


def metrics(node):
    r = http(node, "/metrics")
    assert r.status == 200, r
    assert r.headers.get("Content-Type").startswith("text/plain; version=0.0.4"), r.headers
    return parse_prometheus(r.text)


def test_metrics(c):
    wait_until("three healthy votes on both entry points", lambda: all(
        e["votes_healthy"] == 3 and e["voters"] == 3 for e in service(c)["entry_points"]), 15)
    wait_until("every node's view at the same epoch", lambda: len(
        {ok_json(http(n, "/api/v1/cluster"))["epoch"] for n in c.nodes}) == 1, 10)
    epoch = ok_json(http(c.nodes[0], "/api/v1/cluster"))["epoch"]
    all_s = [metrics(n) for n in c.nodes]
    leaders = 0
    for s, t in all_s:
        g = lambda name, **kw: s[(name, frozenset(kw.items()))]  # noqa: E731
        assert g("dhaf_up") == 1 and t["dhaf_up"] == "gauge"
        leaders += g("dhaf_leader")
        assert g("dhaf_epoch") == epoch, (g("dhaf_epoch"), epoch)
        assert any(k[0] == "dhaf_build_info" and ("version", "0.1.0") in k[1] for k in s), s
        for ep in ("ep-1", "ep-2"):
            got = (g("dhaf_ep_healthy", service="web", entry_point=ep),
                   g("dhaf_ep_votes", service="web", entry_point=ep, opinion="healthy"),
                   g("dhaf_ep_votes", service="web", entry_point=ep, opinion="unhealthy"),
                   g("dhaf_ep_voters", service="web", entry_point=ep))
            assert got == (1, 3, 0, 3), (ep, got)
        for kind in ("failover", "switchover", "switching"):
            assert ("dhaf_switches_total", frozenset({("service", "web"), ("kind", kind)})) in s
        assert t["dhaf_switches_total"] == "counter" and t["dhaf_etcd_errors_total"] == "counter"
        assert g("dhaf_etcd_errors_total") >= 0
        assert t["dhaf_check_latency_seconds"] == "histogram"
        buckets = sorted((float(dict(k[1])["le"]), v) for k, v in s.items()
                         if k[0] == "dhaf_check_latency_seconds_bucket")
        assert [b for b, _ in buckets][:2] == [0.005, 0.01] and buckets[-1][0] == float("inf")
        assert [b for b, _ in buckets][-2] == 10.0, buckets
        assert all(buckets[i][1] <= buckets[i + 1][1] for i in range(len(buckets) - 1)), buckets
        assert buckets[-1][1] == g("dhaf_check_latency_seconds_count") > 0
        assert g("dhaf_check_latency_seconds_sum") >= 0
        for k in ("dhaf_probe_rounds_total", "dhaf_probe_rounds_overran_total",
                  "dhaf_probe_round_seconds_total"):
            assert t[k] == "counter", (k, t.get(k))
        assert g("dhaf_probe_rounds_total") > 0  # the nodes have been probing a while
        assert 0 <= g("dhaf_probe_rounds_overran_total") <= g("dhaf_probe_rounds_total")
        assert g("dhaf_probe_round_seconds_total") > 0
    assert leaders == 1, "exactly one node says it leads"
    # the switches of the tests above were done by the leader and counted there
    lead = next(s for s, _ in all_s if s[("dhaf_leader", frozenset())] == 1)
    sw = lead[("dhaf_switches_total", frozenset({("service", "web"), ("kind", "switchover")}))]
    back = lead[("dhaf_switches_total", frozenset({("service", "web"), ("kind", "switching")}))]
    assert sw >= 3 and back >= 3, (sw, back)
    return f"parses as Prometheus text on all nodes; one leader; leader counted {sw:.0f} " \
        f"switchovers and {back:.0f} switchings; histogram monotonic"


def test_probes(c):
    for n in c.nodes:
        r = http(n, "/healthz", token=None)
        assert r.status == 200 and r.text == "ok\n" and r.headers["Content-Type"].startswith(
            "text/plain"), r
        r = http(n, "/readyz", token=None)
        assert r.status == 200 and r.text == "ready\n", r
    return "/healthz and /readyz 200 on all nodes (readyz 503: see the etcd outage)"


def test_same_answer_everywhere(c):
    def norm(i, path, drop=()):
        j = ok_json(http(c.nodes[i], path))
        for k in drop:
            (j.get("data") if "data" in j else j).pop(k, None)
        return json.dumps(j, sort_keys=True)
    # "view" is each node's own: its age and the revision it has seen
    for path, drop in (("/api/v1/services", ("view",)), ("/services/status", ()),
                       ("/api/v1/cluster", ("answered_by", "view")), ("/dhaf/status", ()),
                       ("/api/v1/services/web/candidates", ()),
                       ("/api/v1/services/web/events?limit=5", ("view",))):
        wait_until(f"the same {path} from every node",
                   lambda: norm(0, path, drop) == norm(1, path, drop) == norm(2, path, drop), 10)
    return "/api/v1/services, /services/status, /api/v1/cluster (but answered_by), " \
        "/dhaf/status, candidates, events identical on the three nodes"


# ------------------------------------------------------------------ hostile input


def raw(node, data, timeout=5):
    """Sends raw bytes; returns what came back (b"" when the server closed)."""
    s = socket.create_connection(("127.0.0.1", node.rest_port), timeout=timeout)
    out = b""
    try:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    except OSError:
        pass
    finally:
        s.close()
    return out


def test_hostile_input(c):
    n = c.nodes[0]
    auth = f"Authorization: Bearer {TOKEN}\r\n".encode()

    def req(line, headers=b"", body=b""):
        return line + b"\r\nHost: x\r\n" + auth + headers + b"\r\n" + body

    def post(body):
        return req(b"POST /api/v1/services/web/switchover HTTP/1.1",
                   b"Content-Length: %d\r\n" % len(body), body)

    def status(resp):
        m = re.match(rb"HTTP/1\.[01] (\d{3})", resp)
        return int(m.group(1)) if m else None

    cases = [
        (b"GARBAGE\r\n\r\n", None),
        (b"\x00\xff\xfe" * 1000, None),
        (req(b"GET /" + b"a" * 100000 + b" HTTP/1.1"), None),
        (req(b"GET /ping HTTP/1.1", b"X-Big: " + b"a" * 70000 + b"\r\n"), None),
        (req(b"GET /api/v1/services/%ff%fe HTTP/1.1"), 400),
        (req(b"GET /api/v1/services/" + b"a" * 65 + b" HTTP/1.1"), 400),
        (req(b"GET /service/status?serviceName=%ff%00 HTTP/1.1"), 400),
        (req(b"GET /api/v1/services/web/events?limit=-1 HTTP/1.1"), 400),
        (req(b"GET /api/v1/services/web/events?limit=99999999999999999999 HTTP/1.1"), 400),
        (req(b"GET /api/v1/services?" + b"x=" + b"a" * 5000 + b" HTTP/1.1"), 400),
        (req(b"GET /api/v1//// HTTP/1.1"), 404),
        (req(b"GET /api/v1/services/web/../web HTTP/1.1"), None),
        (req(b"POST /api/v1/services/web/switchover HTTP/1.1",
             b"Transfer-Encoding: chunked\r\n",
             b"".join(b"4000\r\n" + b"a" * 0x4000 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"),
         413),
        (req(b"POST /api/v1/services/web/switchover HTTP/1.1",
             b"Content-Length: 99999999999\r\nExpect: 100-continue\r\n"), 413),
        (req(b"POST /api/v1/services/web/switchover HTTP/1.1", b"Content-Length: -5\r\n"), None),
        (req(b"POST /api/v1/services/web/switchover HTTP/1.1", b"Content-Length: 10\r\n",
             b"{"), None),  # shorter than announced: the connection times out or closes
        (post(b"[" * 10000 + b"]" * 10000), 400),
        (post(b'{"entry_point":"\xff"}'), 400),
        (post(b'{"entry_point":"\\u0000"}'), 400),
        (post(b'{"entry_point":"ep-1","entry_point":"ep-2"}'), 400),
        (post(b'{"entry_point":"ep-1","requested_by":"' + b"x" * 129 + b'"}'), 400),
        (post(b'{"entry_point":"ep-1","requested_by":"a\\nb"}'), 400),
        (b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + b"t" * 5000 +
         b"\r\n\r\n", 401),
        (b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer\r\n\r\n", 401),
        (b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\nAuthorization: \xff\xfe\r\n\r\n", 401),
        (req(b"BREW /api/v1/services HTTP/1.1"), 405),
        (req(b"GET /api/v1/services HTTP/9.9"), None),
    ]
    results = []
    for data, want in cases:
        got = status(raw(n, data, timeout=3 if b"Content-Length: 10\r" in data else 10))
        results.append(got)
        assert want is None or got == want, (data[:120], got, want)
    # slow clients hold a connection each; the node still answers others
    slow = []
    for _ in range(20):
        s = socket.create_connection(("127.0.0.1", n.rest_port), timeout=5)
        s.sendall(b"GET /api/v1/services HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    assert http(n, "/healthz", token=None).status == 200
    assert ok_json(http(n, "/api/v1/version"))["node"] == "node-1"
    for s in slow:
        s.close()
    assert n.alive(), "the node died"
    wait_until("the node still answers", lambda: http(n, "/healthz", token=None).status == 200, 5)
    return f"{len(cases)} malformed or oversized requests and 20 slow clients: " \
        f"statuses {sorted(set(x for x in results if x))}, node alive and serving"


# ------------------------------------------------------------------ reload, decommission


def test_reload_token(c):
    # a follower: SIGHUP on the leader waits for its office to close (leader_reload)
    n = next(x for x in c.nodes if x.name != c.leader())
    saved = open(n.config).read()
    open(n.config, "w").write(saved.replace(f"api-token: {TOKEN}", "api-token: reloaded-tok-1"))
    seen = len(n.log_events("reloaded"))
    n.signal(signal.SIGHUP)
    wait_until("the reload", lambda: len(n.log_events("reloaded")) > seen, 10)
    v1_err(http(n, "/api/v1/services"), 401, "UNAUTHENTICATED")
    ok_json(http(n, "/api/v1/services", token="reloaded-tok-1"))

    # the gRPC API takes the new token too (dhafctl)
    def ctl(token):
        return subprocess.run([os.path.join(c.bin_dir, "dhafctl"), "status-dhaf", "--endpoint",
                               f"127.0.0.1:{n.grpc_port}", "--token", token],
                              capture_output=True, text=True, timeout=20)
    r = ctl(TOKEN)
    assert r.returncode != 0 and "token" in (r.stdout + r.stderr), \
        f"gRPC still takes the old token: {r.returncode} {r.stdout}{r.stderr}"
    r = ctl("reloaded-tok-1")
    assert r.returncode == 0, f"gRPC refuses the new token: {r.stdout}{r.stderr}"
    open(n.config, "w").write(saved)
    n.signal(signal.SIGHUP)
    wait_until("the token back", lambda: http(n, "/api/v1/version").status == 200, 10)
    wait_until("the second reload", lambda: len(n.log_events("reloaded")) > seen + 1, 10)
    return f"SIGHUP on {n.name} with a new api-token: the old one is refused, the new one " \
        "works, on REST and gRPC"


def test_decommission(c):
    c.nodes[2].kill()
    n = c.nodes[0]

    def healthy3():
        return {x["name"]: x["healthy"] for x in ok_json(http(n, "/api/v1/cluster"))["nodes"]}
    wait_until("node-3 down", lambda: healthy3().get("node-3") is False, 15)
    r = ok_json(http(n, "/api/v1/nodes/node-3", "DELETE"))
    assert "node-3" in r["message"], r
    # the status is read from the node's view, which the etcd watch brings up to date
    wait_until("node-3 gone from the view", lambda: "node-3" not in healthy3(), 5)
    v1_err(http(n, "/api/v1/nodes/node-3", "DELETE"), 404, "NOT_FOUND")
    c.nodes[2].start()
    wait_until("node-3 back", lambda: healthy3().get("node-3") is True, 15)
    c.nodes[2].kill()
    wait_until("node-3 down again", lambda: healthy3().get("node-3") is False, 15)
    j = orig_ok(http(n, "/dhaf/node/decommission?name=node-3"))
    assert "data" not in j, j
    names = [x["name"] for x in orig_ok(http(n, "/dhaf/status"))["data"]["nodes"]]
    assert names and "node-3" not in names, names
    orig_err(http(n, "/dhaf/node/decommission?name=node-3"), 1201)
    return "DELETE /api/v1/nodes/node-3 and /dhaf/node/decommission of a dead node; then 404/1201"


def test_etcd_outage(c):
    """Last: etcd stops. Reads answer from the node's view, marked stale (the view's state in
    /api/v1, an X-Dhaf-Stale header on every path); changes answer 503 / the original's 500
    with code -1; /readyz 503; /healthz and /metrics 200."""
    n = c.nodes[1]
    c.etcd.stop()
    wait_until("/readyz 503", lambda: http(n, "/readyz", token=None).status == 503, 15)
    r = http(n, "/readyz", token=None)
    assert r.text.startswith("not ready: etcd"), r
    assert http(n, "/healthz", token=None).status == 200
    r = ok_json(http(n, "/api/v1/services", timeout=30))
    assert r["view"]["stale"] is True and r["view"]["age_ms"] >= 3000, r["view"]
    assert r["services"][0]["current_entry_point"] == "ep-1", r
    r = http(n, "/services/status", timeout=30)
    assert r.status == 200 and r.json()["success"] is True, r
    assert r.headers.get("X-Dhaf-Stale", "").startswith("age_ms="), r.headers
    v1_err(http(n, "/api/v1/services/web/switchover", "POST", {"entry_point": "ep-2"},
                timeout=30), 503, "UNAVAILABLE")
    orig_err(http(n, "/switchover/purge?serviceName=web", timeout=30), -1, status=500)
    s, _ = metrics(n)
    assert s[("dhaf_etcd_reachable", frozenset())] == 0
    assert s[("dhaf_view_age_seconds", frozenset())] >= 3
    assert s[("dhaf_etcd_errors_total", frozenset())] > 0
    assert n.alive()
    return "etcd down: reads 200 from the stale view (view.stale, X-Dhaf-Stale), changes " \
        "503 UNAVAILABLE / original 500/-1, readyz 503, healthz 200, dhaf_etcd_reachable 0"


# ------------------------------------------------------------------ TLS, port in use


def test_tls_and_port_in_use():
    d = tempfile.mkdtemp(prefix="dhaf-pki-")
    make_pki(d)
    c = Cluster(BIN, n=2, ttl=3, services=services_yaml(free_port()))
    try:
        tls = c.nodes[0]
        set_in_dhaf_section(tls, f"  api-token: {TOKEN}\n")
        cfg = open(tls.config).read().replace(
            f"web-api: {{host: 127.0.0.1, port: {tls.rest_port}}}",
            f"web-api: {{host: 127.0.0.1, port: {tls.rest_port}, tls: {{cert-file: {d}/server.pem,"
            f" key-file: {d}/server.key, client-ca-file: {d}/ca.pem}}}}")
        open(tls.config, "w").write(cfg)
        # node-2's REST port is taken: it must refuse to start, saying why
        busy = socket.socket()
        busy.bind(("127.0.0.1", c.nodes[1].rest_port))
        busy.listen(1)
        c.start_all()
        rc = c.nodes[1].proc.wait(15)
        busy.close()
        fails = c.nodes[1].log_events("start-failed")
        assert rc == 1 and fails and "REST API" in fails[0]["reason"] and \
            "in use" in fails[0]["reason"], (rc, fails)

        c.wait_leader(10)
        ctx = ssl.create_default_context(cafile=f"{d}/ca.pem")
        ctx.load_cert_chain(f"{d}/client.pem", f"{d}/client.key")
        wait_until("HTTPS answers", lambda: http(tls, "/healthz", token=None, ctx=ctx,
                                                  scheme="https").status == 200, 10)
        v = ok_json(http(tls, "/api/v1/version", ctx=ctx, scheme="https"))
        assert v["node"] == "node-1", v
        # a client certificate is needed for the API (not for the probes)
        bare = ssl.create_default_context(cafile=f"{d}/ca.pem")
        assert http(tls, "/readyz", token=None, ctx=bare, scheme="https").status in (200, 503)
        r = http(tls, "/api/v1/version", ctx=bare, scheme="https")
        assert "client certificate" in v1_err(r, 401, "UNAUTHENTICATED"), r
        rogue = ssl.create_default_context(cafile=f"{d}/ca.pem")
        rogue.load_cert_chain(f"{d}/rogue.pem", f"{d}/rogue.key")
        v1_err(http(tls, "/api/v1/version", ctx=rogue, scheme="https"), 401, "UNAUTHENTICATED")
        # and the token as well
        v1_err(http(tls, "/api/v1/version", ctx=ctx, scheme="https", token=None), 401,
               "UNAUTHENTICATED")
        # plain HTTP to the TLS port gets no API answer
        try:
            r = http(tls, "/api/v1/version", timeout=5)
            assert r.status >= 400, r
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        # TLS 1.1 is refused by the server (the client's own security level lowered to 0)
        def handshake(version):
            r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls.rest_port}",
                                version, "-cipher", "DEFAULT@SECLEVEL=0", "-CAfile",
                                f"{d}/ca.pem"], input="", capture_output=True, text=True,
                               timeout=20)
            return next((l for l in r.stdout.splitlines() if "Cipher is" in l), r.stdout[-200:])
        assert "Cipher is (NONE)" in handshake("-tls1_1"), handshake("-tls1_1")
        assert "TLSv1.2, Cipher is" in handshake("-tls1_2"), handshake("-tls1_2")
        assert tls.alive()
        return "HTTPS with a verified client certificate and token; no/rogue certificate -> " \
            "401; TLS <= 1.1 refused; a taken port stops the node with a clear error"
    finally:
        c.close()
        shutil.rmtree(d, ignore_errors=True)


def suite():
    c = make()
    try:
        rc = run_tests([
            ("/api/v1 reads", lambda: test_v1_reads(c)),
            ("/api/v1 switchover and purge", lambda: test_v1_changes(c)),
            ("the original's paths and envelope", lambda: test_original_paths(c)),
            ("documented errors", lambda: test_errors(c)),
            ("/metrics", lambda: test_metrics(c)),
            ("/healthz and /readyz", lambda: test_probes(c)),
            ("the same answer from any of the three nodes", lambda: test_same_answer_everywhere(c)),
            ("hostile input does not hurt the node", lambda: test_hostile_input(c)),
            ("reload of the api-token", lambda: test_reload_token(c)),
            ("decommission", lambda: test_decommission(c)),
            ("etcd outage", lambda: test_etcd_outage(c)),
        ])
    finally:
        c.close()
    return run_tests([("TLS, client certificates, port in use", test_tls_and_port_in_use)]) or rc


if __name__ == "__main__":
    sys.exit(suite())
