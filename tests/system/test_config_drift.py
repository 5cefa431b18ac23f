# SPDX-License-Identifier: MIT
"""Config drift between nodes (issue 18, item 6), on one etcd and three real nodes.

node-1, node-2 and node-3 share a cluster; node-2's file says the same as node-1's in another key
order and layout (one hash: the hash is taken over the parsed config), node-3's health checker
has another timeout. Then:
- every node's /readyz stays 200 and says "config-drift" naming node-3, in the body and in the
  X-Dhaf-Warning header; /metrics has dhaf_config_drift 1; the REST status (/api/v1/cluster)
  and dhafctl status-dhaf (gRPC) name node-3, its short hash and the part that differs;
- the leader records ONE config-drift event naming node-3 (config-drift-grace: 1 s);
- the leader stops: the next leader does not announce the drift again;
- node-3's file is fixed and node-3 reloads (SIGHUP): the drift ends everywhere, ONE
  config-drift-cleared event, /readyz without the warning, dhaf_config_drift 0.
usage: /usr/bin/python3 test_config_drift.py BUILD_BIN_DIR"""
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import Cluster, free_port, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"


def services(port, timeout, reordered=False):
    if reordered:  # the same meaning: other key order, block style, a default written out
        return f"""services:
  - health-checker:
      receive-timeout: 5
      timeout: {timeout}
      port: {port}
      type: tcp
    switcher:
      timeout: 2
      switch: /bin/true
      init: /bin/true
      type: exec
    entry-points:
      - {{ip: 127.0.0.81, name: ep-1}}
      - {{ip: 127.0.0.82, name: ep-2}}
    domain: drift.test
    name: main
"""
    return f"""services:
  - name: main
    domain: drift.test
    entry-points:
      - {{name: ep-1, ip: 127.0.0.81}}
      - {{name: ep-2, ip: 127.0.0.82}}
    switcher: {{type: exec, init: /bin/true, switch: /bin/true, timeout: 2}}
    health-checker: {{type: tcp, port: {port}, timeout: {timeout}}}
"""


def http(node, path, timeout=10):
    """(status, headers, text) of a GET to node's REST API."""
    req = urllib.request.Request(f"http://127.0.0.1:{node.rest_port}{path}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


def cluster_status(node):
    return json.loads(http(node, "/api/v1/cluster")[2])


def metric(node, name):
    for line in http(node, "/metrics")[2].splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def ctl(node, *args):
    return subprocess.run([os.path.join(BIN, "dhafctl"), *args, "--endpoint",
                           f"127.0.0.1:{node.grpc_port}"],
                          capture_output=True, text=True, timeout=20)


def drift_of(node):
    """The status's config part (an empty dict when the field is absent: no drift)."""
    return cluster_status(node).get("config") or {}


def test_drift(c):
    n1, n2, n3 = c.nodes
    # the same meaning in two layouts: one hash
    st = wait_until("three nodes with a config hash",
                    lambda: (lambda s: s if sum(1 for n in s["nodes"] if n.get("config_hash")) == 3
                             else None)(cluster_status(n1)), 20)
    hashes = {n["name"]: n["config_hash"] for n in st["nodes"]}
    assert hashes["node-1"] == hashes["node-2"], hashes
    assert hashes["node-3"] != hashes["node-1"], hashes
    assert len(hashes["node-1"]) == 12, hashes
    for node in c.nodes:
        # (a node's view may reach node-3's record a moment after node-1's did)
        d = wait_until(f"{node.name}'s status showing the drift",
                       lambda: (lambda d: d if d.get("drift") else None)(drift_of(node)), 10)
        assert d.get("drift") is True and d.get("differing") == ["node-3"], d
        assert d.get("hash") == hashes["node-1"], d
        assert "node-3" in d.get("summary", "") and "services" in d["summary"], d
        n3_status = next(n for n in cluster_status(node)["nodes"] if n["name"] == "node-3")
        assert n3_status.get("config_differs") is True, n3_status
        assert n3_status.get("config_parts") == "services", n3_status
        # ready all the same, with the warning in the body and a header
        code, headers, body = http(node, "/readyz")
        assert code == 200, (node.name, code, body)
        assert body.startswith("ready\n") and "config-drift" in body and "node-3" in body, body
        warn = headers.get("X-Dhaf-Warning") or ""
        assert "config-drift" in warn and "node-3" in warn, dict(headers)
        assert metric(node, "dhaf_config_drift") == 1, node.name
        assert metric(node, f'dhaf_node_config_differs{{node="node-3",hash="{hashes["node-3"]}"}}') \
            == 1, node.name
    # dhafctl (gRPC): the table's column and the warning line; JSON has the field
    r = ctl(n2, "status-dhaf")
    assert r.returncode == 0, r.stderr
    assert "DIFFERS" in r.stdout and "config drift" in r.stdout and hashes["node-3"] in r.stdout, \
        r.stdout
    row = next(line for line in r.stdout.splitlines() if "node-3" in line and "DIFFERS" in line)
    assert "services" in row, r.stdout
    r = ctl(n2, "status-dhaf", "-o", "json")
    assert r.returncode == 0, r.stderr
    j = json.loads(r.stdout)
    assert j["config"]["drift"] is True and j["config"]["differing"] == ["node-3"], j
    # the event: one, naming node-3, from the leader (after the 1 s grace)
    ev = wait_until("a config-drift event", lambda: c.events("config-drift"), 15)
    assert len(ev) == 1 and ev[0]["node"] == "node-3", ev
    assert ev[0]["level"] == "warning" and "node-3" in ev[0]["message"], ev
    first_leader = c.leader()
    assert ev[0]["by"] == first_leader, (ev, first_leader)
    rec = c.etcd.get_json(c.prefix + "config-drift")
    assert rec and rec["drift"] is True, rec
    # the leader stops; the next leader does not announce the same drift again (checked below:
    # its config-drift-cleared comes with still one config-drift)
    lead = c.node(first_leader)
    assert lead.terminate()[0] == 0
    second = c.wait_leader(15, other_than=first_leader)
    # fix node-3's file and reload it
    n3.services = services(c.port, 1)
    n3.write_config(c.name, c.etcd.endpoint, 3, dhaf_extra="  config-drift-grace: 1\n")
    n3.signal(signal.SIGHUP)
    wait_until("node-3's reload", lambda: n3.log_events("reloaded"), 10)
    cleared = wait_until("a config-drift-cleared event", lambda: c.events("config-drift-cleared"),
                         15)
    assert len(cleared) == 1 and cleared[0]["by"] == second, (cleared, second)
    assert len(c.events("config-drift")) == 1, c.events("config-drift")
    alive = [n for n in c.nodes if n.alive()]
    for node in alive:
        wait_until(f"{node.name}'s status without the drift", lambda: not drift_of(node).get("drift"),
                   10)
        code, headers, body = http(node, "/readyz")
        assert code == 200 and body == "ready\n" and not headers.get("X-Dhaf-Warning"), \
            (code, body, dict(headers))
        assert metric(node, "dhaf_config_drift") == 0, node.name
    rec = c.etcd.get_json(c.prefix + "config-drift")
    assert rec and rec["drift"] is False, rec
    return f"hashes {hashes}; leaders {first_leader} then {second}"


def run():
    c = Cluster(BIN, n=3, ttl=3, name="drift1")
    try:
        c.port = free_port()
        c.add_backend("127.0.0.81", c.port)
        c.add_backend("127.0.0.82", c.port)
        for n in c.nodes:
            n.services = services(c.port, 2 if n.name == "node-3" else 1,
                                  reordered=n.name == "node-2")
            n.write_config(c.name, c.etcd.endpoint, 3, dhaf_extra="  config-drift-grace: 1\n")
        # node-1 leads (so that stopping the leader later leaves node-3's drift in place)
        c.nodes[0].start()
        assert c.wait_leader(15) == "node-1"
        for n in c.nodes[1:]:
            n.start()
        return run_tests([("config drift: status, readyz, metrics, events; fixed by a reload",
                           lambda: test_drift(c))])
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(run())
