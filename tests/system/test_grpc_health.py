# SPDX-License-Identifier: MIT
"""grpc.health.v1.Health and server reflection on the node's gRPC port, from Python grpcio
(messages generated from proto/grpc/ with protoc at run time), against a real etcd and a real
node that asks for an api-token: Check and Watch without a token ("" is the process,
"dhaf.v1.Dhaf" the node's readiness, an unknown name NOT_FOUND / SERVICE_UNKNOWN); Watch
reports etcd going away and coming back; the cap on Watch streams and its release when a
client cancels; reflection (v1 and v1alpha) with the token: list_services,
file_containing_symbol of a dhaf.v1 method, file_by_filename, errors for unknown names, a
dhaf.v1 call built from the reflected descriptors alone; refused without the token; over
mTLS, health with a client certificate and no token, nothing without a certificate; a node
stopping ends a Watch with NOT_SERVING.
usage: /usr/bin/python3 test_grpc_health.py BUILD_BIN_DIR"""
import atexit
import importlib.util
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import (PROTO_DIR, Cluster, grpc_or_skip, make_pki, run_tests,  # noqa: E402
                     wait_until)

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
grpc = grpc_or_skip(BIN, "dhaf-node")
if not shutil.which("protoc"):
    print("skipped: no protoc (Debian's protobuf-compiler)")
    sys.exit(77)
TOKEN = "health-test-token-7"
MAX_WATCHES = 4  # HEALTH_MAX_WATCHES in node/health.h
MAX_REFLECT = 2  # REFLECT_MAX_STREAMS in node/reflect.h
REFLECT_IDLE_S = 30  # REFLECT_IDLE_MS


def stubs():
    """health_pb2 and the two reflection_pb2 modules, generated from proto/grpc/ (v1alpha: the
    build tree's copy of v1 under that package name, proto/CMakeLists.txt)."""
    out = tempfile.mkdtemp(prefix="dhaf-py-grpc-")
    atexit.register(shutil.rmtree, out, True)
    files = ["grpc/health/v1/health.proto", "grpc/reflection/v1/reflection.proto",
             "grpc/reflection/v1alpha/reflection.proto"]
    alpha_root = os.path.join(os.path.dirname(os.path.abspath(BIN)), "proto", "gen", "protosrc")
    roots = [PROTO_DIR] * 2 + [alpha_root]
    subprocess.run(["protoc", f"-I{PROTO_DIR}", f"-I{alpha_root}", f"--python_out={out}"] +
                   [os.path.join(r, f) for r, f in zip(roots, files)], check=True, timeout=60)
    # the generated package is "grpc.*", which the grpcio module of that name shadows: load
    # each file by its path instead
    mods = []
    for f in files:
        path = os.path.join(out, f.replace(".proto", "_pb2.py"))
        name = "dhaftest_" + f.replace("/", "_").replace(".proto", "_pb2")
        spec = importlib.util.spec_from_file_location(name, path)
        m = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(m)
        mods.append(m)
    return mods


health_pb2, refl_v1, refl_v1alpha = stubs()
Status = health_pb2.HealthCheckResponse
SERVING, NOT_SERVING, SERVICE_UNKNOWN = Status.SERVING, Status.NOT_SERVING, Status.SERVICE_UNKNOWN
AUTH = [("authorization", f"Bearer {TOKEN}")]


def make():
    c = Cluster(BIN, n=1, ttl=3)
    n = c.nodes[0]
    text = open(n.config).read().replace("  tact-interval: 1\n",
                                         f"  tact-interval: 1\n  api-token: {TOKEN}\n")
    open(n.config, "w").write(text)
    c.start_all()
    c.wait_leader(10)
    c.ch = grpc.insecure_channel(f"127.0.0.1:{n.grpc_port}")
    return c


def check_fn(ch):
    return ch.unary_unary("/grpc.health.v1.Health/Check",
                          request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                          response_deserializer=health_pb2.HealthCheckResponse.FromString)


def watch_fn(ch):
    return ch.unary_stream("/grpc.health.v1.Health/Watch",
                           request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
                           response_deserializer=health_pb2.HealthCheckResponse.FromString)


def check(c, service):
    return check_fn(c.ch)(health_pb2.HealthCheckRequest(service=service), timeout=5).status


class Watcher:
    """A Watch stream read by a thread into a queue of statuses (then its end: an exception or
    "end")."""

    def __init__(self, ch, service):
        self.call = watch_fn(ch)(health_pb2.HealthCheckRequest(service=service))
        self.q = queue.Queue()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        try:
            for r in self.call:
                self.q.put(r.status)
            self.q.put("end")
        except grpc.RpcError as e:
            self.q.put(e)

    def next(self, timeout):
        try:
            return self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no Watch message within {timeout}s")

    def wait_for(self, want, timeout):
        """Reads messages until one is want; returns the ones seen before."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"Watch did not report {want} within {timeout}s: {seen}")
            s = self.next(left)
            if s == want:
                return seen
            if not isinstance(s, int):
                raise AssertionError(f"Watch ended before {want}: {seen} then {s!r}")
            seen.append(s)

    def cancel(self):
        self.call.cancel()
        self.t.join(5)


def test_check_without_token(c):
    assert check(c, "") == SERVING
    wait_until("dhaf.v1.Dhaf SERVING (the node ready)", lambda: check(c, "dhaf.v1.Dhaf") == SERVING,
               30, 0.1)
    try:
        check(c, "no.such.Service")
        raise AssertionError("an unknown service name was answered")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.NOT_FOUND, e
        assert "no.such.Service" in e.details(), e.details()
    # the same channel, a dhaf.v1 call without the token: still refused
    get_version = c.ch.unary_unary("/dhaf.v1.Dhaf/GetVersion")
    try:
        get_version(b"", timeout=5)
        raise AssertionError("GetVersion answered without a token")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    return "\"\" and dhaf.v1.Dhaf SERVING, unknown NOT_FOUND, no token; GetVersion still " \
        "UNAUTHENTICATED"


def test_watch_follows_etcd(c):
    w = Watcher(c.ch, "dhaf.v1.Dhaf")
    unknown = Watcher(c.ch, "no.such.Service")
    try:
        assert w.next(5) == SERVING
        assert unknown.next(5) == SERVICE_UNKNOWN
        t0 = time.monotonic()
        c.etcd.stop()
        w.wait_for(NOT_SERVING, 30)
        down = time.monotonic() - t0
        assert check(c, "dhaf.v1.Dhaf") == NOT_SERVING
        assert check(c, "") == SERVING  # the process still serves
        t0 = time.monotonic()
        c.etcd.start()
        w.wait_for(SERVING, 60)
        up = time.monotonic() - t0
        # the unknown name's stream stayed open and said nothing more
        assert unknown.q.empty(), list(unknown.q.queue)
    finally:
        w.cancel()
        unknown.cancel()
    return f"Watch: NOT_SERVING {down:.1f}s after etcd stopped, SERVING {up:.1f}s after it " \
        "came back; an unknown name: SERVICE_UNKNOWN, stream kept open"


def test_watch_cap_and_cancel(c):
    ws = []

    def another():
        w = Watcher(c.ch, "")
        s = w.next(5)
        if s == SERVING:
            ws.append(w)
            return True
        return False
    try:
        # the earlier tests' watches end on the node within HEALTH_WATCH_POLL_MS
        for _ in range(MAX_WATCHES):
            wait_until("a Watch accepted", another, 10, 0.2)
        extra = Watcher(c.ch, "")
        e = extra.next(5)
        assert isinstance(e, grpc.RpcError) and \
            e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        assert "health watches" in e.details(), e.details()
        # a Check still answers while every watch slot is taken
        assert check(c, "") == SERVING
        ws[0].cancel()  # the client goes away: its slot comes free on the node
        wait_until("a Watch accepted once one was cancelled", another, 10, 0.2)
    finally:
        for w in ws:
            w.cancel()
    return f"{MAX_WATCHES} watches, the next RESOURCE_EXHAUSTED; a cancel frees a slot"


def reflect(c, requests, path="/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            mod=None, metadata=AUTH):
    mod = mod or refl_v1
    call = c.ch.stream_stream(path,
                              request_serializer=mod.ServerReflectionRequest.SerializeToString,
                              response_deserializer=mod.ServerReflectionResponse.FromString)
    return list(call(iter(requests), metadata=metadata, timeout=10))


def test_reflection(c):
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
    R = refl_v1.ServerReflectionRequest
    # one stream, several requests, answered in order
    out = reflect(c, [R(list_services=""), R(file_containing_symbol="dhaf.v1.Dhaf.GetVersion"),
                      R(file_containing_symbol="dhaf.v1.NoSuch"),
                      R(file_by_filename="grpc/health/v1/health.proto"),
                      R(file_by_filename="nope.proto"),
                      R(file_containing_symbol="dhaf.v1.ClusterStatus")])
    assert len(out) == 6, out
    names = {s.name for s in out[0].list_services_response.service}
    want = {"dhaf.v1.Dhaf", "dhaf.v1.Prober", "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"}
    assert names == want, names
    fd = descriptor_pb2.FileDescriptorProto.FromString(
        out[1].file_descriptor_response.file_descriptor_proto[0])
    assert fd.name == "dhaf/v1/dhaf.proto" and fd.package == "dhaf.v1", fd.name
    svc = next(s for s in fd.service if s.name == "Dhaf")
    assert "GetVersion" in [m.name for m in svc.method]
    assert out[1].original_request.file_containing_symbol == "dhaf.v1.Dhaf.GetVersion"
    assert out[2].error_response.error_code == 5, out[2]  # NOT_FOUND
    assert "dhaf.v1.NoSuch" in out[2].error_response.error_message
    hd = descriptor_pb2.FileDescriptorProto.FromString(
        out[3].file_descriptor_response.file_descriptor_proto[0])
    assert hd.package == "grpc.health.v1", hd.package
    assert out[4].error_response.error_code == 5, out[4]
    assert out[5].file_descriptor_response.file_descriptor_proto[0] == \
        out[1].file_descriptor_response.file_descriptor_proto[0]

    # a client that knows dhaf.v1 only from reflection: GetVersion from the descriptor alone
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    factory = message_factory.MessageFactory(pool)
    m = pool.FindMethodByName("dhaf.v1.Dhaf.GetVersion")
    req_cls = factory.GetPrototype(m.input_type)
    resp_cls = factory.GetPrototype(m.output_type)
    rpc = c.ch.unary_unary("/dhaf.v1.Dhaf/GetVersion",
                           request_serializer=req_cls.SerializeToString,
                           response_deserializer=resp_cls.FromString)
    ver = rpc(req_cls(), metadata=AUTH, timeout=5)
    assert ver.version, ver

    # the older package answers the same
    RA = refl_v1alpha.ServerReflectionRequest
    old = reflect(c, [RA(list_services="")],
                  path="/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                  mod=refl_v1alpha)
    assert {s.name for s in old[0].list_services_response.service} == want
    # a request that asks for nothing, then bytes that are no request: an error_response,
    # then the stream ends with INVALID_ARGUMENT naming the message type
    out = reflect(c, [R(host="h")])
    assert out[0].error_response.error_code == 3 and out[0].valid_host == "h", out[0]
    raw = c.ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    got = []
    try:
        for m in raw(iter([R(list_services="").SerializeToString(), b"\xff\xff\xff"]),
                     metadata=AUTH, timeout=10):
            got.append(m)
        raise AssertionError("garbage was answered")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
        assert "ServerReflectionRequest" in e.details(), e.details()
    assert len(got) == 1, got  # the good request before it was answered
    # without the token: refused before anything is read
    try:
        reflect(c, [R(list_services="")], metadata=None)
        raise AssertionError("reflection answered without a token")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.UNAUTHENTICATED, e
    return f"{len(names)} services listed; dhaf.v1.Dhaf.GetVersion -> dhaf/v1/dhaf.proto; " \
        f"NOT_FOUND errors; GetVersion called from reflected descriptors ({ver.version}); " \
        "v1alpha too; UNAUTHENTICATED without the token"


def test_reflection_cap_and_idle(c):
    """At most MAX_REFLECT streams at once (the next: RESOURCE_EXHAUSTED); a stream that sends
    no request for REFLECT_IDLE_S is ended by the node, and its slot is free again."""
    R = refl_v1.ServerReflectionRequest
    call = c.ch.stream_stream("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
                              request_serializer=R.SerializeToString,
                              response_deserializer=refl_v1.ServerReflectionResponse.FromString)
    held, stops = [], []
    for _ in range(MAX_REFLECT):  # each: one request answered, then silence (the client waits)
        stop = threading.Event()

        def reqs(stop=stop):
            yield R(list_services="")
            stop.wait(REFLECT_IDLE_S + 20)
        it = call(reqs(), metadata=AUTH, timeout=REFLECT_IDLE_S + 20)
        assert next(it).list_services_response.service, "no answer"
        held.append(it)
        stops.append(stop)
    t0 = time.monotonic()
    try:
        try:
            reflect(c, [R(list_services="")])
            raise AssertionError(f"a stream beyond {MAX_REFLECT} was answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
        ends = []
        for it in held:
            try:
                next(it)
                raise AssertionError("an idle stream answered again")
            except grpc.RpcError as e:
                ends.append((time.monotonic() - t0, e.code(), e.details()))
        for took, code, details in ends:
            assert REFLECT_IDLE_S - 2 <= took <= REFLECT_IDLE_S + 10, ends
            assert code == grpc.StatusCode.DEADLINE_EXCEEDED and "no reflection request" in \
                details, ends
        out = reflect(c, [R(list_services="")])  # the slots are free again
        assert out[0].list_services_response.service
    finally:
        for s in stops:
            s.set()
    return (f"{MAX_REFLECT} streams, the next RESOURCE_EXHAUSTED; idle streams ended after "
            f"{', '.join(f'{t:.1f}' for t, _, _ in ends)} s ({ends[0][1].name}); then answered")


def test_mtls(c):
    """With a client CA on the gRPC port, the TLS handshake asks every caller for a client
    certificate from that CA (health included: the transport refuses before any method); with
    one (any name) and still no token, health answers as on plaintext."""
    pki = tempfile.mkdtemp(dir=c.workdir)
    make_pki(pki, clients=("prober-x",))
    n = c.nodes[0]
    text = open(n.config).read()
    old = next(line for line in text.splitlines() if line.startswith("  grpc-api:"))
    text = text.replace(old, f"  grpc-api: {{host: 127.0.0.1, port: {n.grpc_port}, tls: "
                             f"{{cert-file: {pki}/server.pem, key-file: {pki}/server.key, "
                             f"client-ca-file: {pki}/ca.pem}}}}")
    open(n.config, "w").write(text)
    n.terminate(10)  # gracefully: its session is revoked, the restart is ready sooner
    n.start()
    c.ch.close()

    def read(name):
        return open(os.path.join(pki, name), "rb").read()
    target = f"127.0.0.1:{n.grpc_port}"

    def listening():  # a channel that first meets a closed port backs off for seconds
        with socket.socket() as sk:
            sk.settimeout(1)
            return sk.connect_ex(("127.0.0.1", n.grpc_port)) == 0
    wait_until("the restarted node's gRPC port", listening, 20, 0.05)
    mtls = grpc.secure_channel(target, grpc.ssl_channel_credentials(
        read("ca.pem"), read("prober-x.key"), read("prober-x.pem")))
    c.ch = mtls
    wait_until("Check over mTLS, no token", lambda: check(c, "") == SERVING, 20, 0.2)
    wait_until("dhaf.v1.Dhaf SERVING over mTLS", lambda: check(c, "dhaf.v1.Dhaf") == SERVING,
               60, 0.2)
    for what, ch in (("plaintext", grpc.insecure_channel(target)),
                     ("TLS without a client certificate",
                      grpc.secure_channel(target, grpc.ssl_channel_credentials(read("ca.pem"))))):
        try:
            check_fn(ch)(health_pb2.HealthCheckRequest(), timeout=10)
            raise AssertionError(f"{what}: answered")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNAVAILABLE, (what, e)
        finally:
            ch.close()
    return "mTLS: a client certificate and no token -> SERVING; plaintext and no certificate " \
        "-> UNAVAILABLE (the handshake)"


def test_stop_ends_watch(c):
    ws = []

    def accepted():  # the last test's watches end on the node within HEALTH_WATCH_POLL_MS
        ws.append(Watcher(c.ch, ""))
        return ws[-1].next(5) == SERVING
    wait_until("a Watch accepted", accepted, 10, 0.2)
    w = ws[-1]
    t0 = time.monotonic()
    c.nodes[0].terminate(10)
    # the last word is NOT_SERVING (unless the server cancelled the stream first), then the end
    seen = []
    while True:
        s = w.next(10)
        seen.append(s)
        if not isinstance(s, int):
            break
    took = time.monotonic() - t0
    assert all(x == NOT_SERVING for x in seen[:-1]), seen
    assert took < 5, took
    return f"SIGTERM: the Watch ended {took:.1f}s later ({[str(x)[:40] for x in seen]})"


def main():
    c = make()
    try:
        return run_tests([
            ("check_without_token", lambda: test_check_without_token(c)),
            ("watch_follows_etcd", lambda: test_watch_follows_etcd(c)),
            ("watch_cap_and_cancel", lambda: test_watch_cap_and_cancel(c)),
            ("reflection", lambda: test_reflection(c)),
            ("reflection_cap_and_idle", lambda: test_reflection_cap_and_idle(c)),
            ("mtls", lambda: test_mtls(c)),
            ("stop_ends_watch", lambda: test_stop_ends_watch(c)),
        ])
    finally:
        c.ch.close()
        c.close()


if __name__ == "__main__":
    sys.exit(main())
