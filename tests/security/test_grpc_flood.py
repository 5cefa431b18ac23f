# SPDX-License-Identifier: MIT
"""Issue 15, finding "unauthenticated callers block the gRPC API": the gRPC server checks a
call's credentials from its metadata before it reads the message, answers a refused call at
once, and cancels an accepted call whose message does not come.

(a) 300 header-only Prober/Report calls without a token, opened on one connection and never
    sending their message: each is answered UNAUTHENTICATED, and meanwhile an authorised
    Dhaf/GetVersion (api-token) and an authorised Prober/GetPlan (the prober's token) succeed,
    each within 1 s. (Before: the 300 calls held 256 slots for as long as they were open, and
    every other call failed with RESOURCE_EXHAUSTED.)
(b) 120 unauthenticated GetPlan calls of 4 MiB each: the node's peak memory (VmHWM) grows by
    less than 32 MiB (before: 27 -> 262 MB), and all are answered UNAUTHENTICATED.
(c) An authorised call that sends its headers but never its message is cancelled by the node
    after the receive deadline (5 s), with "no request message within 5000 ms".

Usage: /usr/bin/python3 test_grpc_flood.py BUILD_BIN_DIR (exit 77: cannot run here).
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
from dhafsys import Cluster, grpc_modules, grpc_or_skip, run_tests, wait_until  # noqa: E402

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/bin")
grpc = grpc_or_skip(BIN, "dhaf-node")

ASAN = b"__asan_init" in open(os.path.join(BIN, "dhaf-node"), "rb").read()
API_TOKEN = "grpc-flood-admin-token-0123456789"
PROBER, PROBER_TOKEN = "probe-1", "grpc-flood-prober-token-0123456789"
PROBERS = f"""probers:
  - {{name: {PROBER}, token: "{PROBER_TOKEN}", location: lab}}
"""
REPORT = "/dhaf.v1.Prober/Report"
FOUR_MIB = 4 * 1024 * 1024 - 1024

dpb, dpb_grpc = grpc_modules("dhaf")
ppb, ppb_grpc = grpc_modules("prober")


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc/pid/status")


def never(stop):
    """A request iterator that sends nothing until stop is set (headers only on the wire)."""
    stop.wait()
    return
    yield  # noqa: unreachable - makes this a generator


def authorised_calls(node):
    """(GetVersion seconds, GetPlan seconds) over a fresh connection, 1 s deadline each."""
    with grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}") as ch:
        t0 = time.monotonic()
        v = dpb_grpc.DhafStub(ch).GetVersion(dpb.GetVersionRequest(), timeout=1,
                                              metadata=(("authorization", f"Bearer {API_TOKEN}"),))
        t1 = time.monotonic()
        plan = ppb_grpc.ProberStub(ch).GetPlan(
            ppb.GetPlanRequest(prober=PROBER, location="lab"), timeout=1,
            metadata=(("authorization", f"Bearer {PROBER_TOKEN}"),))
        t2 = time.monotonic()
    assert v.version and plan.generation, (v, plan)
    return t1 - t0, t2 - t1


def test_flood_of_header_only_calls(c):
    node = c.nodes[0]
    stop = threading.Event()
    ch = grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}")  # one connection for all 300
    report = ch.stream_unary(REPORT, request_serializer=lambda m: m,
                             response_deserializer=lambda b: b)
    futs = []
    try:
        for _ in range(300):
            futs.append(report.future(never(stop), timeout=30))
        # let the flood reach the node: every call answered, or (the old server) held
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and sum(f.done() for f in futs) < 300:
            time.sleep(0.02)
        answered = sum(f.done() for f in futs)
        # the authorised calls, while any flood call not answered yet is still held
        try:
            tv, tp = authorised_calls(node)
        except grpc.RpcError as e:
            raise AssertionError(f"an authorised call failed during the flood ({answered} of 300 "
                                 f"flood calls answered): {e.code().name}: {e.details()}")
        assert tv < 1 and tp < 1, (tv, tp)
        codes = {}
        for f in futs:
            if f.done():
                code = f.exception().code() if f.exception() else grpc.StatusCode.OK
                codes[code.name] = codes.get(code.name, 0) + 1
        assert answered == 300 and codes == {"UNAUTHENTICATED": 300}, (answered, codes)
        return (f"300 unauthenticated header-only calls all UNAUTHENTICATED; GetVersion "
                f"{tv * 1000:.0f} ms, GetPlan {tp * 1000:.0f} ms")
    finally:
        stop.set()
        for f in futs:
            f.cancel()
        ch.close()


def test_big_unauthenticated_messages(c):
    node = c.nodes[0]
    pid = node.proc.pid
    before = vm_hwm_kib(pid)
    big = ppb.GetPlanRequest(prober="x" * FOUR_MIB, location="lab")
    with grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}",
                               options=[("grpc.max_send_message_length", 8 << 20)]) as ch:
        stub = ppb_grpc.ProberStub(ch)
        futs = [stub.GetPlan.future(big, timeout=30,
                                    metadata=(("authorization", "Bearer wrong"),))
                for _ in range(120)]
        codes = {}
        for f in futs:
            e = f.exception()
            name = e.code().name if e else "OK"
            codes[name] = codes.get(name, 0) + 1
    after = vm_hwm_kib(pid)
    grew = (after - before) / 1024
    assert codes == {"UNAUTHENTICATED": 120}, codes
    if ASAN:
        return (f"all UNAUTHENTICATED; memory bound not checked under AddressSanitizer (its "
                f"quarantine keeps freed memory: VmHWM {before // 1024} -> {after // 1024} MiB)")
    assert grew < 32, f"node VmHWM grew by {grew:.1f} MiB ({before // 1024} -> {after // 1024})"
    return (f"120 x 4 MiB unauthenticated: UNAUTHENTICATED; VmHWM {before / 1024:.1f} -> "
            f"{after / 1024:.1f} MiB")


def test_message_that_never_comes(c):
    node = c.nodes[0]
    stop = threading.Event()
    with grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}") as ch:
        report = ch.stream_unary(REPORT, request_serializer=lambda m: m,
                                 response_deserializer=lambda b: b)
        t0 = time.monotonic()
        fut = report.future(never(stop), timeout=20,
                            metadata=(("authorization", f"Bearer {PROBER_TOKEN}"),))
        try:
            e = fut.exception(timeout=15)
        finally:
            stop.set()
        took = time.monotonic() - t0
    assert e is not None, "the call succeeded"
    assert "no request message within 5000 ms" in (e.details() or ""), (e.code(), e.details())
    assert 4 < took < 8, took
    return f"cancelled after {took:.1f} s: {e.code().name}: {e.details()}"


def main():
    c = Cluster(BIN, n=1, name="grpc-flood", extra=PROBERS)
    node = c.nodes[0]
    with open(node.config) as f:
        text = f.read()
    with open(node.config, "w") as f:
        f.write(text.replace("dhaf:\n", f"dhaf:\n  api-token: {API_TOKEN}\n", 1))
    try:
        c.start_all()
        wait_until("the node's gRPC API", lambda: _ready(node), 20)
        return run_tests([
            ("flood of header-only unauthenticated calls", lambda: test_flood_of_header_only_calls(c)),
            ("120 unauthenticated 4 MiB calls", lambda: test_big_unauthenticated_messages(c)),
            ("a message that never comes", lambda: test_message_that_never_comes(c)),
        ])
    finally:
        c.close()


def _ready(node):
    try:
        authorised_calls(node)
        return True
    except grpc.RpcError:
        return None


if __name__ == "__main__":
    sys.exit(main())
