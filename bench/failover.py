#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench/failover: time from a backend stopping to dhaf's switcher call, beside HAProxy.

--voters dhaf-node processes (default 3; tact-interval 1, web checker on /ok with timeout 1
and retries 0, each node a voter) and one etcd on loopback; backends ep-1 and ep-2 are tests/fakes/backend.py
on two loopback addresses; the exec switcher's switch script appends `date +%s.%N`, the
calling node, its epoch and the target entry point to a file. HAProxy (Debian's haproxy,
installed with apt-get as root when missing) checks the same ep-1 backend with
`option httpchk GET /ok`, `timeout check 1s` and `check inter 1s fall 1 rise 1`, and logs to
stdout in ISO format with microseconds.

The nodes start a random part of a second apart, as real ones do (each keeps the check phase
it starts with). Each round: traffic on ep-1, ep-1 up in the state and in HAProxy; a random
pause of 0 to --phase seconds, stratified over the rounds (so that the stop falls at an
evenly spread point of the nodes' and HAProxy's check cycles: right after the switch back
both have just checked, which would bias every round to the worst case); the wall time just
before ep-1's backend is stopped - ended (--case refused, the default: connections are refused
at once) or frozen with SIGSTOP (--case hung: connections are accepted by the kernel and never
answered, so every check runs to its timeout); then polling with a deadline until the switcher was called
for ep-2 and HAProxy logged the server DOWN. The deltas are the switch script's timestamp and
HAProxy's log timestamp minus the stop time. The backend is then restarted and the round
ends once traffic is back on ep-1 and HAProxy has it UP again. A frozen backend is killed
(SIGKILL) before its restart.

Safety check, each round, in the calling leader's log (nodes run with --log-level debug):
the failover's ep-down decision must follow an `event=ep-votes` line for ep-1 with
unhealthy * 2 > voters, and no switch call may happen while ep-1's backend is up and
traffic is on it. With burst confirmation (suspect/ keys), the first node's failing check makes
the other nodes check at once. From the same logs (web-check, ep-votes and ep-down lines, millisecond
timestamps) the table of where dhaf's time goes: the nodes' failing probes, the leader's
tally, its decision and the switcher call.

Figures, plus exit code 1 when a round failed or the safety check found a violation (the
median targets - dhaf <= 0.6x HAProxy's DOWN time with connections refused, <= 1.0x with the
backend hung - are reported, not enforced). Progress goes to stderr, rounds and tables to
stdout. Every process started here is stopped on exit (also on Ctrl-C and SIGTERM).

usage: /usr/bin/python3 bench/failover.py [BUILD_BIN_DIR] [--rounds N] [--phase S]
       [--voters N] [--case refused|hung] [--max-seconds S] [--seed N] [--no-haproxy] [--keep]
"""
import argparse
import datetime
import math
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))
from dhafsys import Cluster, free_port, parse_kv, wait_until  # noqa: E402

SERVICE = "web"
EP_IPS = {"ep-1": "127.0.0.81", "ep-2": "127.0.0.82"}
TARGET_RATIO = {"refused": 0.6, "hung": 1.0}  # median dhaf/haproxy (issue 16)
FAILOVER_DEADLINE = 15.0  # s from the stop until both detectors must have seen it
SETTLE_DEADLINE = 20.0  # s for traffic to be back on ep-1 after the restart


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


def log_time(ts):
    """Seconds since the epoch of a node log's `ts=2026-01-02T03:04:05.678Z` (UTC, ms)."""
    d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    return d.replace(tzinfo=datetime.timezone.utc).timestamp()


def p95(values):
    """Nearest-rank 95th percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


class TimedSwitcher:
    """The exec switcher: init prints the current EP; switch appends `time node epoch ep`."""

    def __init__(self, workdir):
        self.current = os.path.join(workdir, "sw-current")
        self.calls_file = os.path.join(workdir, "sw-calls")
        self.init = os.path.join(workdir, "sw-init.sh")
        self.switch = os.path.join(workdir, "sw-switch.sh")
        with open(self.init, "w") as f:
            f.write(f"#!/bin/sh\ncat {self.current} 2>/dev/null || true\n")
        with open(self.switch, "w") as f:
            # the timestamp first: the call's moment, before anything else the script does
            f.write(f"""#!/bin/sh
t=$(date +%s.%N)
echo "$t $DHAF_NODE $DHAF_EPOCH $1" >> {self.calls_file}
echo "$1" > {self.current}.tmp && mv {self.current}.tmp {self.current}
""")
        os.chmod(self.init, 0o755)
        os.chmod(self.switch, 0o755)

    def yaml(self):
        return f"{{type: exec, init: {self.init}, switch: {self.switch}, timeout: 2}}"

    def calls(self):
        """[(wall time, node, epoch, ep)] of every switch call so far."""
        try:
            with open(self.calls_file) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) == 4:
                out.append((float(parts[0]), parts[1], parts[2], parts[3]))
        return out

    def points_to(self):
        try:
            with open(self.current) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None


def find_haproxy():
    """Path of haproxy, installing Debian's package as root when missing; (path, why not)."""
    for p in (shutil.which("haproxy"), "/usr/sbin/haproxy"):
        if p and os.access(p, os.X_OK):
            return p, None
    if os.geteuid() != 0:
        return None, "haproxy is not installed and this is not root (apt-get install haproxy)"
    progress("bench/failover: haproxy is missing; installing Debian's haproxy with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", "haproxy"]
    try:
        for attempt in range(2):
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
            if r.returncode == 0 and os.access("/usr/sbin/haproxy", os.X_OK):
                return "/usr/sbin/haproxy", None
            if attempt == 0:  # maybe no package lists yet
                subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env,
                               timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"apt-get install haproxy failed: {e}"
    tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["?"]
    return None, f"apt-get install haproxy failed: {tail[0]}"


class HAProxy:
    """One haproxy in the foreground: backend be with server s1, a stats socket, ISO log."""

    LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\S+) Server be/s1 is (UP|DOWN)\b")

    def __init__(self, binary, workdir, ip, port):
        self.bin = binary
        self.cfg = os.path.join(workdir, "haproxy.cfg")
        self.sock = os.path.join(workdir, "haproxy.sock")
        self.log = os.path.join(workdir, "haproxy.log")
        self.front_port = free_port()
        self.proc = None
        with open(self.cfg, "w") as f:
            f.write(f"""global
    log stdout format iso local0
    stats socket {self.sock} mode 600 level admin
defaults
    mode http
    log global
    timeout connect 1s
    timeout client 5s
    timeout server 5s
    timeout check 1s
frontend fe
    bind 127.0.0.1:{self.front_port}
    default_backend be
backend be
    option httpchk GET /ok
    server s1 {ip}:{port} check inter 1s fall 1 rise 1
""")

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([self.bin, "-db", "-f", self.cfg], stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL)
        wait_until("haproxy's stats socket", lambda: self.alive() and self.stat(), 10)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def command(self, line):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(self.sock)
            s.sendall(line.encode() + b"\n")
            chunks = []
            while True:
                b = s.recv(65536)
                if not b:
                    break
                chunks.append(b)
        return b"".join(chunks).decode(errors="replace")

    def stat(self):
        """`show stat` row of be/s1 as a dict (status: UP/DOWN/..., check_status: L7OK...)."""
        lines = self.command("show stat").splitlines()
        if not lines or not lines[0].startswith("# "):
            return None
        head = lines[0][2:].split(",")
        for line in lines[1:]:
            row = dict(zip(head, line.split(",")))
            if row.get("pxname") == "be" and row.get("svname") == "s1":
                return row
        return None

    def is_up(self):
        row = self.stat()
        return row is not None and row["status"] == "UP" and row["check_status"] == "L7OK"

    def transitions(self):
        """[(wall time, "UP"|"DOWN")] of s1 from the log (microsecond timestamps)."""
        try:
            with open(self.log, errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            m = self.LINE.match(line)
            if m:
                out.append((datetime.datetime.fromisoformat(m.group(1)).timestamp(),
                            m.group(2)))
        return out

    def stop(self):
        if self.alive():
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class Bench:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.port = free_port()
        self.c = None
        self.sw = None
        self.ha = None
        self.ha_missing = None  # why there is no haproxy column
        self.b1 = None
        self.rounds = []  # one dict per finished round
        self.violations = []  # what broke "never a switch while a majority sees ep-1 healthy"
        self.failed = None  # why the run stopped early
        self.periods = {}  # node -> median gap between its ep-1 checks

    # ------------------------------------------------------------------ setup

    def setup(self):
        self.c = Cluster(self.args.bin_dir, n=self.args.voters, ttl=3, name="fo", services="")
        self.sw = TimedSwitcher(self.c.workdir)
        services = f"""services:
  - name: {SERVICE}
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: {EP_IPS['ep-1']}}}
      - {{name: ep-2, ip: {EP_IPS['ep-2']}}}
    switcher: {self.sw.yaml()}
    health-checker: {{type: web, port: {self.port}, path: /ok, timeout: 1, retries: 0}}
"""
        for n in self.c.nodes:
            n.services = services
            # the bench stops ep-1 again and again on purpose: flap damping would hold it down
            n.write_config("fo", self.c.etcd.endpoint, 3, dhaf_extra="  flap-threshold: 0\n")
        self.b1 = self.c.add_backend(EP_IPS["ep-1"], self.port)
        self.c.add_backend(EP_IPS["ep-2"], self.port)
        if not self.args.no_haproxy:
            binary, why = find_haproxy()
            if binary:
                self.ha = HAProxy(binary, self.c.workdir, EP_IPS["ep-1"], self.port)
                self.ha.start()
            else:
                self.ha_missing = why
                progress(f"bench/failover: {why}; the haproxy column is left out")
        # Started a random part of a tact apart, as real nodes are: each node's checks keep
        # the phase it starts with (the tact counts from the end of its previous round).
        for i, n in enumerate(self.c.nodes):
            if i:
                time.sleep(self.rng.uniform(0, 1))
            n.start("--log-level", "debug")  # web-check lines: when each node saw the stop

    def state(self):
        return self.c.etcd.get_json(self.c.prefix + f"services/{SERVICE}/state") or {}

    def on_ep1(self):
        """Traffic on ep-1 by the switcher and in the state, ep-1 up, HAProxy has s1 UP."""
        if self.sw.points_to() != "ep-1":
            return False
        st = self.state()
        if st.get("current") != "ep-1" or st.get("eps", {}).get("ep-1") != "up" or \
                "switching" in st:
            return False
        return self.ha is None or self.ha.is_up()

    # ------------------------------------------------------------------ logs

    def node_events(self, name):
        """Parsed event lines of one node's log, each with _t (wall s) and _i (line no)."""
        out = []
        for i, line in enumerate(self.c.node(name).log_lines()):
            f = parse_kv(line)
            if "event" in f and "ts" in f:
                try:
                    f["_t"] = log_time(f["ts"])
                except ValueError:
                    continue
                f["_i"] = i
                out.append(f)
        return out

    def analyse(self, rec):
        """Checks the round's failover against the leader's tally; fills the stage times."""
        t_stop, t_call, caller = rec["t_stop"], rec["t_call"], rec["node"]
        since = t_stop - 0.001  # log times are cut to the millisecond
        evs = self.node_events(caller)
        down = next((e for e in evs if e["event"] == "ep-down" and e.get("from") == "ep-1" and
                     e.get("service") == SERVICE and since <= e["_t"] <= t_call + 0.001), None)
        if down is None:
            return f"{caller} logged no ep-down for ep-1 between the stop and its switch call"
        votes = [e for e in evs if e["event"] == "ep-votes" and e.get("ep") == "ep-1" and
                 e.get("service") == SERVICE and e["_i"] < down["_i"]]
        if not votes:
            return f"{caller} logged no ep-votes line for ep-1 before its ep-down"
        last = votes[-1]
        unhealthy, voters = int(last.get("unhealthy", 0)), int(last.get("voters", 0))
        rec["votes"] = f"{unhealthy}/{voters}"
        if last.get("state") != "unhealthy" or unhealthy * 2 <= voters:
            return (f"{caller} decided ep-down on a tally without a majority: state="
                    f"{last.get('state')} healthy={last.get('healthy')} "
                    f"unhealthy={unhealthy} voters={voters}")
        first_majority = next((e for e in votes if e["_t"] >= since and
                               e.get("state") == "unhealthy" and
                               int(e.get("unhealthy", 0)) * 2 > int(e.get("voters", 0))), last)
        rec["t_tally"] = first_majority["_t"]
        rec["t_decide"] = down["_t"]
        fails = []
        for n in self.c.nodes:
            f = next((e["_t"] for e in self.node_events(n.name)
                      if e["event"] == "web-check" and e.get("ep") == "ep-1" and
                      e.get("healthy") == "false" and e["_t"] >= since), None)
            if f is not None:
                fails.append(f)
        fails.sort()
        rec["probe_fails"] = fails
        return None

    def probe_periods(self):
        """Median gap (s) between a node's successive ep-1 checks, per node, while up."""
        out = {}
        for n in self.c.nodes:
            ts = [e["_t"] for e in self.node_events(n.name)
                  if e["event"] == "web-check" and e.get("ep") == "ep-1" and
                  e.get("healthy") == "true"]
            gaps = [b - a for a, b in zip(ts, ts[1:]) if b - a < 1.9]  # no stop in between
            if gaps:
                out[n.name] = statistics.median(gaps)
        return out

    # ------------------------------------------------------------------ rounds

    def run_round(self, r, pause):
        wait_until("traffic on ep-1 with ep-1 up", self.on_ep1, SETTLE_DEADLINE, 0.05)
        mark = len(self.sw.calls())
        # A random point of the check cycles (see the module's comment), not a wait for state.
        time.sleep(pause)
        calls = self.sw.calls()
        for call in calls[mark:]:  # ep-1's backend is up and traffic is on it: no call at all
            self.violations.append(f"round {r}: switch call to {call[3]} by {call[1]} while "
                                   f"ep-1's backend was up")
        mark = len(calls)
        ha_mark = len(self.ha.transitions()) if self.ha else 0

        t_stop = time.time()
        if self.args.case == "hung":
            self.b1.proc.send_signal(signal.SIGSTOP)
        else:
            self.b1.stop()

        def seen():
            call = next((x for x in self.sw.calls()[mark:] if x[3] == "ep-2"), None)
            down = None
            if self.ha:
                down = next((t for t, what in self.ha.transitions()[ha_mark:] if what == "DOWN"),
                            None)
            done = call is not None and (self.ha is None or down is not None)
            return (call, down) if done else None

        try:
            call, down = wait_until("the switch call to ep-2 and haproxy's DOWN", seen,
                                    FAILOVER_DEADLINE, 0.01)
        except AssertionError:
            # say which side missed it, then go on without that column for this round
            call = next((x for x in self.sw.calls()[mark:] if x[3] == "ep-2"), None)
            if call is None:
                raise
            down = None
            progress(f"round {r}: haproxy did not mark s1 DOWN within {FAILOVER_DEADLINE:.0f} s")
        rec = {"round": r, "t_stop": t_stop, "t_call": call[0], "node": call[1],
               "dhaf": call[0] - t_stop, "haproxy": None if down is None else down - t_stop}
        wait_until("the failover recorded", lambda: self.state().get("current") == "ep-2" and
                   "switching" not in self.state(), SETTLE_DEADLINE, 0.05)

        if self.args.case == "hung":  # (a frozen process takes no SIGTERM: SIGKILL it)
            self.b1.proc.kill()
            self.b1.proc.wait(5)
            self.b1.proc = None
        self.b1.start()
        t_start = time.time()
        wait_until("traffic back on ep-1", self.on_ep1, SETTLE_DEADLINE, 0.05)
        after = self.sw.calls()[mark:]
        back = next((x for x in after if x[3] == "ep-1"), None)
        rec["dhaf_back"] = back[0] - t_start if back else None
        if self.ha:
            up = next((t for t, what in self.ha.transitions()[ha_mark:] if what == "UP"), None)
            rec["haproxy_back"] = up - t_start if up else None
        if len(after) != 2:
            progress(f"round {r}: {len(after)} switch calls (expected ep-2, then ep-1): "
                     + ", ".join(f"{x[3]} by {x[1]}" for x in after))
        bad = self.analyse(rec)
        if bad:
            self.violations.append(f"round {r}: {bad}")
        self.rounds.append(rec)
        self.print_round(rec, bad)

    def print_round(self, rec, bad):
        ha = "haproxy DOWN     -   " if rec["haproxy"] is None else \
            f"haproxy DOWN {rec['haproxy'] * 1000:5.0f} ms"
        back = f"back: dhaf {rec['dhaf_back'] * 1000:5.0f} ms" if rec["dhaf_back"] else "back: -"
        if rec.get("haproxy_back") is not None:
            back += f", haproxy UP {rec['haproxy_back'] * 1000:5.0f} ms"
        votes = f"votes {rec['votes']} unhealthy" if "votes" in rec else "votes ?"
        print(f"round {rec['round']:2d}: dhaf switch {rec['dhaf'] * 1000:5.0f} ms "
              f"({rec['node']}, {votes})  {ha}  | {back}{'  VIOLATION: ' + bad if bad else ''}",
              flush=True)

    def run(self):
        deadline = time.monotonic() + self.args.max_seconds
        # Stratified pauses: one in each of `rounds` equal slices of 0..phase, shuffled, so
        # that few rounds already cover the check cycle evenly (plain random pauses would
        # let the medians of 20 rounds wander by about a tenth of a second).
        n = self.args.rounds
        pauses = [(i + self.rng.random()) * self.args.phase / n for i in range(n)]
        self.rng.shuffle(pauses)
        try:
            self.setup()
            progress(f"bench/failover: {self.args.rounds} rounds; cluster in {self.c.workdir}")
            wait_until("the first switch to ep-1", self.on_ep1, 30, 0.1)
            for r in range(1, self.args.rounds + 1):
                if time.monotonic() > deadline:
                    self.failed = f"--max-seconds {self.args.max_seconds:.0f} reached " \
                                  f"after {r - 1} rounds"
                    break
                self.run_round(r, pauses[r - 1])
        except Exception as e:  # report the rounds done so far; Ctrl-C and SIGTERM pass
            self.failed = f"{type(e).__name__}: {e}"
        finally:
            if self.c:
                self.periods = self.probe_periods()

    # ------------------------------------------------------------------ report

    def report(self):
        a = self.args
        n = len(self.rounds)
        print(f"\nfailover detection, {n} rounds, backend {a.case} (tact 1 s, timeout 1 s, "
              f"retries 0, {a.voters} voters)")
        print(f"{'':17s}{'min':>9s}{'median':>10s}{'p95':>9s}{'max':>9s}")

        def row(name, vals, note=""):
            if not vals:
                print(f"{name:17s}{'n/a':>9s}{' (' + note + ')' if note else ''}")
                return None
            ms = [v * 1000 for v in vals]
            print(f"{name:17s}{min(ms):6.0f} ms{statistics.median(ms):7.0f} ms"
                  f"{p95(ms):6.0f} ms{max(ms):6.0f} ms")
            return statistics.median(ms)

        dm = row("dhaf (switch)", [x["dhaf"] for x in self.rounds])
        ha_vals = [x["haproxy"] for x in self.rounds if x["haproxy"] is not None]
        why = self.ha_missing or ("--no-haproxy" if a.no_haproxy else "")
        hm = row("haproxy (DOWN)", ha_vals, why)
        if dm is not None and hm:
            ratio = dm / hm
            target = TARGET_RATIO[a.case]
            verdict = "met" if ratio <= target else "MISSED"
            print(f"median ratio dhaf/haproxy: {ratio:.2f} (target <= {target}: {verdict})")
        else:
            print("median ratio dhaf/haproxy: n/a")
        print(f"switches while a majority saw ep-1 healthy: {len(self.violations)}")
        for v in self.violations:
            print(f"  {v}")
        self.report_stages()
        if self.failed:
            print(f"\nstopped early: {self.failed}")

    def report_stages(self):
        maj = self.args.voters // 2 + 1
        recs = [x for x in self.rounds if "t_tally" in x and len(x.get("probe_fails", [])) >= maj]
        if not recs:
            return

        def med(f):
            return statistics.median(f(x) for x in recs) * 1000

        print(f"\nwhere dhaf's time goes (median of {len(recs)} rounds, node log times, ms)")
        stages = [
            ("backend stop -> first node's failing check",
             lambda x: x["probe_fails"][0] - x["t_stop"], None),
            (f"backend stop -> node {maj}'s failing check (majority)",
             lambda x: x["probe_fails"][maj - 1] - x["t_stop"], None),
            ("majority check -> leader's ep-votes tally",
             lambda x: x["t_tally"] - x["probe_fails"][maj - 1], "vote put + watch + absorb"),
            ("tally -> decision (ep-down)", lambda x: x["t_decide"] - x["t_tally"], None),
            ("decision -> switcher call", lambda x: x["t_call"] - x["t_decide"],
             "state txn + fork/exec"),
            ("backend stop -> switcher call", lambda x: x["t_call"] - x["t_stop"], None),
        ]
        for name, f, note in stages:
            print(f"  {name:52s}{med(f):6.0f}{'   (' + note + ')' if note else ''}")
        ha = [x["haproxy"] for x in recs if x["haproxy"] is not None]
        if ha:
            print(f"  {'backend stop -> haproxy DOWN':52s}{statistics.median(ha) * 1000:6.0f}")
        if self.periods:
            print("  check period per node (median gap between ep-1 checks): " +
                  ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in sorted(self.periods.items())))

    def close(self):
        if self.ha:
            self.ha.stop()
        if self.c:
            self.c.close()


def main():
    ap = argparse.ArgumentParser(
        description="Failover detection time: dhaf's switcher call beside HAProxy's DOWN.")
    ap.add_argument("bin_dir", nargs="?", default="build/bin",
                    help="directory with dhaf-node (default build/bin)")
    ap.add_argument("--rounds", type=int, default=20, help="rounds (default 20)")
    ap.add_argument("--phase", type=float, default=1.0,
                    help="random pause before each stop, 0 to S seconds (default 1.0: one "
                         "check interval)")
    ap.add_argument("--voters", type=int, default=3,
                    help="dhaf-node processes, each a voter (default 3)")
    ap.add_argument("--case", choices=("refused", "hung"), default="refused",
                    help="how ep-1's backend fails: ended (refused, default) or SIGSTOP (hung)")
    ap.add_argument("--max-seconds", type=float, default=600,
                    help="no new round after this many seconds (default 600)")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random pauses")
    ap.add_argument("--no-haproxy", action="store_true", help="the dhaf row only")
    ap.add_argument("--keep", action="store_true", help="keep the logs' temporary directory")
    args = ap.parse_args()
    if args.rounds < 1 or args.phase < 0 or args.max_seconds <= 0 or not 1 <= args.voters <= 9:
        ap.error("--rounds must be >= 1, --phase >= 0, --max-seconds > 0, --voters 1..9")
    if not os.access(os.path.join(args.bin_dir, "dhaf-node"), os.X_OK):
        print(f"bench/failover: {args.bin_dir}/dhaf-node not found; run `make build` first",
              file=sys.stderr)
        return 2
    if args.keep:
        os.environ["DHAF_KEEP_TMP"] = "1"

    def on_term(_sig, _frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    b = Bench(args)
    interrupted = 0
    try:
        b.run()
    except KeyboardInterrupt:
        interrupted = 130
    except SystemExit as e:
        interrupted = e.code if isinstance(e.code, int) else 1
    finally:
        b.close()
    if interrupted:
        b.failed = "interrupted"
    b.report()
    if interrupted:
        return interrupted
    return 1 if b.failed or b.violations or not b.rounds else 0


if __name__ == "__main__":
    sys.exit(main())
