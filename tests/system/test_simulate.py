# SPDX-License-Identifier: MIT
"""dhaf-sim (issue 16 item 8): its command line, a generated timeline, and a real cluster's
votes recorded with `dhaf-sim record` and replayed - the recording shows the failover the
cluster made, and replayed under a config asking for more voters it shows none.

usage: /usr/bin/python3 test_simulate.py BUILD_BIN_DIR"""
import os
import re
import signal
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import Cluster, free_port, run_tests, wait_until, web_service_yaml  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
SIM = os.path.join(BIN, "dhaf-sim")
TMP = tempfile.mkdtemp(prefix="dhaf-sim-")
CONFIG = os.path.join(TMP, "sim.yaml")
with open(CONFIG, "w") as f:
    f.write("""dhaf:
  cluster-name: sim
  node-name: node-1
  tact-interval: 1
etcd:
  hosts: 127.0.0.1:2379
""" + web_service_yaml(["127.0.0.61", "127.0.0.62"], 8080))


def sim(*args, stdin=None):
    return subprocess.run([SIM, *args], input=stdin, capture_output=True, text=True, timeout=60)


def summary(out):
    """{rule: {key: value}} of the summary lines."""
    rules = {}
    for line in out.splitlines():
        if line.startswith("summary "):
            kv = dict(w.split("=", 1) for w in line.split()[1:])
            rules[kv["rule"]] = kv
    return rules


def test_command_line():
    r = sim("--help")
    assert r.returncode == 0 and "dhaf-sim record" in r.stdout, r
    r = sim("record", "--help")
    assert r.returncode == 0 and "--duration" in r.stdout, r
    r = sim("-")
    assert r.returncode == 2 and "--config FILE is required" in r.stderr, r
    r = sim("-c", CONFIG, "--voters", "40", "-")
    assert r.returncode == 2 and "--voters wants a whole number from 1 to 16" in r.stderr, r
    r = sim("-c", CONFIG, "--voters", "3", "--voter", "a", "-", stdin="")
    assert r.returncode == 2 and "exclude each other" in r.stderr, r
    # a bad timeline line: named, with its line, and nothing simulated
    r = sim("-c", CONFIG, "-", stdin="# outage\n10s ep ep-1 refused\n12s ep ep-7 hung\n")
    assert r.returncode == 1 and r.stdout == "", r
    assert "-:3: the service has no such entry point (\"ep-7\")" in r.stderr, r.stderr
    r = sim("-c", CONFIG, os.path.join(TMP, "missing.tl"))
    assert r.returncode == 1 and "missing.tl: No such file" in r.stderr, r
    big = os.path.join(TMP, "big.tl")  # a timeline past 16 MiB is refused, not read on
    with open(big, "w") as f:
        f.write(("# " + "x" * 1021 + "\n") * (16 * 1024 + 1))
    r = sim("-c", CONFIG, big)
    assert r.returncode == 1 and "a timeline is at most 16 MiB" in r.stderr, r
    r = sim("-c", CONFIG, "-s", "nope", "-", stdin="")
    assert r.returncode == 1 and "no service nope" in r.stderr, r
    # record: an etcd that does not answer is an error, said at once
    unreachable = os.path.join(TMP, "unreachable.yaml")
    with open(CONFIG) as f, open(unreachable, "w") as g:
        g.write(f.read().replace("127.0.0.1:2379", f"127.0.0.1:{free_port()}"))
    r = subprocess.run([SIM, "record", "-c", unreachable, "--duration", "5"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "dhaf-sim: record: " in r.stderr, r
    assert r.stdout == "", r.stdout
    r = sim("record", "-c", CONFIG, "--duration", "0")
    assert r.returncode == 2 and "--duration wants a whole number" in r.stderr, r
    bad = os.path.join(TMP, "bad.yaml")
    with open(bad, "w") as f:
        f.write("dhaf:\n  tact-intervall: 1\n")
    r = sim("-c", bad, "-", stdin="")
    assert r.returncode == 1 and "tact-intervall" in r.stderr, r


def test_generated_timeline():
    tl = "10.5s ep ep-1 refused\n30s ep ep-1 up\n60s end\n"
    r = sim("-c", CONFIG, "-", stdin=tl)
    assert r.returncode == 0, r
    s = summary(r.stdout)
    assert set(s) == {"dhaf", "original", "local"}, s
    for rule in s.values():
        assert rule["switches"] == "2" and rule["current"] == "ep-1", rule
    first = float(s["dhaf"]["first"].rstrip("s"))
    assert 10.5 < first < 11.5, s["dhaf"]
    assert "rule=dhaf event=failover from=ep-1 to=ep-2" in r.stdout, r.stdout
    assert "rule=dhaf event=suspect voter=" in r.stdout, r.stdout
    # the same run again: the same figures (seeded draws), and --quiet prints the summary only
    again = sim("-c", CONFIG, "-q", "-", stdin=tl)
    assert again.stdout == "".join(x + "\n" for x in r.stdout.splitlines()
                                   if x.startswith("summary ")), again.stdout
    # a vantage point's broken route: dhaf's majority holds, the local checker there switches
    r = sim("-c", CONFIG, "-q", "-",
            stdin="10s voter node-1 net ep-1 hung\n40s voter node-1 net ep-1 up\n60s end\n")
    s = summary(r.stdout)
    assert s["dhaf"]["switches"] == "0" and s["local"]["switches"] != "0", s
    return f"dhaf failed over {first - 10.5:.3f} s after the outage"


def test_record_and_replay():
    port = free_port()
    c = Cluster(BIN, n=3, services=web_service_yaml(["127.0.0.61", "127.0.0.62"], port))
    rec = None
    try:
        b1 = c.add_backend("127.0.0.61", port)
        c.add_backend("127.0.0.62", port)
        c.start_all()
        c.wait_leader(10)
        wait_until("three votes", lambda: len(c.etcd.get_prefix(c.prefix + "votes/")) == 3, 15)
        out = os.path.join(c.workdir, "votes.tl")
        rec = subprocess.Popen([SIM, "record", "-c", c.nodes[0].config, "-o", out],
                               stderr=subprocess.PIPE, text=True)
        wait_until("the votes at the start recorded",
                   lambda: os.path.exists(out) and open(out).read().count(" vote ") >= 3, 10)
        b1.stop()
        wait_until("the cluster's failover", lambda: c.events("failover", "web"), 15)
        rec.send_signal(signal.SIGTERM)
        assert rec.wait(10) == 0, rec.stderr.read()
        assert "vote changes in" in rec.stderr.read()
        text = open(out).read()
        lines = text.splitlines()
        assert lines[1] == "voters node-1 node-2 node-3", lines[:2]
        assert re.fullmatch(r"\d+\.\d{3}s end", lines[-1]), lines[-1]
        assert sum(1 for x in lines if " vote " in x and '"healthy":false' in x) >= 2, text

        # replayed under the cluster's own config: dhaf's rule fails over as the cluster did
        r = sim("-c", c.nodes[0].config, out)
        assert r.returncode == 0, r
        assert "rule=dhaf event=failover from=ep-1 to=ep-2" in r.stdout, r.stdout
        assert summary(r.stdout)["dhaf"]["switches"] == "1", r.stdout
        # what if 4 fresh voters had been needed: no quorum, no switch
        strict = os.path.join(c.workdir, "strict.dhaf")
        with open(c.nodes[0].config) as f, open(strict, "w") as g:
            g.write(f.read().replace("  tact-interval: 1\n", "  tact-interval: 1\n"
                                     "  min-voters: 4\n", 1))
        r = sim("-c", strict, out)
        assert r.returncode == 0, r
        assert summary(r.stdout)["dhaf"]["switches"] == "0", r.stdout
        assert "rule=dhaf event=no-quorum" in r.stdout, r.stdout
        return f"{len(lines)} timeline lines recorded"
    finally:
        if rec and rec.poll() is None:
            rec.kill()
            rec.wait()
        c.close()


if __name__ == "__main__":
    try:
        rc = run_tests([("command_line", test_command_line),
                        ("generated_timeline", test_generated_timeline),
                        ("record_and_replay", test_record_and_replay)])
    finally:
        import shutil
        shutil.rmtree(TMP, ignore_errors=True)
    sys.exit(rc)
