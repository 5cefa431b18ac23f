# SPDX-License-Identifier: MIT
"""dhaf-node cluster behaviour with real etcd and three real nodes on loopback: election,
failover of the leader (kill -9, SIGTERM, SIGSTOP), an etcd outage, restarts, decommission,
reload and logs. usage: /usr/bin/python3 test_cluster.py BUILD_BIN_DIR"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import Cluster, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
TTL = 3


def with_cluster(fn, n=3):
    def run():
        c = Cluster(BIN, n=n, ttl=TTL)
        try:
            return fn(c)
        finally:
            c.close()
    return run


def test_one_leader_and_layout(c):
    t0 = time.monotonic()
    c.start_all()
    leader = c.wait_leader(2)
    took = time.monotonic() - t0
    # exactly one node believes it leads
    wait_until("all three nodes registered",
               lambda: len(c.etcd.get_prefix(c.prefix + "alive/")) == 3, 5)
    winners = [n.name for n in c.nodes if n.log_events("new-leader")]
    assert winners == [leader], f"new-leader logged by {winners}, leader key says {leader}"
    kv = c.etcd.get_prefix(c.prefix)
    keys = set(kv)
    for n in c.nodes:
        assert c.prefix + f"members/{n.name}" in keys
        assert c.prefix + f"alive/{n.name}" in keys
        alive, lease, _ = kv[c.prefix + f"alive/{n.name}"]
        assert lease != 0, "alive/ must be on a lease"
        a = json.loads(alive)
        assert set(a) >= {"version", "grpc", "rest", "started_at"}, a
        assert a["grpc"] == f"127.0.0.1:{n.grpc_port}"
        m = json.loads(kv[c.prefix + f"members/{n.name}"][0])
        assert kv[c.prefix + f"members/{n.name}"][1] == 0, "members/ is persistent"
        assert "first_seen" in m and "version" in m
    lv, llease, epoch = kv[c.prefix + "leader"]
    assert llease != 0 and json.loads(lv)["node"] == leader and "since" in json.loads(lv)
    # the outbox: events/<seq> (zero-padded) and the counter they were numbered by
    assert any(k[len(c.prefix + "events/"):].isdigit() for k in keys
               if k.startswith(c.prefix + "events/")), keys
    assert int(kv[c.prefix + "event-seq"][0]) >= 1
    assert wait_until("node-up events for the 3 nodes",
                      lambda: len(c.events("node-up")) == 3, 5)
    return f"leader {leader} elected in {took * 1000:.0f} ms, epoch {epoch}"


def test_kill9_leader(c):
    c.start_all()
    old = c.wait_leader(2)
    wait_until("node-up events", lambda: len(c.events("node-up")) == 3, 5)
    t0 = time.monotonic()
    c.node(old).kill()
    new = c.wait_leader(TTL + 1, other_than=old)
    took = time.monotonic() - t0
    assert took <= TTL + 1, f"{took:.2f}s"
    downs = wait_until("node-down event", lambda: c.events("node-down"), TTL + 2)
    assert [e["node"] for e in downs] == [old], downs
    return f"{new} took over {took * 1000:.0f} ms after kill -9 of {old} (TTL {TTL}s)"


def test_sigterm_leader(c):
    c.start_all()
    old = c.wait_leader(2)
    wait_until("alive keys", lambda: len(c.etcd.get_prefix(c.prefix + "alive/")) == 3, 5)
    t0 = time.monotonic()
    rc, took_exit = c.node(old).terminate()
    new = c.wait_leader(1, other_than=old)
    took = time.monotonic() - t0
    assert rc == 0, f"exit code {rc}"
    assert took_exit < 2, f"exit took {took_exit:.2f}s"
    assert c.prefix + f"alive/{old}" not in c.etcd.get_prefix(c.prefix + "alive/")
    assert c.node(old).log_events("leadership-released")
    return f"{new} took over {took * 1000:.0f} ms after SIGTERM; {old} exited 0 in {took_exit * 1000:.0f} ms"


def test_sigstop_leader_split_brain(c):
    c.start_all()
    old = c.wait_leader(2)
    frozen = c.node(old)
    wait_until("alive keys", lambda: len(c.etcd.get_prefix(c.prefix + "alive/")) == 3, 5)
    # The leader records node-up as it sees each alive key: freezing it inside such a write
    # would log, after waking, an event committed before the freeze.
    wait_until("node-up of every node recorded",
               lambda: len({e.get("node") for e in c.events("node-up")}) == 3, 5)
    frozen.signal(signal.SIGSTOP)
    t_stop = time.monotonic()
    new = c.wait_leader(TTL + 2, other_than=old)
    # stay frozen well past the TTL, then wake it
    wait_until("the freeze to outlast the TTL", lambda: time.monotonic() - t_stop > TTL + 1,
               TTL + 3, 0.1)
    mark = len(frozen.log_lines())
    frozen.signal(signal.SIGCONT)
    lost = wait_until("leader-lost from the woken node",
                      lambda: [e for e in frozen.log_events("leader-lost")], 5)
    # it must not act as leader: no new-leader of its own, no fenced writes, key not its own
    wait_until("the woken node to see the new leader",
               lambda: any(f.get("leader") == new for f in frozen.log_events("leader-seen")), 5)
    woke_lines = frozen.log_lines()[mark:]
    acted = [l for l in woke_lines if "event=new-leader" in l or "event=node-up" in l
             or "event=node-down" in l]
    assert not acted, f"the frozen node acted as leader after waking: {acted}"
    assert c.leader() == new
    by_frozen = [e["kind"] for e in c.events() if e.get("by") == old and e["_rev"] > 0]
    assert "leader-lost" in by_frozen, by_frozen
    assert by_frozen.count("new-leader") == 1, by_frozen  # only its first election
    return f"{new} led while {old} was frozen; {old} woke and logged: {lost[0].get('msg')}"


def test_etcd_outage(c):
    c.start_all()
    old = c.wait_leader(2)
    wait_until("alive keys", lambda: len(c.etcd.get_prefix(c.prefix + "alive/")) == 3, 5)
    c.etcd.stop()
    t0 = time.monotonic()
    # the old leader steps down while etcd is gone
    wait_until("the leader to step down", lambda: c.node(old).log_events("leader-lost"), TTL + 2)
    stepped = time.monotonic() - t0
    wait_until("10 s of outage", lambda: time.monotonic() - t0 >= 10, 12, 0.2)
    elections = sum(len(n.log_events("new-leader")) for n in c.nodes)
    c.etcd.start()
    t1 = time.monotonic()
    # a node acts as leader again: it won a fresh election after etcd came back
    wait_until("a fresh election after the outage",
               lambda: sum(len(n.log_events("new-leader")) for n in c.nodes) > elections,
               TTL + 5)
    back = time.monotonic() - t1
    leader = c.leader()
    for n in c.nodes:
        assert n.alive(), f"{n.name} exited ({n.proc.returncode})"
    wait_until("every node alive again in etcd",
               lambda: len(c.etcd.get_prefix(c.prefix + "alive/")) == 3, TTL + 5)
    return (f"{old} stepped down {stepped:.1f}s into the outage; after 10s etcd came back and "
            f"{leader} led {back:.1f}s later; no node crashed")


def test_restart_with_own_name_in_leader(c):
    c.start_all()
    old = c.wait_leader(2)
    node = c.node(old)
    wait_until("alive keys", lambda: len(c.etcd.get_prefix(c.prefix + "alive/")) == 3, 5)
    node.kill()
    node.start()
    seen = wait_until("the restarted node to notice its old key",
                      lambda: [e for e in node.log_events("leader-seen") if e.get("leader") == old],
                      3)
    assert "earlier run" in seen[-1].get("note", ""), seen
    leader = c.wait_leader(TTL + 2, other_than=None)
    # whoever leads now did so through a fresh election (a new-leader event after the kill)
    wait_until("a fresh election", lambda: len(c.events("new-leader")) >= 2, TTL + 2)
    return f"the restarted {old} waited; then {c.leader() or leader} won a fresh election"


def test_decommission(c):
    c.start_all()
    c.wait_leader(2)
    wait_until("alive keys", lambda: len(c.etcd.get_prefix(c.prefix + "alive/")) == 3, 5)
    n1, n3 = c.nodes[0], c.nodes[2]
    r = subprocess.run([n1.bin, "--config", n1.config, "--decommission", "node-3"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and "is alive" in r.stderr, (r.returncode, r.stderr)
    n3.kill()
    wait_until("node-3 to be down", lambda: c.prefix + "alive/node-3" not in
               c.etcd.get_prefix(c.prefix + "alive/"), TTL + 2)
    c.etcd.ctl("put", c.prefix + "votes/node-3", "{}")
    r = subprocess.run([n1.bin, "--config", n1.config, "--decommission", "node-3"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 0, r.stderr
    keys = c.etcd.get_prefix(c.prefix)
    assert c.prefix + "members/node-3" not in keys and c.prefix + "votes/node-3" not in keys
    assert c.prefix + "members/node-1" in keys
    r = subprocess.run([n1.bin, "--config", n1.config, "--decommission", "node-9"],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 1 and 'no dhaf node named "node-9"' in r.stderr, r.stderr
    return "live node refused, dead node removed with its vote, unknown node refused"


def test_reload_and_json_logs(c):
    n = c.nodes[0]
    n.start("--log-format", "json")
    wait_until("a leader", lambda: c.leader(), 3)
    lines = wait_until("log lines", lambda: [l for l in n.log_lines() if l.strip()], 3)
    for line in lines:
        json.loads(line)  # every line is one JSON object
    # an invalid file is rejected and the node keeps running
    good = open(n.config).read()
    with open(n.config, "w") as f:
        f.write(good.replace("tact-interval: 1", "tact-interval: 0"))
    n.signal(signal.SIGHUP)
    wait_until("reload-rejected", lambda: any('"reload-rejected"' in l for l in n.log_lines()), 3)
    assert n.alive()
    # a valid change is applied
    with open(n.config, "w") as f:
        f.write(good.replace("level: info", "level: debug"))
    n.signal(signal.SIGHUP)
    wait_until("reloaded", lambda: any('"event":"reloaded"' in l for l in n.log_lines()), 3)
    rc, took = n.terminate()
    assert rc == 0, f"exit code {rc}"
    for line in n.log_lines():  # still one JSON object per line, config errors included
        json.loads(line)
    assert any('"config-error"' in l and '"path":"dhaf.tact-interval"' in l for l in n.log_lines())
    return f"JSON log lines parse; bad reload kept the old config; exit 0 in {took * 1000:.0f} ms"


if __name__ == "__main__":
    sys.exit(run_tests([
        ("three nodes: one leader within 2 s, DESIGN layout in etcd",
         with_cluster(test_one_leader_and_layout)),
        ("kill -9 of the leader: new leader within TTL + 1 s", with_cluster(test_kill9_leader)),
        ("SIGTERM of the leader: new leader within 1 s, exit 0 within 2 s",
         with_cluster(test_sigterm_leader)),
        ("SIGSTOP past the TTL, SIGCONT: the old leader does not act",
         with_cluster(test_sigstop_leader_split_brain)),
        ("etcd down for 10 s: no crash, step-down, leadership back",
         with_cluster(test_etcd_outage)),
        ("restart with its own name in the leader key: no leadership without a txn",
         with_cluster(test_restart_with_own_name_in_leader)),
        ("decommission: live refused, dead removed", with_cluster(test_decommission)),
        ("SIGHUP reload and --log-format json", with_cluster(test_reload_and_json_logs, n=1)),
    ]))
