# SPDX-License-Identifier: MIT
"""Issue 15, low finding "a prober's location is logged unquoted (log injection)": text a gRPC
caller supplies (a prober's location and name, a refused prober's claimed name) is quoted in
the node's log, so a newline in it cannot forge a log line.

An authorised prober fetches its plan with location "lab\\nts=... level=error event=forged ...":
the node logs event=plan-sent with the location escaped on one line, and no line of the log is
an event=forged. (Before: the location was written raw, and the forged line appeared.)

Usage: /usr/bin/python3 test_grpc_log_quote.py BUILD_BIN_DIR (exit 77: cannot run here).
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
from dhafsys import Cluster, grpc_modules, grpc_or_skip, run_tests, wait_until  # noqa: E402

BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/bin")
grpc = grpc_or_skip(BIN, "dhaf-node")

PROBER, TOKEN = "probe-1", "grpc-log-quote-prober-token-0123456789"
PROBERS = f"""probers:
  - {{name: {PROBER}, token: "{TOKEN}", location: lab}}
"""
FORGED = "lab\nts=2026-01-01T00:00:00.000Z level=error event=forged msg=\"injected\""

ppb, ppb_grpc = grpc_modules("prober")


def test_location_quoted(c):
    node = c.nodes[0]
    with grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}") as ch:
        stub = ppb_grpc.ProberStub(ch)
        md = (("authorization", f"Bearer {TOKEN}"),)
        plan = wait_until("the plan", lambda: _plan(stub, md, FORGED), 20)
    assert plan.generation
    wait_until("event=plan-sent", lambda: node.log_events("plan-sent") or None, 5)
    forged = node.log_events("forged")
    assert not forged, f"a forged log line: {forged}"
    raw = [ln for ln in node.log_lines() if "event=forged" in ln and "plan-sent" not in ln]
    assert not raw, f"a forged log line: {raw}"
    sent = [e for e in node.log_events("plan-sent") if "forged" in e.get("location", "")]
    assert sent, f"the location is not on the plan-sent line: {node.log_events('plan-sent')}"
    return f"location logged on one line: {sent[0]['location']!r}"


def _plan(stub, md, location):
    try:
        return stub.GetPlan(ppb.GetPlanRequest(prober=PROBER, location=location), metadata=md,
                            timeout=2)
    except grpc.RpcError:
        return None


def main():
    c = Cluster(BIN, n=1, name="grpc-log-quote", extra=PROBERS)
    try:
        c.start_all()
        return run_tests([("a prober's location is quoted in the log",
                           lambda: test_location_quoted(c))])
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
