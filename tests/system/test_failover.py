# SPDX-License-Identifier: MIT
"""Failover, switching back, switchover with its pin, purge, and a leader killed mid-switch:
three real nodes, real backends (tests/fakes/backend.py) and a switcher whose every call is
recorded - the exec switcher writing a file, and the Cloudflare switcher against the local
Cloudflare fake (tests/fakes/cloudflare.py) when it is built.
usage: /usr/bin/python3 test_failover.py BUILD_BIN_DIR"""
import json
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import CloudflareFake, Cluster, free_port, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
HERE = os.path.dirname(os.path.abspath(__file__))
EP_IPS = {"ep-1": "127.0.0.51", "ep-2": "127.0.0.52"}


class ExecSwitcher:
    """The exec switcher: init prints the current EP; switch records (node, epoch, ep)."""

    name = "exec"

    def __init__(self, workdir, slow_file=None):
        self.dir = workdir
        self.current = os.path.join(workdir, "current")
        self.log = os.path.join(workdir, "switch.log")
        self.slow = os.path.join(workdir, "slow")
        with open(os.path.join(workdir, "sw-init.sh"), "w") as f:
            f.write(f"#!/bin/sh\ncat {self.current} 2>/dev/null || true\n")
        with open(os.path.join(workdir, "sw-switch.sh"), "w") as f:
            f.write(f"""#!/bin/sh
echo "$DHAF_NODE $DHAF_EPOCH start $1" >> {self.log}
[ -f {self.slow} ] && sleep "$(cat {self.slow})"
# A script fences itself with DHAF_EPOCH: a call from an older leader than one already seen
# (a deposed leader's child that outlived it) changes nothing.
(
  flock 9
  hi=$(cat {self.dir}/epoch 2>/dev/null || echo 0)
  if [ "$DHAF_EPOCH" -lt "$hi" ]; then echo "stale epoch $DHAF_EPOCH < $hi"; exit 3; fi
  echo "$DHAF_EPOCH" > {self.dir}/epoch
  echo "$1" > {self.current}.tmp && mv {self.current}.tmp {self.current}
  echo "$DHAF_NODE $DHAF_EPOCH done $1" >> {self.log}
) 9>{self.dir}/switch.lock
""")
        for s in ("sw-init.sh", "sw-switch.sh"):
            os.chmod(os.path.join(workdir, s), 0o755)

    def yaml(self):
        return (f"{{type: exec, init: {self.dir}/sw-init.sh, switch: {self.dir}/sw-switch.sh, "
                f"timeout: 2}}")

    def points_to(self):
        try:
            return open(self.current).read().strip() or None
        except FileNotFoundError:
            return None

    def calls(self):
        try:
            return [l.split() for l in open(self.log).read().splitlines()]
        except FileNotFoundError:
            return []

    def set_slow(self, seconds):
        if seconds:
            with open(self.slow, "w") as f:
                f.write(str(seconds))
        elif os.path.exists(self.slow):
            os.unlink(self.slow)


    def arm_slow(self):
        self.set_slow(2)

    def disarm(self):
        self.set_slow(0)

    def stop(self):
        pass


class CloudflareSwitcher(CloudflareFake):
    """The cloudflare switcher against tests/fakes/cloudflare.py; every write it receives is in
    the fake's log with the X-Dhaf-Leader header (node and epoch)."""

    name = "cloudflare"

    def __init__(self, workdir):
        self.log = os.path.join(workdir, "cf.log")
        super().__init__(EP_IPS, log=self.log)

    def calls(self):
        """[node, epoch, "done"|"start", ep] per write the fake received."""
        out = []
        try:
            lines = open(self.log).read().splitlines()
        except FileNotFoundError:
            return out
        for line in lines:
            e = json.loads(line)
            who = (e.get("headers") or {}).get("X-Dhaf-Leader") or "- epoch -"
            node, _, epoch = who.split(" ")
            ep = self.ep_of(e.get("content"))
            ok = 200 <= int(e.get("status") or 0) < 300
            out.append([node, epoch, "done" if ok else "start", ep])
        return out

    def arm_slow(self):
        # the next three PATCHes fail with 503: the switch retries with back-off
        self.call("/_fake/fail", {"status": 503, "count": 3, "method": "PATCH"})

    def disarm(self):
        pass


def make_cluster(port, kind="exec"):
    import tempfile
    sw_dir = tempfile.mkdtemp(prefix="dhaf-sw-")
    sw = ExecSwitcher(sw_dir) if kind == "exec" else CloudflareSwitcher(sw_dir)
    services = f"""services:
  - name: web
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: {EP_IPS['ep-1']}}}
      - {{name: ep-2, ip: {EP_IPS['ep-2']}}}
    switcher: {sw.yaml()}
    health-checker: {{type: web, port: {port}, path: /ok, timeout: 1, retries: 0}}
"""
    c = Cluster(BIN, n=3, ttl=3, services=services)
    c.sw = sw
    c.sw_dir = sw_dir
    c.b1 = c.add_backend(EP_IPS["ep-1"], port)
    c.b2 = c.add_backend(EP_IPS["ep-2"], port)
    return c


def state(c):
    return c.etcd.get_json(c.prefix + "services/web/state") or {}


def svc_events(c, kind=None):
    return c.events(kind, service="web")


def cli(c, *args):
    n = c.nodes[0]
    return subprocess.run([n.bin, "--config", n.config, *args], capture_output=True, text=True,
                          timeout=20)


def wait_points_to(c, ep, timeout):
    return wait_until(f"traffic on {ep}",
                      lambda: c.sw.points_to() == ep and state(c).get("current") == ep, timeout,
                      0.01)


def one_switcher_per_epoch(c):
    """No two nodes ever called the switcher in the same epoch, and each epoch's calls came
    from the node that held the leader key with that epoch (etcd's event history)."""
    by_epoch = {}
    for node, epoch, _what, _ep in c.sw.calls():
        by_epoch.setdefault(epoch, set()).add(node)
    leaders = {}
    for e in c.events("new-leader"):
        m = e.get("message", "")
        if "(epoch " in m:
            leaders[m.split("(epoch ")[1].rstrip(")")] = e["node"]
    for epoch, nodes in by_epoch.items():
        if epoch in leaders:
            assert nodes == {leaders[epoch]}, f"epoch {epoch}: calls by {nodes}, leader {leaders[epoch]}"
    bad = {e: n for e, n in by_epoch.items() if len(n) > 1}
    assert not bad, f"several nodes switched in one epoch: {bad}"
    # no change landed from an epoch older than one already seen (the provider's own log)
    seen = 0
    for node, epoch, what, ep in c.sw.calls():
        if what == "done" and epoch.isdigit():
            assert int(epoch) >= seen, \
                f"a change by {node} epoch {epoch} landed after epoch {seen}: {c.sw.calls()}"
            seen = int(epoch)
    return by_epoch


def test_story(c):
    c.start_all()
    wait_points_to(c, "ep-1", 10)  # nothing set yet: highest priority
    first = svc_events(c, "switching")
    assert first and first[-1]["to"] == "ep-1", svc_events(c)

    t0 = time.monotonic()
    c.b1.stop()
    wait_points_to(c, "ep-2", 10)
    t_fail = time.monotonic() - t0
    ev = svc_events(c, "failover")[-1]
    assert ev["from"] == "ep-1" and ev["to"] == "ep-2" and ev["level"] == "warning", ev
    downs = svc_events(c, "ep-down")
    assert downs and "connect" in json.dumps(downs[-1]), downs
    st = state(c)
    assert st["last_switch"]["kind"] == "failover" and st["eps"]["ep-1"] == "down", st

    c.b1.start()
    t0 = time.monotonic()
    wait_points_to(c, "ep-1", 15)
    t_back = time.monotonic() - t0
    assert svc_events(c, "switching")[-1]["to"] == "ep-1"
    # damping: back only after ep-1 was healthy by a strict majority for switch-back-delay
    # (default 3 tacts of 1 s), not at its first good check
    assert t_back >= 3.0, f"switched back after {t_back:.1f} s, before the 3 s delay"

    r = cli(c, "--switchover", "web:ep-2")
    assert r.returncode == 0, r.stderr
    wait_points_to(c, "ep-2", 5)
    assert svc_events(c, "switchover")[-1]["to"] == "ep-2"
    # pinned: ep-1 is healthy and first, yet traffic stays on ep-2 for several tacts
    pinned_at = len(c.sw.calls())
    time_pin = time.monotonic()
    wait_until("the pin to hold for 3 s", lambda: time.monotonic() - time_pin >= 3, 4, 0.2)
    assert c.sw.points_to() == "ep-2" and len(c.sw.calls()) == pinned_at
    assert c.etcd.get_json(c.prefix + "services/web/switchover")["ep"] == "ep-2"

    r = cli(c, "--purge-switchover", "web")
    assert r.returncode == 0 and "it was ep-2" in r.stdout, (r.stdout, r.stderr)
    wait_points_to(c, "ep-1", 5)

    bad = cli(c, "--switchover", "web:ep-9")
    assert bad.returncode == 1 and 'no entry point "ep-9"' in bad.stderr, bad.stderr
    one_switcher_per_epoch(c)
    return (f"failover in {t_fail:.1f}s, back in {t_back:.1f}s (tact 1 s, timeout 1 s); "
            f"switchover pinned for 3 s; purge went back to ep-1")


def test_unhealthy_switchover_purged(c):
    c.start_all()
    wait_points_to(c, "ep-1", 10)
    c.b2.stop()
    wait_until("ep-2 down", lambda: state(c).get("eps", {}).get("ep-2") == "down", 10)
    r = cli(c, "--switchover", "web:ep-2")
    assert r.returncode == 0
    wait_until("the request purged",
               lambda: c.etcd.get_json(c.prefix + "services/web/switchover") is None, 5)
    ev = svc_events(c, "switchover-purged")[-1]
    assert "unhealthy" in ev["message"], ev
    assert c.sw.points_to() == "ep-1"
    return "a switchover to an unhealthy entry point was purged and announced"


def test_panic(c):
    c.start_all()
    wait_points_to(c, "ep-1", 10)
    # ep-2 first: the voters check each entry point at its own moment of the tact, so two
    # backends stopped together may be seen down one after the other - ep-1 first would then
    # be a failover to ep-2, not the panic this test is about
    c.b2.stop()
    wait_until("ep-2 down", lambda: state(c).get("eps", {}).get("ep-2") == "down", 10)
    c.b1.stop()
    wait_until("service-down", lambda: svc_events(c, "service-down"), 10)
    st = state(c)
    assert st["panic"] is True
    calls = len(c.sw.calls())
    c.b2.start()
    wait_until("service-up", lambda: svc_events(c, "service-up"), 10)
    wait_points_to(c, "ep-2", 5)
    assert len(c.sw.calls()) == calls + 2  # one switch (start + done), nothing during panic
    return "all down: no switch, service-down; ep-2 back: service-up and failover to it"


def test_leader_killed_mid_failover(c):
    c.start_all()
    wait_points_to(c, "ep-1", 10)
    old = c.wait_leader(2)
    c.sw.arm_slow()
    c.b1.stop()
    # the leader marked the switch in etcd and is now in the (slowed) switcher call
    wait_until("the leader to start switching",
               lambda: state(c).get("switching", {}).get("to") == "ep-2", 10, 0.005)
    c.node(old).kill()
    c.sw.disarm()
    new = c.wait_leader(6, other_than=old)
    wait_points_to(c, "ep-2", 10)
    wait_until("the switching mark cleared", lambda: "switching" not in state(c), 5)
    epochs = one_switcher_per_epoch(c)
    # traffic never went back to the unhealthy entry point afterwards
    after = [x for x in c.sw.calls() if x[2] == "done"]
    assert after[-1][3] == "ep-2", after
    assert c.sw.points_to() == "ep-2"
    return f"{old} killed mid-switch; {new} finished on ep-2; switch calls by epoch: " + \
        ", ".join(f"{e}:{sorted(n)[0]}" for e, n in epochs.items())


def vote_says(c, node, ep, healthy):
    v = c.etcd.get_json(c.prefix + f"votes/{node}") or {}
    return any(r["service"] == "web" and r["ep"] == ep and r["healthy"] is healthy
               for r in v.get("results", []))


def test_lone_voter(c):
    """Two of three nodes frozen: the third is 1 of 3 expected voters, fewer than the 2 a
    decision needs, so its own failing check switches nothing; with the others back, the
    majority fails over."""
    c.start_all()
    wait_points_to(c, "ep-1", 10)
    keep = next(n for n in c.nodes if n.name != c.wait_leader(2))
    frozen = [n for n in c.nodes if n is not keep]
    for n in frozen:
        n.signal(signal.SIGSTOP)
    try:
        wait_until(f"{keep.name} to lead", lambda: c.leader() == keep.name, 15)
        wait_until("no-quorum", lambda: svc_events(c, "no-quorum"), 15)
        ev = svc_events(c, "no-quorum")[-1]
        assert "1 fresh voter of 3 expected; 2 needed" in ev["message"], ev
        calls = len(c.sw.calls())
        c.b1.stop()
        wait_until(f"{keep.name}'s vote says ep-1 is down",
                   lambda: vote_says(c, keep.name, "ep-1", False), 10)
        held = time.monotonic()
        # four tacts with the lone vote saying down: nothing may be switched
        wait_until("4 s without a decision", lambda: time.monotonic() - held >= 4, 5, 0.2)
        assert len(c.sw.calls()) == calls and c.sw.points_to() == "ep-1", c.sw.calls()
        assert state(c).get("current") == "ep-1" and not svc_events(c, "failover"), state(c)
        assert state(c).get("quorum") is False, state(c)
    finally:
        for n in frozen:
            n.signal(signal.SIGCONT)
    wait_points_to(c, "ep-2", 20)
    q = svc_events(c, "quorum")[-1]
    assert "of 3 expected; 2 needed" in q["message"], q
    return f"{keep.name} alone (1 of 3 expected): no-quorum, ep-1 down by its vote, no " \
        "switch for 4 s; the others back: quorum and failover to ep-2"


def ctl(c, *args):
    n = c.nodes[1]
    return subprocess.run([os.path.join(c.bin_dir, "dhafctl"), *args, "--endpoint",
                           f"127.0.0.1:{n.grpc_port}"], capture_output=True, text=True,
                          timeout=20)


def rest(c, method, path):
    import urllib.request
    import urllib.error
    req = urllib.request.Request(f"http://127.0.0.1:{c.nodes[2].rest_port}{path}",
                                 method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_maintenance(c):
    """drain / undrain (dhafctl and REST), pause / resume: what moves, what waits, and the
    events that say who asked."""
    c.start_all()
    wait_points_to(c, "ep-1", 10)
    r = ctl(c, "drain", "ep-1", "-s", "web")
    assert r.returncode == 0 and "drained" in r.stdout, (r.stdout, r.stderr)
    wait_points_to(c, "ep-2", 10)  # leaves the drained one while it is healthy
    ev = svc_events(c, "ep-drained")[-1]
    assert ev["to"] == "ep-1" and ev["actor"] == "anonymous" and \
        ev["comment"].startswith("dhafctl "), ev
    assert svc_events(c, "switching")[-1]["to"] == "ep-2"
    # the last undrained entry point cannot be drained too
    st, body = rest(c, "POST", "/api/v1/services/web/entry-points/ep-2/drain?comment=t1")
    assert st == 409 and "nowhere to go" in body["error"]["message"], (st, body)
    st, body = rest(c, "DELETE", "/api/v1/services/web/entry-points/ep-1/drain?comment=t2")
    assert st == 200, (st, body)
    wait_points_to(c, "ep-1", 10)  # back to the top priority
    ev = svc_events(c, "ep-undrained")[-1]
    assert ev["comment"] == "t2" and ev["peer"] == "127.0.0.1", ev
    st, body = rest(c, "DELETE", "/api/v1/services/web/entry-points/ep-1/drain")
    assert st == 404 and "not drained" in body["error"]["message"], (st, body)

    # pause: the outage is seen and shown, nothing is switched
    r = ctl(c, "pause")
    assert r.returncode == 0, (r.stdout, r.stderr)
    wait_until("paused", lambda: c.etcd.get_json(c.prefix + "control/pause"), 5)
    calls = len(c.sw.calls())
    c.b1.stop()
    wait_until("would-switch", lambda: svc_events(c, "would-switch"), 10)
    ev = svc_events(c, "would-switch")[-1]
    assert ev["from"] == "ep-1" and ev["to"] == "ep-2" and "failover" in ev["message"], ev
    assert state(c).get("would") == {"kind": "failover", "to": "ep-2"}, state(c)
    held = time.monotonic()
    wait_until("3 s paused", lambda: time.monotonic() - held >= 3, 4, 0.2)
    assert len(c.sw.calls()) == calls and c.sw.points_to() == "ep-1", c.sw.calls()
    assert len(svc_events(c, "would-switch")) == 1, svc_events(c, "would-switch")  # once
    r = ctl(c, "status-service", "-s", "web")
    assert "Would switch" in r.stdout and "failover to ep-2" in r.stdout, r.stdout
    r = ctl(c, "status-dhaf")
    assert "PAUSED" in r.stdout, r.stdout
    # explain: the rule, the next switch, and each voter's vote on ep-1 with its reason
    r = ctl(c, "explain", "-s", "web")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "failover: a majority of the fresh voters says the current entry point is down" in \
        r.stdout and "(paused: not carried out)" in r.stdout, r.stdout
    assert "failover to ep-2" in r.stdout and "3 fresh of 3 expected, 2 needed" in r.stdout, \
        r.stdout
    ep1 = r.stdout.split("ep-1 (priority 1")[1].split("ep-2 (priority 2")[0]
    assert ep1.count("DOWN") == 3 and "connect" in ep1, ep1
    j = json.loads(ctl(c, "explain", "-s", "web", "-o", "json").stdout)
    assert j["next_action"] == "failover" and j["next_target"] == "ep-2", j
    assert len(j["entry_points"][0]["reasons"]) == 3, j["entry_points"][0]
    r = ctl(c, "resume")
    assert r.returncode == 0, (r.stdout, r.stderr)
    wait_points_to(c, "ep-2", 10)
    kinds = [e["kind"] for e in c.events() if e["kind"] in ("paused", "resumed")]
    assert kinds == ["paused", "resumed"], kinds
    one_switcher_per_epoch(c)
    return "drain moved traffic ep-1 -> ep-2, draining the last one 409, undrain (REST) back " \
        "to ep-1; paused: ep-1 down shown once as would-switch (failover to ep-2), no switch " \
        "for 3 s; resume: failover; every change an event with actor and comment"


def test_dry_run(c):
    """dhaf.dry-run on every node: the first placement and an outage are shown as
    would-switch, and the switcher is never called."""
    for n in c.nodes:
        cfg = open(n.config).read().replace("  tact-interval: 1\n",
                                            "  tact-interval: 1\n  dry-run: true\n")
        open(n.config, "w").write(cfg)
    c.start_all()
    wait_until("would-switch (first placement)", lambda: svc_events(c, "would-switch"), 15)
    assert svc_events(c, "would-switch")[-1]["to"] == "ep-1", svc_events(c)
    c.b1.stop()
    wait_until("ep-1 down shown", lambda: state(c).get("eps", {}).get("ep-1") == "down", 10)
    assert c.sw.calls() == [] and state(c).get("current") is None, (c.sw.calls(), state(c))
    assert not c.etcd.get_json(c.prefix + "control/pause")  # the node's own setting
    return "dry-run: first placement shown as would-switch to ep-1, ep-1 down announced, " \
        "the switcher never called"


def set_dhaf(c, line):
    """Adds line to the dhaf: section of every node's config."""
    for n in c.nodes:
        cfg = open(n.config).read().replace("  tact-interval: 1\n",
                                            f"  tact-interval: 1\n  {line}\n")
        open(n.config, "w").write(cfg)


def test_provider_drift(c):
    """The DNS record is changed by hand at Cloudflare: the leader's periodic read (every
    dhaf.provider-check-interval, 2 s here) finds it, says so once (provider-drift) and sets
    the record back to the decided entry point."""
    set_dhaf(c, "provider-check-interval: 2")
    c.start_all()
    wait_points_to(c, "ep-1", 20)
    c.sw.call("/_fake/set", {"name": "site.test", "content": EP_IPS["ep-2"]})
    t0 = time.monotonic()
    assert c.sw.points_to() == "ep-2"
    wait_until("the record set back to ep-1", lambda: c.sw.points_to() == "ep-1", 10, 0.05)
    took = time.monotonic() - t0
    ev = wait_until("a provider-drift event", lambda: svc_events(c, "provider-drift"), 5)
    assert len(ev) == 1 and ev[0]["from"] == "ep-2" and ev[0]["to"] == "ep-1", ev
    assert "set back to ep-1" in ev[0]["message"], ev
    assert state(c).get("current") == "ep-1", state(c)
    return f"record changed by hand to ep-2; set back to ep-1 {took:.1f} s later: {ev[0]['message']}"


def readyz(n):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{n.rest_port}/readyz", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_switcher_cannot_init(c):
    """A switcher whose init fails (its script broken): one provider-unread event, the leader's
    /readyz says why (503 provider: ...), the followers stay ready; once the script works,
    /readyz is 200 again and the service is placed."""
    init = os.path.join(c.sw_dir, "sw-init.sh")
    broken = os.path.join(c.sw_dir, "broken")
    text = open(init).read().replace(
        "#!/bin/sh\n", f"#!/bin/sh\n[ -f {broken} ] && {{ echo 'cannot reach the API' >&2; exit 2; }}\n")
    open(init, "w").write(text)
    open(broken, "w").close()
    c.start_all()
    lead = c.node(c.wait_leader(10))
    st, body = wait_until("the leader's /readyz 503 for its provider",
                          lambda: (lambda r: r if r[0] == 503 and "provider" in r[1] else None)(
                              readyz(lead)), 15, 0.1)
    assert "cannot reach the API" in body, body
    for n in c.nodes:
        if n is not lead:
            assert wait_until(f"{n.name} ready", lambda n=n: readyz(n)[0] == 200, 10, 0.1)
    assert len(svc_events(c, "provider-unread")) == 1, svc_events(c)
    os.unlink(broken)
    wait_until("the leader's /readyz 200", lambda: readyz(lead)[0] == 200, 40, 0.2)
    wait_points_to(c, "ep-1", 10)
    return f"leader's /readyz: {st} {body.strip()[:100]}...; 200 once init works"


def with_cluster(fn, kind="exec"):
    def run():
        c = make_cluster(free_port(), kind)
        try:
            return fn(c)
        finally:
            c.close()
            c.sw.stop()
            import shutil
            shutil.rmtree(c.sw_dir, ignore_errors=True)
    return run


if __name__ == "__main__":
    sys.exit(run_tests([
        ("cloudflare (fake API): failover, switching back, switchover pin, purge",
         with_cluster(test_story, "cloudflare")),
        ("cloudflare: leader kill -9 in the middle of a failover: the new leader finishes it",
         with_cluster(test_leader_killed_mid_failover, "cloudflare")),
        ("exec switcher: failover, switching back, switchover pin, purge",
         with_cluster(test_story)),
        ("switchover to an unhealthy entry point is purged", with_cluster(test_unhealthy_switchover_purged)),
        ("all down: panic, no switch; recovery", with_cluster(test_panic)),
        ("leader kill -9 in the middle of a failover: the new leader finishes it",
         with_cluster(test_leader_killed_mid_failover)),
        ("a lone voter (2 of 3 nodes frozen) decides nothing", with_cluster(test_lone_voter)),
        ("maintenance: drain, undrain, pause, resume", with_cluster(test_maintenance)),
        ("dhaf.dry-run: decisions shown, nothing switched", with_cluster(test_dry_run)),
        ("cloudflare: a record changed by hand is set back (provider-drift)",
         with_cluster(test_provider_drift, "cloudflare")),
        ("a switcher that cannot start: the leader's /readyz says why, until it can",
         with_cluster(test_switcher_cannot_init)),
    ]))
