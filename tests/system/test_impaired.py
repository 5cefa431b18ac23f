# SPDX-License-Identifier: MIT
"""Impaired vantage points abstain (issue 16 item 2), with a real network fault.

One node and two remote probers; the probers run in a network namespace of their own with two
links: one to the node (management: Prober.GetPlan / Report) and one to the service network
where the two entry points live (backends on 10.213.2.11 and .12, reached by the node through
its own addresses). The node and both probers vote: 3 expected voters, 2 needed.

Then the service link of the probers' namespace goes down. Both probers see every entry point
fail and still report through the management link; without the rule their two votes would be
a majority saying every entry point is down (ep-down twice, service-down: a false alarm, with
every backend healthy). With it their votes are impaired and count for nothing: the status
shows 2 impaired voters, the leader announces no-quorum (1 fresh of 3, 2 impaired; 2 needed)
and nothing else - no ep-down, no service-down, no switch. With the link back, the votes count
again (quorum).

Needs root (network namespaces) and iproute2; exit 77 (skipped) otherwise. Everything created
is removed on every exit path (also SIGINT/SIGTERM).
usage: /usr/bin/python3 test_impaired.py BUILD_BIN_DIR"""
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import (Cluster, Prober, free_port, run_tests, wait_until,  # noqa: E402
                     web_service_yaml)

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
if os.geteuid() != 0 or not shutil.which("ip"):
    print("skipped: needs root and iproute2 (ip) to create a network namespace")
    sys.exit(77)

TOKEN = "impaired-test-token-0123456789"
NS = f"dhaf-imp-{os.getpid()}"
TAG = f"{os.getpid() % 100000}"
MGMT_H, MGMT_P = f"dim{TAG}", f"dimp{TAG}"  # veth names: at most 15 characters
SVC_H, SVC_P = f"dis{TAG}", f"disp{TAG}"
NODE_IP, PROBER_IP = "10.213.1.1", "10.213.1.2"
SVC_GW, SVC_PROBER = "10.213.2.1", "10.213.2.2"
EP_IPS = ("10.213.2.11", "10.213.2.12")


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True, timeout=20)


def netns_up():
    ip("netns", "add", NS)
    for host, peer, host_ip, peer_ip in ((MGMT_H, MGMT_P, NODE_IP, PROBER_IP),
                                         (SVC_H, SVC_P, SVC_GW, SVC_PROBER)):
        ip("link", "add", host, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", NS)
        ip("addr", "add", f"{host_ip}/24", "dev", host)
        ip("link", "set", host, "up")
        ip("-n", NS, "addr", "add", f"{peer_ip}/24", "dev", peer)
        ip("-n", NS, "link", "set", peer, "up")
    ip("-n", NS, "link", "set", "lo", "up")
    for a in EP_IPS:  # the entry points: addresses of this host on the service network
        ip("addr", "add", f"{a}/32", "dev", SVC_H)


def netns_down():
    ip("netns", "del", NS, check=False)  # takes the peers, and so both veth pairs, with it
    for dev in (MGMT_H, SVC_H):
        ip("link", "del", dev, check=False)


class NsProber(Prober):
    """A dhaf-prober in the namespace, reaching the node over the management link."""

    def __init__(self, name, c, grpc_port):
        super().__init__(name, BIN, c.workdir, [], TOKEN + name)
        with open(self.config, "w") as f:
            f.write(f"""prober:
  name: {name}
  location: the probers' namespace
  token: "{TOKEN + name}"
  nodes: ["{NODE_IP}:{grpc_port}"]
  timeout: 2
  insecure: true
log: {{level: debug}}
""")

    def start(self):
        log = open(self.log, "ab")
        self.proc = subprocess.Popen(["ip", "netns", "exec", NS, self.bin, "--config",
                                      self.config], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        return self


def status(n):
    req = urllib.request.Request(f"http://127.0.0.1:{n.rest_port}/api/v1/services/web",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def make():
    port = free_port()
    services = web_service_yaml(EP_IPS, port) + f"""probers:
  - {{name: p1, token: "{TOKEN}p1"}}
  - {{name: p2, token: "{TOKEN}p2"}}
"""
    c = Cluster(BIN, n=1, ttl=3, services=services)
    n = c.nodes[0]
    cfg = open(n.config).read()
    cfg = cfg.replace(f"grpc-api: {{host: 127.0.0.1, port: {n.grpc_port}}}",
                      f"grpc-api: {{host: 0.0.0.0, port: {n.grpc_port}}}")
    cfg = cfg.replace("  tact-interval: 1\n", f"  tact-interval: 1\n  api-token: {TOKEN}\n")
    open(n.config, "w").write(cfg)
    for a in EP_IPS:
        c.add_backend(a, port)
    c.probers = [NsProber("p1", c, n.grpc_port), NsProber("p2", c, n.grpc_port)]
    return c


def test_impaired_probers_abstain(c):
    n = c.nodes[0]
    c.start_all()
    for p in c.probers:
        p.start()
    c.wait_leader(10)
    wait_until("3 fresh voters, ep-1 current",
               lambda: (lambda s: s["voters_fresh"] == 3 and s["current_entry_point"] == "ep-1"
                        and all(e["healthy"] for e in s["entry_points"]))(status(n)), 30)
    s = status(n)
    assert s["voters_expected"] == 3 and s["voters_needed"] == 2, s
    before = {k: len(c.events(k, service="web"))
              for k in ("ep-down", "service-down", "failover", "no-quorum", "quorum")}

    ip("-n", NS, "link", "set", SVC_P, "down")  # the probers' service network is gone
    wait_until("2 impaired voters", lambda: status(n).get("voters_impaired") == 2, 15)
    wait_until("no-quorum", lambda: len(c.events("no-quorum", service="web")) >
               before["no-quorum"], 10)
    ev = c.events("no-quorum", service="web")[-1]
    assert "1 fresh voter of 3 expected, 2 impaired; 2 needed" in ev["message"], ev
    s = status(n)
    assert s["voters_fresh"] == 1 and all(e["healthy"] for e in s["entry_points"]), s
    # the probers' votes say every entry point is down; none of it became a decision
    v = c.etcd.get_json(c.prefix + "votes/p1")
    assert v.get("impaired") is True and not any(r["healthy"] for r in v["results"]), v
    for k in ("ep-down", "service-down", "failover"):
        assert len(c.events(k, service="web")) == before[k], (k, c.events(k, service="web"))
    # explain shows them, marked; the decision rests on the node's vote alone: no quorum
    ep1 = s["entry_points"][0]
    marked = {v["voter"]: v.get("impaired", False) for v in ep1["votes"]}
    assert marked == {"node-1": False, "p1": True, "p2": True}, ep1
    assert ep1.get("reasons", []) == [], ep1  # impaired reasons do not count
    assert s["decision_rule"].startswith("no quorum"), s

    ip("-n", NS, "link", "set", SVC_P, "up")
    wait_until("3 fresh voters again",
               lambda: (lambda s: s["voters_fresh"] == 3 and not s.get("voters_impaired"))(
                   status(n)), 20)
    wait_until("quorum", lambda: len(c.events("quorum", service="web")) > before["quorum"], 10)
    for k in ("ep-down", "service-down", "failover"):
        assert len(c.events(k, service="web")) == before[k], (k, c.events(k, service="web"))
    assert status(n)["current_entry_point"] == "ep-1"
    return "the probers' service link down: 2 impaired votes (every entry point failing) " \
        "counted for nothing - no-quorum (1 fresh of 3, 2 impaired), no ep-down, no " \
        "service-down, no switch; link up: 3 fresh, quorum"


def main():
    netns_down()  # leftovers of an interrupted run with the same pid are unlikely, but cheap
    atexit.register(netns_down)

    def on_signal(sig, _frame):
        raise SystemExit(128 + sig)  # runs the finally blocks and atexit
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    netns_up()
    c = make()
    try:
        return run_tests([("impaired probers abstain", lambda: test_impaired_probers_abstain(c))])
    finally:
        c.close()
        netns_down()


if __name__ == "__main__":
    sys.exit(main())
