# SPDX-License-Identifier: MIT
"""dhafctl and the gRPC API against three real nodes: every command, every documented error
with its exit code, the same answers from every node, and a third-party client (Python
grpcio, stubs generated from proto/ at run time) calling every dhaf.v1.Dhaf method.
usage: /usr/bin/python3 test_ctl.py BUILD_BIN_DIR"""
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import Cluster, free_port, grpc_stub_dir, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
TOKEN = "ctl-test-token-42"


def make():
    port = free_port()
    services = f"""services:
  - name: web
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: 127.0.0.61}}
      - {{name: ep-2, ip: 127.0.0.62}}
    switcher: {{type: exec, init: /bin/true, switch: /bin/true, timeout: 2}}
    health-checker: {{type: web, port: {port}, path: /ok, timeout: 1, retries: 0}}
"""
    c = Cluster(BIN, n=3, ttl=3, services=services)
    for n in c.nodes:  # the token goes into the dhaf: section
        text = open(n.config).read().replace("  tact-interval: 1\n",
                                             f"  tact-interval: 1\n  api-token: {TOKEN}\n")
        open(n.config, "w").write(text)
    c.b1 = c.add_backend("127.0.0.61", port)
    c.b2 = c.add_backend("127.0.0.62", port)
    c.start_all()
    c.wait_leader(3)
    def voters(i):
        r = ctl(c, "status-service", "-s", "web", "-o", "json", node=i)
        if r.returncode != 0:
            return None
        eps = json.loads(r.stdout)["entry_points"]
        return next(e for e in eps if e["name"] == "ep-1")["voters"]

    wait_until("every node's view to count 3 voters on ep-1",
               lambda: all(voters(i) == 3 for i in range(3)), 15, 0.1)
    return c


def ctl(c, *args, node=0, auth="config", timeout=30):
    n = c.nodes[node]
    base = [os.path.join(BIN, "dhafctl")]
    if auth == "config":
        base += ["--config", n.config]
    elif auth == "endpoint":
        base += ["--endpoint", f"127.0.0.1:{n.grpc_port}", "--token", TOKEN]
    elif auth == "none":
        base += ["--endpoint", f"127.0.0.1:{n.grpc_port}"]
    elif auth == "bad":
        base += ["--endpoint", f"127.0.0.1:{n.grpc_port}", "--token", "wrong"]
    return subprocess.run(base[:1] + list(args) + base[1:], capture_output=True, text=True,
                          timeout=timeout)


def test_commands(c):
    r = ctl(c, "status-dhaf")
    assert r.returncode == 0 and "Leader" in r.stdout and "node-3" in r.stdout, r
    r = ctl(c, "status-services")
    assert r.returncode == 0 and 'Service "web" -> Entry points' in r.stdout, r
    assert "CURRENT" in r.stdout and "3/0/3" in r.stdout, r.stdout
    r = ctl(c, "status-service", "-s", "web", "-o", "json", auth="endpoint", node=1)
    s = json.loads(r.stdout)
    assert s["name"] == "web" and s["current_entry_point"] == "ep-1", s
    assert [e["name"] for e in s["entry_points"]] == ["ep-1", "ep-2"]
    r = ctl(c, "switchover-candidates", "-s", "web")
    assert r.returncode == 0 and "ep-2" in r.stdout, r
    r = ctl(c, "switchover-to", "ep-2", "-s", "web")
    assert r.returncode == 0 and "OK." in r.stdout, r
    wait_until("ep-2 current", lambda: json.loads(
        ctl(c, "status-service", "-s", "web", "-o", "json").stdout)["current_entry_point"] == "ep-2",
        10)
    s = json.loads(ctl(c, "status-service", "-s", "web", "-o", "json").stdout)
    assert s["switchover_requirement"] == "ep-2"
    r = ctl(c, "switchover-purge", "-s", "web")
    assert r.returncode == 0, r
    wait_until("back to ep-1", lambda: json.loads(
        ctl(c, "status-service", "-s", "web", "-o", "json").stdout)["current_entry_point"] == "ep-1",
        10)
    r = ctl(c, "events", "-s", "web", "-n", "5")
    assert r.returncode == 0 and "switchover" in r.stdout, r.stdout
    r = ctl(c, "events", "-o", "json")
    assert any(e["kind"] == "new-leader" for e in json.loads(r.stdout)["events"])
    r = ctl(c, "probers")
    assert r.returncode == 0, r
    r = ctl(c, "version")
    assert r.returncode == 0 and "dhaf-node" in r.stdout and "cluster c1" in r.stdout, r
    return "status, candidates, switchover + purge (moved and back), events, probers, version"


def test_errors(c):
    cases = [
        (("status-service", "-s", "nope"), "config", 1, 'no service named "nope"'),
        (("switchover-to", "ep-9", "-s", "web"), "config", 1, 'no entry point "ep-9"'),
        (("node-decommission", "node-2"), "config", 1, "is alive"),
        (("node-decommission", "node-9"), "config", 1, 'no dhaf node named "node-9"'),
        (("status-dhaf",), "none", 1, "refused"),
        (("status-dhaf",), "bad", 1, "invalid token"),
        (("status-service",), "config", 2, "-s SERVICE is required"),
        (("switchover-to", "-s", "web"), "config", 2, "missing argument"),
        (("frobnicate",), "config", 2, "unknown command"),
        (("status-dhaf", "-o", "yaml"), "config", 2, "-o takes table or json"),
    ]
    for args, auth, code, text in cases:
        r = ctl(c, *args, auth=auth)
        assert r.returncode == code and text in r.stderr, (args, r.returncode, r.stderr)
    # an unhealthy target is refused
    c.b2.stop()
    wait_until("ep-2 down", lambda: not json.loads(ctl(c, "status-service", "-s", "web", "-o",
                                                       "json").stdout)["entry_points"][1]["healthy"],
               10)
    r = ctl(c, "switchover-to", "ep-2", "-s", "web")
    assert r.returncode == 1 and "not healthy" in r.stderr, r.stderr
    r = subprocess.run([os.path.join(BIN, "dhafctl"), "status-dhaf", "--endpoint",
                        f"127.0.0.1:{free_port()}", "--timeout", "2"], capture_output=True,
                       text=True, timeout=20)
    assert r.returncode == 1 and "cannot reach" in r.stderr, r.stderr
    return f"{len(cases) + 2} error cases with their exit codes and messages"


def test_same_answer_everywhere(c):
    def norm(n):
        out = json.loads(ctl(c, "status-services", "-o", "json", node=n).stdout)
        out.pop("view")  # each node's view: its own age and revision
        return json.dumps(out, sort_keys=True)
    wait_until("the same answer from every node", lambda: norm(0) == norm(1) == norm(2), 10)
    cl = [json.loads(ctl(c, "status-dhaf", "-o", "json", node=n).stdout) for n in range(3)]
    for x in cl:
        x.pop("answered_by")
        x.pop("view")
    assert cl[0] == cl[1] == cl[2]
    return "status-services and status-dhaf identical from the three nodes"


def test_python_grpc_client(c):
    """A third-party client: Python grpcio with stubs generated from proto/dhaf/v1."""
    out = grpc_stub_dir("dhaf")
    script = f"""
import sys, grpc
sys.path.insert(0, {out!r})
from dhaf.v1 import dhaf_pb2 as pb, dhaf_pb2_grpc as rpc
ch = grpc.insecure_channel("127.0.0.1:{c.nodes[1].grpc_port}")
stub = rpc.DhafStub(ch)
md = [("authorization", "Bearer {TOKEN}")]
ok = []
r = stub.GetClusterStatus(pb.GetClusterStatusRequest(), metadata=md, timeout=5); ok.append(r.leader != "")
r = stub.ListServices(pb.ListServicesRequest(), metadata=md, timeout=5); ok.append(r.services[0].name == "web")
r = stub.GetService(pb.GetServiceRequest(service="web"), metadata=md, timeout=5); ok.append(len(r.entry_points) == 2)
r = stub.GetSwitchoverCandidates(pb.GetSwitchoverCandidatesRequest(service="web"), metadata=md, timeout=5); ok.append(len(r.candidates) >= 1)
r = stub.Switchover(pb.SwitchoverRequest(service="web", entry_point="ep-1", requested_by="py"), metadata=md, timeout=5); ok.append("requested" in r.message)
r = stub.PurgeSwitchover(pb.PurgeSwitchoverRequest(service="web"), metadata=md, timeout=5); ok.append(r.purged_entry_point == "ep-1")
r = stub.ListEvents(pb.ListEventsRequest(limit=3), metadata=md, timeout=5); ok.append(len(r.events) <= 3)
r = stub.GetVersion(pb.GetVersionRequest(), metadata=md, timeout=5); ok.append(r.version != "")
try:
    stub.DecommissionNode(pb.DecommissionNodeRequest(name="node-1"), metadata=md, timeout=5); ok.append(False)
except grpc.RpcError as e:
    ok.append(e.code() == grpc.StatusCode.FAILED_PRECONDITION)
try:
    stub.GetService(pb.GetServiceRequest(service="nope"), metadata=md, timeout=5); ok.append(False)
except grpc.RpcError as e:
    ok.append(e.code() == grpc.StatusCode.NOT_FOUND)
try:
    stub.GetVersion(pb.GetVersionRequest(), timeout=5); ok.append(False)
except grpc.RpcError as e:
    ok.append(e.code() == grpc.StatusCode.UNAUTHENTICATED)
print(ok)
sys.exit(0 if all(ok) else 1)
"""
    r = subprocess.run(["/usr/bin/python3", "-c", script], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, (r.stdout, r.stderr)
    return "all 9 dhaf.v1.Dhaf methods called from Python grpcio; NOT_FOUND, " \
        "FAILED_PRECONDITION, UNAUTHENTICATED as documented"


def test_etcd_down(c):
    """Last: the node answers, its etcd does not: status comes from the node's view, marked
    stale, and a change says that etcd (not the node) failed."""
    c.etcd.stop()
    r = wait_until("a status marked stale", lambda: (lambda r: r if "cannot reach etcd" in
                                                     r.stderr else None)(
        ctl(c, "status-services", auth="endpoint")), 10, 0.2)
    assert r.returncode == 0 and "this answer is from its memory" in r.stderr, r.stderr
    assert json.loads(ctl(c, "status-services", "-o", "json", auth="endpoint").stdout)[
        "view"]["stale"] is True
    r = ctl(c, "switchover-purge", "-s", "web", auth="endpoint", timeout=20)
    assert r.returncode == 1 and "answered, but it cannot reach etcd" in r.stderr, r.stderr
    return ("etcd stopped: status exit 0 from the view with a stale warning; a purge exits 1 "
            "with 'the node at ... answered, but it cannot reach etcd'")


def suite():
    c = make()
    try:
        return run_tests([
            ("dhafctl: every command", lambda: test_commands(c)),
            ("a Python grpcio client calls every method", lambda: test_python_grpc_client(c)),
            ("the same answer from any of the three nodes", lambda: test_same_answer_everywhere(c)),
            ("dhafctl: documented errors and exit codes", lambda: test_errors(c)),
            ("dhafctl: etcd down is told apart from the node down", lambda: test_etcd_down(c)),
        ])
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(suite())
