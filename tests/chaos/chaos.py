#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""make chaos: a dhaf cluster of real processes under random faults, with an invariant checker.

Usage: chaos.py BIN_DIR [--rounds N] [--seed S] [--soak SECONDS] [--keep] [--out DIR]

Topology (every host in its own network namespace, joined by veth pairs to a bridge that lives
in a namespace of its own; tests/chaos/netlab.py; addresses 198.18.0.x):
    m1 m2 m3          etcd members (.11-.13), one etcd cluster, --quota-backend-bytes 24 MiB
    node-1..3         dhaf-node (.21-.23), each probing (3 voters)
    probe-1, probe-2  dhaf-prober (.31, .32), reporting to any node (2 voters: 5 in all, quorum 3)
    svc               the Cloudflare fake (tests/fakes/cloudflare.py, both services' A records)
                      and the SMTP sink (tests/fakes/smtp_sink.py, aiosmtpd) (.40)
    be                the backends (tests/fakes/backend.py, one process per entry point):
                      service web (web checker, GET /ok) ep-1..3 on .51-.53,
                      service tcp (tcp checker) ep-1..2 on .54-.55
    ctl               where this script runs etcdctl (never cut off)
tact-interval 1 s, leader-key-ttl 3 s, checks time out after 1 s with no retry, flap damping off.

Each round draws one fault (one in four rounds two) from the seed printed at start:
    stop X          SIGSTOP of a node, a prober or an etcd member, SIGCONT 2-8 s later
    kill X          kill -9 of a node, a prober or an etcd member, restarted 1-5 s later
    cut-etcd N      node N cut from every etcd member for 3-9 s
    cut-nodes P     prober P cut from every node
    cut-backends N  node N cut from the backends (it sees everything fail: impaired)
    split N|M       the nodes split 1|2: node N and etcd member M cut from the other two of each
    etcd-leader     the etcd leader stopped or killed (restarted 2-4 s later)
    nospace         etcd filled until it raises NOSPACE, held 3-6 s, then recovered as an
                    operator would (delete, compact, defrag, alarm disarm)
    smtp-down       the SMTP sink stopped for 3-10 s
    freeze-in-switch  split brain: the fake freezes the leader (SIGSTOP) as its Cloudflare
                    call of a failover arrives (carried out, the answer waits in the socket),
                    the entry point it switched to fails too, so the next leader switches
                    again; the frozen one is continued 5-7 s later, with its stale view
and, independently, 0-2 backends fail (half of them the entry point in use; refused, or hung
for a web one) for 2-24 s within the round's 12 s fault window (DHAF_CHAOS_FAULT=KIND makes
every fault of a run one kind). Then every fault is healed and every backend restarted; the round
waits for the cluster to settle (a leader, five votes, every service on a live entry point, the
provider agreeing: at most 60 s) and makes one calm outage: the current entry point of a random
service is stopped and the failover timed.

Invariants, checked after every round from etcd's history (an etcdctl watch from revision 1),
the fake's change log, the sink and the processes:
    (a) no change reached the provider (Cloudflare fake) from an epoch older than one already
        seen (the X-Dhaf-Leader header of every write, in arrival order);
    (b) no switch went to an entry point a strict majority of the fresh voters saw down, and
        none was decided on fewer fresh voters than the quorum (3);
    (c) every outage of a service's current entry point that a quorum of voters could see
        (at most 2 voters hit by faults, etcd writable, another entry point up, all for the
        whole bound; a fault counts RECOVER_S past its end) led to a switch away within 8 s
        (3 s leader TTL + a check + the new leader's view + the switch + margin) unless it
        ended first; a calm outage within 6 s; and after every round the cluster settled
        within 60 s;
    (d) no failover happened while a strict majority of the fresh voters saw the current entry
        point healthy;
    (e) every event record (events/<seq>) reached the sink, once: checked at the end, after
        the notifiers had 60 s to deliver; a copy with the same Message-ID is counted apart
        (at-least-once across a leader killed mid-delivery, docs/internals.md);
    (f) no process crashed (exited without being killed by this script), and every dhaf
        process stayed within LIMITS (RSS, file descriptors, threads).
Votes and deletions that came less than LAG_S before a decision count both ways (the leader
may not have seen them yet), so the checker never blames the leader for a race it could not
see.

--soak S runs rounds until S seconds have passed with a 4 s fault window (a round every 6-8 s),
samples every dhaf process's RSS and FDs and etcd's db size after every round into soak.csv,
the calm outages' failover times into soak-latency.csv, and plots soak.png with gnuplot (in
--out, default the work dir, kept). The tact stays 1 s: dhaf.tact-interval is whole seconds,
as in the seed.

Prints a table row per round, the process table at the end and `violations: N`; exit 1 on any
violation, 2 on a usage error, 77 (skipped) when this machine cannot build the lab (not root,
no nft, no etcd).
"""
import argparse
import base64
import bisect
import datetime
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import netlab  # noqa: E402

sys.path.insert(0, os.path.join(HERE, "..", "system"))
from dhafsys import wait_until  # noqa: E402

FAKES = os.path.join(HERE, "..", "fakes")
ETCD = os.environ.get("DHAF_TEST_ETCD", "/usr/bin/etcd")
ETCDCTL = os.environ.get("DHAF_TEST_ETCDCTL", "/usr/bin/etcdctl")
PY = "/usr/bin/python3"

CLUSTER = "chaos"
PREFIX = f"/dhaf/{CLUSTER}/"
TACT, TTL = 1, 3
VOTERS = ["node-1", "node-2", "node-3", "probe-1", "probe-2"]
NODES = VOTERS[:3]
PROBERS = VOTERS[3:]
MEMBERS = ["m1", "m2", "m3"]
QUORUM = 3
BOUND_S = 8.0
CALM_BOUND_S = 6.0
SETTLE_S = 60.0
RECOVER_S = 5.0  # a voter hit by a fault counts as hit this long after the fault ends
LAG_S = 0.5
WINDOW_S = 12.0
PORT = 8080
CF_TOKEN = "chaos-cloudflare-token-0123"
API_TOKEN = "chaos-api-token-0123456789"
MIB = 1024 * 1024
LIMITS = {"node": {"rss": 64 * MIB, "fds": 160, "threads": 48},
          "prober": {"rss": 48 * MIB, "fds": 64, "threads": 32}}

SERVICES = {
    "web": {"checker": "web", "eps": {"ep-1": "198.18.0.51", "ep-2": "198.18.0.52",
                                      "ep-3": "198.18.0.53"}},
    "tcp": {"checker": "tcp", "eps": {"ep-1": "198.18.0.54", "ep-2": "198.18.0.55"}},
}
HOSTS = [("ctl", 2, ()), ("m1", 11, ()), ("m2", 12, ()), ("m3", 13, ()), ("node-1", 21, ()),
         ("node-2", 22, ()), ("node-3", 23, ()), ("probe-1", 31, ()), ("probe-2", 32, ()),
         ("svc", 40, ()), ("be", 50, (51, 52, 53, 54, 55))]


def now():
    return time.time()


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------ processes
class Proc:
    """One process in one host's namespace; knows whether this script meant it to be down."""

    def __init__(self, lab, name, host, argv, logfile, kind, ready=None):
        self.lab, self.name, self.host, self.argv = lab, name, host, argv
        self.logfile, self.kind, self.ready = logfile, kind, ready
        self.proc = None
        self.down = True  # not running, on purpose
        self.stopped = False
        self.samples = []  # (rss, fds, threads)
        self.starts = 0

    def start(self):
        if self.proc is not None and self.proc.poll() is None:
            return  # running already (two faults of a round may both restart it)
        out = open(self.logfile, "ab")
        self.log_at = out.tell()
        self.proc = subprocess.Popen(self.lab.exec_args(self.host) + self.argv, stdout=out,
                                     stderr=out, stdin=subprocess.PIPE)
        out.close()
        self.down, self.stopped = False, False
        self.starts += 1
        if self.ready:
            self.ready(self)

    def kill(self):
        """kill -9 (on purpose: not a crash)."""
        self._end(graceful=False)

    def terminate(self):
        """SIGTERM, then SIGKILL after 10 s (on purpose: not a crash)."""
        self._end(graceful=True)

    def _end(self, graceful):
        self.down = True
        if self.proc and self.proc.poll() is None:
            if self.stopped:
                os.kill(self.proc.pid, signal.SIGCONT)
            if graceful:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.stopped = False

    def sig_stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGSTOP)
            self.stopped = True

    def sig_cont(self):
        if self.proc and self.proc.poll() is None and self.stopped:
            os.kill(self.proc.pid, signal.SIGCONT)
        self.stopped = False

    def crashed(self):
        """The exit status when the process ended without being asked to (else None)."""
        if self.down or self.proc is None:
            return None
        return self.proc.poll()

    def sample(self):
        """(VmRSS bytes, open fds, threads) now, or None when it is not running."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        try:
            rss = threads = 0
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        rss = int(line.split()[1]) * 1024
                    elif line.startswith("Threads:"):
                        threads = int(line.split()[1])
            fds = len(os.listdir(f"/proc/{self.proc.pid}/fd"))
        except OSError:
            return None
        s = (rss, fds, threads)
        self.samples.append(s)
        return s

    def tail(self, n=5):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read().splitlines()[-n:]
        except OSError:
            return []


def wait_listening(p):
    """Waits for the fake's "LISTENING <port>" line in what it wrote to its log since it
    started (its stdout is the log)."""
    deadline = now() + 15
    while now() < deadline:
        try:
            with open(p.logfile, errors="replace") as f:
                f.seek(p.log_at)
                if any(line.startswith("LISTENING") for line in f):
                    return
        except OSError:
            pass
        if p.proc.poll() is not None:
            raise RuntimeError(f"{p.name} exited: {p.tail()}")
        time.sleep(0.05)
    raise RuntimeError(f"{p.name} did not listen: {p.tail()}")


# ------------------------------------------------------------------------------ etcd history
class Recorder(threading.Thread):
    """Every change under the cluster's prefix since revision 1 as one etcd member delivers it,
    with the time it was seen: `etcdctl watch` from the ctl host to that member alone, resumed
    after the last revision when it breaks. A frozen or cut-off member delays its recorder;
    Run.history() takes each change from whichever of the three recorders saw it first."""

    def __init__(self, run, member):
        super().__init__(daemon=True)
        self.run_, self.member, self.changes, self.lock = run, member, [], threading.Lock()
        self.revs = []  # the revision of each change (for bisect)
        self.last_rev, self.stopping, self.proc, self.gaps = 0, False, None, []

    def run(self):
        err = os.path.join(self.run_.workdir, f"recorder-{self.member}.err")
        while not self.stopping:
            args = self.run_.lab.exec_args("ctl") + [
                ETCDCTL, f"--endpoints=http://{self.run_.lab.addr(self.member)}:2379", "watch",
                "--prefix", PREFIX, "--rev", str(self.last_rev + 1), "-w", "json"]
            with open(err, "w") as ef:
                self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=ef, text=True)
            for line in self.proc.stdout:
                try:
                    resp = json.loads(line)
                except ValueError:
                    continue
                t = now()
                for ev in resp.get("Events") or []:
                    kv = ev.get("kv", {})
                    key = base64.b64decode(kv.get("key", "")).decode()[len(PREFIX):]
                    rev = int(kv.get("mod_revision", 0))
                    val = None
                    if ev.get("type", 0) != 1:
                        val = base64.b64decode(kv.get("value", "")).decode(errors="replace")
                    with self.lock:
                        self.changes.append((rev, t, key, val))
                        self.revs.append(rev)
                        self.last_rev = max(self.last_rev, rev)
            self.proc.wait()
            if self.stopping:
                break
            time.sleep(0.3)
            try:
                with open(err) as ef:
                    compacted = "compacted" in ef.read()
            except OSError:
                compacted = False
            if compacted:  # its next revision is gone: go on from the store's, say so
                r = self.run_.ctl("get", "/", "-w", "json", "--limit", "1")
                try:
                    rev = int(json.loads(r.stdout)["header"]["revision"])
                    self.gaps.append((self.last_rev, rev))
                    self.last_rev = rev
                except (ValueError, KeyError):
                    pass

    def stop(self):
        self.stopping = True
        if self.proc and self.proc.poll() is None:
            self.proc.kill()

    def after(self, rev, top):
        """The changes with rev < revision <= top."""
        with self.lock:
            i = bisect.bisect_right(self.revs, rev)
            j = bisect.bisect_right(self.revs, top)
            return self.changes[i:j]


def parse_vote(val):
    """{(service, ep): healthy} and impaired of one vote's JSON (None when unreadable)."""
    try:
        j = json.loads(val)
        return ({(r["service"], r["ep"]): bool(r["healthy"]) for r in j.get("results", [])},
                bool(j.get("impaired")))
    except (ValueError, KeyError, TypeError):
        return None


class Checker:
    """Replays etcd's history in revision order; checks (b) and (d) at every switch decision
    and keeps the timelines (c) needs."""

    def __init__(self):
        self.kv = {}
        self.vote_at = {}  # voter -> (time of its last change, previous parsed vote or None)
        self.decisions = []  # (time, service, kind, from, to)
        self.decided_at = []  # each decision's switching.at (the leader's clock, ms)
        self.current = {s: [] for s in SERVICES}  # [(time, current, switching_to)]
        self.events = {}  # seq -> kind
        self.violations = []

    def feed(self, changes):
        for rev, t, key, val in changes:
            if key.startswith("votes/"):
                voter = key[len("votes/"):]
                old = self.kv.get(key)
                self.vote_at[voter] = (t, parse_vote(old) if old is not None else None)
            elif key.startswith("services/") and key.endswith("/state") and val is not None:
                self.state_put(t, key.split("/")[1], val, self.kv.get(key))
            elif key.startswith("events/") and key[len("events/"):].isdigit() and val:
                try:
                    e = json.loads(val)
                    self.events.setdefault(int(e["seq"]), e.get("kind", "?"))
                except (ValueError, KeyError, TypeError):
                    pass
            if val is None:
                self.kv.pop(key, None)
            else:
                self.kv[key] = val

    def state_put(self, t, svc, val, old):
        try:
            j = json.loads(val)
            o = json.loads(old) if old else {}
        except ValueError:
            return
        sw, osw = j.get("switching") or {}, o.get("switching") or {}
        if svc in self.current:
            self.current[svc].append((t, j.get("current"), sw.get("to")))
        if sw and (sw.get("to"), sw.get("from")) != (osw.get("to"), osw.get("from")):
            self.decide(t, svc, sw.get("kind", "?"), sw.get("from") or "", sw.get("to"))
            self.decided_at.append(sw.get("at"))  # the leader's own time of it (ms), shown

    def opinions(self, t, svc, ep):
        """(surely unhealthy, surely healthy, at most fresh voters with a result, at most fresh
        voters of the service) over the votes as they are at t, taking a vote changed less than
        LAG_S ago both ways."""
        down = up = most = most_svc = 0
        for voter in VOTERS:
            cur = self.kv.get("votes/" + voter)
            cands = [parse_vote(cur) if cur is not None else None]
            at, prev = self.vote_at.get(voter, (0, None))
            if t - at < LAG_S:
                cands.append(prev)
            views = [c for c in cands if c is not None and not c[1]]  # fresh, not impaired
            if not views:
                continue
            most_svc += any(any(k[0] == svc for k in v[0]) for v in views)
            has = [v[0][(svc, ep)] for v in views if (svc, ep) in v[0]]
            if not has:
                continue
            most += 1
            if len(has) == len(cands) and not any(has):
                down += 1
            if len(has) == len(cands) and all(has):
                up += 1
        return down, up, most, most_svc

    def decide(self, t, svc, kind, frm, to):
        self.decisions.append((t, svc, kind, frm, to))
        down, _up, most, most_svc = self.opinions(t, svc, to)
        if most_svc < QUORUM:
            self.violations.append(f"(b) {svc}: {kind} {frm or '-'} -> {to} decided on at most "
                                   f"{most_svc} fresh voters (quorum {QUORUM})")
        if down * 2 > most:
            self.violations.append(f"(b) {svc}: {kind} {frm or '-'} -> {to}: {down} of at most "
                                   f"{most} fresh voters saw {to} down")
        if kind == "failover" and frm:
            _d, up, most, _s = self.opinions(t, svc, frm)
            if up * 2 > most:
                self.violations.append(f"(d) {svc}: failover {frm} -> {to}: {up} of at most "
                                       f"{most} fresh voters saw {frm} healthy")

    def current_at(self, svc, t):
        """(current, switching_to) of svc as last seen at or before t."""
        cur = (None, None)
        for at, c, sw in self.current[svc]:
            if at > t:
                break
            cur = (c, sw)
        return cur

    def left(self, svc, ep, t0, t1):
        """Time of the first sign in [t0, t1] that traffic is leaving ep (a switch decided away
        from it, or another current), or None."""
        for at, c, sw in self.current[svc]:
            if t0 <= at <= t1 and ((sw and sw != ep) or (c and c != ep)):
                return at
        return None


# ------------------------------------------------------------------------------ the run
class Run:
    def __init__(self, bin_dir, seed, workdir, soak):
        self.bin_dir, self.seed, self.workdir, self.soak = bin_dir, seed, workdir, soak
        self.rng = random.Random(seed)
        self.lab = None
        self.procs = {}
        self.backends = {}  # (svc, ep) -> Proc
        self.be_down = {}  # (svc, ep) -> "refused" | "hung"
        self.outages = []  # [svc, ep, t_down, t_up or None]
        self.faults = []  # {"what", "t0", "t1", "voters", "blind"}
        self.violations = []
        self.shown = 0  # violations printed so far
        self.cf_log, self.cf_at, self.epoch_high = None, 0, 0  # (a): the fake's log, read so far
        self.recorders = []
        self.rev_done = 0  # the checker has every change up to this revision
        self.checker = Checker()
        self.sink_n = 0
        self.calm = []  # failover times of calm outages (s)
        # (c): outages of the entry point in use: unseen (too many voters hit, or etcd
        # unwritable), nowhere to go, ended before the bound without a switch; switch times
        self.tally = {"current": 0, "unseen": 0, "nowhere": 0, "ended": 0}
        self.owed_took = []
        self.nospace = [0, 0]  # nospace faults, of which etcd raised the alarm
        self.samples = []  # soak: (t, {name: (rss, fds)}, db_size)

    # -------------------------------------------------------------- set-up
    def endpoints(self):
        return ",".join(f"http://{self.lab.addr(m)}:2379" for m in MEMBERS)

    def etcdctl_args(self):
        return self.lab.exec_args("ctl") + [ETCDCTL, f"--endpoints={self.endpoints()}",
                                            "--command-timeout=3s", "--dial-timeout=2s"]

    def ctl(self, *args, input=None, timeout=15):
        env = dict(os.environ, ETCDCTL_API="3")
        try:
            return subprocess.run(self.etcdctl_args() + list(args), capture_output=True,
                                  text=True, env=env, input=input, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", "timeout")

    def get_json(self, key):
        r = self.ctl("get", PREFIX + key, "--print-value-only")
        if r.returncode != 0 or not r.stdout.strip():
            return None
        try:
            return json.loads(r.stdout.strip().splitlines()[0])
        except ValueError:
            return None

    def path(self, *p):
        return os.path.join(self.workdir, *p)

    def add_proc(self, name, host, argv, kind, ready=None):
        p = Proc(self.lab, name, host, argv, self.path(f"{name}.log"), kind, ready)
        self.procs[name] = p
        return p

    def node_config(self, name):
        svcs = ""
        for s, d in SERVICES.items():
            eps = "".join(f"      - {{name: {e}, ip: {ip}}}\n" for e, ip in d["eps"].items())
            chk = (f"{{type: web, port: {PORT}, path: /ok, timeout: 1, retries: 0}}"
                   if d["checker"] == "web" else
                   f"{{type: tcp, port: {PORT}, timeout: 1}}")
            svcs += (f"  - name: {s}\n    domain: {s}.site.test\n    entry-points:\n{eps}"
                     f"    switcher: {{type: cloudflare, api-token: {CF_TOKEN}, zone: site.test, "
                     f"api-url: http://{self.lab.addr('svc')}:{PORT}/client/v4}}\n"
                     f"    health-checker: {chk}\n")
        probers = "".join(f"  - {{name: {p}, token: {p}-token-0123456789}}\n" for p in PROBERS)
        hosts = "".join(f"    - {self.lab.addr(m)}:2379\n" for m in MEMBERS)
        return f"""dhaf:
  cluster-name: {CLUSTER}
  node-name: {name}
  heartbeat-interval: 1
  healthy-node-status-ttl: {TTL}
  tact-interval: {TACT}
  flap-threshold: 0
  api-token: {API_TOKEN}
  grpc-api: {{host: {self.lab.addr(name)}, port: 8129}}
  web-api: {{host: 127.0.0.1, port: 8128}}
etcd:
  hosts:
{hosts}  leader-key-ttl: {TTL}
log:
  level: info
services:
{svcs}notifiers:
  - type: email
    name: sink
    from: dhaf@site.test
    to: ops@site.test
    smtp: {{server: {self.lab.addr('svc')}, port: 2525, timeout: 5}}
probers:
{probers}"""

    def setup(self):
        self.lab = netlab.Lab()
        for name, idx, extra in HOSTS:
            self.lab.add(name, idx, extra)
        cluster = ",".join(f"{m}=http://{self.lab.addr(m)}:2380" for m in MEMBERS)
        for m in MEMBERS:
            ip = self.lab.addr(m)
            self.add_proc(m, m, [ETCD, "--name", m, "--data-dir", self.path(m),
                                 "--listen-client-urls", f"http://{ip}:2379",
                                 "--advertise-client-urls", f"http://{ip}:2379",
                                 "--listen-peer-urls", f"http://{ip}:2380",
                                 "--initial-advertise-peer-urls", f"http://{ip}:2380",
                                 "--initial-cluster", cluster, "--initial-cluster-token", "chaos",
                                 "--heartbeat-interval", "50", "--election-timeout", "500",
                                 "--quota-backend-bytes", str(24 * MIB)], "etcd").start()
        self.wait("etcd to answer", lambda: self.ctl("endpoint", "health").returncode == 0, 30)
        cf_log = self.path("cloudflare.jsonl")
        records = [a for s, d in SERVICES.items()
                   for a in ("--record", f"{s}.site.test:A:{d['eps']['ep-1']}:false")]
        self.add_proc("cloudflare", "svc", [PY, os.path.join(FAKES, "cloudflare.py"), "--host",
                                            self.lab.addr("svc"), "--port", str(PORT), "--token",
                                            CF_TOKEN, "--zone", "site.test", "--log", cf_log,
                                            *records, "--watch-stdin"],
                      "fake", wait_listening).start()
        self.cf_log = cf_log
        self.start_sink()
        for s, d in SERVICES.items():
            for e, ip in d["eps"].items():
                p = self.add_proc(f"be-{s}-{e}", "be", [PY, os.path.join(FAKES, "backend.py"),
                                                        "--host", ip, "--port", str(PORT),
                                                        "--watch-stdin"], "backend",
                                  wait_listening)
                p.start()
                self.backends[(s, e)] = p
        self.recorders = [Recorder(self, m) for m in MEMBERS]
        for r in self.recorders:
            r.start()
        for n in NODES:
            cfg = self.path(f"{n}.dhaf")
            with open(cfg, "w") as f:
                f.write(self.node_config(n))
            self.add_proc(n, n, [os.path.join(self.bin_dir, "dhaf-node"), "--config", cfg],
                          "node").start()
        nodes = ", ".join(f"{self.lab.addr(n)}:8129" for n in NODES)
        for p in PROBERS:
            cfg = self.path(f"{p}.prober")
            with open(cfg, "w") as f:
                f.write(f"prober:\n  name: {p}\n  location: {p}\n  token: {p}-token-0123456789\n"
                        f"  nodes: [{nodes}]\n  insecure: true\n  timeout: 2\n")
            self.add_proc(p, p, [os.path.join(self.bin_dir, "dhaf-prober"), "--config", cfg],
                          "prober").start()
        try:
            self.wait("the cluster to settle after start-up", self.settled, SETTLE_S)
        except TimeoutError as e:
            dead = [f"{p.name}: {' | '.join(p.tail(2))}" for p in self.procs.values()
                    if p.crashed() is not None]
            raise RuntimeError(f"{e}; exited: {dead or 'none'}") from None

    def start_sink(self):
        old = self.procs.get("smtp")
        if old is not None and old.proc.poll() is None:
            return  # running already
        self.sink_n += 1
        d = self.path(f"mail-{self.sink_n}")
        os.makedirs(d, exist_ok=True)
        p = self.add_proc("smtp", "svc", [PY, os.path.join(FAKES, "smtp_sink.py"), "--host",
                                          self.lab.addr("svc"), "--port", "2525", "--dir", d,
                                          "--watch-stdin"], "fake", wait_listening)
        p.logfile = self.path(f"smtp-{self.sink_n}.log")
        p.start()

    @staticmethod
    def wait(what, fn, timeout):
        """dhafsys.wait_until (polled every 0.1 s), raising TimeoutError."""
        try:
            return wait_until(what, fn, timeout, 0.1)
        except AssertionError as e:
            raise TimeoutError(str(e)) from None

    # -------------------------------------------------------------- observation
    def fake(self, path, body=None):
        """The Cloudflare fake's JSON answer to GET path (POST body when given), from ctl."""
        args = ["curl", "-s", "-m", "3", f"http://{self.lab.addr('svc')}:{PORT}{path}"]
        if body is not None:
            args += ["-H", "Content-Type: application/json", "-d", json.dumps(body)]
        r = subprocess.run(self.lab.exec_args("ctl") + args, capture_output=True, text=True,
                           timeout=10)
        return json.loads(r.stdout or "null")

    def records(self):
        """{svc: entry point the fake's A record points to}."""
        out = {}
        for rec in self.fake("/_fake/records")["records"]:
            for s, d in SERVICES.items():
                if rec.get("name") == f"{s}.site.test":
                    out[s] = next((e for e, ip in d["eps"].items() if ip == rec["content"]), "?")
        return out

    def settled(self):
        self.checker_feed()
        kvs = self.checker.kv
        if "leader" not in kvs:
            return None
        if any(f"votes/{v}" not in kvs for v in VOTERS):
            return None
        recs = self.records()
        for s in SERVICES:
            st = json.loads(kvs.get(f"services/{s}/state", "{}"))
            cur = st.get("current")
            if not cur or st.get("switching") or (s, cur) in self.be_down or recs.get(s) != cur:
                return None
        return json.loads(kvs["leader"]).get("node") or True

    def settle(self, what):
        t0 = now()
        try:
            self.wait(f"the cluster to settle after {what}", self.settled, SETTLE_S)
        except TimeoutError as e:
            self.violations.append(f"(c) not settled {SETTLE_S:.0f} s after {what}: {e}")
            return None
        return now() - t0

    # -------------------------------------------------------------- backends
    def be_fail(self, key, mode):
        if key in self.be_down:
            return
        p = self.backends[key]
        if mode == "hung":
            p.sig_stop()
        else:
            p.kill()
        self.be_down[key] = mode
        self.outages.append([key[0], key[1], now(), None])

    def be_restore(self, key):
        mode = self.be_down.pop(key, None)
        if mode is None:
            return
        p = self.backends[key]
        if mode == "hung":
            p.sig_cont()
        else:
            p.start()
        for o in self.outages:
            if (o[0], o[1]) == key and o[3] is None:
                o[3] = now()

    # -------------------------------------------------------------- faults
    def etcd_leader(self):
        r = self.ctl("endpoint", "status", "-w", "json")
        try:
            for st in json.loads(r.stdout):
                if st["Status"]["header"]["member_id"] == st["Status"]["leader"]:
                    ep = st["Endpoint"]
                    return next(m for m in MEMBERS if self.lab.addr(m) in ep)
        except (ValueError, KeyError, TypeError, StopIteration):
            pass
        return None

    def draw(self):
        """One fault: (label, start(), end(), voters hit, blind, duration, etcd members out)."""
        rng = self.rng
        kind = rng.choice(["stop", "kill", "cut-etcd", "cut-nodes", "cut-backends", "split",
                           "etcd-leader", "nospace", "smtp-down", "freeze-in-switch"])
        kind = os.environ.get("DHAF_CHAOS_FAULT", kind)  # one kind only (to study it)
        dur = rng.uniform(2, 8)
        if kind in ("stop", "kill"):
            who = rng.choice(NODES + PROBERS + MEMBERS)
            p = self.procs[who]
            if kind == "stop":
                return (f"stop {who}", p.sig_stop, p.sig_cont, {who} & set(VOTERS), False, dur,
                        {who} & set(MEMBERS))
            return (f"kill {who}", p.kill, p.start, {who} & set(VOTERS), False,
                    rng.uniform(1, 5), {who} & set(MEMBERS))
        if kind == "cut-etcd":
            n = rng.choice(NODES)
            return (f"cut-etcd {n}", lambda: [self.lab.cut(n, m) for m in MEMBERS],
                    self.lab.heal, {n}, False, rng.uniform(3, 9), set())
        if kind == "cut-nodes":
            p = rng.choice(PROBERS)
            return (f"cut-nodes {p}", lambda: [self.lab.cut(p, n) for n in NODES],
                    self.lab.heal, {p}, False, dur, set())
        if kind == "cut-backends":
            n = rng.choice(NODES)
            return (f"cut-backends {n}", lambda: self.lab.cut(n, "be"), self.lab.heal, {n},
                    False, dur, set())
        if kind == "split":
            n, m = rng.choice(NODES), rng.choice(MEMBERS)
            others = [x for x in NODES if x != n] + [x for x in MEMBERS if x != m]

            def cut():
                for o in others:
                    self.lab.cut(n, o)
                    self.lab.cut(m, o)
            return (f"split {n}+{m}|rest", cut, self.lab.heal, {n}, False, dur, {m})
        if kind == "etcd-leader":
            m = self.etcd_leader() or rng.choice(MEMBERS)
            p = self.procs[m]
            if rng.random() < 0.5:
                return (f"etcd-leader stop {m}", p.sig_stop, p.sig_cont, set(), False,
                        rng.uniform(2, 4), {m})
            return (f"etcd-leader kill {m}", p.kill, p.start, set(), False, rng.uniform(2, 4),
                    {m})
        if kind == "freeze-in-switch":
            return self.freeze_in_switch()
        if kind == "nospace":
            return ("nospace", self.fill, self.unfill, set(), True, rng.uniform(3, 6), set())
        p = self.procs["smtp"]
        return ("smtp-down", p.terminate, self.start_sink, set(), False, rng.uniform(3, 10),
                set())

    def freeze_in_switch(self):
        """The split-brain case: the leader is frozen (by the fake, SIGSTOP) the moment its
        Cloudflare call of a failover of web arrives - the call is carried out, its answer
        waits in the socket. A second later the entry point it switched to fails too, so the
        next leader must switch again; the frozen one is continued after 5-7 s, with its
        answer and its stale view: it must not touch the provider again (a) nor etcd."""
        leader = (self.get_json("leader") or {}).get("node")
        if leader not in NODES:
            return ("freeze-in-switch (no leader)", lambda: None, lambda: None, set(), False,
                    1.0, set())
        p = self.procs[leader]

        def start():
            self.fake("/_fake/fail", {"freeze_pid": p.proc.pid, "method": "PATCH",
                                      "header": f"{leader} epoch"})
            p.stopped = True  # continued at the end, whether or not the rule caught it
            self.checker_feed()
            cur = self.checker.current_at("web", now())[0] or "ep-1"
            self.be_fail(("web", cur), "refused")
            deadline = now() + 3
            while now() < deadline:
                to = self.records().get("web")
                if to and to != cur and to != "?":
                    self.be_fail(("web", to), "refused")
                    return
                time.sleep(0.1)

        def end():
            p.sig_cont()
            self.fake("/_fake/reset", {})
        return (f"freeze-in-switch {leader}", start, end, {leader}, False,
                self.rng.uniform(5, 7), set())

    def fill(self):
        blob = "x" * (1024 * 1024 - 64)
        self.nospace[0] += 1
        for i in range(64):
            r = self.ctl("put", f"/chaos-fill/{i}", input=blob)
            if r.returncode != 0:
                if "space" in (r.stderr + r.stdout):
                    self.nospace[1] += 1
                else:
                    log(f"fill: {r.stderr.strip()}")
                return

    def unfill(self):
        """An operator's recovery from NOSPACE: delete, compact, defragment every member,
        disarm; again until no alarm is left (a member restarted meanwhile may raise it
        again), for at most 5 tries."""
        for _ in range(5):
            self.ctl("del", "--prefix", "/chaos-fill/")
            r = self.ctl("get", "/", "-w", "json", "--limit", "1")
            try:
                rev = json.loads(r.stdout)["header"]["revision"]
                self.ctl("compact", str(rev), "--physical")
            except (ValueError, KeyError):
                pass
            for m in MEMBERS:
                self.ctl(f"--endpoints=http://{self.lab.addr(m)}:2379", "defrag", timeout=30)
            self.ctl("alarm", "disarm")
            if not self.alarms():
                return
            time.sleep(1)
        log("nospace: alarms left after 5 recoveries: " + self.alarms())

    def alarms(self):
        """etcd's alarm list ("" when none, or when it could not be read)."""
        r = self.ctl("alarm", "list")
        return r.stdout.strip() if r.returncode == 0 else ""

    # -------------------------------------------------------------- one round
    def round(self, i, window):
        n_faults = 2 if self.rng.random() < 0.25 else 1
        plan = []  # (t, label, fn)
        labels = []
        kinds = set()
        for _ in range(n_faults):
            label, start, end, voters, blind, dur, members = self.draw()
            for _ in range(20):  # two faults of one kind in a round: draw again
                if label.split()[0] not in kinds:
                    break
                label, start, end, voters, blind, dur, members = self.draw()
            kinds.add(label.split()[0])
            t0 = self.rng.uniform(0, window * 0.4)
            rec = {"what": label, "t0": None, "t1": None, "voters": voters, "blind": blind,
                   "members": members}
            plan.append((t0, label, start, rec, "start"))
            plan.append((min(t0 + dur, window), label, end, rec, "end"))
            labels.append(label)
        flips = []
        self.checker_feed()
        for _ in range(self.rng.choice([0, 1, 1, 2])):
            s = self.rng.choice(list(SERVICES))
            e = self.rng.choice(list(SERVICES[s]["eps"]))
            cur = self.checker.current_at(s, now())[0]
            if cur and self.rng.random() < 0.5:
                e = cur  # half of them hit the entry point in use: what (c) is about
            if f"{s}/{e}:" in " ".join(flips):
                continue
            mode = "hung" if SERVICES[s]["checker"] == "web" and self.rng.random() < 0.4 \
                else "refused"
            t0 = self.rng.uniform(0, window * 0.6)
            t1 = min(t0 + self.rng.uniform(2, 2 * window), window)
            plan.append((t0, f"be {s}/{e} {mode}", lambda k=(s, e), m=mode: self.be_fail(k, m),
                         None, None))
            plan.append((t1, "", lambda k=(s, e): self.be_restore(k), None, None))
            flips.append(f"{s}/{e}:{mode[0]}")
        plan.sort(key=lambda x: x[0])
        base = now()
        for t, _label, fn, rec, edge in plan:
            delay = base + t - now()
            if delay > 0:
                time.sleep(delay)
            if rec is not None and edge == "start":
                rec["t0"] = now()
                self.faults.append(rec)
            fn()
            if rec is not None and edge == "end":
                rec["t1"] = now()
        delay = base + window - now()
        if delay > 0:
            time.sleep(delay)
        # heal everything (a fault whose end ran already is healed again: harmless)
        self.lab.heal()
        for p in self.procs.values():
            if p.stopped:
                p.sig_cont()
        for name in NODES + PROBERS + MEMBERS:
            if self.procs[name].down:
                self.procs[name].start()
        if self.procs["smtp"].down:
            self.start_sink()
        for key in list(self.be_down):
            self.be_restore(key)
        if self.alarms():
            self.unfill()
        for rec in self.faults:
            rec["t1"] = rec["t1"] or now()
        settle = self.settle(f"round {i}")
        calm = self.calm_outage() if settle is not None else None
        self.check(i)
        n_sw = sum(1 for d in self.checker.decisions if d[0] >= base)
        v = len(self.violations)
        row = (i, " + ".join(labels), " ".join(flips) or "-", n_sw,
               f"{settle:.1f}" if settle is not None else "-",
               f"{calm * 1000:.0f}" if calm is not None else "-", v)
        start = time.strftime("%H:%M:%S", time.gmtime(base))  # UTC, as the nodes' logs
        print(f"{row[0]:5d}  {start:8s}  {row[1]:34.34s}  {row[2]:24.24s}  {row[3]:4d}  "
              f"{row[4]:>6s}  {row[5]:>7s}  {row[6]:3d}", flush=True)
        for v in self.violations[self.shown:]:
            print(f"       ! {v}", flush=True)
        self.shown = len(self.violations)

    def calm_outage(self):
        s = self.rng.choice(list(SERVICES))
        self.checker_feed()
        kvs = self.checker.kv
        cur = json.loads(kvs.get(f"services/{s}/state", "{}")).get("current")
        if not cur:
            return None
        t0 = now()
        self.be_fail((s, cur), "refused")
        self.outages[-1].append("calm")
        try:
            self.wait(f"a failover of {s} away from {cur}",
                      lambda: self.checker_feed() or self.checker.left(s, cur, t0, now() + 1),
                      CALM_BOUND_S)
            took = self.checker.left(s, cur, t0, now() + 1) - t0
        except TimeoutError:
            self.violations.append(f"(c) calm outage of {s}/{cur}: no failover within "
                                   f"{CALM_BOUND_S:.0f} s")
            took = None
        self.be_restore((s, cur))
        self.calm.append(took)
        return took

    # -------------------------------------------------------------- checks
    def checker_feed(self):
        self.checker.feed(self.history())

    def history(self):
        """The changes after rev_done, up to the furthest recorder's revision, each with the
        earliest time a recorder saw it, in revision order."""
        top = max(r.last_rev for r in self.recorders)
        merged = {}
        for r in self.recorders:
            for ch in r.after(self.rev_done, top):
                k = (ch[0], ch[2])
                if k not in merged or ch[1] < merged[k][1]:
                    merged[k] = ch
        self.rev_done = top
        return sorted(merged.values(), key=lambda c: c[0])

    def check(self, i):
        self.checker_feed()
        self.violations += self.checker.violations
        self.checker.violations = []
        self.check_epochs()
        self.check_outages()
        self.check_procs(i)

    def check_epochs(self):
        """(a) over the provider writes logged since the last call (read from cf_at on)."""
        try:
            with open(self.cf_log) as f:
                f.seek(self.cf_at)
                text = f.read()
        except OSError:
            return
        done = text.rfind("\n") + 1  # a line still being written waits for the next call
        self.cf_at += done
        high = self.epoch_high
        for line in text[:done].splitlines():
            try:
                ch = json.loads(line)
            except ValueError:
                continue
            who = (ch.get("headers") or {}).get("X-Dhaf-Leader") or ""
            parts = who.split()
            if len(parts) != 3 or parts[1] != "epoch" or not parts[2].isdigit():
                self.violations.append(f"(a) a change without a leader and epoch: {who!r}")
                continue
            ep = int(parts[2])
            if ep < high:
                self.violations.append(f"(a) {ch.get('method')} {ch.get('name')} -> "
                                       f"{ch.get('content')} from {who} after epoch {high}")
            high = max(high, ep)
            self.check_decided(ch, who)
        self.epoch_high = high

    def check_decided(self, ch, who):
        """(a), second half: a provider write goes where etcd's history says - the entry
        point of the service's latest switch decision before it, or its recorded current (a
        drift set back). A leader that calls the provider without its fenced write breaks it."""
        svc = next((s for s in SERVICES if ch.get("name") == f"{s}.site.test"), None)
        if svc is None or not (200 <= int(ch.get("status") or 0) < 300):
            return
        ep = next((e for e, ip in SERVICES[svc]["eps"].items() if ip == ch.get("content")), "?")
        try:
            t = datetime.datetime.strptime(ch["time"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
                tzinfo=datetime.timezone.utc).timestamp()
        except (KeyError, ValueError):
            return
        # a decision to ep in the minute before (its switch may be retried), seen at most 2 s
        # late; or ep current or being switched to around t (a drift set back, a retry)
        if any(d[1] == svc and d[4] == ep and t - 60 <= d[0] <= t + 2
               for d in self.checker.decisions):
            return
        around = self.checker.current_at(svc, t) + self.checker.current_at(svc, t + 2)
        if ep not in around:
            self.violations.append(f"(a) {svc}: a provider write to {ep} by {who} at "
                                   f"{ch['time']} that no decision made (current then: "
                                   f"{around[0]}, switching to {around[1]})")

    def hit_voters(self, t0, t1):
        """(voters hit by a fault at some time in [t0, t1], whether etcd may have refused
        writes then: a blind fault, or two members out)."""
        hit, blind, members = set(), False, set()
        for f in self.faults:
            end = (f["t1"] or now()) + RECOVER_S
            if f["t0"] <= t1 and end >= t0:
                hit |= f["voters"]
                blind |= f["blind"]
                members |= f["members"]
        return hit, blind or len(members) > 1

    def check_outages(self):
        """(c) for every outage whose bound has passed: one of the entry point in use, seen by
        a quorum (at most len(VOTERS) - QUORUM voters hit by a fault, from its start to its
        bound, RECOVER_S after a fault included; etcd writable), with another entry point of
        the service up all along, must be left within BOUND_S - unless it ended first."""
        t_now = now()
        for o in self.outages:
            if len(o) > 4:
                continue  # checked, or a calm outage (checked as it happened)
            s, ep, t0, t1 = o[:4]
            end = t0 + BOUND_S
            if end > t_now - 1:
                continue  # its bound has not passed yet
            o.append("checked")
            cur, sw = self.checker.current_at(s, t0)
            if cur != ep or sw:
                continue
            self.tally["current"] += 1
            hit, blind = self.hit_voters(t0, end)
            if blind or len(hit) > len(VOTERS) - QUORUM:
                self.tally["unseen"] += 1
                continue
            if not any(not any(p[0] == s and p[1] == e and p[2] <= end and
                               (p[3] is None or p[3] >= t0) for p in self.outages)
                       for e in SERVICES[s]["eps"] if e != ep):
                self.tally["nowhere"] += 1
                continue
            left = self.checker.left(s, ep, t0, min(end, t1 or end) + 0.5)
            if left is not None:
                self.owed_took.append(left - t0)
            elif t1 is not None and t1 < end:
                self.tally["ended"] += 1
            else:
                self.violations.append(f"(c) outage of {s}/{ep} for "
                                       f"{(t1 or t_now) - t0:.1f} s: no switch within "
                                       f"{BOUND_S:.0f} s (voters hit: "
                                       f"{', '.join(sorted(hit)) or 'none'})")

    def check_procs(self, i):
        for p in self.procs.values():
            rc = p.crashed()
            if rc is not None:
                self.violations.append(f"(f) {p.name} exited with {rc} (round {i}): "
                                       f"{' | '.join(p.tail(3))}")
                p.down = True
                if p.kind in ("node", "prober", "etcd"):
                    p.start()
            if p.kind in LIMITS:
                s = p.sample()
                if s:
                    lim = LIMITS[p.kind]
                    for val, key in zip(s, ("rss", "fds", "threads")):
                        if val > lim[key]:
                            self.violations.append(f"(f) {p.name}: {key} {val} over {lim[key]}")

    def check_events(self):
        """(e): every event record reached the sink; waits up to 60 s for the notifiers."""
        def delivered():
            self.checker_feed()
            got = {}
            for k in range(1, self.sink_n + 1):
                try:
                    with open(self.path(f"mail-{k}", "messages.jsonl")) as f:
                        for line in f:
                            mid = (json.loads(line).get("message_id") or "").strip("<>")
                            head = mid.split(".")[0]
                            if head.isdigit():
                                got[int(head)] = got.get(int(head), 0) + 1
                except OSError:
                    pass
            return got
        try:
            self.wait("every event in the sink",
                      lambda: (lambda g: g if all(s in g for s in self.checker.events) else None)(
                          delivered()), 60)
        except TimeoutError:
            pass
        got = delivered()
        missing = sorted(s for s in self.checker.events if s not in got)
        copies = sum(c - 1 for c in got.values() if c > 1)
        if missing:
            self.violations.append(f"(e) {len(missing)} of {len(self.checker.events)} events "
                                   f"never reached the sink: seq {missing[:10]}")
        return len(self.checker.events), copies

    # -------------------------------------------------------------- soak
    def sample_soak(self):
        r = self.ctl("endpoint", "status", "-w", "json")
        db = 0
        try:
            db = max(int(st["Status"]["dbSize"]) for st in json.loads(r.stdout))
        except (ValueError, KeyError, TypeError):
            pass
        procs = {}
        for name in NODES + PROBERS:
            s = self.procs[name].sample()
            if s:
                procs[name] = s
        self.samples.append((now(), procs, db))

    def close(self):
        for r in self.recorders:
            r.stop()
        for p in self.procs.values():
            try:
                p.kill()
            except OSError:
                pass
        if self.lab:
            self.lab.close()


def report(run, started, n_events, copies):
    print("\nprocesses (over the samples taken after each round):")
    print(f"  {'process':10s} {'starts':>6s} {'RSS max MiB':>12s} {'FDs max':>8s} "
          f"{'threads max':>12s}  limits")
    for name in NODES + PROBERS:
        p = run.procs[name]
        if not p.samples:
            continue
        lim = LIMITS[p.kind]
        print(f"  {name:10s} {p.starts:6d} {max(s[0] for s in p.samples) / MIB:12.1f} "
              f"{max(s[1] for s in p.samples):8d} {max(s[2] for s in p.samples):12d}  "
              f"RSS {lim['rss'] // MIB} MiB, {lim['fds']} FDs, {lim['threads']} threads")
    calm = sorted(c for c in run.calm if c is not None)
    if calm:
        print(f"calm outages: {len(calm)}, failover min {calm[0] * 1000:.0f} ms, median "
              f"{calm[len(calm) // 2] * 1000:.0f} ms, max {calm[-1] * 1000:.0f} ms")
    kinds = {}
    for d in run.checker.decisions:
        kinds[d[2]] = kinds.get(d[2], 0) + 1
    print(f"switch decisions: {sum(kinds.values())} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(kinds.items())) or 'none'})")
    took, t = sorted(run.owed_took), run.tally
    print(f"backend outages: {len(run.outages) - len(run.calm)} (+ {len(run.calm)} calm); of "
          f"the entry point in "
          f"use: {t['current']}: {t['unseen']} not seen by a quorum, {t['nowhere']} with nowhere "
          f"to go, {t['ended']} ended within {BOUND_S:.0f} s unswitched, {len(took)} switched" +
          (f" after {took[0]:.1f} .. {took[-1]:.1f} s (median {took[len(took) // 2]:.1f} s)"
           if took else ""))
    alarms = sum(1 for k in run.checker.events.values() if k == "etcd-alarm")
    print(f"nospace faults: {run.nospace[0]}, etcd raised NOSPACE in {run.nospace[1]}; "
          f"etcd-alarm events recorded: {alarms}")
    print(f"events: {n_events} recorded, copies with a repeated Message-ID: {copies}")
    gaps = [(r.member, g) for r in run.recorders for g in r.gaps]
    if gaps:
        print(f"history gaps (compacted under a recorder; the others cover them): {gaps}")
    print(f"took {now() - started:.0f} s; seed {run.seed}")
    for v in run.violations:
        print(f"VIOLATION {v}")
    print(f"violations: {len(run.violations)}")


def plot(run, out):
    os.makedirs(out, exist_ok=True)
    csv = os.path.join(out, "soak.csv")
    t0 = run.samples[0][0] if run.samples else now()
    with open(csv, "w") as f:
        f.write("# seconds " + " ".join(f"{n}_rss_mib {n}_fds" for n in NODES + PROBERS) +
                " etcd_db_mib\n")
        for t, procs, db in run.samples:
            cols = []
            for n in NODES + PROBERS:
                s = procs.get(n)
                cols += [f"{s[0] / MIB:.2f}", str(s[1])] if s else ["NaN", "NaN"]
            f.write(f"{t - t0:.1f} {' '.join(cols)} {db / MIB:.2f}\n")
    lat = os.path.join(out, "soak-latency.csv")
    with open(lat, "w") as f:
        f.write("# seconds failover_ms (calm outages)\n")
        for o, c in zip([o for o in run.outages if len(o) > 4 and o[4] == "calm"], run.calm):
            if c is not None:
                f.write(f"{o[2] - t0:.1f} {c * 1000:.0f}\n")
    png = os.path.join(out, "soak.png")
    n = len(NODES + PROBERS)
    rss = ", ".join(f"'{csv}' using 1:{2 + 2 * i} with lines title '{name}'"
                    for i, name in enumerate(NODES + PROBERS))
    fds = ", ".join(f"'{csv}' using 1:{3 + 2 * i} with lines title '{name}'"
                    for i, name in enumerate(NODES + PROBERS))
    script = f"""set terminal png size 1200,1000
set output '{png}'
set multiplot layout 4,1 title 'dhaf chaos soak, seed {run.seed}'
set key outside right
set xlabel 'seconds'
set ylabel 'RSS MiB'
plot {rss}
set ylabel 'open FDs'
plot {fds}
set ylabel 'etcd db MiB'
plot '{csv}' using 1:{2 + 2 * n} with lines title 'largest member'
set ylabel 'failover ms'
plot '{lat}' using 1:2 with points pt 7 title 'calm outages'
unset multiplot
"""
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    print(f"soak samples: {csv}, {lat}" + (f"; plot: {png}" if r.returncode == 0 else
                                           f"; no plot (gnuplot: {r.stderr.strip()[:200]})"))
    first, last = run.samples[0], run.samples[-1]
    for name in NODES + PROBERS:
        a, b = first[1].get(name), last[1].get(name)
        if a and b:
            print(f"  {name}: RSS {a[0] / MIB:.1f} -> {b[0] / MIB:.1f} MiB, FDs {a[1]} -> {b[1]}")
    print(f"  etcd db: {first[2] / MIB:.1f} -> {last[2] / MIB:.1f} MiB")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bin_dir")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--soak", type=float, default=0, help="seconds of soak instead of rounds")
    ap.add_argument("--keep", action="store_true", help="keep the work dir (logs)")
    ap.add_argument("--out", help="where the soak's CSV and PNG go")
    args = ap.parse_args()
    if args.rounds < 1 or args.soak < 0:
        ap.error("--rounds must be at least 1 and --soak not negative")
    why = netlab.missing()
    if why is None and not (os.path.exists(ETCD) and os.path.exists(ETCDCTL)):
        why = f"needs etcd ({ETCD}, {ETCDCTL}: apt install etcd-server etcd-client)"
    for prog in ("dhaf-node", "dhaf-prober"):
        if why is None and not os.path.exists(os.path.join(args.bin_dir, prog)):
            why = f"no {args.bin_dir}/{prog} (build first)"
    if why:
        print(f"skipped: chaos {why}")
        return 77
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 1 << 31)
    workdir = tempfile.mkdtemp(prefix="dhaf-chaos-")
    run = Run(os.path.abspath(args.bin_dir), seed, workdir, args.soak)

    closing = []

    def on_signal(sig, _frame):
        if closing:
            return  # once: a second signal must not cut the clean-up short
        closing.append(sig)
        raise KeyboardInterrupt(f"signal {sig}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    started = now()
    print(f"chaos: seed {seed} (replay: make chaos SEED={seed}); work dir {workdir}", flush=True)
    rc = 1
    try:
        run.setup()
        print(f"{'round':>5s}  {'start':8s}  {'faults':34s}  {'backends down':24s}  {'sw':>4s}  "
              f"{'settle':>6s}  {'calm ms':>7s}  {'viol':>3s}", flush=True)
        i = 0
        while True:
            i += 1
            run.round(i, 4.0 if args.soak else WINDOW_S)
            if args.soak:
                run.sample_soak()
                if now() - started >= args.soak:
                    break
            elif i >= args.rounds:
                break
        n_events, copies = run.check_events()
        run.check(i)
        with open(run.path("decisions.jsonl"), "w") as f:  # for whoever reads a failure
            for d, at in zip(run.checker.decisions, run.checker.decided_at):
                f.write(json.dumps({"seen": d[0], "at_ms": at, "service": d[1], "kind": d[2],
                                    "from": d[3], "to": d[4]}) + "\n")
        report(run, started, n_events, copies)
        if args.soak and run.samples:
            plot(run, args.out or workdir)
        rc = 1 if run.violations else 0
    except (RuntimeError, TimeoutError) as e:
        print(f"chaos: the run broke: {e}", flush=True)
        rc = 1
    except KeyboardInterrupt as e:
        print(f"interrupted ({e}); cleaning up", flush=True)
        rc = 130
    finally:
        closing.append(0)
        run.close()
        if args.keep or args.soak or rc not in (0, 130):
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
