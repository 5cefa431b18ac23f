#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Third-party client for the wire-compatibility test: Python grpcio calls dhaftest.v1.Echo served
# by lib/rpc (tests/interop/echo_server.c) and checks statuses, streaming, deadlines and TLS.
#
# usage: /usr/bin/python3 echo_client.py --addr HOST:PORT --proto-dir DIR --token T
#            [--tls-ca F [--tls-cert F --tls-key F --expect-cn CN]] [--hold-slow MS]
# Prints one line per check and a final "N passed, M failed"; exit 0 only if all passed.
# --hold-slow only makes one long Slow call, for the "stop with a call in flight" check.
# Use /usr/bin/python3: it is the interpreter that has grpcio (a pyenv python3 may not).

import argparse
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
import time

import grpc

PROTO = "dhaftest/v1/echo.proto"
# DHAF_ENOTFOUND in lib/include/dhaf/err.h; the server must answer it with NOT_FOUND.
DHAF_ENOTFOUND = -4
# Percent sign, non-ASCII and a newline: gRPC percent-encodes status details on the wire.
FAIL_MESSAGE = "no such key: /dhaf/v1/x (100% missing, \u00fcn\u00efc\u00f6d\u00e9)\nsecond line"
CALL_TIMEOUT = 5.0  # seconds; every call has a deadline so a broken server cannot hang us


def generate_stubs(proto_dir, out_dir):
    """Generates echo_pb2 / echo_pb2_grpc into out_dir and imports them."""
    try:
        from grpc_tools import protoc as gt  # python3-grpc-tools, if installed

        rc = gt.main(["protoc", "-I" + proto_dir, "--python_out=" + out_dir,
                      "--grpc_python_out=" + out_dir, os.path.join(proto_dir, PROTO)])
        if rc != 0:
            raise RuntimeError("grpc_tools.protoc failed with %d" % rc)
    except ImportError:
        protoc = shutil.which("protoc")
        plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
        if not protoc or not os.access(plugin, os.X_OK):
            raise RuntimeError("need protoc and grpc_python_plugin (or grpc_tools)")
        subprocess.run([protoc, "-I" + proto_dir, "--python_out=" + out_dir,
                        "--grpc_out=" + out_dir, "--plugin=protoc-gen-grpc=" + plugin,
                        os.path.join(proto_dir, PROTO)], check=True)
    sys.path.insert(0, out_dir)
    pb2 = importlib.import_module("dhaftest.v1.echo_pb2")
    pb2_grpc = importlib.import_module("dhaftest.v1.echo_pb2_grpc")
    return pb2, pb2_grpc


class CheckFailed(Exception):
    pass


class Runner:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, fn):
        """Runs fn(); it returns a short detail on success and raises on failure."""
        try:
            detail = fn()
        except CheckFailed as e:
            self.failed += 1
            print("FAIL %s: %s" % (name, e), flush=True)
        except Exception as e:  # an unexpected RpcError or bug is a failed check, not a crash
            self.failed += 1
            print("FAIL %s: unexpected %s: %s" % (name, type(e).__name__, describe(e)),
                  flush=True)
        else:
            self.passed += 1
            print("ok   %s%s" % (name, ": " + detail if detail else ""), flush=True)


def describe(e):
    if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        return "%s %r" % (e.code().name, e.details())
    return str(e)


def brief(x):
    """A one-line rendering of a reply (or a list of streamed replies) for a failure line."""
    if isinstance(x, list):
        return "%d messages: [%s]" % (len(x), ", ".join(brief(m) for m in x[:5]))
    return "{%s}" % " ".join(str(x).split())[:200]


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


def expect_status(fn, code):
    """Calls fn(), which must fail with status code; returns the RpcError."""
    try:
        got = fn()
    except grpc.RpcError as e:
        expect(e.code() == code, "want %s, got %s" % (code.name, describe(e)))
        return e
    raise CheckFailed("want %s, got a reply %s" % (code.name, brief(got)))


def main():
    ap = argparse.ArgumentParser(description="Python grpcio checks against dhaf-test-echo-server")
    ap.add_argument("--addr", required=True, help="server HOST:PORT")
    ap.add_argument("--proto-dir", required=True, help="dir containing " + PROTO)
    ap.add_argument("--token", required=True, help="the server's bearer token")
    ap.add_argument("--tls-ca", help="CA of the server certificate; turns TLS on")
    ap.add_argument("--tls-cert", help="client certificate (mTLS)")
    ap.add_argument("--tls-key", help="client key (mTLS)")
    ap.add_argument("--expect-cn", help="CN the server must report for the client cert")
    ap.add_argument("--hold-slow", type=int, metavar="MS",
                    help="only make one Slow(MS) call with a 30 s deadline and report how it "
                    "ended (the caller stops the server meanwhile)")
    args = ap.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key) or (args.tls_cert and not args.tls_ca):
        ap.error("--tls-cert and --tls-key go together and need --tls-ca")

    tmp = tempfile.mkdtemp(prefix="dhaf-interop-py-")
    try:
        pb2, pb2_grpc = generate_stubs(args.proto_dir, tmp)
        if args.hold_slow is not None:
            return hold_slow(args, pb2, pb2_grpc)
        return run_checks(args, pb2, pb2_grpc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def open_channel(args):
    """Returns (channel, mode) for the address and TLS options given."""
    if not args.tls_ca:
        return grpc.insecure_channel(args.addr), "plaintext"
    creds = grpc.ssl_channel_credentials(
        root_certificates=read(args.tls_ca),
        private_key=read(args.tls_key) if args.tls_key else None,
        certificate_chain=read(args.tls_cert) if args.tls_cert else None)
    return grpc.secure_channel(args.addr, creds), "mTLS" if args.tls_cert else "TLS"


def hold_slow(args, pb2, pb2_grpc):
    """One long Slow call; prints "STATUS <code> <seconds>". Exit 0 when it ended in an error
    status (the server went away mid-call), 1 when it completed or the deadline hit."""
    channel, _ = open_channel(args)
    t0 = time.monotonic()
    try:
        pb2_grpc.EchoStub(channel).Slow(pb2.SlowRequest(sleep_ms=args.hold_slow),
                                        metadata=[("authorization", "Bearer " + args.token)],
                                        timeout=30.0)
        code = grpc.StatusCode.OK
        details = ""
    except grpc.RpcError as e:
        code, details = e.code(), e.details()
    channel.close()
    print("STATUS %s %.2f %r" % (code.name, time.monotonic() - t0, details), flush=True)
    bad = (grpc.StatusCode.OK, grpc.StatusCode.DEADLINE_EXCEEDED)
    return 1 if code in bad else 0


def run_checks(args, pb2, pb2_grpc):
    r = Runner()
    good = [("authorization", "Bearer " + args.token)]
    channel, mode = open_channel(args)
    stub = pb2_grpc.EchoStub(channel)
    print("# %s client (grpcio %s) -> %s" % (mode, grpc.__version__, args.addr), flush=True)

    def say_ok():
        rep = stub.Say(pb2.SayRequest(text="hello dhaf"), metadata=good, timeout=CALL_TIMEOUT)
        expect(rep.text == "hello dhaf", "text %r echoed as %r" % ("hello dhaf", rep.text))
        host = args.addr.rsplit(":", 1)[0].strip("[]")
        expect(rep.peer.startswith(("ipv4:", "ipv6:")) and host in rep.peer,
               "peer %r does not look like our address %s" % (rep.peer, host))
        if args.expect_cn:
            expect(rep.has_client_cn and rep.client_cn == args.expect_cn,
                   "server saw client CN %r (has=%s), want %r"
                   % (rep.client_cn, rep.has_client_cn, args.expect_cn))
        else:
            expect(not rep.has_client_cn and rep.client_cn == "",
                   "server reports a client CN %r without a client cert" % rep.client_cn)
        return "text echoed, peer=%s, client_cn=%s" % (rep.peer, rep.client_cn or "(none)")

    r.check("say with the right token", say_ok)

    def say_bad(md):
        def fn():
            e = expect_status(lambda: stub.Say(pb2.SayRequest(text="x"), metadata=md,
                                               timeout=CALL_TIMEOUT),
                              grpc.StatusCode.UNAUTHENTICATED)
            return "UNAUTHENTICATED %r" % e.details()
        return fn

    r.check("say without a token", say_bad(None))
    r.check("say with a wrong token", say_bad([("authorization", "Bearer wrong-" + args.token)]))
    r.check("say with a prefix of the token",
            say_bad([("authorization", "Bearer " + args.token[:-1])]))
    r.check("say with the token but not as Bearer",
            say_bad([("authorization", "Basic " + args.token)]))

    def count_50():
        got = [m.i for m in stub.Count(pb2.CountRequest(n=50), metadata=good,
                                       timeout=CALL_TIMEOUT)]
        expect(got == list(range(50)), "want i=0..49 in order, got %d messages: %s"
               % (len(got), got[:60]))
        return "50 messages, i=0..49 in order"

    r.check("count 50 (server streaming)", count_50)

    def count_0():
        got = list(stub.Count(pb2.CountRequest(n=0), metadata=good, timeout=CALL_TIMEOUT))
        expect(got == [], "want no messages, got %d" % len(got))
        return "empty stream, status OK"

    r.check("count 0 (empty stream)", count_0)

    def count_unauth():
        def fn():
            return list(stub.Count(pb2.CountRequest(n=3), timeout=CALL_TIMEOUT))
        e = expect_status(fn, grpc.StatusCode.UNAUTHENTICATED)
        return "UNAUTHENTICATED %r" % e.details()

    r.check("count without a token", count_unauth)

    def count_cancel():
        it = stub.Count(pb2.CountRequest(n=100000), metadata=good, timeout=CALL_TIMEOUT)
        first = [next(it).i for _ in range(10)]
        it.cancel()
        expect(first == list(range(10)), "first messages %s" % first)
        e = expect_status(lambda: list(it), grpc.StatusCode.CANCELLED)
        return "read 10, cancelled: %s" % e.code().name

    r.check("count cancelled by the client mid-stream", count_cancel)

    def fail_not_found():
        e = expect_status(lambda: stub.Fail(pb2.FailRequest(code=DHAF_ENOTFOUND,
                                                            message=FAIL_MESSAGE),
                                            metadata=good, timeout=CALL_TIMEOUT),
                          grpc.StatusCode.NOT_FOUND)
        expect(e.details() == FAIL_MESSAGE, "details %r, want %r" % (e.details(), FAIL_MESSAGE))
        return "NOT_FOUND with the message intact (%d chars, %%, UTF-8, newline)" \
            % len(FAIL_MESSAGE)

    r.check("fail with DHAF_ENOTFOUND", fail_not_found)

    def slow_deadline():
        t0 = time.monotonic()
        expect_status(lambda: stub.Slow(pb2.SlowRequest(sleep_ms=5000), metadata=good,
                                        timeout=0.3),
                      grpc.StatusCode.DEADLINE_EXCEEDED)
        took = time.monotonic() - t0
        expect(took < 2.0, "DEADLINE_EXCEEDED only after %.2f s" % took)
        return "DEADLINE_EXCEEDED after %.0f ms" % (took * 1000)

    r.check("slow 5000 ms with a 300 ms deadline", slow_deadline)

    def slow_parallel():
        # Handlers run on their own threads: 4 calls of 400 ms take about 400 ms, not 1.6 s.
        t0 = time.monotonic()
        futs = [stub.Slow.future(pb2.SlowRequest(sleep_ms=400), metadata=good,
                                 timeout=CALL_TIMEOUT) for _ in range(4)]
        texts = [f.result().text for f in futs]
        took = time.monotonic() - t0
        expect(texts == ["slept 400 ms"] * 4, "replies %r" % texts)
        expect(took < 1.4, "4 parallel 400 ms calls took %.2f s (serialized?)" % took)
        return "4 x 400 ms in %.0f ms" % (took * 1000)

    r.check("slow calls run concurrently", slow_parallel)

    def big_message():
        text = "0123456789abcdef" * 65536  # 1 MiB: many HTTP/2 DATA frames each way
        rep = stub.Say(pb2.SayRequest(text=text), metadata=good, timeout=CALL_TIMEOUT)
        expect(rep.text == text, "1 MiB text came back as %d bytes" % len(rep.text))
        return "1 MiB echoed"

    r.check("say 1 MiB", big_message)

    def too_big():
        text = "x" * (5 * 1024 * 1024)  # over the server's default 4 MiB limit
        e = expect_status(lambda: stub.Say(pb2.SayRequest(text=text), metadata=good,
                                           timeout=CALL_TIMEOUT),
                          grpc.StatusCode.RESOURCE_EXHAUSTED)
        return "RESOURCE_EXHAUSTED %r" % e.details()

    r.check("say 5 MiB (over the 4 MiB limit)", too_big)

    def unknown_method():
        call = channel.unary_unary("/dhaftest.v1.Echo/NoSuchMethod")
        e = expect_status(lambda: call(b"", metadata=good, timeout=CALL_TIMEOUT),
                          grpc.StatusCode.UNIMPLEMENTED)
        return "UNIMPLEMENTED %r" % e.details()

    r.check("unknown method", unknown_method)

    def garbage_request():
        # Bytes that are not a SayRequest (field 1 claims 100 bytes, 1 follows). gRPC servers
        # answer INTERNAL (C++, Go) or INVALID_ARGUMENT; anything else is a bug.
        call = channel.unary_unary("/dhaftest.v1.Echo/Say")
        try:
            got = call(b"\x0a\x64x", metadata=good, timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            expect(e.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT),
                   "want INTERNAL or INVALID_ARGUMENT, got %s" % describe(e))
            return "%s %r" % (e.code().name, e.details())
        raise CheckFailed("want an error, got a reply %r" % (got,))

    r.check("undecodable request", garbage_request)

    def still_serving():
        rep = stub.Say(pb2.SayRequest(text="still there"), metadata=good, timeout=CALL_TIMEOUT)
        expect(rep.text == "still there", "text %r" % rep.text)
        return "server answers after the failed and cancelled calls"

    r.check("say after all of the above", still_serving)

    if args.tls_ca:
        def plaintext_refused():
            ch = grpc.insecure_channel(args.addr)
            try:
                e = expect_status(lambda: pb2_grpc.EchoStub(ch).Say(
                    pb2.SayRequest(text="x"), metadata=good, timeout=CALL_TIMEOUT),
                    grpc.StatusCode.UNAVAILABLE)
            finally:
                ch.close()
            return "UNAVAILABLE %r" % e.details()

        r.check("plaintext client against the TLS server", plaintext_refused)

    if args.tls_cert:
        def no_client_cert():
            ch = grpc.secure_channel(args.addr, grpc.ssl_channel_credentials(
                root_certificates=read(args.tls_ca)))
            try:
                e = expect_status(lambda: pb2_grpc.EchoStub(ch).Say(
                    pb2.SayRequest(text="x"), metadata=good, timeout=CALL_TIMEOUT),
                    grpc.StatusCode.UNAVAILABLE)
            finally:
                ch.close()
            return "UNAVAILABLE %r" % e.details()

        r.check("TLS client without a certificate against mTLS", no_client_cert)

    channel.close()
    print("%d passed, %d failed" % (r.passed, r.failed), flush=True)
    return 0 if r.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
