#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Peer figures for bench/rpc: a Python grpcio client against the same lib/rpc echo server and
# etcd as dhaf-bench-rpc, and an etcdctl process-per-put loop, so both sets of figures come
# from the same run on the same machine.
#
# usage: /usr/bin/python3 py_peer.py --echo-addr HOST:PORT --etcd-endpoint HOST:PORT
#            --source-dir DIR [--seconds N] [--calls N] [--threads N]
#            [--etcdctl PATH] [--etcdctl-puts N]
# Prints one "RESULT <name> <value>" line per figure on stdout (dhaf-bench-rpc parses them) and
# progress on stderr. Every measurement stops after --seconds or --calls, whichever comes first,
# and every call has a deadline. Exit 0 when it ran (failed calls are counted in the figures as
# "RESULT <name>_errors N"), 1 when it could not start (protoc could not generate the gRPC
# Python modules, the "stubs" of the grpcio API), 2 on usage.
# Use /usr/bin/python3: it is the interpreter that has grpcio (a pyenv python3 may not).

import argparse
import ctypes
import importlib
import itertools
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import grpc

ECHO_PROTO_ROOT = "tests/proto"
ECHO_PROTO = "dhaftest/v1/echo.proto"
ETCD_PROTO_ROOT = "proto/etcd"
ETCD_PROTOS = ["mvccpb/kv.proto", "etcdserverpb/rpc.proto"]

# Same payloads and key space as bench/rpc_bench.c, so both clients do the same work.
SAY_TEXT = "hello dhaf bench"
PUT_VALUE = b"v" * 64
KEY_SPACE = 1000
GET_KEY = b"/bench/get"
CALL_TIMEOUT = 5.0  # seconds
WARMUP_CALLS = 50
MAX_ERRORS = 100  # a measurement gives up after this many failed calls
PR_SET_PDEATHSIG = 1


def log(msg):
    print("py_peer: " + msg, file=sys.stderr, flush=True)


def die_with_parent():
    """Ask the kernel for SIGTERM when dhaf-bench-rpc goes away, so no peer outlives it."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:
        sys.exit(1)


def generate_stubs(root, protos, out_dir):
    """Generates *_pb2 / *_pb2_grpc for protos (relative to root) into out_dir."""
    paths = [os.path.join(root, p) for p in protos]
    try:
        from grpc_tools import protoc as gt  # python3-grpc-tools, if installed

        rc = gt.main(["protoc", "-I" + root, "--python_out=" + out_dir,
                      "--grpc_python_out=" + out_dir] + paths)
        if rc != 0:
            raise RuntimeError("grpc_tools.protoc failed with %d" % rc)
    except ImportError:
        protoc = shutil.which("protoc")
        plugin = shutil.which("grpc_python_plugin") or "/usr/bin/grpc_python_plugin"
        if not protoc or not os.access(plugin, os.X_OK):
            raise RuntimeError("need protoc and grpc_python_plugin (or grpc_tools)")
        subprocess.run([protoc, "-I" + root, "--python_out=" + out_dir, "--grpc_out=" + out_dir,
                        "--plugin=protoc-gen-grpc=" + plugin] + paths, check=True)


class Measurement:
    """Runs op(i) from `threads` threads until `seconds` pass or `calls` calls were issued."""

    def __init__(self, op, threads, seconds, calls):
        self.op = op
        self.threads = threads
        self.seconds = seconds
        self.calls = calls
        self.lock = threading.Lock()
        self.done = 0
        self.errors = 0
        self.first_error = None
        self.latencies = []  # ns, only for one thread

    def worker(self, issued, deadline):
        lat = self.latencies if self.threads == 1 else None
        done = errors = 0
        first = None
        while time.monotonic() < deadline:
            i = next(issued)  # itertools.count is atomic under the GIL
            if i >= self.calls:
                break
            t0 = time.perf_counter_ns()
            try:
                self.op(i)
            except Exception as e:  # a failed call is counted, not fatal
                errors += 1
                first = first or describe(e)
                if errors >= MAX_ERRORS:
                    break
                continue
            if lat is not None:
                lat.append(time.perf_counter_ns() - t0)
            done += 1
        with self.lock:
            self.done += done
            self.errors += errors
            self.first_error = self.first_error or first

    def run(self):
        for i in range(WARMUP_CALLS):  # connect and fill caches outside the timed part
            try:
                self.op(i)
            except Exception as e:
                log("warm-up call failed: %s" % describe(e))
                break
        issued = itertools.count()
        t0 = time.monotonic()
        deadline = t0 + self.seconds
        if self.threads == 1:
            self.worker(issued, deadline)
        else:
            ts = [threading.Thread(target=self.worker, args=(issued, deadline), daemon=True)
                  for _ in range(self.threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
        self.elapsed = time.monotonic() - t0
        return self


def describe(e):
    if isinstance(e, grpc.RpcError) and hasattr(e, "code"):
        return "%s %r" % (e.code().name, e.details())
    return "%s: %s" % (type(e).__name__, e)


def percentile_us(sorted_ns, p):
    if not sorted_ns:
        return 0.0
    k = min(len(sorted_ns) - 1, int(p / 100.0 * len(sorted_ns)))
    return sorted_ns[k] / 1000.0


def report(name, m, latency=False):
    rate = m.done / m.elapsed if m.elapsed > 0 else 0.0
    print("RESULT %s %.1f" % (name, rate), flush=True)
    if m.errors:
        print("RESULT %s_errors %d" % (name, m.errors), flush=True)
        log("%s: %d failed calls, first: %s" % (name, m.errors, m.first_error))
    if latency:
        lat = sorted(m.latencies)
        print("RESULT %s_p50_us %.1f" % (name, percentile_us(lat, 50)), flush=True)
        print("RESULT %s_p99_us %.1f" % (name, percentile_us(lat, 99)), flush=True)
    log("%s: %.0f/s (%d calls in %.2f s, %d errors)" % (name, rate, m.done, m.elapsed,
                                                       m.errors))


def bench_echo(args, pb2, pb2_grpc):
    channel = grpc.insecure_channel(args.echo_addr)
    stub = pb2_grpc.EchoStub(channel)
    req = pb2.SayRequest(text=SAY_TEXT)

    def say(_i):
        rep = stub.Say(req, timeout=CALL_TIMEOUT)
        if rep.text != SAY_TEXT:
            raise RuntimeError("echoed %r" % rep.text)

    log("unary Say, 1 thread")
    report("unary_1", Measurement(say, 1, args.seconds, args.calls).run(), latency=True)
    log("unary Say, %d threads" % args.threads)
    report("unary_n", Measurement(say, args.threads, args.seconds, args.calls).run())
    channel.close()


def bench_etcd(args, rpc_pb2, rpc_pb2_grpc):
    channel = grpc.insecure_channel(args.etcd_endpoint)
    kv = rpc_pb2_grpc.KVStub(channel)

    def put(i):
        kv.Put(rpc_pb2.PutRequest(key=b"/bench/py/%d" % (i % KEY_SPACE), value=PUT_VALUE),
               timeout=CALL_TIMEOUT)

    get_req = rpc_pb2.RangeRequest(key=GET_KEY)

    def get(_i):
        rep = kv.Range(get_req, timeout=CALL_TIMEOUT)
        if len(rep.kvs) != 1:
            raise RuntimeError("%s: %d keys" % (GET_KEY.decode(), len(rep.kvs)))

    log("etcd Put, 1 thread")
    report("etcd_put_1", Measurement(put, 1, args.seconds, args.calls).run(), latency=True)
    log("etcd Put, %d threads" % args.threads)
    report("etcd_put_n", Measurement(put, args.threads, args.seconds, args.calls).run())
    kv.Put(rpc_pb2.PutRequest(key=GET_KEY, value=PUT_VALUE), timeout=CALL_TIMEOUT)
    log("etcd Range, 1 thread")
    report("etcd_get_1", Measurement(get, 1, args.seconds, args.calls).run(), latency=True)
    channel.close()


def bench_etcdctl(args):
    env = dict(os.environ, ETCDCTL_API="3")
    cmd = [args.etcdctl, "--endpoints=" + args.etcd_endpoint, "--command-timeout=5s", "put"]
    value = PUT_VALUE.decode()

    def put(i):
        subprocess.run(cmd + ["/bench/etcdctl/%d" % (i % KEY_SPACE), value], env=env,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True,
                       timeout=CALL_TIMEOUT * 2)

    log("etcdctl put, one process per put (at most %d)" % args.etcdctl_puts)
    m = Measurement(put, 1, args.seconds, args.etcdctl_puts)
    report("etcdctl_put", m.run(), latency=True)


def main():
    ap = argparse.ArgumentParser(description="Python grpcio / etcdctl peer for dhaf-bench-rpc")
    ap.add_argument("--echo-addr", required=True, help="lib/rpc echo server HOST:PORT")
    ap.add_argument("--etcd-endpoint", required=True, help="etcd client HOST:PORT")
    ap.add_argument("--source-dir", required=True, help="dhaf source tree (for the protos)")
    ap.add_argument("--seconds", type=float, default=3.0, help="per measurement")
    ap.add_argument("--calls", type=int, default=100000, help="at most, per measurement")
    ap.add_argument("--threads", type=int, default=4, help="client threads of the parallel runs")
    ap.add_argument("--etcdctl", default="/usr/bin/etcdctl")
    ap.add_argument("--etcdctl-puts", type=int, default=200,
                    help="at most this many etcdctl processes (0: skip)")
    args = ap.parse_args()
    if args.seconds <= 0 or args.calls <= 0 or args.threads <= 0 or args.etcdctl_puts < 0:
        ap.error("--seconds, --calls and --threads must be positive")

    die_with_parent()
    # SIGTERM from dhaf-bench-rpc unwinds normally: subprocess.run kills a running etcdctl and
    # the temp dir is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    tmp = tempfile.mkdtemp(prefix="dhaf-bench-py-")
    try:
        try:
            generate_stubs(os.path.join(args.source_dir, ECHO_PROTO_ROOT), [ECHO_PROTO], tmp)
            generate_stubs(os.path.join(args.source_dir, ETCD_PROTO_ROOT), ETCD_PROTOS, tmp)
            sys.path.insert(0, tmp)
            echo_pb2 = importlib.import_module("dhaftest.v1.echo_pb2")
            echo_pb2_grpc = importlib.import_module("dhaftest.v1.echo_pb2_grpc")
            rpc_pb2 = importlib.import_module("etcdserverpb.rpc_pb2")
            rpc_pb2_grpc = importlib.import_module("etcdserverpb.rpc_pb2_grpc")
        except Exception as e:
            log("cannot generate the Python stubs: %s" % e)
            return 1
        print("RESULT grpcio_version %s" % grpc.__version__, flush=True)
        bench_echo(args, echo_pb2, echo_pb2_grpc)
        bench_etcd(args, rpc_pb2, rpc_pb2_grpc)
        if args.etcdctl_puts > 0:
            bench_etcdctl(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
