# SPDX-License-Identifier: MIT
"""dhafctl and the gRPC API against three real nodes: every command, every documented error
with its exit code, the same answers from every node, and a third-party client (Python
grpcio, stubs generated from proto/ at run time) calling every dhaf.v1.Dhaf method; -o json
(one object for every verb and every error), the default endpoint, the TLS advice,
status --watch through a node restart.
usage: /usr/bin/python3 test_ctl.py BUILD_BIN_DIR"""
import json
import os
import pty
import queue
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import (Cluster, free_port, grpc_stub_dir, make_pki, run_tests,  # noqa: E402
                     wait_until)

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
    r = ctl(c, "status")
    assert r.returncode == 0 and "Leader" in r.stdout and 'Service "web" -> Entry' in r.stdout, r
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


def json_lines(text):
    """Every non-empty line of text as JSON (fails on one that is not)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_json_everywhere(c):
    """-o json: every verb prints one object; every error is one object on stdout,
    {"error": {"code", "exit_code", "message", "endpoint"}}, with the exit code of the text
    form; warnings are JSON on stderr."""
    verbs = [("status",), ("status-dhaf",), ("status-services",), ("status-service", "-s", "web"),
             ("explain", "-s", "web"), ("switchover-candidates", "-s", "web"), ("events",),
             ("probers",), ("version",), ("pause",), ("resume",)]
    for v in verbs:
        r = ctl(c, *v, "-o", "json")
        assert r.returncode == 0 and r.stderr == "", (v, r)
        o = json.loads(r.stdout)
        assert isinstance(o, dict) and "error" not in o, (v, o)
    o = json.loads(ctl(c, "version", "-o", "json").stdout)
    assert o["client"]["version"] and o["node"]["cluster"] == "c1", o
    assert o["client"]["version"] == o["node"]["version"], o
    r = subprocess.run([os.path.join(BIN, "dhafctl"), "--version", "-o", "json"],
                       capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and json.loads(r.stdout)["client"] == o["client"], r
    o = json.loads(ctl(c, "probers", "-o", "json").stdout)
    assert o["probers"] == [] and "view" in o, o
    o = json.loads(ctl(c, "status", "-o", "json").stdout)
    assert o["cluster"]["leader"] and o["services"]["services"][0]["name"] == "web", o
    cases = [
        (("status-service", "-s", "nope"), "config", 1, "NOT_FOUND", 'no service named "nope"'),
        (("node-decommission", "node-2"), "config", 1, "FAILED_PRECONDITION", "is alive"),
        (("status-dhaf",), "none", 1, "UNAUTHENTICATED", "refused"),
        (("status-dhaf",), "bad", 1, "UNAUTHENTICATED", "invalid token"),
        (("status-service",), "config", 2, "USAGE", "-s SERVICE is required"),
        (("switchover-to", "-s", "web"), "config", 2, "USAGE", "missing argument"),
        (("frobnicate",), "config", 2, "USAGE", "unknown command"),
        (("status-dhaf", "--timeout", "0"), "config", 2, "USAGE", "--timeout takes seconds"),
        (("version", "--watch"), "config", 2, "USAGE", "--watch is for status"),
        (("status-dhaf", "--token-file", "/nonexistent"), "none", 2, "USAGE", "--token-file"),
    ]
    for args, auth, code, status, text in cases:
        r = ctl(c, *args, "-o", "json", auth=auth)
        out = json_lines(r.stdout)
        assert r.returncode == code and len(out) == 1, (args, r)
        e = out[0]["error"]
        assert e["code"] == status and e["exit_code"] == code and text in e["message"], (args, e)
        if code == 1:
            assert e["endpoint"].startswith("127.0.0.1:"), e
        for w in json_lines(r.stderr):  # --token's warning, as JSON
            assert "--token puts the token" in w["warning"]["message"], (args, w)
    r = ctl(c, "frobnicate", "-o", "json")
    assert r.stderr == "", r.stderr  # no usage text beside the object
    return (f"{len(verbs)} verbs print one object each (version: client + node, probers: "
            f"{{probers: [...]}}); {len(cases)} errors as {{error: {{code, exit_code, message, "
            f"endpoint}}}} with the text form's exit codes")


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def set_grpc_api(n, port, tls=""):
    """Rewrites node n's grpc-api line (port, optional TLS settings) and restarts it."""
    text = open(n.config).read()
    old = next(line for line in text.splitlines() if line.startswith("  grpc-api:"))
    text = text.replace(old, f"  grpc-api: {{host: 127.0.0.1, port: {port}{tls}}}")
    open(n.config, "w").write(text)
    n.kill()
    n.grpc_port = port
    n.start()


def test_default_endpoint(c):
    """No --endpoint, DHAF_ENDPOINT or --config: the node at 127.0.0.1:8129, as documented."""
    env = {k: v for k, v in os.environ.items() if k not in ("DHAF_ENDPOINT", "DHAF_CA")}
    env["DHAF_TOKEN"] = TOKEN
    dhafctl = os.path.join(BIN, "dhafctl")

    def bare(*args):
        return subprocess.run([dhafctl, *args], capture_output=True, text=True, timeout=30,
                              env=env)
    if not port_free(8129):
        r = bare("status-dhaf", "-o", "json", "--timeout", "2")
        o = json.loads(r.stdout)
        assert o.get("answered_by") or o["error"]["endpoint"] == "127.0.0.1:8129", o
        return "port 8129 is taken on this machine: only the target was checked"
    n = c.nodes[1]
    old = n.grpc_port
    set_grpc_api(n, 8129)
    try:
        r = wait_until("node-2 answers on the default endpoint", lambda: (
            lambda r: r if r.returncode == 0 else None)(bare("status-dhaf", "-o", "json")), 15,
            0.2)
        assert json.loads(r.stdout)["answered_by"] == "node-2", r.stdout
        n.kill()
        r = bare("status-dhaf", "--timeout", "2")
        assert r.returncode == 1 and "127.0.0.1:8129 (the default" in r.stderr, r
        r = bare("status-dhaf", "-o", "json", "--timeout", "2")
        assert json.loads(r.stdout)["error"]["endpoint"] == "127.0.0.1:8129", r
    finally:
        set_grpc_api(n, old)
    wait_until("node-2 back on its port", lambda: ctl(c, "version", node=1).returncode == 0, 15,
               0.2)
    return "answered by the node on 127.0.0.1:8129 with no flag; exit 1 naming it when none is"


def test_tls_advice(c):
    """A plaintext call to a TLS node says to pass --ca or --tls; a wrong CA, --tls against a
    plaintext node, and a name the certificate lacks are each named."""
    pki = tempfile.mkdtemp(dir=c.workdir)
    make_pki(pki)
    n = c.nodes[2]
    set_grpc_api(n, n.grpc_port, f", tls: {{cert-file: {pki}/server.pem, key-file: "
                                 f"{pki}/server.key}}")
    ep = f"127.0.0.1:{n.grpc_port}"
    dhafctl = os.path.join(BIN, "dhafctl")

    def run(*args):
        return subprocess.run([dhafctl, "version", "--token-file", tok, *args],
                              capture_output=True, text=True, timeout=30)
    tok = os.path.join(pki, "token")
    with open(tok, "w") as f:
        f.write(TOKEN)
    os.chmod(tok, 0o600)
    try:
        wait_until("node-3 answers on TLS", lambda: run("-e", ep, "--ca", f"{pki}/ca.pem")
                   .returncode == 0, 15, 0.2)
        r = run("-e", ep)
        assert r.returncode == 1 and f"the node at {ep} speaks TLS; pass --ca FILE" in r.stderr, r
        assert "--tls" in r.stderr, r.stderr
        e = json.loads(run("-e", ep, "-o", "json").stdout)["error"]
        assert e["code"] == "UNAVAILABLE" and "speaks TLS" in e["message"], e
        r = run("-e", ep, "--ca", f"{pki}/rogue.pem")
        assert r.returncode == 1 and "certificate is not accepted with the CA" in r.stderr, r
        r = run("-e", ep, "--tls")
        assert r.returncode == 1 and "not accepted with the system's CA roots" in r.stderr, r
        r = run("-e", f"localhost:{n.grpc_port}", "--ca", f"{pki}/ca.pem")
        assert r.returncode == 1 and "does not name that host" in r.stderr, r
        r = run("-e", f"127.0.0.1:{c.nodes[0].grpc_port}", "--tls")
        assert r.returncode == 1 and "does not speak TLS; drop --ca" in r.stderr, r
        r = run("-e", ep, "--ca", f"{pki}/ca.pem", "-o", "json")
        assert json.loads(r.stdout)["node"]["node"] == "node-3", r
    finally:
        set_grpc_api(n, n.grpc_port)
    wait_until("node-3 back on plaintext", lambda: ctl(c, "version", node=2).returncode == 0,
               15, 0.2)
    return ("plaintext to TLS: 'speaks TLS; pass --ca FILE ... or --tls'; wrong CA, system "
            "roots, a name not in the certificate, --tls to plaintext: each named")


class Watch:
    """dhafctl ... --watch in the background; its stdout lines in a queue."""

    def __init__(self, args, stdout=subprocess.PIPE, reader=True):
        self.p = subprocess.Popen([os.path.join(BIN, "dhafctl"), *args], stdout=stdout,
                                  stderr=subprocess.PIPE, text=True)
        self.lines = queue.Queue()
        if reader:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stdout:
            self.lines.put(line)

    def next_line(self, what, timeout):
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no line within {timeout} s while waiting for {what}")

    def wait_for(self, what, pred, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            line = self.next_line(what, left)
            if pred(line):
                return line

    def stop(self):
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


def test_watch(c):
    """status --watch: one JSON object a line; through a restart of the node it talks to (the
    error in the stream, then answers again); Ctrl-C and a closed pipe end it with exit 0; on a
    terminal the screen is cleared and redrawn."""
    n = c.nodes[0]
    ep = ["--endpoint", f"127.0.0.1:{n.grpc_port}", "--token", TOKEN]
    w = Watch(["status", "--watch", "--interval", "1", "-o", "json", "--timeout", "2", *ep])
    try:
        def ok(line):
            o = json.loads(line)
            return "cluster" in o and o["cluster"]["answered_by"] == "node-1"
        w.wait_for("a status line", ok, 15)
        w.wait_for("a second status line", ok, 5)
        n.kill()
        line = w.wait_for("an error line", lambda line: "error" in json.loads(line), 15)
        e = json.loads(line)["error"]
        assert e["code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED") and e["exit_code"] == 1, e
        assert w.p.poll() is None, "watch ended on the error"
        n.start()
        w.wait_for("a status line after the restart", ok, 20)
        w.p.send_signal(signal.SIGINT)
        assert w.p.wait(5) == 0
    finally:
        w.stop()
    # a closed pipe: the next frame's write fails, the watch ends quietly with 0
    w = Watch(["status-dhaf", "--watch", "--interval", "1", "-o", "json", *ep], reader=False)
    try:
        assert select.select([w.p.stdout], [], [], 15)[0], "no first line within 15 s"
        assert "leader" in json.loads(w.p.stdout.readline())
        w.p.stdout.close()
        assert w.p.wait(10) == 0
        assert "Broken pipe" not in w.p.stderr.read()
    finally:
        w.stop()
    # a terminal: clear + redraw, a header with the interval
    master, slave = pty.openpty()
    w = Watch(["status-service", "-s", "web", "--watch", "--interval", "1", *ep], stdout=slave,
              reader=False)
    os.close(slave)
    try:
        buf = b""
        deadline = time.monotonic() + 15
        while buf.count(b"\033[H\033[2J") < 2 and time.monotonic() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                buf += os.read(master, 65536)
        frames = buf.split(b"\033[H\033[2J")
        assert len(frames) >= 3, buf[-500:]
        assert b"Every 1 s: dhafctl status-service" in frames[1], frames[1][:300]
        assert b'Service "web" -> Entry points' in frames[1], frames[1][:600]
        w.p.send_signal(signal.SIGINT)
        assert w.p.wait(5) == 0
    finally:
        w.stop()
        os.close(master)
    return ("json lines through a node restart (status, error, status), SIGINT and a closed "
            "pipe exit 0, a terminal gets clear + redraw")


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
            ("dhafctl -o json: one object for every verb and error",
             lambda: test_json_everywhere(c)),
            ("dhafctl: the default endpoint 127.0.0.1:8129", lambda: test_default_endpoint(c)),
            ("dhafctl: a TLS node without --ca is named", lambda: test_tls_advice(c)),
            ("dhafctl status --watch", lambda: test_watch(c)),
            ("dhafctl: etcd down is told apart from the node down", lambda: test_etcd_down(c)),
        ])
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(suite())
