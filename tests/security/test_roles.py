# SPDX-License-Identifier: MIT
"""Issue 15, roles and audit: "a prober certificate is an admin credential" and
"requested_by is self-asserted and the caller's identity is not recorded".

Two nodes of one cluster, both APIs on TLS with a client CA (test PKI: CNs ops, viewer, p1,
other):
- node-1 has a client CA only (no token, no CN lists) - the finding's setup: the certificate
  of prober p1 could purge and switch over. Now p1's certificate gets PERMISSION_DENIED / 403
  for every Dhaf method and REST path (reads too), and nothing changes; another CN of the CA
  still acts (as before the roles), and a self-signed certificate gets nowhere.
- node-2 has every role: dhaf.api-token (admin), dhaf.read-token, admin-cns [ops], read-cns
  [viewer], prober p1's token. The read token and viewer's certificate read (gRPC, REST,
  /metrics) and are refused every change (403 / PERMISSION_DENIED, nothing written); the prober's
  token is refused everywhere but the Prober service; a CN on no list gets 401; ops's
  certificate and the admin token change state.
- Audit: a switchover (with requested_by), a purge and a decommission of a stopped node, made
  by gRPC and REST callers, are events carrying actor (cn:ops, api-token), role, peer
  (127.0.0.1) and comment (requested_by) - in etcd, in ListEvents, in /api/v1 events and in
  the node's log line - and the switchover key keeps requested_by beside the actor.
usage: /usr/bin/python3 test_roles.py BUILD_BIN_DIR (exit 77: cannot run here)"""
import http.client
import json
import os
import shutil
import ssl
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
from dhafsys import (Cluster, Node, free_port, grpc_modules, grpc_or_skip, make_pki,  # noqa: E402
                     run_tests, wait_until)

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
grpc = grpc_or_skip(BIN, "dhaf-node")
if not shutil.which("openssl"):
    print("skipped: no openssl to make the test certificates")
    sys.exit(77)
PB, PB_GRPC = grpc_modules("dhaf")

ADMIN = "roles-admin-token-0123456789"
READ = "roles-read-token-0123456789"
PROBER = "roles-prober-token-0123456789"
EP_IPS = ("127.0.0.93", "127.0.0.94")
PKI = tempfile.mkdtemp(prefix="dhaf-sec-roles-")


def services_yaml(port, d):
    with open(f"{d}/init.sh", "w") as f:
        f.write("#!/bin/sh\necho ep-1\n")
    os.chmod(f"{d}/init.sh", 0o755)
    return f"""services:
  - name: main
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: {EP_IPS[0]}}}
      - {{name: ep-2, ip: {EP_IPS[1]}}}
    switcher: {{type: exec, init: {d}/init.sh, switch: /bin/true, timeout: 2}}
    health-checker: {{type: web, port: {port}, path: /ok, timeout: 1, retries: 0}}
probers:
  - {{name: p1, token: {PROBER}}}
"""


def tls_apis(node, dhaf_lines):
    """Both APIs of node on TLS with the test CA as client CA, plus lines in dhaf:."""
    tls = (f"tls: {{cert-file: {PKI}/server.pem, key-file: {PKI}/server.key, "
           f"client-ca-file: {PKI}/ca.pem}}")
    cfg = open(node.config).read()
    cfg = cfg.replace(f"grpc-api: {{host: 127.0.0.1, port: {node.grpc_port}}}",
                      f"grpc-api: {{host: 127.0.0.1, port: {node.grpc_port}, {tls}}}")
    cfg = cfg.replace(f"web-api: {{host: 127.0.0.1, port: {node.rest_port}}}",
                      f"web-api: {{host: 127.0.0.1, port: {node.rest_port}, {tls}}}")
    cfg = cfg.replace("  tact-interval: 1\n", "  tact-interval: 1\n" + dhaf_lines)
    open(node.config, "w").write(cfg)


def mtls_client(node, cn):
    """(dhaf.v1.Dhaf client, channel) to node over TLS with cn's client certificate."""
    creds = grpc.ssl_channel_credentials(
        root_certificates=open(f"{PKI}/ca.pem", "rb").read(),
        private_key=open(f"{PKI}/{cn}.key", "rb").read(),
        certificate_chain=open(f"{PKI}/{cn}.pem", "rb").read())
    ch = grpc.secure_channel(f"127.0.0.1:{node.grpc_port}", creds)
    return PB_GRPC.DhafStub(ch), ch


def rpc(node, cn, method, req, token=None):
    """(grpc status code name, reply or error text)."""
    s, ch = mtls_client(node, cn)
    md = [("authorization", f"Bearer {token}")] if token else None
    try:
        return "OK", getattr(s, method)(req, metadata=md, timeout=10)
    except grpc.RpcError as e:
        return e.code().name, e.details()
    finally:
        ch.close()


def rest(node, cn, method, path, token=None, body=None):
    """(status, parsed JSON or text) over HTTPS with cn's client certificate."""
    ctx = ssl.create_default_context(cafile=f"{PKI}/ca.pem")
    ctx.load_cert_chain(f"{PKI}/{cn}.pem", f"{PKI}/{cn}.key")
    conn = http.client.HTTPSConnection("127.0.0.1", node.rest_port, context=ctx, timeout=10)
    h = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        h["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=h)
        r = conn.getresponse()
        text = r.read().decode()
        try:
            return r.status, json.loads(text)
        except ValueError:
            return r.status, text
    finally:
        conn.close()


def pin(c):
    return c.etcd.get_json(c.prefix + "services/main/switchover")


def make():
    make_pki(PKI, ("client", "ops", "viewer", "p1", "other"))
    port = free_port()
    c = Cluster(BIN, n=2, ttl=3, services="")
    for n in c.nodes:
        n.services = services_yaml(port, c.workdir)
        n.write_config(c.name, c.etcd.endpoint, 3)
    tls_apis(c.nodes[0], "")
    tls_apis(c.nodes[1], f"  api-token: {ADMIN}\n  read-token: {READ}\n"
                         "  admin-cns: [ops]\n  read-cns: [viewer]\n")
    c.add_backend(EP_IPS[0], port)
    c.add_backend(EP_IPS[1], port)
    c.start_all()
    c.wait_leader(15)

    def ready(n, cn, token):
        code, r = rpc(n, cn, "GetService", PB.GetServiceRequest(service="main"), token)
        return code == "OK" and r.current_entry_point == "ep-1" and \
            all(e.healthy for e in r.entry_points)
    wait_until("node-1 sees ep-1 current, both healthy", lambda: ready(c.nodes[0], "ops", None),
               30)
    wait_until("node-2 sees it too", lambda: ready(c.nodes[1], "client", ADMIN), 30)
    return c


def switchover(ep, by=""):
    return PB.SwitchoverRequest(service="main", entry_point=ep, requested_by=by)


def test_prober_cert_not_admin(c):
    n = c.nodes[0]  # client CA only: the finding's setup
    for method, req in (("Switchover", switchover("ep-2")),
                        ("PurgeSwitchover", PB.PurgeSwitchoverRequest(service="main")),
                        ("DecommissionNode", PB.DecommissionNodeRequest(name="node-2")),
                        ("GetService", PB.GetServiceRequest(service="main")),
                        ("ListEvents", PB.ListEventsRequest())):
        code, why = rpc(n, "p1", method, req)
        assert code == "PERMISSION_DENIED" and "prober" in why, (method, code, why)
    for method, path in (("POST", "/api/v1/services/main/switchover?entry_point=ep-2"),
                         ("DELETE", "/api/v1/services/main/switchover"),
                         ("GET", "/switchover?serviceName=main&entryPointId=ep-2"),
                         ("GET", "/switchover/purge?serviceName=main"),
                         ("GET", "/api/v1/services"), ("GET", "/metrics")):
        st, body = rest(n, "p1", method, path)
        assert st == 403, (method, path, st, body)
    assert pin(c) is None, pin(c)
    assert not c.events("switchover-requested", "main"), c.events(service="main")
    # another certificate of the CA acts as before the roles; a self-signed one gets nowhere
    code, r = rpc(n, "other", "GetService", PB.GetServiceRequest(service="main"))
    assert code == "OK" and r.name == "main", (code, r)
    code, _ = rpc(n, "rogue", "GetService", PB.GetServiceRequest(service="main"))
    assert code in ("UNAVAILABLE", "UNAUTHENTICATED"), code
    return "prober p1's certificate: PERMISSION_DENIED on 5 gRPC methods, 403 on 6 REST " \
        "paths, nothing written; CN=other reads; a self-signed certificate is refused"


def test_read_only(c):
    n = c.nodes[1]
    for cn, token in (("client", READ), ("viewer", None)):
        code, r = rpc(n, cn, "GetService", PB.GetServiceRequest(service="main"), token)
        assert code == "OK" and r.name == "main", (cn, code, r)
        code, r = rpc(n, cn, "ListEvents", PB.ListEventsRequest(limit=5), token)
        assert code == "OK", (cn, code, r)
        st, body = rest(n, cn, "GET", "/api/v1/services/main", token)
        assert st == 200 and body["name"] == "main", (cn, st, body)
        st, body = rest(n, cn, "GET", "/metrics", token)
        assert st == 200 and "dhaf_" in body, (cn, st, body[:200])
        for method, req in (("Switchover", switchover("ep-2")),
                            ("PurgeSwitchover", PB.PurgeSwitchoverRequest(service="main")),
                            ("DecommissionNode", PB.DecommissionNodeRequest(name="node-1"))):
            code, why = rpc(n, cn, method, req, token)
            assert code == "PERMISSION_DENIED" and "needs the admin role" in why, \
                (cn, method, code, why)
        for method, path in (("POST", "/api/v1/services/main/switchover?entry_point=ep-2"),
                             ("DELETE", "/api/v1/services/main/switchover"),
                             ("GET", "/switchover?serviceName=main&entryPointId=ep-2"),
                             ("DELETE", "/api/v1/nodes/node-1")):
            st, body = rest(n, cn, method, path, token)
            assert st == 403, (cn, method, path, st, body)
    assert pin(c) is None, pin(c)
    # the prober's token is for the Prober service only; a CN on no list needs a token
    code, why = rpc(n, "client", "GetService", PB.GetServiceRequest(service="main"), PROBER)
    assert code == "PERMISSION_DENIED" and "prober" in why, (code, why)
    st, body = rest(n, "client", "GET", "/api/v1/services", PROBER)
    assert st == 403, (st, body)
    code, why = rpc(n, "other", "GetService", PB.GetServiceRequest(service="main"))
    assert code == "UNAUTHENTICATED" and "no role" in why, (code, why)
    st, body = rest(n, "other", "GET", "/api/v1/services")
    assert st == 401, (st, body)
    code, why = rpc(n, "client", "GetService", PB.GetServiceRequest(service="main"), "wrong" * 5)
    assert code == "UNAUTHENTICATED" and "invalid token" in why, (code, why)
    return "read token and CN=viewer: reads OK (gRPC, REST, /metrics), 3 gRPC changes " \
        "PERMISSION_DENIED, 4 REST changes 403, nothing written; prober token 403/" \
        "PERMISSION_DENIED; unlisted CN and wrong token 401/UNAUTHENTICATED"


def audit_fields(e, actor, comment=None):
    assert e["actor"] == actor and e["role"] == "admin" and e["peer"] == "127.0.0.1", e
    assert e.get("comment") == comment, e
    assert f"by {actor} from 127.0.0.1" in e["message"], e


def test_audit(c):
    n = c.nodes[1]
    code, r = rpc(n, "ops", "Switchover", switchover("ep-2", "ticket-42 (alice)"))
    assert code == "OK", (code, r)
    p = pin(c)
    assert p["requested_by"] == "ticket-42 (alice)" and p["actor"] == "cn:ops", p
    req = c.events("switchover-requested", "main")
    assert len(req) == 1 and req[0]["to"] == "ep-2", req
    audit_fields(req[0], "cn:ops", "ticket-42 (alice)")
    # the purge by the admin token over REST
    st, body = rest(n, "client", "DELETE", "/api/v1/services/main/switchover", ADMIN)
    assert st == 200, (st, body)
    purged = [e for e in c.events("switchover-purged", "main") if e.get("actor")]
    assert len(purged) == 1 and purged[0]["to"] == "ep-2", purged
    audit_fields(purged[0], "api-token")
    # a comment that is no plain text is refused, and nothing is written
    code, why = rpc(n, "ops", "Switchover", switchover("ep-2", "evil\nline"))
    assert code == "INVALID_ARGUMENT" and "requested_by" in why, (code, why)
    assert pin(c) is None and len(c.events("switchover-requested", "main")) == 1
    # the decommission of a node that was stopped, by ops over gRPC
    extra = Node(c.name, "node-9", c.bin_dir, c.workdir, c.etcd.endpoint, 3, "",
                 c.nodes[0].services)
    c.nodes.append(extra)
    extra.start()
    wait_until("node-9 is a member", lambda: c.etcd.get_json(c.prefix + "members/node-9"), 15)
    extra.terminate()
    wait_until("node-9 is no longer alive",
               lambda: c.etcd.get_json(c.prefix + "alive/node-9") is None, 15)
    code, r = rpc(n, "ops", "DecommissionNode", PB.DecommissionNodeRequest(name="node-9"))
    assert code == "OK", (code, r)
    dec = c.events("node-decommissioned")
    assert len(dec) == 1 and dec[0]["node"] == "node-9", dec
    audit_fields(dec[0], "cn:ops")
    # the same in the APIs' event lists and in the node's log
    code, r = rpc(n, "viewer", "ListEvents", PB.ListEventsRequest(service="main", limit=50))
    got = [e for e in r.events if e.kind == "switchover-requested"]
    assert got and got[0].actor == "cn:ops" and got[0].role == "admin" and \
        got[0].peer == "127.0.0.1" and got[0].comment == "ticket-42 (alice)", got
    st, body = rest(n, "viewer", "GET", "/api/v1/events?limit=50")
    d = [e for e in body["events"] if e["kind"] == "node-decommissioned"]
    assert st == 200 and d and d[0]["actor"] == "cn:ops", (st, body)
    lines = [e for e in n.log_events("switchover-requested")]
    assert lines and lines[0].get("actor") == "cn:ops" and \
        lines[0].get("comment") == "ticket-42 (alice)", lines
    return "switchover (gRPC, CN=ops, requested_by kept as comment), purge (REST, admin " \
        "token), decommission (gRPC, CN=ops): events with actor, role, peer, comment in etcd, " \
        "ListEvents, /api/v1/events and the log; a comment with a newline refused"


def main():
    c = make()
    try:
        rc = run_tests([
            ("a prober's certificate is no admin credential", lambda: test_prober_cert_not_admin(c)),
            ("read-only token and CN, prober token, unknown CN", lambda: test_read_only(c)),
            ("changes are events naming the caller", lambda: test_audit(c)),
        ])
    finally:
        c.close()
        shutil.rmtree(PKI, ignore_errors=True)
    sys.exit(rc)


if __name__ == "__main__":
    main()
