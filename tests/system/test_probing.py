# SPDX-License-Identifier: MIT
"""Health checks from every vantage point: three nodes and two remote dhaf-probers vote on
real backends (tests/fakes/backend.py on 127.0.0.x); votes expire with their voter; a prober
with a wrong token never votes. usage: /usr/bin/python3 test_probing.py BUILD_BIN_DIR"""
import datetime
import json
import os
import shutil
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import Cluster, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
TOKENS = {"probe-1": "t0ken-one", "probe-2": "t0ken-two"}


def services(port, checker=None):
    checker = checker or f"{{type: web, port: {port}, path: /ok, timeout: 1, retries: 0}}"
    return f"""services:
  - name: web
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: 127.0.0.41}}
      - {{name: ep-2, ip: 127.0.0.42}}
    switcher: {{type: exec, init: /bin/true, switch: /bin/true, timeout: 2}}
    health-checker: {checker}
probers:
  - {{name: probe-1, token: "{TOKENS['probe-1']}", location: eu}}
  - {{name: probe-2, token: "{TOKENS['probe-2']}", location: us}}
"""


def cluster(ttl=3):
    # one port for both backends (different addresses), so one checker config fits both
    from dhafsys import free_port
    port = free_port()
    c = Cluster(BIN, n=3, ttl=ttl, services=services(port))
    c.add_backend("127.0.0.41", port)
    c.add_backend("127.0.0.42", port)
    return c


def votes(c):
    out = {}
    for key, (val, lease, _rev) in c.etcd.get_prefix(c.prefix + "votes/").items():
        v = json.loads(val)
        out[key.rsplit("/", 1)[1]] = (v, lease)
    return out


def leader_node(c):
    name = c.wait_leader(3)
    return c.node(name)


def last_ep_votes(node, ep):
    evs = [e for e in node.log_events("ep-votes") if e.get("ep") == ep]
    return evs[-1] if evs else None


def test_five_voters(c):
    c.start_all()
    for p in ("probe-1", "probe-2"):
        c.add_prober(p, TOKENS[p]).start()
    allv = wait_until("votes of 3 nodes and 2 probers",
                      lambda: (lambda v: v if len(v) == 5 else None)(votes(c)), 10)
    assert set(allv) == {"node-1", "node-2", "node-3", "probe-1", "probe-2"}, set(allv)
    for name, (v, lease) in allv.items():
        assert lease != 0, f"vote of {name} is not on a lease"
        assert v["voter"] == name and v["kind"] == ("prober" if name.startswith("probe") else "node")
        got = {(r["service"], r["ep"]): r for r in v["results"]}
        assert set(got) == {("web", "ep-1"), ("web", "ep-2")}, got
        # compact: no reason for a healthy check
        assert all(r["healthy"] and "reason" not in r for r in got.values()), got
    info = json.loads(c.etcd.get_prefix(c.prefix + "probers/")[c.prefix + "probers/probe-1"][0])
    assert info["location"] == "eu" and info["relayed_by"].startswith("node-"), info
    lead = leader_node(c)
    ev = wait_until("the leader to count 5 voters on ep-1",
                    lambda: (lambda e: e if e and e["voters"] == "5" else None)(
                        last_ep_votes(lead, "ep-1")), 5)
    assert ev["state"] == "healthy" and ev["healthy"] == "5"
    # steady state: for 5 tacts, not one vote is rewritten (nor anything else written), and
    # every vote stays (its lease renewed by its voter's rounds, 3 tacts long)
    revs, rev0 = c.etcd.mod_revisions(c.prefix)
    t0 = time.monotonic()
    time.sleep(5)  # the window observed, not a synchronisation
    revs2, rev1 = c.etcd.mod_revisions(c.prefix)
    assert revs2 == revs and rev1 == rev0, (
        f"{rev1 - rev0} revisions in {time.monotonic() - t0:.1f} s of steady state; changed: "
        f"{sorted(k for k in revs2 if revs2[k] != revs.get(k))}")
    return (f"5 votes in etcd, each on a lease; the leader counts 5 healthy voters per entry "
            f"point; 0 revisions in {time.monotonic() - t0:.1f} s of steady state")


def test_backend_down_seen_by_all(c):
    c.start_all()
    for p in ("probe-1", "probe-2"):
        c.add_prober(p, TOKENS[p]).start()
    lead = leader_node(c)
    wait_until("5 voters", lambda: (lambda e: e and e["voters"] == "5")(last_ep_votes(lead, "ep-1")),
               10)
    c.backends[0].stop()  # ep-1 goes down
    t0 = time.monotonic()
    ev = wait_until("the leader to see ep-1 unhealthy by 5 of 5",
                    lambda: (lambda e: e if e and e["unhealthy"] == "5" else None)(
                        last_ep_votes(lead, "ep-1")), 10)
    took = time.monotonic() - t0
    assert ev["state"] == "unhealthy", ev
    assert "connect" in ev.get("reasons", ""), ev
    e2 = last_ep_votes(lead, "ep-2")
    assert e2["state"] == "healthy", e2
    return f"all 5 voters saw ep-1 down {took:.1f}s after its backend stopped: {ev['reasons'][:80]}"


def test_prober_vote_expires(c):
    c.start_all()
    p1 = c.add_prober("probe-1", TOKENS["probe-1"]).start()
    c.add_prober("probe-2", TOKENS["probe-2"]).start()
    lead = leader_node(c)
    wait_until("5 votes", lambda: len(votes(c)) == 5, 10)
    t0 = time.monotonic()
    p1.kill()
    wait_until("probe-1's vote to expire", lambda: "probe-1" not in votes(c), 6, 0.05)
    gone = time.monotonic() - t0
    wait_until("the leader to count 4 voters",
               lambda: (lambda e: e and e["voters"] == "4")(last_ep_votes(lead, "ep-1")), 5)
    assert c.prefix + "probers/probe-1" not in c.etcd.get_prefix(c.prefix + "probers/")
    return f"probe-1's vote expired {gone:.1f}s after kill -9 (3 x tact = 3 s); the leader counts 4"


def test_stalled_node_loses_its_vote(c):
    # A node whose probe loop stalls (SIGSTOP) stops renewing its vote lease: the vote goes
    # within 3 tacts, long before its session (alive/, 15 s) ends.
    c.start_all()
    lead = leader_node(c)
    other = next(n for n in c.nodes if n.name != lead.name)
    wait_until("3 votes", lambda: len(votes(c)) == 3, 10)
    t0 = time.monotonic()
    other.signal(signal.SIGSTOP)
    try:
        wait_until(f"{other.name}'s vote to expire", lambda: other.name not in votes(c), 6, 0.05)
        gone = time.monotonic() - t0
        assert c.prefix + f"alive/{other.name}" in c.etcd.get_prefix(c.prefix + "alive/")
        wait_until("the leader to count 2 voters",
                   lambda: (lambda e: e and e["voters"] == "2")(last_ep_votes(lead, "ep-1")), 5)
    finally:
        other.signal(signal.SIGCONT)
    # back: it writes its vote again at once (its lease expired meanwhile)
    wait_until(f"{other.name}'s vote again", lambda: other.name in votes(c), 5)
    assert other.log_events("vote-lease-expired"), "no vote-lease-expired in its log"
    # a node that stops withdraws its vote (revokes the vote lease) instead of letting it
    # expire 3 tacts later
    t1 = time.monotonic()
    other.terminate()
    wait_until(f"{other.name}'s vote to go with its stop", lambda: other.name not in votes(c), 5)
    withdrawn = time.monotonic() - t1
    assert withdrawn < 2.0, f"the vote went {withdrawn:.1f} s after SIGTERM: expired, not revoked"
    return (f"{other.name}'s vote expired {gone:.1f} s after SIGSTOP (its session still alive); "
            f"written again after SIGCONT; withdrawn {withdrawn:.2f} s after SIGTERM")


def test_slow_round_keeps_its_vote():
    # Checks that take 2.6 s each (an exec checker that sleeps; tact 1 s, vote lease 3 s): a
    # round lasts about 3.4 s, longer than the lease. The loop renews the lease as checks end,
    # so the vote stays as long as the loop makes progress.
    d = tempfile.mkdtemp(prefix="dhaf-slow-")
    script = os.path.join(d, "slow.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nsleep 2.6\nexit 0\n")
    os.chmod(script, 0o755)
    c = Cluster(BIN, n=1, ttl=15,
                services=services(0, f"{{type: exec, init: /bin/true, check: {script}, timeout: 4}}"))
    try:
        c.start_all()
        first = wait_until("node-1's vote", lambda: votes(c).get("node-1"), 10)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 10:  # 3 slow rounds
            v = votes(c).get("node-1")
            assert v and v[1] == first[1], \
                f"the vote was lost or moved {time.monotonic() - t0:.1f} s into slow rounds: {v}"
            time.sleep(0.2)
        assert not c.nodes[0].log_events("vote-lease-expired"), "the vote lease expired"
    finally:
        c.close()
        shutil.rmtree(d, ignore_errors=True)
    return "rounds of 2.6 s checks (3.4 s, vote lease 3 s): the vote stayed on its lease for 10 s"


def test_bad_token_refused(c):
    c.start_all()
    bad = c.add_prober("probe-1", "not-the-token").start()
    intruder = c.add_prober("probe-9", "whatever").start()
    c.add_prober("probe-2", TOKENS["probe-2"]).start()
    wait_until("the good prober's vote", lambda: "probe-2" in votes(c), 10)
    wait_until("the refusals of both logged by a node",
               lambda: {"probe-1", "probe-9"} <= {e.get("prober") for n in c.nodes
                                                  for e in n.log_events("prober-refused")}, 10)
    refused = [e for n in c.nodes for e in n.log_events("prober-refused")]
    reasons = {e["prober"]: e["reason"] for e in refused}
    assert "invalid token" in reasons.get("probe-1", ""), reasons
    assert "unknown prober" in reasons.get("probe-9", ""), reasons
    assert bad.log_events("plan-failed") and intruder.log_events("plan-failed")
    v = votes(c)
    assert "probe-1" not in v and "probe-9" not in v, set(v)
    return "wrong token and unknown prober refused and logged; neither became a vote"


def test_prober_survives_node_loss(c):
    c.start_all()
    p = c.add_prober("probe-1", TOKENS["probe-1"]).start()
    wait_until("probe-1's vote", lambda: "probe-1" in votes(c), 10)
    lease = votes(c)["probe-1"][1]
    # kill the node it reports to (the first in its list): it moves to the next one, which
    # renews the vote's lease (the vote is unchanged: nothing is rewritten)
    c.nodes[0].kill()
    wait_until("probe-1 to report through another node",
               lambda: any(e.get("from") == f"127.0.0.1:{c.nodes[0].grpc_port}"
                           for e in p.log_events("node-switch")), 10)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 4.5:  # 1.5 x the lease's TTL (3 tacts)
        v = votes(c).get("probe-1")
        assert v and v[1] == lease, f"probe-1's vote lost or moved {time.monotonic() - t0:.1f} s " \
                                    f"after its node died: {v}"
        time.sleep(0.3)
    assert p.log_events("node-unreachable")
    return "probe-1 reports through another node, which keeps its vote's lease alive"


def test_first_vote_at_start(c):
    # A long tact: a first round spread over the tact (or one that waited for the session)
    # would leave the node without a vote for 8-10 s: the first round checks at once.
    for n in c.nodes:
        text = open(n.config).read()
        open(n.config, "w").write(text.replace("tact-interval: 1", "tact-interval: 10"))
    t0 = time.monotonic()
    c.start_all()
    wait_until("a vote from each of the 3 nodes", lambda: len(votes(c)) == 3, 8, 0.02)
    return f"3 votes {time.monotonic() - t0:.2f} s after start (tact-interval 10 s)"


def log_time(ts):
    """Seconds since the epoch of a log line's ts=2026-01-02T03:04:05.678Z."""
    d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    return d.replace(tzinfo=datetime.timezone.utc).timestamp()


def test_burst_confirmation(c):
    # A tact of 10 s: without burst confirmation the next voter's failing check comes up to
    # 10 s after the first. With it, the first failing check of the current entry point writes
    # suspect/web/ep-1 and the other voters check it at once - the nodes from their views, the
    # probers from their WatchSuspects streams: every vote says ep-1 down within about a
    # check's time of the first failing check.
    for n in c.nodes:
        text = open(n.config).read()
        open(n.config, "w").write(text.replace("tact-interval: 1", "tact-interval: 10"))
        n.start("--log-level", "debug")
    for name in ("probe-1", "probe-2"):
        p = c.add_prober(name, TOKENS[name])
        with open(p.config, "a") as f:
            f.write("log: {level: debug}\n")
        p.start()
    voters = c.nodes + c.probers
    wait_until("a vote from each voter", lambda: len(votes(c)) == 5, 15)
    wait_until("both probers watching suspicions",
               lambda: sum(len(n.log_events("suspects-watch-start")) for n in c.nodes) >= 2, 15)
    wait_until("ep-1 current", lambda: (c.etcd.get_json(c.prefix + "services/web/state") or {})
               .get("current") == "ep-1", 15)

    def down_in(v):
        return any(r["ep"] == "ep-1" and not r["healthy"] for r in v["results"])

    c.backends[0].stop()  # ep-1 refuses connections from now on
    wait_until("every vote to say ep-1 down",
               lambda: all(down_in(v) for v, _ in votes(c).values()) and len(votes(c)) == 5,
               25, 0.01)
    all_down = time.time()
    firsts = {}
    for n in voters:
        f = next((e for e in n.log_events("web-check")
                  if e.get("ep") == "ep-1" and e.get("healthy") == "false"), None)
        assert f, f"{n.name} logged no failing check of ep-1"
        firsts[n.name] = log_time(f["ts"])
    origin = min(firsts, key=firsts.get)
    spread = all_down - firsts[origin]
    sus = c.etcd.get_prefix(c.prefix + "suspect/")
    key = c.prefix + "suspect/web/ep-1"
    assert key in sus, f"no suspect/web/ep-1 in etcd: {sorted(sus)}"
    val, lease, _ = sus[key]
    assert lease != 0, "the suspicion is not on a lease"
    suspecter = json.loads(val)["voter"]
    assert suspecter in firsts, val
    # (a voter whose own turn came within a few ms of the first has nothing to check)
    bursts = [v.name for v in voters if v.name != suspecter and
              any(e.get("ep") == "ep-1" for e in v.log_events("probe-burst"))]
    assert len(bursts) >= 2, f"voters that checked ep-1 at once on the suspicion: {bursts}"
    for p in c.probers:
        heard = [e for e in p.log_events("suspect-heard") if e.get("ep") == "ep-1"]
        assert p.name == suspecter or heard, f"{p.name} did not hear of the suspicion"
    assert spread < 2.0, (f"every vote said ep-1 down {spread:.2f} s after {origin}'s first "
                          f"failing check (tact 10 s): {firsts}")
    return (f"{suspecter} suspected ep-1; {', '.join(bursts)} checked it at once; all 5 votes "
            f"down {spread * 1000:.0f} ms after the first failing check (tact 10 s)")


def with_cluster(fn, ttl=3):
    def run():
        c = cluster(ttl)
        try:
            return fn(c)
        finally:
            c.close()
    return run


if __name__ == "__main__":
    sys.exit(run_tests([
        ("3 nodes + 2 probers: five votes on leases, counted by the leader",
         with_cluster(test_five_voters)),
        ("a backend stops: every voter sees it, the leader tallies 5 unhealthy",
         with_cluster(test_backend_down_seen_by_all)),
        ("kill -9 a prober: its vote expires and no longer counts",
         with_cluster(test_prober_vote_expires)),
        ("wrong token / unknown prober: refused, never a vote", with_cluster(test_bad_token_refused)),
        ("a prober whose node dies reports through another node",
         with_cluster(test_prober_survives_node_loss)),
        ("rounds longer than the vote lease keep the vote while checks end",
         test_slow_round_keeps_its_vote),
        ("a SIGSTOPped node loses its vote within 3 tacts, its session still alive",
         with_cluster(test_stalled_node_loses_its_vote, ttl=15)),
        ("the first round (checks not spread) gives a vote at once",
         with_cluster(test_first_vote_at_start)),
        ("burst confirmation: one voter's failing check makes the others check at once",
         with_cluster(test_burst_confirmation)),
    ]))
