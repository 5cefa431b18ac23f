#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench/scale: what N services cost in etcd, CPU and memory, and what they do to failover time.

For each N of --services: one etcd with its default flags (only the data dir and loopback
ports are set, plus --quota-backend-bytes with --quota), three dhaf-node processes (each
probing, so three voters) and two dhaf-prober agents (remote voters, in the nodes' `probers:`
section with their tokens): five voters. The nodes run their defaults (leader-key-ttl 15 s,
heartbeat 5 s) except tact-interval (--tact, default 1 s) and flap-threshold 0 (the failover rounds stop one target again and again). Services svc-0001 .. svc-N each
have three entry points on distinct loopback addresses and the same web check (GET /ok,
timeout --check-timeout, retries --retries; --checkers mix makes every 4th service's check
tcp); all share one exec switcher whose switch script appends `time node epoch service ep`
to a file (as in bench/failover) and whose init script prints the service's current entry
point from a per-service file, seeded with ep-1, so start-up switches nothing.

The targets: one dhaf-bench-httpd (one epoll thread) listening on one port on 3 x N
addresses from 127.10.0.1 up: a listening socket per address, each with listen backlog 4096
(capped by net.core.somaxconn, printed); svc-0001's ep-1 (the failover victim) is a second
dhaf-bench-httpd on 127.9.0.1 that the failover rounds stop and start. RLIMIT_NOFILE of this
process, and so of every process it starts, is raised to the hard limit (at most 65536, as in
deploy/systemd's units).

Phases per N:
1. Start-up, settled when a leader is elected, the five votes/<voter> keys hold a healthy
   result for every entry point, every service's state shows ep-1 current, its entry points
   up and no switch in progress, and then no event is recorded for 3 tacts (waited for at
   most 30 s; a start-up that never goes quiet is noted above the figures).
2. Steady state for --steady seconds, all targets healthy: etcd revisions (header.revision)
   and db size (dbSize, which grows in whole pages and never shrinks without a defrag; and
   dbSizeInUse) at both ends, read through etcd's JSON gateway (/v3/maintenance/status);
   utime + stime of each process from /proc/PID/stat (as % of one core) and its VmRSS and
   VmHWM at the end; the leader (the leader key) at both ends; false failovers = switch script
   calls in the window; every event record (events/<seq>) created in the window, by kind
   (ep-down, service-down, no-quorum, failover and switching are false alarms here); the
   machine's busy cores outside the run's processes (other work skews every figure) and the
   kernel's listen-queue drops (0: the targets took the load).
3. Failover rounds (--failover-rounds), after one warm-up round: svc-0001's ep-1 target is
   stopped; the time from just before the stop to the switch script's timestamp of the call
   for ep-2 is the failover time. The target is restarted and the round ends with the switch
   back to ep-1. The switch back comes right after a majority of voters checked ep-1, so the
   next stop is placed a stratified pause of 0 .. tact after it (mod tact): the rounds cover
   the voters' check cycle evenly (with random pauses the median of 5 rounds wanders by a
   fifth of a tact). At N = 1 the failover time is then about one tact minus the phase; at
   large N the voters' rounds take longer than a tact and drift apart, so more rounds give a
   tighter median there. A failover or switch back that does not happen within 60 s ends the
   run.

The last table compares the failover median at each N with the one at N = 1 (same run).
--soak S replaces phases 2 and 3 by one long steady phase at one N, sampling etcd (revision,
dbSize, dbSizeInUse, alarms) and every process's VmRSS every --sample seconds; --csv FILE
writes the samples. --idle-rss S (default 30; 0 skips) first measures one node idle with the
seed's example config (examples/config-n1.dhaf with etcd.hosts, the two API ports, the entry
points and the Cloudflare API on loopback: nothing leaves the machine; the entry points' ports
and the API's are closed, so checks fail and the switcher cannot start, as on a machine that
cannot reach them); --services 0 measures that alone.

Figures with the targets beside them, never pass/fail on a target; exit 1 when the run itself
broke (a process exited, start-up did not settle, a failover missed its deadline), 2 on a
usage error. Progress goes to stderr, tables to stdout. Every process started here is stopped
on exit (also on Ctrl-C and SIGTERM; and gets SIGTERM from the kernel if this script is
killed outright); the temporary directories are removed unless --keep.

usage: /usr/bin/python3 bench/scale.py [BUILD_BIN_DIR] [--services N[,N...]] [--tact S]
       [--steady S] [--failover-rounds R] [--soak S] [--sample S] [--csv FILE] [--quota BYTES]
       [--idle-rss S] [--check-timeout S] [--retries N] [--checkers web|mix] [--seed N]
       [--keep]
"""
import argparse
import base64
import csv
import ctypes
import ipaddress
import json
import os
import random
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.abspath(os.path.join(HERE, ".."))
sys.path.insert(0, os.path.join(SRC, "tests", "system"))
from dhafsys import ETCD, Etcd, Node, Prober, free_port, terminate  # noqa: E402

CLUSTER = "scale"
PROBERS = {"probe-1": "scale-t0ken-one", "probe-2": "scale-t0ken-two"}
NODES = ("node-1", "node-2", "node-3")
VOTERS = len(NODES) + len(PROBERS)
EPS = ("ep-1", "ep-2", "ep-3")
VICTIM = "svc-0001"
VICTIM_IP = "127.9.0.1"
FIRST_IP = "127.10.0.1"
LISTEN_BACKLOG = 4096  # bench/httpd.c's listen()
NOFILE_WANTED = 65536  # deploy/systemd's LimitNOFILE
FAILOVER_DEADLINE = 60.0  # s from the stop to the switch call
BACK_DEADLINE = 60.0  # s from the restart until the service is back on ep-1
QUIET_MAX = 30.0  # s to wait for a start-up without events
KIB, MIB = 1024.0, 1024.0 * 1024.0

# The figures' targets (issue 14), printed beside them.
T_REV = "< 1 /min per voter"
T_DB = "< 1 KiB/s at 1,000 svc"
T_FALSE = "0 (10 min at 1,000 svc)"
T_RSS_IDLE = "<= 15 MiB"
T_RSS = "<= 40 MiB at 1,000 svc"
T_LEADER_CPU = "<= 5 % at 1,000 svc"
T_RATIO = 1.2
# event kinds that, with every target healthy, are false alarms
FALSE_ALARMS = ("ep-down", "service-down", "no-quorum", "failover", "switching")


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


class BrokenRun(Exception):
    """The run itself broke: a process exited, start-up did not settle, a deadline passed."""


def poll(what, fn, timeout, interval):
    """Calls fn until it returns a true value and returns that; BrokenRun after timeout
    seconds, saying what (a string, or a function giving one) it waited for. An exception of
    fn counts as "not yet" (a process may be starting), except BrokenRun, which passes."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            last = fn()
        except BrokenRun:
            raise
        except Exception as e:
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else f"{what} (last: {last!r})"
            raise BrokenRun(f"timed out after {timeout:.0f} s waiting for {detail}")
        time.sleep(interval)


def ip_at(first, i):
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(first)) + i))


def ep_ip(svc_index, ep_index):
    """Address of entry point ep_index of service svc_index (both from 0)."""
    if svc_index == 0 and ep_index == 0:
        return VICTIM_IP
    return ip_at(FIRST_IP, 3 * svc_index + ep_index)


def svc_name(i):
    return f"svc-{i + 1:04d}"


_LIBC = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """preexec_fn of every process started here: SIGTERM when this process dies, however it
    dies (the clean-up below stops them in order; this is for a harness killed hard)."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def spawn(argv, log, **kw):
    """Popen with stdout and stderr appended to log, no stdin, dying with this process."""
    with open(log, "ab") as f:
        return subprocess.Popen(argv, stdout=f, stderr=f, stdin=subprocess.DEVNULL,
                                preexec_fn=die_with_parent, **kw)


def shielded(fn):
    """Runs fn (a clean-up) with SIGINT and SIGTERM held back, so that a second Ctrl-C cannot
    leave processes behind; a signal that came meanwhile is delivered afterwards."""
    sigs = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        fn()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def raise_nofile():
    """Soft RLIMIT_NOFILE up to the hard limit (at most NOFILE_WANTED); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = NOFILE_WANTED if hard == resource.RLIM_INFINITY else min(hard, NOFILE_WANTED)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        soft = want
    return soft


def sysctl(name):
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return "?"


def build_info(bin_dir):
    """`<commit>[, dirty]`, and the dhaf-node binary's mtime: what the figures belong to."""
    def git(*a):
        r = subprocess.run(["git", "-C", SRC, *a], capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else "?"
    head = git("rev-parse", "--short", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no")
    node = os.path.join(bin_dir, "dhaf-node")
    built = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(os.path.getmtime(node)))
    return f"commit {head}{' (working tree dirty)' if dirty else ''}; dhaf-node built {built}"


# ---------------------------------------------------------------------- per-process figures

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid, *keys):
    """The given /proc/PID/status fields (e.g. "VmRSS") of a process, in KiB (0 if absent)."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in keys:
                out[k] = int(v.split()[0])
    return tuple(out.get(k, 0) for k in keys)


def memory_kib(pid):
    """(VmRSS, VmHWM) of a process in KiB."""
    return status_kib(pid, "VmRSS", "VmHWM")


def machine_cpu():
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    total = sum(v[:8])  # guest time is already in user
    return (total - idle) / TICK, total / TICK


def listen_drops():
    """TcpExt ListenOverflows + ListenDrops of this network namespace: connections the
    kernel dropped because a listen queue was full (or for another reason at accept)."""
    try:
        with open("/proc/net/netstat") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    for head, vals in zip(lines[::2], lines[1::2]):
        if head.startswith("TcpExt:"):
            row = dict(zip(head.split()[1:], (int(x) for x in vals.split()[1:])))
            return row.get("ListenOverflows", 0) + row.get("ListenDrops", 0)
    return None


def fmt_bytes_rate(b):
    return f"{b / KIB:.1f} KiB/s" if abs(b) < MIB else f"{b / MIB:.2f} MiB/s"


def fmt_size(b):
    return f"{b / KIB:.1f} KiB" if b < MIB else f"{b / MIB:.1f} MiB"


# ---------------------------------------------------------------------- etcd

class PlainEtcd(Etcd):
    """An etcd member with its default flags (dhafsys.Etcd shortens heartbeat and election
    timeout for the tests); reads go through its JSON gateway, not etcdctl, so that polling
    costs no process start on a busy machine."""

    def __init__(self, workdir, quota=None):
        super().__init__(workdir)
        self.quota = quota
        self.url = f"http://{self.endpoint}"

    def start(self):
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.client_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
        argv = [ETCD, "--name", "m0", "--data-dir", self.dir,
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"m0={peer}"]
        if self.quota:
            argv += ["--quota-backend-bytes", str(self.quota)]
        self.proc = spawn(argv, self.log, env=env)
        poll("etcd to answer", lambda: self.proc.poll() is None and self.status(), 30, 0.1)

    def call(self, path, body):
        req = urllib.request.Request(self.url + path, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def status(self):
        """{revision, db, db_in_use} (bytes) from /v3/maintenance/status."""
        s = self.call("/v3/maintenance/status", {})
        return {"revision": int(s["header"]["revision"]), "db": int(s.get("dbSize", 0)),
                "db_in_use": int(s.get("dbSizeInUse", 0))}

    def alarms(self):
        """Names of the raised alarms (NOSPACE, CORRUPT)."""
        r = self.call("/v3/maintenance/alarm", {"action": "GET"})
        return sorted({a.get("alarm", "?") for a in r.get("alarms", [])})

    def range(self, key, prefix=False, min_create_rev=0):
        """[(key, value bytes, create_revision)] of key, or of every key under it."""
        k = key.encode()
        body = {"key": base64.b64encode(k).decode()}
        if prefix:
            end = bytearray(k)
            end[-1] += 1
            body["range_end"] = base64.b64encode(bytes(end)).decode()
        if min_create_rev:
            body["min_create_revision"] = str(min_create_rev)
        r = self.call("/v3/kv/range", body)
        return [(base64.b64decode(kv["key"]).decode(), base64.b64decode(kv.get("value", "")),
                 int(kv.get("create_revision", 0))) for kv in r.get("kvs", [])]

    def get_json(self, key):
        kvs = self.range(key)
        return json.loads(kvs[0][1]) if kvs else None


# ---------------------------------------------------------------------- targets, switcher

class Httpd:
    """One dhaf-bench-httpd on count addresses from first, all on one port."""

    def __init__(self, binary, first, count, port, log):
        self.argv = [binary, "--first", first, "--count", str(count), "--port", str(port)]
        self.log = log
        self.proc = None

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=log,
                                         stdin=subprocess.DEVNULL, text=True,
                                         preexec_fn=die_with_parent)
        line = self.proc.stdout.readline()  # once every address is bound (or it died)
        if not line.startswith("port="):
            self.proc.wait()
            raise RuntimeError(f"{' '.join(self.argv)} did not start (exit "
                               f"{self.proc.returncode}; see {self.log})")
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        terminate(self.proc, 5)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None


class Switcher:
    """The exec switcher of every service: init prints the service's current entry point from
    cur/<service>; switch appends `time node epoch service ep` to calls and updates it."""

    def __init__(self, workdir, services):
        self.dir = os.path.join(workdir, "sw")
        os.makedirs(os.path.join(self.dir, "cur"))
        self.calls_file = os.path.join(self.dir, "calls")
        self.init = os.path.join(self.dir, "init.sh")
        self.switch = os.path.join(self.dir, "switch.sh")
        cur = os.path.join(self.dir, "cur")
        with open(self.init, "w") as f:
            f.write(f'#!/bin/sh\ncat "{cur}/$DHAF_SERVICE" 2>/dev/null || true\n')
        with open(self.switch, "w") as f:
            # the timestamp first: the call's moment, before anything else the script does
            f.write(f"""#!/bin/sh
t=$(date +%s.%N)
echo "$t $DHAF_NODE $DHAF_EPOCH $DHAF_SERVICE $1" >> {self.calls_file}
echo "$1" > "{cur}/$DHAF_SERVICE.tmp" && mv "{cur}/$DHAF_SERVICE.tmp" "{cur}/$DHAF_SERVICE"
""")
        os.chmod(self.init, 0o755)
        os.chmod(self.switch, 0o755)
        for s in services:
            with open(os.path.join(cur, s), "w") as f:
                f.write("ep-1\n")
        self.cur = cur

    def yaml(self):
        return f"{{type: exec, init: {self.init}, switch: {self.switch}, timeout: 2}}"

    def calls(self):
        """[(wall time, node, epoch, service, ep)] of every switch call so far."""
        try:
            with open(self.calls_file) as f:
                lines = f.read().splitlines()
        except FileNotFoundError:
            return []
        out = []
        for line in lines:
            p = line.split()
            if len(p) == 5:
                out.append((float(p[0]), p[1], p[2], p[3], p[4]))
        return out

    def points_to(self, service):
        try:
            with open(os.path.join(self.cur, service)) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None


# ---------------------------------------------------------------------- dhaf processes

class ScaleNode(Node):
    """A dhaf-node with its defaults except the tact and the API ports (dhafsys.Node sets the
    short test timings)."""

    def write_config(self, cluster, etcd_endpoint, ttl, extra="", log_level="info"):
        # flap-threshold 0: the failover rounds stop the same target again and again on
        # purpose; flap damping would hold it down from the third round on
        with open(self.config, "w") as f:
            f.write(f"""dhaf:
  cluster-name: {cluster}
  node-name: {self.name}
  tact-interval: {self.tact}
  flap-threshold: 0
  grpc-api: {{host: 127.0.0.1, port: {self.grpc_port}}}
  web-api: {{host: 127.0.0.1, port: {self.rest_port}}}
etcd:
  hosts: {etcd_endpoint}
{self.services}{extra}""")

    def start(self, *args):
        self.proc = spawn([self.bin, "--config", self.config, *args], self.log)
        return self


class ScaleProber(Prober):
    start = ScaleNode.start


def services_yaml(n, port, switcher, check_timeout, retries, checkers):
    """The services section: svc-0001 .. svc-N, the checkers and switcher as YAML anchors."""
    web = (f"{{type: web, port: {port}, path: /ok, timeout: {check_timeout}, "
           f"retries: {retries}}}")
    tcp = f"{{type: tcp, port: {port}, timeout: {check_timeout}}}"
    lines = ["services:"]
    for i in range(n):
        eps = ", ".join(f"{{name: {EPS[k]}, ip: {ep_ip(i, k)}}}" for k in range(len(EPS)))
        tcp_here = checkers == "mix" and i % 4 == 3
        if i == 0:
            sw, chk = f"&sw {switcher.yaml()}", f"&web {web}"
        else:
            sw, chk = "*sw", "*web"
        if tcp_here:
            chk = f"&tcp {tcp}" if i == 3 else "*tcp"
        lines += [f"  - name: {svc_name(i)}",
                  f"    domain: {svc_name(i)}.test",
                  f"    entry-points: [{eps}]",
                  f"    switcher: {sw}",
                  f"    health-checker: {chk}"]
    lines.append("probers:")
    for name, token in PROBERS.items():
        lines.append(f"  - {{name: {name}, token: \"{token}\", location: bench}}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- one N

class ScaleRun:
    def __init__(self, args, n, rng, quota=None):
        self.args = args
        self.n = n
        self.rng = rng
        self.quota = quota
        self.workdir = tempfile.mkdtemp(prefix=f"dhaf-scale-{n}-")
        self.prefix = f"/dhaf/{CLUSTER}/"
        self.etcd = None
        self.targets = None
        self.victim = None
        self.nodes = []
        self.probers = []
        self.sw = None
        self.settle_s = None
        self.steady = None  # the steady phase's figures
        self.rounds = []  # one dict per failover round
        self.failed = None  # why the run broke
        self.samples = []  # soak samples
        self.sample_head = False  # the soak table's head is printed
        self.missing = ""  # what start-up still waits for
        self.not_quiet = None  # why start-up was taken as settled without a quiet spell
        self.round_events = {}  # kind -> count, of services other than the victim, in rounds

    # ------------------------------------------------------------------ setup

    def setup(self):
        a = self.args
        names = [svc_name(i) for i in range(self.n)]
        self.etcd = PlainEtcd(self.workdir, self.quota)
        self.etcd.start()
        port = free_port()
        httpd = os.path.join(a.bin_dir, "dhaf-bench-httpd")
        self.targets = Httpd(httpd, FIRST_IP, 3 * self.n, port,
                             os.path.join(self.workdir, "targets.log")).start()
        self.victim = Httpd(httpd, VICTIM_IP, 1, port,
                            os.path.join(self.workdir, "victim.log")).start()
        self.sw = Switcher(self.workdir, names)
        services = services_yaml(self.n, port, self.sw, a.check_timeout, a.retries, a.checkers)
        for name in NODES:
            self.nodes.append(ScaleNode(CLUSTER, name, a.bin_dir, self.workdir,
                                        self.etcd.endpoint, services=services, tact=a.tact))
        for nd in self.nodes:
            nd.start("--log-level", a.log_level)
        # The probers start once the nodes' gRPC ports answer: a prober started earlier is
        # refused, and gRPC 1.51 may then keep its channel broken for seconds (docs/internals
        # "Wedged channels"), which would be counted in the start-up time here.
        for nd in self.nodes:
            poll(f"{nd.name}'s gRPC port", lambda: self.listening(nd), 30, 0.05)
        for name, token in PROBERS.items():
            p = ScaleProber(name, a.bin_dir, self.workdir, self.nodes, token, location="bench")
            with open(p.config, "a") as f:
                f.write(f"log: {{level: {a.log_level}}}\n")
            self.probers.append(p)
            p.start()

    def listening(self, nd):
        if not nd.alive():
            raise BrokenRun(f"{nd.name} exited (code {nd.proc.returncode}); logs in "
                            f"{self.workdir}")
        try:
            socket.create_connection(("127.0.0.1", nd.grpc_port), timeout=1).close()
            return True
        except OSError:
            return False

    def processes(self):
        """[(name, role, pid)] of every process of the run that is still running."""
        out = [(nd.name, "node", nd.proc.pid) for nd in self.nodes if nd.alive()]
        out += [(p.name, "prober", p.proc.pid) for p in self.probers if p.alive()]
        if self.etcd and self.etcd.proc and self.etcd.proc.poll() is None:
            out.append(("etcd", "etcd", self.etcd.proc.pid))
        if self.targets and self.targets.alive():
            out.append(("targets", "httpd", self.targets.proc.pid))
        return out

    def check_alive(self):
        """Raises BrokenRun when a process of the run has exited."""
        procs = [(nd.name, nd.proc) for nd in self.nodes] + \
            [(p.name, p.proc) for p in self.probers] + \
            [("etcd", self.etcd.proc), ("targets", self.targets.proc)]
        for name, proc in procs:
            if proc is None or proc.poll() is not None:
                rc = proc.returncode if proc else None
                raise BrokenRun(f"{name} exited (code {rc}); logs in {self.workdir}")

    def leader(self):
        v = self.etcd.get_json(self.prefix + "leader")
        return v.get("node") if v else None

    def state(self, service):
        return self.etcd.get_json(self.prefix + f"services/{service}/state") or {}

    def settled(self):
        """True once a leader is elected, all five voters voted healthy on every entry point,
        and every service's state shows ep-1 current, its three entry points up and no switch
        in progress; self.missing says what is not there yet."""
        self.check_alive()
        if not self.leader():
            self.missing = "no leader"
            return False
        want = 3 * self.n
        ok = set()
        for key, val, _rev in self.etcd.range(self.prefix + "votes/", prefix=True):
            res = json.loads(val).get("results", [])
            if len(res) == want and all(r.get("healthy") for r in res):
                ok.add(key.rsplit("/", 1)[1])
        if len(ok) < VOTERS:
            self.missing = f"healthy votes on all {want} entry points from {sorted(ok)} only"
            return False
        done = 0
        for key, val, _rev in self.etcd.range(self.prefix + "services/", prefix=True):
            if not key.endswith("/state"):
                continue
            st = json.loads(val)
            eps = st.get("eps", {})
            # (a state without "eps" counts by its current entry point alone)
            if st.get("current") == "ep-1" and "switching" not in st and \
                    ("eps" not in st or all(eps.get(e) == "up" for e in EPS)):
                done += 1
        self.missing = f"{done} of {self.n} services on ep-1 with every entry point up"
        return done == self.n

    def events_since(self, rev):
        """Event records created after revision rev: [(create revision, event dict)]."""
        out = []
        for _k, val, crev in self.etcd.range(self.prefix + "events/", prefix=True,
                                             min_create_rev=rev + 1):
            try:
                out.append((crev, json.loads(val)))
            except ValueError:
                continue
        return out

    def wait_settled(self):
        """Waits for settled(), then up to QUIET_MAX seconds for a quiet spell of 3 tacts in
        which it stays true and no event is recorded (the leader publishes ep-up, quorum and
        similar events for a while after the votes are in); a start-up that never goes quiet
        is noted, not fatal: the steady phase then shows what keeps happening."""
        t0 = time.monotonic()
        limit = 60 + self.n * 0.15  # start-up reads every switcher, one by one
        self.missing = "?"
        poll(lambda: f"start-up to settle: {self.missing}; logs in {self.workdir}",
             self.settled, limit, 0.5)
        quiet_until = time.monotonic() + QUIET_MAX
        while True:
            rev = self.etcd.status()["revision"]
            time.sleep(3 * self.args.tact)
            fresh = self.events_since(rev)
            if not fresh and self.settled():
                break
            if time.monotonic() >= quiet_until:
                self.not_quiet = (f"no quiet spell of {3 * self.args.tact} s within "
                                  f"{QUIET_MAX:.0f} s after start-up: {len(fresh)} events "
                                  f"in the last one")
                progress(f"bench/scale: N={self.n}: {self.not_quiet}")
                break
        self.settle_s = time.monotonic() - t0

    # ------------------------------------------------------------------ steady state

    def sample(self, t0):
        """One soak sample: etcd's figures, alarms and every process's VmRSS."""
        st = self.etcd.status()
        row = {"t_s": round(time.monotonic() - t0, 1), "revision": st["revision"],
               "db_bytes": st["db"], "db_in_use_bytes": st["db_in_use"],
               "alarms": "+".join(self.etcd.alarms()) or "-"}
        for name, _role, pid in self.processes():
            try:
                row[f"{name}_rss_kib"] = memory_kib(pid)[0]
            except OSError:
                row[f"{name}_rss_kib"] = ""
        return row

    def probe_rounds(self):
        """{node: (rounds, overran, seconds)} from each node's /metrics (the built-in prober's
        counters); a node that does not answer is left out."""
        out = {}
        for n in self.nodes:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{n.rest_port}/metrics",
                                            timeout=5) as r:
                    text = r.read().decode()
            except OSError:
                continue
            v = {}
            for line in text.splitlines():
                for key in ("dhaf_probe_rounds_total", "dhaf_probe_rounds_overran_total",
                            "dhaf_probe_round_seconds_total"):
                    if line.startswith(key + " "):
                        v[key] = float(line.split()[1])
            if len(v) == 3:
                out[n.name] = (v["dhaf_probe_rounds_total"],
                               v["dhaf_probe_rounds_overran_total"],
                               v["dhaf_probe_round_seconds_total"])
        return out

    @staticmethod
    def rounds_text(r0, r1):
        """'rounds N, overran K (x %), mean T ms' of the nodes' probers between two samples."""
        n = k = secs = 0
        for name, (a, b, c) in r1.items():
            if name in r0:
                n += a - r0[name][0]
                k += b - r0[name][1]
                secs += c - r0[name][2]
        if not n:
            return "n/a"
        return f"{n:.0f} rounds, {k:.0f} overran ({100 * k / n:.0f} %), mean {1000 * secs / n:.0f} ms"

    def run_steady(self, seconds, sample_every=0):
        procs = self.processes()
        rounds0 = self.probe_rounds()
        mark = len(self.sw.calls())
        leader0 = self.leader()
        st0 = self.etcd.status()
        cpu0 = {name: cpu_seconds(pid) for name, _r, pid in procs}
        mach0, drops0 = machine_cpu(), listen_drops()
        t0 = time.monotonic()
        wall0 = time.time()
        next_sample = t0
        alarms_seen = set()
        while True:
            now = time.monotonic()
            if now >= t0 + seconds:
                break
            if sample_every and now >= next_sample:
                row = self.sample(t0)
                self.samples.append(row)
                if row["alarms"] != "-":
                    alarms_seen.update(row["alarms"].split("+"))
                self.print_sample(row)
                next_sample += sample_every
            self.check_alive()
            time.sleep(min(1.0, max(0.0, t0 + seconds - time.monotonic())))
        t1 = time.monotonic()
        cpu1 = {name: cpu_seconds(pid) for name, _r, pid in procs}
        mach1, drops1 = machine_cpu(), listen_drops()
        st1 = self.etcd.status()
        leader1 = self.leader()
        mem = {name: memory_kib(pid) for name, _r, pid in procs}
        if sample_every:
            row = self.sample(t0)
            self.samples.append(row)
            self.print_sample(row)
        alarms_seen.update(self.etcd.alarms())
        calls = [c for c in self.sw.calls()[mark:] if c[0] >= wall0]
        events = {}
        for rev, ev in self.events_since(st0["revision"]):
            if rev <= st1["revision"]:
                events[ev.get("kind", "?")] = events.get(ev.get("kind", "?"), 0) + 1
        vote = self.etcd.range(self.prefix + "votes/node-1")
        rounds = self.rounds_text(rounds0, self.probe_rounds())
        dt = t1 - t0
        self.steady = {
            "seconds": dt, "leader0": leader0, "leader1": leader1, "wall0": wall0,
            "wall1": wall0 + dt,
            "rev0": st0["revision"], "rev1": st1["revision"],
            "db0": st0["db"], "db1": st1["db"], "use0": st0["db_in_use"],
            "use1": st1["db_in_use"],
            "cpu": {name: (cpu1[name] - cpu0[name]) / dt * 100 for name, _r, _p in procs},
            "mem": mem, "roles": {name: role for name, role, _p in procs},
            "calls": calls, "events": events, "alarms": sorted(alarms_seen),
            "vote_bytes": len(vote[0][1]) if vote else 0, "rounds": rounds,
            "machine_busy": (mach1[0] - mach0[0]) / dt,
            "drops": None if drops0 is None or drops1 is None else drops1 - drops0,
        }

    def print_sample(self, row):
        if not self.sample_head:
            self.sample_head = True
            names = [k[:-8] for k in row if k.endswith("_rss_kib")]
            print(f"{'t s':>7s} {'revision':>9s} {'dbSize':>9s} {'inUse':>9s} {'alarms':>8s}  "
                  + " ".join(f"{n + ' RSS':>13s}" for n in names), flush=True)
        rss = " ".join(f"{(row[k] / KIB if row[k] != '' else 0):9.1f} MiB"
                       for k in row if k.endswith("_rss_kib"))
        print(f"{row['t_s']:7.0f} {row['revision']:9d} {row['db_bytes'] / MIB:5.1f} MiB "
              f"{row['db_in_use_bytes'] / MIB:5.1f} MiB {row['alarms']:>8s}  {rss}", flush=True)

    # ------------------------------------------------------------------ failover rounds

    def victim_on_ep1(self):
        self.check_alive()
        if self.sw.points_to(VICTIM) != "ep-1":
            return False
        st = self.state(VICTIM)
        return st.get("current") == "ep-1" and "switching" not in st

    def run_round(self, r, pause, anchor):
        """One stop -> failover -> restart -> switch back cycle. The stop falls pause seconds
        (mod tact) after anchor, the previous switch back's call: that call came right after
        a majority of voters had checked ep-1, so the pause sets where in their check cycle
        the stop falls (stratified pauses cover the cycle evenly: medians of few rounds then
        compare across N). Without an anchor the pause is just a pause. Returns the round's
        record (None for the warm-up, r == 0) and the switch back call's time."""
        self.check_alive()
        poll(f"{VICTIM} on ep-1", self.victim_on_ep1, BACK_DEADLINE, 0.05)
        now = time.time()
        at = now + pause if anchor is None else anchor + pause
        while at < now + 0.005:
            at += self.args.tact
        time.sleep(at - now)
        mark = len(self.sw.calls())
        t_stop = time.time()
        self.victim.stop()

        def called(ep):
            self.check_alive()
            return next((c for c in self.sw.calls()[mark:] if c[3] == VICTIM and c[4] == ep),
                        None)

        # only the calls file is read until the call (no etcd request adds to the load)
        call = poll(f"round {r}: the switch call of {VICTIM} to ep-2", lambda: called("ep-2"),
                    FAILOVER_DEADLINE, 0.01)
        rec = {"round": r, "failover": call[0] - t_stop, "node": call[1],
               "phase": (t_stop - anchor) % self.args.tact if anchor else None}
        poll(f"round {r}: the failover recorded",
             lambda: (lambda s: s.get("current") == "ep-2" and "switching" not in s)(
                 self.state(VICTIM)), BACK_DEADLINE, 0.1)
        self.victim.start()
        t_start = time.time()
        back = poll(f"round {r}: {VICTIM}'s switch back to ep-1", lambda: called("ep-1"),
                    BACK_DEADLINE, 0.01)
        rec["back"] = back[0] - t_start
        rec["others"] = [c for c in self.sw.calls()[mark:] if c[3] != VICTIM]
        other = f"  ({len(rec['others'])} switch calls of other services)" if rec["others"] else ""
        phase = f" at phase {rec['phase'] * 1000:4.0f} ms" if anchor else ""
        print(f"  {'warm-up' if r == 0 else f'round {r}'}: stop{phase} -> switch call "
              f"{rec['failover'] * 1000:6.0f} ms ({rec['node']}); restart -> switch back "
              f"{rec['back'] * 1000:6.0f} ms{other}", flush=True)
        if r:
            self.rounds.append(rec)
        return back[0]

    def run_rounds(self, rounds):
        # Stratified pauses over one tact (bench/failover.py says why), after a warm-up round
        # that gives the first anchor.
        pauses = [(i + self.rng.random()) * self.args.tact / rounds for i in range(rounds)]
        self.rng.shuffle(pauses)
        print(f"failover rounds: stop of {VICTIM}'s ep-1 target ({VICTIM_IP}) -> switch "
              f"script call for ep-2", flush=True)
        rev = self.etcd.status()["revision"]
        rounds0 = self.probe_rounds()
        try:
            anchor = self.run_round(0, self.rng.random() * self.args.tact, None)
            for r in range(1, rounds + 1):
                anchor = self.run_round(r, pauses[r - 1], anchor)
        finally:
            self.rounds_probe = self.rounds_text(rounds0, self.probe_rounds())
            # what the rounds did to the other services (all healthy all along)
            for _rev, ev in self.events_since(rev):
                if ev.get("service") and ev.get("service") != VICTIM:
                    k = ev.get("kind", "?")
                    self.round_events[k] = self.round_events.get(k, 0) + 1

    # ------------------------------------------------------------------ report

    def failover_median(self):
        return statistics.median(x["failover"] for x in self.rounds) if self.rounds else None

    def figures(self):
        """The summary figures of this N (None where not measured)."""
        s = self.steady
        f = {"n": self.n, "fo": self.failover_median()}
        if not s:
            return f
        mins = s["seconds"] / 60
        f["rev_s"] = (s["rev1"] - s["rev0"]) / s["seconds"]
        f["rev_voter_min"] = (s["rev1"] - s["rev0"]) / mins / VOTERS
        f["db_s"] = (s["db1"] - s["db0"]) / s["seconds"]
        f["use_s"] = (s["use1"] - s["use0"]) / s["seconds"]
        nodes = [nd.name for nd in self.nodes if nd.name in s["mem"]]
        f["rss_max"] = max(s["mem"][x][0] for x in nodes) if nodes else None
        leader = s["leader1"] if s["leader1"] == s["leader0"] else None
        followers = [s["cpu"][x] for x in nodes if x != leader]
        if leader in s["cpu"] and followers:
            f["leader_extra"] = s["cpu"][leader] - statistics.mean(followers)
        f["false"] = len(s["calls"])
        f["alarms"] = sum(s["events"].get(k, 0) for k in FALSE_ALARMS)
        return f

    def header(self):
        a = self.args
        print(f"\n== N={self.n} services x 3 entry points ({3 * self.n} targets), "
              f"{len(NODES)} nodes + {len(PROBERS)} probers ({VOTERS} voters), tact {a.tact} s, "
              f"{a.checkers} checks (timeout {a.check_timeout} s, retries {a.retries})",
              flush=True)

    def report_steady(self):
        s = self.steady
        print(f"start-up settled in {self.settle_s:.1f} s; steady state over {s['seconds']:.1f} s, "
              f"all targets healthy; leader {s['leader1'] or 'none'}"
              + (f" (was {s['leader0']} at the start)" if s["leader0"] != s["leader1"] else ""))
        if self.not_quiet:
            print(f"  note: {self.not_quiet}")
        print("  window " + " - ".join(time.strftime("%H:%M:%S", time.gmtime(t))
                                      for t in (s["wall0"], s["wall1"])) + " UTC (log times)")
        print(f"  {'process':10s}{'role':10s}{'CPU % of a core':>17s}{'VmRSS':>12s}"
              f"{'VmHWM':>12s}")
        for name in [nd.name for nd in self.nodes] + [p.name for p in self.probers] + \
                ["etcd", "targets"]:
            if name not in s["cpu"]:
                continue
            role = s["roles"][name]
            if role == "node":
                role = "leader" if name == s["leader1"] else "follower"
            if role == "httpd":
                role = "httpd*"
            rss, hwm = s["mem"][name]
            print(f"  {name:10s}{role:10s}{s['cpu'][name]:15.1f} %{rss / KIB:8.1f} MiB"
                  f"{hwm / KIB:8.1f} MiB")
        ours = sum(s["cpu"].values()) / 100
        print("  (* dhaf-bench-httpd, the targets: not dhaf)")
        print(f"  machine: {s['machine_busy']:.2f} of {os.cpu_count()} cores busy, "
              f"{max(0.0, s['machine_busy'] - ours):.2f} of them outside this run's processes "
              f"(other work on the machine); listen queue drops (kernel-wide): "
              f"{'?' if s['drops'] is None else s['drops']}")
        f = self.figures()
        rows = [
            ("etcd revisions/s", f"{f['rev_s']:.2f}", ""),
            ("etcd revisions/min per voter", f"{f['rev_voter_min']:.1f}", T_REV),
            ("etcd db growth (dbSize)", fmt_bytes_rate(f["db_s"]), T_DB),
            ("etcd db in use growth (dbSizeInUse)", fmt_bytes_rate(f["use_s"]), ""),
            ("etcd dbSize start -> end", f"{fmt_size(s['db0'])} -> {fmt_size(s['db1'])}", ""),
            ("etcd dbSizeInUse start -> end",
             f"{fmt_size(s['use0'])} -> {fmt_size(s['use1'])}", ""),
            ("etcd alarms", ", ".join(s["alarms"]) or "none", "never NOSPACE"),
            ("one vote's value (votes/node-1)", fmt_size(s["vote_bytes"]), ""),
            ("nodes' prober rounds", s["rounds"], ""),
            ("false failovers (switch calls)", str(f["false"]), T_FALSE),
            ("false alarms (ep-down, no-quorum ...)", str(f["alarms"]), "0"),
            ("events in the window", ", ".join(f"{k} {v}" for k, v in
                                              sorted(s["events"].items())) or "none", ""),
            ("node VmRSS, largest", f"{f['rss_max'] / KIB:.1f} MiB" if f.get("rss_max")
             else "n/a", T_RSS),
            ("leader CPU beyond followers' mean",
             f"{f['leader_extra']:+.1f} % of a core" if "leader_extra" in f
             else "n/a (leader changed)", T_LEADER_CPU),
        ]
        print(f"  {'figure':40s}{'value':>26s}   target")
        for name, val, target in rows:
            print(f"  {name:40s}{val:>26s}   {target}")
        for c in s["calls"][:10]:
            print(f"    switch call: {c[3]} -> {c[4]} by {c[1]} at {c[0]:.3f}")
        sys.stdout.flush()

    def report_rounds(self):
        if not self.rounds:
            return
        fo = [x["failover"] * 1000 for x in self.rounds]
        back = [x["back"] * 1000 for x in self.rounds]
        print(f"  failover, {len(fo)} round{'s' if len(fo) != 1 else ''}, stop -> switch call: "
              f"min {min(fo):.0f} ms, "
              f"median {statistics.median(fo):.0f} ms, max {max(fo):.0f} ms "
              f"(target: median <= {T_RATIO}x the one at N=1)")
        print(f"  switch back, restart -> switch call: min {min(back):.0f} ms, median "
              f"{statistics.median(back):.0f} ms, max {max(back):.0f} ms")
        print(f"  nodes' prober rounds meanwhile: {getattr(self, 'rounds_probe', 'n/a')}")
        others = sum(len(x["others"]) for x in self.rounds)
        print(f"  other services during the rounds: {others} switch calls; events: "
              + (", ".join(f"{k} {v}" for k, v in sorted(self.round_events.items())) or "none"))
        sys.stdout.flush()

    def report_soak(self):
        if not self.samples:
            return
        dbs = [x["db_bytes"] for x in self.samples]
        nospace = next((x for x in self.samples if "NOSPACE" in x["alarms"]), None)
        print(f"  soak: {len(self.samples)} samples; dbSize min {fmt_size(min(dbs))}, max "
              f"{fmt_size(max(dbs))}, last {fmt_size(dbs[-1])}"
              + (f" (quota {fmt_size(self.quota)})" if self.quota else ""))
        print("  NOSPACE raised: " + (f"yes, first seen at t={nospace['t_s']:.0f} s"
                                      if nospace else "no") + "   (target: never)")
        before = [x for x in self.samples if "NOSPACE" not in x["alarms"]]
        if nospace and len(before) >= 2 and before[-1]["t_s"] > before[0]["t_s"]:
            # the window's rates above mix the time before the alarm with the stall after it
            a, b = before[0], before[-1]
            dt = b["t_s"] - a["t_s"]
            print(f"  before NOSPACE (t={a['t_s']:.0f}..{b['t_s']:.0f} s): "
                  f"{(b['revision'] - a['revision']) / dt:.2f} revisions/s, dbSize "
                  f"{fmt_bytes_rate((b['db_bytes'] - a['db_bytes']) / dt)}; after it etcd "
                  f"refuses every write (revision {self.samples[-1]['revision']} at the end)")
        sys.stdout.flush()

    def write_csv(self, path):
        if not self.samples:
            return
        keys = list(self.samples[0])
        for row in self.samples:
            keys += [k for k in row if k not in keys]
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys)
            w.writeheader()
            w.writerows(self.samples)
        progress(f"bench/scale: {len(self.samples)} samples written to {path}")

    def close(self):
        for p in self.probers:
            if p.alive():
                p.proc.terminate()
        for nd in self.nodes:
            if nd.alive():
                nd.proc.terminate()
        for proc in [p.proc for p in self.probers] + [nd.proc for nd in self.nodes]:
            if proc is None:
                continue
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for h in (self.victim, self.targets):
            if h:
                h.stop()
        if self.etcd:
            self.etcd.stop()
        if self.args.keep:
            progress(f"bench/scale: kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------------- idle RSS

class IdleRss:
    """One dhaf-node with examples/config-n1.dhaf (etcd.hosts -> a local etcd, API ports free,
    entry points and the Cloudflare API on closed loopback ports), idle for a while: its
    VmRSS."""

    def __init__(self, args):
        self.args = args
        self.workdir = tempfile.mkdtemp(prefix="dhaf-scale-idle-")
        self.etcd = None
        self.proc = None
        self.result = None
        self.failed = None

    def run(self, seconds):
        with open(os.path.join(SRC, "examples", "config-n1.dhaf")) as f:
            text = f.read()
        self.etcd = PlainEtcd(self.workdir)
        self.etcd.start()
        # Nothing may leave loopback: the entry points become closed loopback ports and the
        # Cloudflare switcher talks to a closed local port (its init fails, as it would with
        # the example's placeholder token; the node runs on, idle).
        eps = {"111.111.111.11": "127.0.0.91", "222.222.222.22": "127.0.0.92"}
        lines = []
        for line in text.splitlines():
            if line.startswith("  hosts: "):
                line = f"  hosts: http://{self.etcd.endpoint}"
            for far, near in eps.items():
                line = line.replace(far, near)
            lines.append(line)
            if line.strip().startswith("zone: "):
                indent = line[:len(line) - len(line.lstrip())]
                lines.append(f"{indent}api-url: http://127.0.0.1:{free_port()}/client/v4")
            if line.startswith("  node-name: "):
                lines.append(f"  grpc-api: {{host: 127.0.0.1, port: {free_port()}}}")
                lines.append(f"  web-api: {{host: 127.0.0.1, port: {free_port()}}}")
        config = os.path.join(self.workdir, "config-n1.dhaf")
        with open(config, "w") as f:
            f.write("\n".join(lines) + "\n")
        log = os.path.join(self.workdir, "node-1.log")
        self.proc = spawn([os.path.join(self.args.bin_dir, "dhaf-node"), "--config", config], log)
        t0 = time.monotonic()
        c0 = None
        while time.monotonic() < t0 + seconds:
            if self.proc.poll() is not None:
                raise BrokenRun(f"dhaf-node with config-n1.dhaf exited (code "
                                f"{self.proc.returncode}; log {log})")
            if c0 is None and time.monotonic() >= t0 + min(10, seconds / 2):
                c0 = (time.monotonic(), cpu_seconds(self.proc.pid))
            time.sleep(0.5)
        rss, hwm = memory_kib(self.proc.pid)
        anon, files = status_kib(self.proc.pid, "RssAnon", "RssFile")
        cpu = None
        if c0:
            cpu = (cpu_seconds(self.proc.pid) - c0[1]) / (time.monotonic() - c0[0]) * 100
        self.result = {"seconds": seconds, "rss": rss, "hwm": hwm, "cpu": cpu,
                       "anon": anon, "files": files,
                       "cpu_from": c0[0] - t0 if c0 else None,
                       "leader": self.etcd.get_json("/dhaf/first-dhaf-cluster/leader"),
                       "floor": self.library_floor()}

    def library_floor(self):
        """dhaf-bench-rss-floor's figures: its libraries started as the node starts them, no
        dhaf code (None when it is not built or failed)."""
        exe = os.path.join(self.args.bin_dir, "dhaf-bench-rss-floor")
        if not os.path.exists(exe):
            return None
        try:
            r = subprocess.run([exe], capture_output=True, text=True, timeout=30)
            floor = json.loads(r.stdout)
        except (subprocess.SubprocessError, ValueError) as e:
            progress(f"bench/scale: dhaf-bench-rss-floor failed: {e}")
            return None
        if r.returncode != 0:
            progress(f"bench/scale: dhaf-bench-rss-floor exited {r.returncode}: {r.stderr.strip()}")
            return None
        return floor

    def report(self):
        print("\n== idle: one dhaf-node with examples/config-n1.dhaf (the seed's example; "
              "etcd.hosts, the API ports, the entry points and the Cloudflare API on loopback)")
        if self.result:
            r = self.result
            lead = (r["leader"] or {}).get("node", "none")
            cpu = "n/a" if r["cpu"] is None else \
                f"{r['cpu']:.1f} % of a core from {r['cpu_from']:.0f} s on"
            print(f"  after {r['seconds']:.0f} s (leader: {lead}): VmRSS {r['rss'] / KIB:.1f} MiB "
                  f"(target {T_RSS_IDLE}), VmHWM {r['hwm'] / KIB:.1f} MiB, CPU {cpu}")
            print(f"  of the VmRSS: RssAnon {r['anon'] / KIB:.1f} MiB (the process's own memory), "
                  f"RssFile {r['files'] / KIB:.1f} MiB (pages of its binary and shared libraries, "
                  f"shared with every process that maps them)")
            f = r["floor"]
            if f:
                print(f"  the libraries alone (dhaf-bench-rss-floor: curl, gRPC server + a call, "
                      f"libmicrohttpd, no dhaf code): VmRSS {f['vm_rss_kib'] / KIB:.1f} MiB "
                      f"(RssAnon {f['rss_anon_kib'] / KIB:.1f}, RssFile "
                      f"{f['rss_file_kib'] / KIB:.1f}); dhaf-node adds "
                      f"{(r['rss'] - f['vm_rss_kib']) / KIB:.1f} MiB")
        if self.failed:
            print(f"  RUN BROKE: {self.failed}")

    def close(self):
        terminate(self.proc)
        if self.etcd:
            self.etcd.stop()
        if self.args.keep:
            progress(f"bench/scale: kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


# ---------------------------------------------------------------------- main

def summary(runs, idle):
    figs = [r.figures() for r in runs]
    base = next((f["fo"] for f in figs if f["n"] == 1 and f["fo"] is not None), None)
    # (head, width, figure key, format, target)
    cols = [("services", 8, "n", str, "target"),
            ("rev/min/voter", 14, "rev_voter_min", lambda v: f"{v:.1f}", "< 1"),
            ("db growth", 14, "db_s", fmt_bytes_rate, "< 1 KiB/s @1k"),
            ("node RSS max", 14, "rss_max", lambda v: f"{v / KIB:.1f} MiB", "<= 40 MiB @1k"),
            ("leader CPU+", 12, "leader_extra", lambda v: f"{v:+.1f} %", "<= 5 % @1k"),
            ("false fo", 9, "false", str, "0"),
            ("false alarms", 13, "alarms", str, ""),
            ("failover med", 13, "fo", lambda v: f"{v * 1000:.0f} ms", ""),
            ("ratio to N=1", 14, "ratio", lambda v: f"{v:.2f}x", f"<= {T_RATIO}x @1k")]
    print("\n== summary")
    print(" ".join(f"{c[0]:>{c[1]}s}" for c in cols))
    for f in figs:
        if base and f["fo"] is not None:
            f["ratio"] = f["fo"] / base
        print(" ".join(f"{'n/a' if f.get(c[2]) is None else c[3](f[c[2]]):>{c[1]}s}"
                       for c in cols))
    print(" ".join(f"{c[4]:>{c[1]}s}" for c in cols))
    if idle and idle.result:
        print(f"idle, examples/config-n1.dhaf: VmRSS {idle.result['rss'] / KIB:.1f} MiB "
              f"(target {T_RSS_IDLE})")
    sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser(
        description="dhaf at N services: etcd revisions and db growth, CPU and RSS per process, "
                    "false failovers, failover time.")
    ap.add_argument("bin_dir", nargs="?", default="build/bin",
                    help="directory with dhaf-node, dhaf-prober, dhaf-bench-httpd")
    ap.add_argument("--services", default="1,1000",
                    help="comma-separated service counts, one run each (default 1,1000; 0: "
                         "only the idle RSS)")
    ap.add_argument("--tact", type=int, default=1, help="tact-interval in seconds (default 1)")
    ap.add_argument("--steady", type=float, default=60,
                    help="seconds of steady-state measurement (default 60)")
    ap.add_argument("--failover-rounds", type=int, default=5,
                    help="failover rounds per N (default 5; 0 skips them)")
    ap.add_argument("--soak", type=float, default=0,
                    help="one steady phase of this many seconds at one N, sampled; no rounds")
    ap.add_argument("--sample", type=float, default=30,
                    help="seconds between soak samples (default 30)")
    ap.add_argument("--csv", help="write the soak samples to this CSV file")
    ap.add_argument("--quota", type=int, default=0,
                    help="etcd --quota-backend-bytes (default: etcd's own, 2 GiB)")
    ap.add_argument("--idle-rss", type=float, default=30,
                    help="seconds one node runs idle with examples/config-n1.dhaf before its "
                         "RSS is read (default 30; 0 skips)")
    ap.add_argument("--check-timeout", type=int, default=2,
                    help="the checks' timeout in seconds (default 2)")
    ap.add_argument("--retries", type=int, default=0,
                    help="the web checks' retries (default 0)")
    ap.add_argument("--checkers", choices=("web", "mix"), default="web",
                    help="web: every service checked over HTTP; mix: every 4th by tcp")
    ap.add_argument("--seed", type=int, default=1, help="seed of the random pauses")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directories")
    ap.add_argument("--log-level", default="info", choices=("debug", "info", "warn", "error"),
                    help="the nodes' and probers' log level (default info; debug shows each "
                    "voter's held, witnessed and confirmed failures and its vote writes)")
    args = ap.parse_args()
    try:
        counts = [int(x) for x in args.services.split(",") if x.strip()]
    except ValueError:
        ap.error("--services takes numbers separated by commas")
    if counts == [0]:
        counts = []  # the idle RSS alone
    elif not counts or any(n < 1 or n > 20000 for n in counts):
        ap.error("--services: each count must be 1 .. 20000 (or 0 alone: the idle RSS only)")
    if args.tact < 1 or args.steady <= 0 or args.failover_rounds < 0 or args.soak < 0 or \
            args.sample <= 0 or args.quota < 0 or args.idle_rss < 0:
        ap.error("--tact >= 1, --steady > 0, --sample > 0; --failover-rounds, --soak, "
                 "--quota, --idle-rss >= 0")
    if not counts and not args.idle_rss:
        ap.error("--services 0 measures the idle RSS alone: do not give --idle-rss 0")
    if args.soak and len(counts) != 1:
        ap.error("--soak runs one N: give --services N")
    if args.csv and not args.soak:
        ap.error("--csv writes the soak samples: use it with --soak")
    for b in ("dhaf-node", "dhaf-prober", "dhaf-bench-httpd"):
        if not os.access(os.path.join(args.bin_dir, b), os.X_OK):
            print(f"bench/scale: {args.bin_dir}/{b} not found; run `make build` first",
                  file=sys.stderr)
            return 2

    def on_term(_sig, _frame):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    nofile = raise_nofile()
    print(f"bench/scale: {build_info(args.bin_dir)}")
    print(f"machine: {os.cpu_count()} cores; targets: dhaf-bench-httpd, one listening socket per "
          f"address, listen backlog {LISTEN_BACKLOG} (net.core.somaxconn "
          f"{sysctl('net.core.somaxconn')}, tcp_max_syn_backlog "
          f"{sysctl('net.ipv4.tcp_max_syn_backlog')}); RLIMIT_NOFILE {nofile} for every process; "
          f"etcd data in {tempfile.gettempdir()}", flush=True)

    rng = random.Random(args.seed)
    runs = []
    idle = None
    broke = None
    interrupted = 0
    current = None
    t_all = time.monotonic()
    try:
        if args.idle_rss:
            idle = IdleRss(args)
            current = idle
            progress(f"bench/scale: idle RSS with examples/config-n1.dhaf ({args.idle_rss:.0f} s)")
            try:
                idle.run(args.idle_rss)
            except (BrokenRun, RuntimeError, OSError, ValueError) as e:
                idle.failed = broke = f"{type(e).__name__}: {e}"
            finally:
                shielded(idle.close)
                current = None
            idle.report()
        for n in counts:
            run = ScaleRun(args, n, rng, quota=args.quota or None)
            current = run
            runs.append(run)
            t0 = time.monotonic()
            try:
                progress(f"bench/scale: N={n}: starting etcd, targets, 3 nodes, 2 probers in "
                         f"{run.workdir}")
                run.header()
                run.setup()
                run.wait_settled()
                if args.soak:
                    progress(f"bench/scale: N={n}: soak for {args.soak:.0f} s, a sample every "
                             f"{args.sample:.0f} s")
                    print(f"soak for {args.soak:.0f} s, etcd --quota-backend-bytes "
                          f"{args.quota or 'default (2 GiB)'}; a sample every "
                          f"{args.sample:.0f} s:", flush=True)
                    run.run_steady(args.soak, args.sample)
                    run.report_steady()
                    run.report_soak()
                else:
                    progress(f"bench/scale: N={n}: settled in {run.settle_s:.1f} s; steady "
                             f"state for {args.steady:.0f} s")
                    run.run_steady(args.steady)
                    run.report_steady()
                    if args.failover_rounds:
                        run.run_rounds(args.failover_rounds)
                        run.report_rounds()
            except (BrokenRun, RuntimeError, OSError, ValueError) as e:
                run.failed = broke = f"{type(e).__name__}: {e}"
                run.report_rounds()
                run.report_soak()
                print(f"  RUN BROKE: {run.failed}", flush=True)
            finally:
                shielded(run.close)
                current = None
            if args.csv:
                run.write_csv(args.csv)
            progress(f"bench/scale: N={n} took {time.monotonic() - t0:.0f} s")
            if run.failed:
                break
    except KeyboardInterrupt:
        interrupted = 130
    except SystemExit as e:
        interrupted = e.code if isinstance(e.code, int) else 1
    finally:
        if current is not None:
            shielded(current.close)
    if runs and not args.soak:
        summary(runs, idle)
    progress(f"bench/scale: done in {time.monotonic() - t_all:.0f} s")
    if interrupted:
        print("interrupted")
        return interrupted
    return 1 if broke else 0


if __name__ == "__main__":
    sys.exit(main())
