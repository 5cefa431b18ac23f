# SPDX-License-Identifier: MIT
"""etcd's history bounded by dhaf, and etcd alarms reported once (issue 14, items 2 and 3).

One etcd with a small quota (--quota-backend-bytes 8 MiB) and two nodes compacting every 2 s,
keeping 20 revisions:
- compaction: the leader compacts etcd (a read at an old revision fails with "required revision
  has been compacted"), and a switchover after it is seen by both nodes' views;
- NOSPACE: the database is filled through etcd's own API until it refuses a write. Every node
  then says why: /readyz 503 with the alarm and what to do, dhaf_etcd_alarm{alarm="NOSPACE"} 1,
  a line in `dhafctl status-dhaf`; each node logs the problem once, and a node restarted under
  the alarm (it cannot open its session) logs its failures at most once per 10 s with a count.
  After `etcdctl del`, `compact`, `defrag` and `alarm disarm` the metric is 0, /readyz 200, the
  event history holds one etcd-alarm and one etcd-alarm-cleared, and a switchover works again.
usage: /usr/bin/python3 test_etcd_alarm.py BUILD_BIN_DIR"""
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dhafsys  # noqa: E402
from dhafsys import Cluster, free_port, parse_kv, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
QUOTA = 8 * 1024 * 1024
FILL_VALUE = 256 * 1024


def http(node, path, method="GET", body=None, timeout=10):
    """(status, text) of a REST request to node."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{node.rest_port}{path}", data=data,
                                 method=method,
                                 headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(node, name):
    """The value of the series `name` (with its labels, as printed) in node's /metrics."""
    _, text = http(node, "/metrics")
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


def ctl(node, *args):
    return subprocess.run([os.path.join(BIN, "dhafctl"), *args, "--endpoint",
                           f"127.0.0.1:{node.grpc_port}", "--timeout", "5"],
                          capture_output=True, text=True, timeout=20)


def current(node):
    _, text = http(node, "/api/v1/services/main")
    return json.loads(text).get("current_entry_point")


def etcd_status(c):
    """(revision, db size) from `etcdctl endpoint status`."""
    r = c.etcd.ctl("endpoint", "status", "-w", "json")
    st = json.loads(r.stdout)[0]["Status"]
    return int(st["header"]["revision"]), int(st["dbSize"])


def gateway_put(c, key, value):
    """A put through etcd's JSON gateway; returns None, or etcd's error text."""
    body = json.dumps({"key": base64.b64encode(key.encode()).decode(),
                       "value": base64.b64encode(value).decode()}).encode()
    req = urllib.request.Request(f"http://{c.etcd.endpoint}/v3/kv/put", data=body,
                                 method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return None
    except urllib.error.HTTPError as e:
        return e.read().decode()


def switchover(c, ep):
    """Asks node-1 for a switchover to ep and waits until both nodes' views show it current."""
    st, text = http(c.nodes[0], "/api/v1/services/main/switchover", "POST", {"entry_point": ep})
    assert st == 202, (st, text)
    wait_until(f"{ep} current on both nodes",
               lambda: all(current(n) == ep for n in c.nodes if n.alive()), 20, 0.1)


def lines_of(node, kinds, start=0):
    """node's log lines from line `start` on whose event is in kinds, parsed."""
    return [f for f in (parse_kv(x) for x in node.log_lines()[start:]) if f.get("event") in kinds]


def ts_of(fields):
    """Seconds of a log line's ts=2026-01-02T03:04:05.678Z (within one day is enough here)."""
    hms = fields["ts"].split("T")[1].rstrip("Z")
    h, m, sec = hms.split(":")
    return int(h) * 3600 + int(m) * 60 + float(sec)


def compaction(c):
    """The leader compacts; a switchover after it is seen by every node's view."""
    lead = c.node(c.wait_leader(15))
    wait_until("a current entry point", lambda: current(lead) == "ep-1", 20, 0.1)
    rev0, _ = etcd_status(c)
    for i in range(30):
        assert c.etcd.ctl("put", "/other/k", str(i)).returncode == 0
    compacted = wait_until("a compaction past the writes",
                           lambda: [e for e in lead.log_events("etcd-compacted")
                                    if int(e["compacted_to"]) > rev0 + 1], 15, 0.1)
    r = c.etcd.ctl("get", "/other/k", f"--rev={rev0 + 1}")
    assert r.returncode != 0 and "required revision has been compacted" in r.stderr, r
    assert metric(lead, "dhaf_etcd_compactions_total") >= 1
    switchover(c, "ep-2")
    return (f"compacted to {compacted[-1]['compacted_to']} (kept "
            f"{compacted[-1]['kept']} revisions); a read at {rev0 + 1} refused; switchover seen "
            f"by both nodes after it")


def nospace(c):
    """Fill etcd to its quota; every node reports it once; recovery by hand; dhaf resumes."""
    lead = c.node(c.wait_leader(15))
    follower = next(n for n in c.nodes if n is not lead)
    marks = {n.name: len(n.log_lines()) for n in c.nodes}
    t0 = time.monotonic()
    err, i = None, 0
    while err is None and i < 200:
        err = gateway_put(c, f"/fill/{i:04d}", os.urandom(FILL_VALUE))
        i += 1
    assert err and "database space exceeded" in err, (i, err)
    filled = f"NOSPACE after {i} puts of {FILL_VALUE // 1024} KiB"

    # every node says why, on every channel
    for n in c.nodes:
        wait_until(f"{n.name}: dhaf_etcd_alarm NOSPACE 1",
                   lambda n=n: metric(n, 'dhaf_etcd_alarm{alarm="NOSPACE"}') == 1, 15, 0.2)
        st, text = http(n, "/readyz")
        assert st == 503 and "etcd alarm NOSPACE on member" in text, (st, text)
        assert "etcdctl alarm disarm" in text, text
        assert metric(n, "dhaf_etcd_writable") == 0
        r = ctl(n, "status-dhaf")
        assert r.returncode == 0 and "etcd: NOT WRITABLE: etcd alarm NOSPACE" in r.stdout, r
    seen_s = time.monotonic() - t0
    st, text = http(lead, "/api/v1/cluster")
    health = json.loads(text)["etcd"]
    assert not health.get("writable") and health["alarms"][0]["alarm"] == "NOSPACE", health

    # writes keep failing: a switchover request is refused; a follower restarted now cannot
    # open its session and retries every second, but says so at most once per 10 s
    st, text = http(lead, "/api/v1/services/main/switchover", "POST", {"entry_point": "ep-1"})
    assert st >= 500 and "database space exceeded" in text, (st, text)
    follower.kill()
    fmark = len(follower.log_lines())
    follower.start()
    wait_until("the restarted node to report the alarm",
               lambda: http(follower, "/readyz")[0] == 503 and
               metric(follower, 'dhaf_etcd_alarm{alarm="NOSPACE"}') == 1, 15, 0.2)
    # it retries every second or faster; the limiter lets one line through per 10 s: the
    # second comes 10 s after the first, with the count of those held back in between
    two = wait_until("a second session-failed line",
                     lambda: (lambda l: l if len(l) >= 2 else None)(
                         lines_of(follower, {"session-failed"}, fmark)), 25, 0.2)
    gap = ts_of(two[1]) - ts_of(two[0])
    assert 10 <= gap < 11.5, (gap, two)
    assert int(two[1].get("repeated", "0")) >= 5, two
    assert "repeated" not in two[0], two
    marks[follower.name] = fmark

    # once each: the problem on every node; the leader's event, not recorded, said once
    for n in c.nodes:
        ev = lines_of(n, {"etcd-unwritable"}, marks[n.name])
        assert len(ev) == 1, (n.name, ev)
        assert "NOSPACE" in ev[0]["problem"], ev
        assert not lines_of(n, {"etcd-unwritable-changed"}, marks[n.name]), n.name
    flood = {"state-not-written", "event-not-recorded", "node-state-not-written",
             "campaign-failed", "session-failed", "no-quorum"}
    alarm_s = time.monotonic() - t0
    counts = {n.name: len(lines_of(n, flood, marks[n.name])) for n in c.nodes}
    for n in c.nodes:
        per_kind = {}
        for f in lines_of(n, flood, marks[n.name]):
            per_kind[f["event"]] = per_kind.get(f["event"], 0) + 1
        for kind, k in per_kind.items():
            assert k <= alarm_s / 10 + 2, (n.name, kind, k, alarm_s)
    assert not c.events("etcd-alarm"), "an event written while etcd refuses writes?"

    # the runbook: delete what filled it, compact, defragment, disarm
    t_fix = time.monotonic()
    r = c.etcd.ctl("del", "--prefix", "/fill/")
    assert r.returncode == 0, r.stderr
    rev, size_before = etcd_status(c)
    r = c.etcd.ctl("compact", str(rev))
    assert r.returncode == 0 or "required revision has been compacted" in r.stderr, r.stderr
    r = c.etcd.ctl("defrag", timeout=60)
    assert r.returncode == 0, r.stderr
    _, size_after = etcd_status(c)
    r = c.etcd.ctl("alarm", "disarm")
    assert r.returncode == 0, r.stderr
    for n in c.nodes:
        wait_until(f"{n.name}: dhaf_etcd_alarm NOSPACE 0",
                   lambda n=n: metric(n, 'dhaf_etcd_alarm{alarm="NOSPACE"}') == 0, 20, 0.2)
        wait_until(f"{n.name}: /readyz 200", lambda n=n: http(n, "/readyz")[0] == 200, 20, 0.2)
        assert metric(n, "dhaf_etcd_writable") == 1
        assert "etcd: writable" in ctl(n, "status-dhaf").stdout
    resumed_s = time.monotonic() - t_fix
    alarm = wait_until("one etcd-alarm event", lambda: c.events("etcd-alarm"), 20, 0.2)
    cleared = wait_until("one etcd-alarm-cleared event",
                         lambda: c.events("etcd-alarm-cleared"), 20, 0.2)
    assert len(alarm) == 1 and len(cleared) == 1, (alarm, cleared)
    assert alarm[0]["seq"] < cleared[0]["seq"]
    assert "NOSPACE" in alarm[0]["message"], alarm
    _, text = http(lead, "/api/v1/events?limit=20")
    kinds = [e["kind"] for e in json.loads(text)["events"]]
    assert "etcd-alarm" in kinds and "etcd-alarm-cleared" in kinds, kinds
    switchover(c, "ep-1")
    for n in c.nodes:
        ev = lines_of(n, {"etcd-unwritable"}, marks[n.name])
        assert len(ev) == 1, (n.name, ev)
    return (f"{filled}; every node reported it within {seen_s:.1f} s; 1 etcd-unwritable line "
            f"per node; a node restarted under the alarm: session-failed lines {gap:.1f} s "
            f"apart, the second with repeated={two[1]['repeated']}; limited lines in "
            f"{alarm_s:.0f} s: {counts}; db {size_before} -> "
            f"{size_after} bytes after defrag; resumed {resumed_s:.1f} s after the fix; events "
            f"#{alarm[0]['seq']} etcd-alarm, #{cleared[0]['seq']} etcd-alarm-cleared; "
            f"switchover works")


def etcd_with_quota(workdir):
    """An etcd binary for dhafsys.Etcd that runs the real one with a small quota."""
    path = os.path.join(workdir, "etcd-quota.sh")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\nexec {dhafsys.ETCD} \"$@\" --quota-backend-bytes={QUOTA}\n")
    os.chmod(path, 0o755)
    return path


def run():
    import tempfile
    tmp = tempfile.mkdtemp(prefix="dhaf-alarm-")
    real = dhafsys.ETCD
    dhafsys.ETCD = etcd_with_quota(tmp)
    port = free_port()
    services = f"""services:
  - name: main
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: 127.0.0.95}}
      - {{name: ep-2, ip: 127.0.0.96}}
    switcher: {{type: exec, init: /bin/true, switch: /bin/true, timeout: 2}}
    health-checker: {{type: tcp, port: {port}, timeout: 1}}
"""
    try:
        c = Cluster(BIN, n=2, ttl=3, name="alarm1", services=services)
    finally:
        dhafsys.ETCD = real
    try:
        for n in c.nodes:
            with open(n.config) as f:
                text = f.read()
            text = text.replace("  leader-key-ttl: 3\n", "  leader-key-ttl: 3\n"
                                "  compaction-interval: 2\n  compaction-retention: 20\n", 1)
            with open(n.config, "w") as f:
                f.write(text)
        c.add_backend("127.0.0.95", port)
        c.add_backend("127.0.0.96", port)
        c.start_all()
        return run_tests([("compaction by the leader", lambda: compaction(c)),
                          ("NOSPACE reported once, then resumed", lambda: nospace(c))])
    finally:
        c.close()
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(run())
