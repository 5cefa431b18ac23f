#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The chaos checker's own test: made-up histories that break (a)-(d) must be reported, and
the ones that keep them must not. Pure Python: no root, no processes."""
import datetime
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chaos  # noqa: E402


def vote(voter, results, impaired=False):
    r = [{"service": s, "ep": e, "healthy": h} for (s, e), h in results.items()]
    return json.dumps({"voter": voter, "kind": "node", "seq": 1, "impaired": impaired,
                       "results": r})


def state(current, switching=None):
    j = {"current": current, "epoch": 7}
    if switching:
        j["switching"] = {"kind": switching[0], "from": current, "to": switching[1], "at": 1}
    return json.dumps(j)


class History:
    def __init__(self):
        self.rev, self.changes = 0, []

    def put(self, t, key, val):
        self.rev += 1
        self.changes.append((self.rev, t, key, val))

    def votes(self, t, opinions, voters=chaos.VOTERS, impaired=()):
        """opinions: {(svc, ep): number of voters that say healthy, the first ones}."""
        for i, v in enumerate(voters):
            self.put(t, f"votes/{v}", vote(v, {k: i < n for k, n in opinions.items()},
                                           v in impaired))


def run_checker(h):
    c = chaos.Checker()
    c.feed(h.changes)
    return c.violations


def failover(h, t, healthy_ep1, healthy_ep2, voters=chaos.VOTERS, impaired=()):
    h.votes(t, {("web", "ep-1"): healthy_ep1, ("web", "ep-2"): healthy_ep2}, voters, impaired)
    h.put(t, "services/web/state", state("ep-1"))
    h.put(t + 2, "services/web/state", state("ep-1", ("failover", "ep-2")))


def expect(name, violations, want):
    got = [v[:3] for v in violations]
    ok = got == want
    print(f"{'ok  ' if ok else 'FAIL'} {name}: {violations or 'no violation'}")
    return ok


def main():
    ok = True
    h = History()
    failover(h, 10, healthy_ep1=1, healthy_ep2=5)
    ok &= expect("a failover as it should be", run_checker(h), [])

    h = History()
    failover(h, 10, healthy_ep1=1, healthy_ep2=2)
    ok &= expect("to an entry point 3 of 5 saw down", run_checker(h), ["(b)"])

    h = History()
    failover(h, 10, healthy_ep1=3, healthy_ep2=5)
    ok &= expect("away from one 3 of 5 saw healthy", run_checker(h), ["(d)"])

    h = History()
    failover(h, 10, healthy_ep1=0, healthy_ep2=2, voters=chaos.VOTERS[:2])
    ok &= expect("on 2 fresh voters", run_checker(h), ["(b)"])

    h = History()
    failover(h, 10, healthy_ep1=0, healthy_ep2=5, voters=chaos.VOTERS[:3],
             impaired=chaos.VOTERS[:1])
    ok &= expect("on 3 voters, one impaired", run_checker(h), ["(b)"])

    # A vote that flipped 0.2 s before the decision: the leader may not have seen it.
    h = History()
    h.votes(10, {("web", "ep-1"): 1, ("web", "ep-2"): 5})
    h.put(10, "services/web/state", state("ep-1"))
    h.votes(12, {("web", "ep-1"): 5, ("web", "ep-2"): 5})
    h.put(12.2, "services/web/state", state("ep-1", ("failover", "ep-2")))
    ok &= expect("votes changed within LAG_S count both ways", run_checker(h), [])
    h.put(14, "services/web/state", state("ep-2"))
    h.put(20, "services/web/state", state("ep-2", ("failover", "ep-1")))
    ok &= expect("the same votes 8 s later", run_checker(h), ["(d)"])

    # (a): an older epoch after a newer one reached the provider.
    with tempfile.TemporaryDirectory() as d:
        run = chaos.Run("/nonexistent", 1, d, 0)
        run.cf_log = os.path.join(d, "cf.jsonl")
        with open(run.cf_log, "w") as f:
            for who in ("node-1 epoch 5", "node-2 epoch 9", "node-1 epoch 5"):
                f.write(json.dumps({"method": "PATCH", "name": "web.site.test",
                                    "content": "198.18.0.52",
                                    "headers": {"X-Dhaf-Leader": who}}) + "\n")
        run.check_epochs()
        ok &= expect("a write of epoch 5 after epoch 9", run.violations, ["(a)"])

        # (a): provider writes where a decision (or the recorded current) says, or not.
        run = chaos.Run("/nonexistent", 1, d, 0)
        run.cf_log = os.path.join(d, "cf2.jsonl")
        t = 1_800_000_000.0
        run.checker.decisions = [(t, "web", "failover", "ep-1", "ep-2")]
        run.checker.current["web"] = [(t - 60, "ep-1", None), (t, "ep-1", "ep-2")]
        with open(run.cf_log, "w") as f:
            for dt, ip in ((0.1, "198.18.0.52"), (0.2, "198.18.0.53")):
                stamp = datetime.datetime.fromtimestamp(t + dt, datetime.timezone.utc)
                f.write(json.dumps({"method": "PATCH", "name": "web.site.test", "status": 200,
                                    "content": ip, "time": stamp.strftime(
                                        "%Y-%m-%dT%H:%M:%S.%fZ"),
                                    "headers": {"X-Dhaf-Leader": "node-1 epoch 5"}}) + "\n")
        run.check_epochs()
        ok &= expect("a write to ep-2 as decided, then one to ep-3 nobody decided",
                     run.violations, ["(a)"])
        # the write of a switch back, then a failover decided 1 s later (within the 2 s the
        # recorders may lag): the write was decided all the same
        run = chaos.Run("/nonexistent", 1, d, 0)
        run.cf_log = os.path.join(d, "cf3.jsonl")
        run.checker.decisions = [(t, "web", "switching", "ep-2", "ep-1"),
                                 (t + 1, "web", "failover", "ep-1", "ep-2")]
        run.checker.current["web"] = [(t - 60, "ep-2", None), (t, "ep-2", "ep-1"),
                                      (t + 0.1, "ep-1", None), (t + 1, "ep-1", "ep-2"),
                                      (t + 1.1, "ep-2", None)]
        with open(run.cf_log, "w") as f:
            stamp = datetime.datetime.fromtimestamp(t + 0.02, datetime.timezone.utc)
            f.write(json.dumps({"method": "PATCH", "name": "web.site.test", "status": 200,
                                "content": "198.18.0.51",
                                "time": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                                "headers": {"X-Dhaf-Leader": "node-1 epoch 5"}}) + "\n")
        run.check_epochs()
        ok &= expect("a switch back's write with the next decision 1 s later", run.violations,
                     [])

        # (c): the entry point in use down for 10 s, no switch; then the same, seen by too
        # few voters; then one that was switched away from.
        run = chaos.Run("/nonexistent", 1, d, 0)
        t0 = chaos.now() - 30
        run.checker.current["web"] = [(t0 - 5, "ep-1", None)]
        run.outages = [["web", "ep-1", t0, t0 + 10]]
        run.check_outages()
        ok &= expect("an outage of 10 s left unswitched", run.violations, ["(c)"])
        run = chaos.Run("/nonexistent", 1, d, 0)
        run.checker.current["web"] = [(t0 - 5, "ep-1", None)]
        run.outages = [["web", "ep-1", t0, t0 + 10]]
        run.faults = [{"what": "x", "t0": t0, "t1": t0 + 4, "voters": {"node-1", "node-2",
                                                                      "probe-1"},
                       "blind": False, "members": set()}]
        run.check_outages()
        ok &= expect("the same, 3 voters hit", run.violations, [])
        run = chaos.Run("/nonexistent", 1, d, 0)
        run.checker.current["web"] = [(t0 - 5, "ep-1", None), (t0 + 1, "ep-1", "ep-2")]
        run.outages = [["web", "ep-1", t0, t0 + 10]]
        run.check_outages()
        ok &= expect("the same, switched after 1 s", run.violations, [])
    print("all passed" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
