# SPDX-License-Identifier: MIT
"""Issue 15, finding "a rogue node owns the prober": the prober authenticates the nodes.

(a) A rogue "node" - a Python gRPC server on loopback, reached through a name that is not a
    loopback address (this host's own name, which resolves to 127.x here) - gets no call from
    the prober, so never sees its token: plaintext to a non-loopback node is refused unless
    prober.insecure: true, and a TLS node whose certificate does not chain to prober.tls.ca-file
    is refused. A node with a good certificate is reached (the test can fail). An explicit
    http:// to a non-loopback node is refused by --check-config, which explains the rule.
(b) A plan with {"type":"exec","check":"/usr/bin/touch"} is not run (no file is created), the
    service is refused with event=plan-service-refused, and the other services are probed.
(c) Oversize plans (too many entry points per service, too many services, more than 4 MiB)
    are refused with a clear event=plan-failed, and nothing is probed.

Usage: /usr/bin/python3 test_prober_auth.py BUILD_BIN_DIR (exit 77: cannot run here).
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
from dhafsys import Prober, free_port, run_tests, terminate, wait_until  # noqa: E402

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/bin")
TOKEN = "prober-secret-token-0123456789"

try:
    import grpc
    from concurrent import futures
    PB, PB_GRPC = None, None
except ImportError:
    print("skipped: python3-grpcio is not installed")
    sys.exit(77)

if not os.path.exists(os.path.join(BIN, "dhaf-prober")) or not shutil.which("openssl"):
    print(f"skipped: no {BIN}/dhaf-prober or no openssl")
    sys.exit(77)

WORK = tempfile.mkdtemp(prefix="dhaf-sec-prober-")


def public_name():
    """A name that is not a loopback address but resolves to 127.x on this host, or None."""
    for name in (socket.gethostname(), socket.getfqdn()):
        if not name or name.lower() == "localhost" or name.startswith("127."):
            continue
        try:
            if socket.gethostbyname(name).startswith("127."):
                return name
        except OSError:
            pass
    return None


NAME = public_name()


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, cwd=WORK, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_ca(ca):
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            f"/CN={ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.pem")


def make_cert(ca, name, hosts):
    san = ",".join(f"IP:{h}" if h[0].isdigit() else f"DNS:{h}" for h in hosts)
    with open(os.path.join(WORK, f"{name}.ext"), "w") as f:
        f.write(f"subjectAltName={san}\n")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={hosts[0]}", "-keyout",
            f"{name}.key", "-out", f"{name}.csr")
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")


def read(name):
    with open(os.path.join(WORK, name), "rb") as f:
        return f.read()


def plan_msg(services, interval=1):
    """A ProbePlan from [(name, checker dict or JSON text, [(ep, ip)...])]."""
    plan = PB.ProbePlan(generation=7, interval_s=interval)
    for name, checker, eps in services:
        text = checker if isinstance(checker, str) else json.dumps(checker)
        ps = plan.services.add(name=name, domain="site.test", checker_json=text,
                               checker_type=json.loads(text)["type"])
        for ep, ip in eps:
            ps.entry_points.add(name=ep, ip=ip)
    return plan


class FakeNode:
    """A gRPC server on 127.0.0.1 answering Prober.GetPlan with `plan` and accepting every
    Report; records the calls and the authorization metadata it was sent. TLS when cert."""

    def __init__(self, plan, cert=None):
        self.plan, self.calls, self.reports, self.lock = plan, [], [], threading.Lock()
        node = self

        class Servicer(PB_GRPC.ProberServicer):
            def GetPlan(self, request, context):
                node.record("GetPlan", context)
                return node.plan

            def Report(self, request, context):
                node.record("Report", context)
                with node.lock:
                    node.reports.append(request)
                return PB.ReportResponse(accepted=True, generation=request.generation)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        PB_GRPC.add_ProberServicer_to_server(Servicer(), self.server)
        self.port = free_port()
        if cert:
            creds = grpc.ssl_server_credentials([(read(f"{cert}.key"), read(f"{cert}.pem"))])
            self.server.add_secure_port(f"127.0.0.1:{self.port}", creds)
        else:
            self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        self.server.start()

    def record(self, method, context):
        md = dict(context.invocation_metadata())
        with self.lock:
            self.calls.append((method, md.get("authorization", "")))

    def stop(self):
        self.server.stop(0)


def prober(name, nodes, extra=""):
    """A dhaf-prober (not started) whose config names nodes (strings)."""
    p = Prober(name, BIN, WORK, [], TOKEN)
    with open(p.config, "w") as f:
        f.write(f"""prober:
  name: {name}
  token: "{TOKEN}"
  nodes: [{", ".join(nodes)}]
  timeout: 2
{extra}""")
    return p


def check_config(p):
    r = subprocess.run([p.bin, "--check-config", "--config", p.config], capture_output=True,
                       text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def run_prober(p, fn):
    """Starts p, returns fn(p), stops p."""
    p.start()
    try:
        return fn(p)
    finally:
        terminate(p.proc)


def refused_before_any_call(p, node):
    """The prober tried (logged the node unreachable) and the node got no call at all."""
    wait_until("the prober to give up on the node (or the node to get a call)",
               lambda: p.log_events("node-unreachable") or p.log_events("plan-failed")
               or node.calls, 20)
    assert not node.calls, f"the rogue node got calls (token exposed): {node.calls}"
    assert not p.log_events("plan-received"), "a plan from the rogue node was taken"


def test_check_config_refuses_plaintext_public():
    p = prober("probe-cc", ['"http://10.0.0.1:8129"'])
    rc, out = check_config(p)
    assert rc == 2, f"http:// to a non-loopback node passed --check-config (exit {rc}): {out}"
    assert "prober.insecure" in out and "TLS" in out, f"the rule is not explained: {out}"
    p2 = prober("probe-cc2", ['"http://10.0.0.1:8129"'], "  insecure: true\n")
    rc2, out2 = check_config(p2)
    assert rc2 == 0 and "warning" in out2 and "plaintext" in out2, (rc2, out2)
    return "http:// to 10.0.0.1 refused (exit 2, rule explained); accepted with a warning " \
           "under insecure: true"


def test_rogue_plaintext_node_refused():
    if not NAME:
        return "SKIPPED: no non-loopback name resolves to 127.x here (config check covers it)"
    node = FakeNode(plan_msg([("web", {"type": "tcp", "port": 9}, [("ep-1", "127.0.0.1")])]))
    try:
        p = prober("probe-a", [f"{NAME}:{node.port}"])
        run_prober(p, lambda p: refused_before_any_call(p, node))
        # the same node with prober.insecure: true is reached, and that is warned at start
        p2 = prober("probe-a2", [f"{NAME}:{node.port}"], "  insecure: true\n")

        def reached(p):
            wait_until("GetPlan at the node", lambda: node.calls, 20)
            w = p.log_events("insecure-nodes")
            assert w and w[0].get("level") in ("warn", "warning"), p.log_lines()[:5]
            return node.calls[0]
        method, auth = run_prober(p2, reached)
        assert method == "GetPlan" and auth == f"Bearer {TOKEN}", (method, auth)
    finally:
        node.stop()
    return f"plaintext node at {NAME} (127.x) got no call; with insecure: true it did, warned"


def test_rogue_tls_node_refused():
    if not NAME:
        return "SKIPPED: no non-loopback name resolves to 127.x here"
    make_ca("good-ca")
    make_ca("rogue-ca")
    make_cert("good-ca", "good", [NAME, "127.0.0.1"])
    make_cert("rogue-ca", "rogue", [NAME, "127.0.0.1"])
    plan = plan_msg([("web", {"type": "tcp", "port": 9}, [("ep-1", "127.0.0.1")])])
    tls = f"  tls: {{ca-file: {os.path.join(WORK, 'good-ca.pem')}}}\n"
    rogue = FakeNode(plan, cert="rogue")
    try:
        p = prober("probe-t1", [f"{NAME}:{rogue.port}"], tls)
        run_prober(p, lambda p: refused_before_any_call(p, rogue))
        # and with no ca-file: the system CA store does not know the rogue CA either
        p = prober("probe-t2", [f"{NAME}:{rogue.port}"])
        run_prober(p, lambda p: refused_before_any_call(p, rogue))
    finally:
        rogue.stop()
    good = FakeNode(plan, cert="good")
    try:
        p = prober("probe-t3", [f"{NAME}:{good.port}"], tls)
        run_prober(p, lambda p: wait_until("the plan from the good node",
                                           lambda: p.log_events("plan-received"), 20))
        assert good.calls and good.calls[0][1] == f"Bearer {TOKEN}", good.calls
        # no ca-file: the default roots verify it (pointed at the good CA here, as an
        # operator's system CA store would hold it)
        n = len(good.calls)
        os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"] = os.path.join(WORK, "good-ca.pem")
        try:
            p = prober("probe-t4", [f"{NAME}:{good.port}"])
            run_prober(p, lambda p: wait_until("the plan through the default roots",
                                               lambda: p.log_events("plan-received"), 20))
        finally:
            del os.environ["GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"]
        assert len(good.calls) > n, good.calls
    finally:
        good.stop()
    return "TLS node with a rogue CA's certificate got no call (ca-file and system store); " \
           "the node with the good CA's certificate gave its plan (ca-file and default roots)"


def exec_plan(name, services, extra, want):
    """Runs a prober (in an empty working directory) on a plan of services until a report
    holds every service of want; returns (reported services, refusals, files in its cwd)."""
    cwd = os.path.join(WORK, f"cwd-{name}")
    os.makedirs(cwd, exist_ok=True)
    node = FakeNode(plan_msg(services))
    old = os.getcwd()
    os.chdir(cwd)  # where `/usr/bin/touch pwned-ep 127.0.0.9` would create its files
    try:
        p = prober(name, [f"127.0.0.1:{node.port}"], extra)

        def reported(p):
            wait_until(f"a report with {sorted(want)}",
                       lambda: any({r.service for r in rep.results} >= want
                                   for rep in list(node.reports)), 20)
            return p.log_events("plan-service-refused")
        refused = run_prober(p, reported)
    finally:
        os.chdir(old)
        node.stop()
    return {r.service for rep in node.reports for r in rep.results}, refused, os.listdir(cwd)


EVIL = ("evil", {"type": "exec", "init": "/bin/true", "check": "/usr/bin/touch", "timeout": 2},
        [("pwned-ep", "127.0.0.9")])
WEB = ("web", {"type": "tcp", "port": 9, "timeout": 1}, [("web-ep", "127.0.0.11")])


def test_exec_plan_not_run():
    # the default: no exec-allow, so no exec checker from a plan runs
    services, refused, created = exec_plan("probe-x", [EVIL, WEB], "", {"web"})
    assert not created, f"the plan's exec checker ran: it created {created}"
    assert "evil" not in services, f"the refused service was reported: {services}"
    assert refused and refused[0].get("service") == "evil" and \
        "/usr/bin/touch" in refused[0].get("reason", ""), refused
    return f"/usr/bin/touch not run (no file), logged: {refused[0]['reason']}; web still probed"


def test_exec_allow():
    # an allowed program runs; the other service's program still does not
    checks = os.path.join(WORK, "checks")
    os.makedirs(checks, exist_ok=True)
    ok = os.path.join(checks, "ok.sh")
    with open(ok, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(ok, 0o755)
    good = ("good", {"type": "exec", "init": ok, "check": ok, "timeout": 2},
            [("good-ep", "127.0.0.10")])
    services, refused, created = exec_plan("probe-y", [EVIL, good, WEB],
                                           f"  exec-allow: [{checks}/]\n", {"good", "web"})
    assert not created and "evil" not in services, (created, services)
    assert [e.get("service") for e in refused] == ["evil"], refused
    return f"{checks}/ok.sh ran and was reported; /usr/bin/touch was not"


def oversize_refused(name, plan, expect):
    node = FakeNode(plan)
    try:
        p = prober(name, [f"127.0.0.1:{node.port}"])

        def failed(p):
            wait_until(f"plan-failed ({expect}) or plan-received",
                       lambda: p.log_events("plan-failed") or p.log_events("plan-received"), 30)
            return [e for e in p.log_events("plan-failed") if expect in e.get("reason", "")]
        ev = run_prober(p, failed)
        assert not p.log_events("plan-received"), "an oversize plan was taken"
        assert ev, f"no plan-failed with \"{expect}\": {p.log_events('plan-failed')}"
        assert not node.reports, "an oversize plan was probed and reported"
        return ev[0]["reason"]
    finally:
        node.stop()


def test_oversize_plans_refused():
    tcp = {"type": "tcp", "port": 9}
    many_eps = plan_msg([("big", tcp, [(f"ep-{i}", "127.0.0.1") for i in range(300)])])
    r1 = oversize_refused("probe-o1", many_eps, "at most 256 per service")
    many_svcs = plan_msg([(f"s{i}", tcp, [("ep", "127.0.0.1")]) for i in range(4200)])
    r2 = oversize_refused("probe-o2", many_svcs, "at most 4096")
    pad = "x" * 60000
    big = plan_msg([(f"s{i}", json.dumps({"type": "tcp", "port": 9, "send": pad}),
                     [("ep", "127.0.0.1")]) for i in range(75)])
    # refused by the prober's channel as it arrives (a receive limit of 4 MiB, not 64)
    r3 = oversize_refused("probe-o3", big, "the reply is larger than a prober takes")
    return f"refused: {r1}; {r2}; {r3}"


def main():
    global PB, PB_GRPC
    from dhafsys import grpc_modules
    PB, PB_GRPC = grpc_modules("prober")
    try:
        return run_tests([
            ("check-config refuses plaintext to a non-loopback node",
             test_check_config_refuses_plaintext_public),
            ("rogue plaintext node at a non-loopback name gets no call",
             test_rogue_plaintext_node_refused),
            ("rogue TLS node with an unknown CA gets no call", test_rogue_tls_node_refused),
            ("a plan's exec checker is not run by default", test_exec_plan_not_run),
            ("exec-allow: an allowed program runs, another does not", test_exec_allow),
            ("oversize plans are refused", test_oversize_plans_refused),
        ])
    finally:
        if os.environ.get("DHAF_KEEP_TMP"):
            print(f"kept {WORK}")
        else:
            shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
