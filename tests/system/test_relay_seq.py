# SPDX-License-Identifier: MIT
"""Relayed prober reports never go backwards: a report whose seq is not newer than the one
written (probers-seq/<prober>) is refused through any node, and the stored vote keeps the newer
results; a restarted dhaf-prober goes on with higher seqs; a prober whose reports are refused as
stale logs it and goes on at its normal pace. Drives dhaf.v1.Prober with Python grpcio.
usage: /usr/bin/python3 test_relay_seq.py BUILD_BIN_DIR"""
import json
import os
import sys
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import Cluster, grpc_modules, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
PROBER, TOKEN = "probe-1", "t0ken-relay"
PROBERS = f"""probers:
  - {{name: {PROBER}, token: "{TOKEN}", location: lab}}
"""
MD = (("authorization", f"Bearer {TOKEN}"),)


pb2, pb2_grpc = grpc_modules("prober")


class Api:
    """Prober.GetPlan / Prober.Report on one node."""

    def __init__(self, node):
        self.node = node
        self.ch = grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}")
        self.stub = pb2_grpc.ProberStub(self.ch)

    def plan(self):
        return self.stub.GetPlan(pb2.GetPlanRequest(prober=PROBER, location="lab"), metadata=MD,
                                 timeout=5)

    def report(self, generation, seq, healthy, reason):
        res = [pb2.CheckResult(service="main", entry_point=ep, healthy=healthy, reason=reason,
                               reason_text=f"seq {seq}") for ep in ("ep-1", "ep-2")]
        return self.stub.Report(pb2.ReportRequest(prober=PROBER, generation=generation, seq=seq,
                                                  results=res), metadata=MD, timeout=5)

    def close(self):
        self.ch.close()


def stored(c):
    """(vote, prober info, seq key value, {key: lease}) of the prober in etcd."""
    kvs = c.etcd.get_prefix(c.prefix)
    get = lambda k: kvs.get(c.prefix + k, (None, 0, 0))  # noqa: E731
    vote, info, seq = get(f"votes/{PROBER}"), get(f"probers/{PROBER}"), get(f"probers-seq/{PROBER}")
    return (json.loads(vote[0]) if vote[0] else None, json.loads(info[0]) if info[0] else None,
            seq[0], {"vote": vote[1], "info": info[1], "seq": seq[1]})


def expect_stale(api, gen, seq, have):
    try:
        api.report(gen, seq, False, "older")  # an opinion other than the stored one
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.FAILED_PRECONDITION, (e.code(), e.details())
        d = e.details()
        assert "stale report" in d and PROBER in d and f"seq {seq} " in d and f"seq {have}" in d, d
        return d
    raise AssertionError(f"a report with seq {seq} was accepted although {have} is stored")


def plan_generation(apis):
    """The plan generation, once every node serves the same plan."""
    return wait_until("both nodes to serve the plan",
                      lambda: (lambda g: g if len(set(g)) == 1 else None)(
                          [a.plan().generation for a in apis]), 15)[0]


def test_older_report_through_another_node(c, apis, gen):
    a, b = apis
    n = 5000
    # the first report ever: no seq key yet (a compare on a missing key is false in etcd)
    assert a.report(gen, n, False, "newer").accepted
    vote, info, seq, leases = stored(c)
    assert vote["seq"] == n and seq == f"{n:020d}", (vote, seq)
    assert info["relayed_by"] == a.node.name and info["seq"] == n, info
    assert leases["seq"] != 0 and leases["seq"] == leases["vote"] == leases["info"], leases

    # an older report relayed by the other node (as if delayed there) is refused ...
    msg = expect_stale(b, gen, n - 1, n)
    # ... and so is one with the same seq (the same report retried on another node)
    expect_stale(b, gen, n, n)
    vote, info, seq, _ = stored(c)
    assert vote["seq"] == n and seq == f"{n:020d}", (vote, seq)
    assert all(not r["healthy"] and r["reason"] == "newer" for r in vote["results"]), vote
    assert info["relayed_by"] == a.node.name, info
    assert any(e.get("prober") == PROBER and e.get("seq") == str(n - 1)
               for e in b.node.log_events("report-stale")), "no report-stale in the node's log"

    # a newer one through that node is written; 10 > 9 in numbers, not only in bytes (each
    # with another opinion: only a change is written)
    for s, healthy in ((n + 1, True), (10 ** 12, False)):
        assert b.report(gen, s, healthy, "newest").accepted
        vote, info, seq, _ = stored(c)
        assert vote["seq"] == s and seq == f"{s:020d}", (vote, seq)
        assert all(r["healthy"] == healthy and r.get("reason", "newest") == "newest"
                   for r in vote["results"]), vote
        assert info["relayed_by"] == b.node.name, info
    # the same opinions again (another text): accepted, the vote's lease renewed, nothing
    # written
    revs, _ = c.etcd.mod_revisions(c.prefix + "votes/")
    assert a.report(gen, 10 ** 12 + 1, False, "newest").accepted
    vote, _, seq, _ = stored(c)
    assert vote["seq"] == 10 ** 12 and seq == f"{10 ** 12:020d}", (vote, seq)
    assert c.etcd.mod_revisions(c.prefix + "votes/")[0] == revs, "an unchanged report was written"
    expect_stale(a, gen, n + 2, 10 ** 12)
    return msg


def test_prober_restart_and_stale(c, apis, gen):
    p = c.add_prober(PROBER, TOKEN)
    t_start = int(time.time() * 1000)
    p.start()
    first = wait_until("the prober's vote", lambda: (stored(c)[0] or {}).get("seq"), 10)
    assert first > t_start - 1000, f"seq {first} does not start at the wall clock ({t_start})"
    p.kill()
    # its vote goes with its lease (3 tacts) ...
    wait_until("the killed prober's vote to expire", lambda: stored(c)[0] is None, 10)
    # ... and restarted, it goes on above its last seq: its reports are accepted at once
    p.start()
    t1 = time.monotonic()
    second = wait_until("a vote of the restarted prober",
                        lambda: (lambda s: s if s and s > first else None)(
                            (stored(c)[0] or {}).get("seq")), 10)
    took = time.monotonic() - t1
    assert not p.log_events("report-stale"), p.log_events("report-stale")

    # a far newer seq written through the API: the prober's own reports are now stale
    ahead = int(time.time() * 1000) + 10 ** 7
    apis[0].report(gen, ahead, False, "ahead")
    wait_until("the prober to log a stale report", lambda: p.log_events("report-stale"), 10)
    t2 = time.monotonic()
    time.sleep(3)  # observe its pace: one report per tact (1 s), no retry loop
    n_stale = len([e for e in p.log_events("report-stale")])
    assert p.alive(), "the prober exited"
    assert 2 <= n_stale <= 6, f"{n_stale} stale reports in {time.monotonic() - t2:.1f} s"
    assert not p.log_events("plan-outdated"), "a stale report made the prober fetch the plan"
    assert not p.log_events("report-failed"), p.log_events("report-failed")
    assert all(e["level"] == "info" for e in p.log_events("report-stale"))
    vote = stored(c)[0]
    assert vote["seq"] == ahead and vote["results"][0]["reason"] == "ahead", vote
    return (f"seq {first} at start, {second} {took:.1f} s after a restart; "
            f"{n_stale} stale reports logged at info in ~3 s")


def with_cluster(fn):
    def run():
        # leader-key-ttl 15 (the default): no failover here, and any switcher timeout fits
        c = Cluster(BIN, n=2, ttl=15, extra=PROBERS)
        apis = []
        try:
            c.start_all()
            apis = [Api(n) for n in c.nodes]
            return fn(c, apis, plan_generation(apis))
        finally:
            for a in apis:
                a.close()
            c.close()
    return run


if __name__ == "__main__":
    sys.exit(run_tests([
        ("an older or equal report through another node is refused; the newer vote stays",
         with_cluster(test_older_report_through_another_node)),
        ("dhaf-prober: seq from the wall clock survives a restart; stale reports are dropped",
         with_cluster(test_prober_restart_and_stale)),
    ]))
