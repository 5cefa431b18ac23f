#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""`make demo`: a whole dhaf cluster on this machine's loopback, and a short story told on it.

Starts, in a temporary directory (mktemp -d): a real etcd, three dhaf nodes, one remote
dhaf-prober, two web backends (entry points ep-1 on 127.0.0.11 and ep-2 on 127.0.0.12) and an
exec switcher that rewrites a hosts-style file (<tmp>/hosts: "127.0.0.11 site.demo"). Then:
failover when the primary stops, switching back when it returns, a switchover (pinned) and its
purge, each with the time it took; then it keeps running until Ctrl-C (SIGINT) or SIGTERM,
stops everything and removes the temporary directory.

usage: scripts/demo.py [--bin DIR] [--once] [--keep]
  --bin DIR   where dhaf-node, dhaf-prober and dhafctl are (default: build/bin)
  --once      stop after the story (also DEMO_ONCE=1)
  --keep      keep the temporary directory (also DEMO_KEEP=1; DEMO_KEEP=0 never keeps it;
              by default it is kept only when the demo fails, for its logs)
On a terminal it shows a live view (dhafctl status-services and the hosts file, refreshed once
a second) and pauses DEMO_PAUSE seconds (default 3) between steps; without one it prints plain
lines. Exit: 0 after Ctrl-C / SIGTERM / --once, 1 when something failed (the message names the
log files to read). Standard library only.
"""
import argparse
import ctypes
import http.client
import json
import os
import platform
import secrets
import shutil
import signal
import socket
import string
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TEMPLATES = os.path.join(ROOT, "examples", "demo")
ETCD = os.environ.get("DEMO_ETCD", "/usr/bin/etcd")
SERVICE, DOMAIN = "site", "site.demo"
EPS = [("ep-1", "127.0.0.11"), ("ep-2", "127.0.0.12")]
IP_OF = dict(EPS)
EP_OF = {ip: name for name, ip in EPS}
NODES = ["node-1", "node-2", "node-3"]
PROBER = "probe-1"
PORT_ATTEMPTS = 5  # a port taken between our pick and the process's bind: pick again

# ---------------------------------------------------------------------------------------------
# Processes: each in its own process group (a Ctrl-C on the terminal reaches only this script,
# which then stops them in order) and with PR_SET_PDEATHSIG (they get SIGTERM if this script
# dies without cleaning up, even by SIGKILL). Every command line contains the work dir, so a
# last sweep of /proc finds anything left.

_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1
_PARENT = os.getpid()


def _child_setup():
    os.setpgid(0, 0)
    _LIBC.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != _PARENT:  # the parent died before prctl took effect
        os._exit(1)


class DemoError(Exception):
    """A step failed; logs are the files worth reading."""

    def __init__(self, message, logs=()):
        super().__init__(message)
        self.logs = [l for l in logs if l]


class Stop(BaseException):
    """SIGINT, SIGTERM or SIGHUP arrived (a BaseException: no `except Exception` swallows it)."""


def _on_signal(sig, _frame):
    # Ignore further signals at once: `timeout` sends SIGINT to the child and to its group, and
    # a second Ctrl-C must not interrupt the clean-up.
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, signal.SIG_IGN)
    raise Stop(signal.Signals(sig).name)


class Proc:
    """One child process with its log file in the work dir."""

    def __init__(self, name, argv, log, cwd):
        self.name, self.argv, self.log, self.cwd = name, argv, log, cwd
        self.p = None
        self.expected = False  # True while it should be running

    def start(self):
        with open(self.log, "ab") as log:
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                      cwd=self.cwd, preexec_fn=_child_setup, env=_child_env())
        self.expected = True
        return self

    def running(self):
        return self.p is not None and self.p.poll() is None

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def signal(self, sig):
        self.expected = False
        if self.running():
            try:
                self.p.send_signal(sig)
            except ProcessLookupError:
                pass

    def wait(self, timeout):
        """Waits until it exited; SIGKILL after timeout seconds. Returns the exit code."""
        if self.p is None:
            return None
        try:
            return self.p.wait(max(timeout, 0.01))
        except subprocess.TimeoutExpired:
            self.p.kill()
            return self.p.wait()

    def stop(self, timeout=5):
        self.signal(signal.SIGTERM)
        return self.wait(timeout)


def _child_env():
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ETCD_", "ETCDCTL_", "DHAF_"))}
    if platform.machine() in ("aarch64", "arm64"):
        env["ETCD_UNSUPPORTED_ARCH"] = "arm64"  # etcd 3.4 refuses arm64 without it
    return env


_HANDED_OUT = set()


def free_port(host="127.0.0.1"):
    """A port free right now on host, never one handed out before in this run. Another program
    may still take it before our process binds it: every start checks and picks again."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def tcp_open(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def tail(path, n=15):
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-n:]
    except OSError:
        return []


def in_log(path, *needles):
    text = "\n".join(tail(path, 50)).lower()
    return any(n in text for n in needles)


def fmt_s(seconds):
    return f"{seconds:.2f} s"


# ---------------------------------------------------------------------------------------------
# Output: plain lines without a terminal; on a terminal a frame redrawn once a second (the story
# so far, `dhafctl status-services`, the hosts file).

class Screen:
    def __init__(self, tty, pause):
        self.tty = tty
        self.pause_s = pause
        self.story = []  # the narration, kept to redraw it with every frame
        self.view = None  # callable returning the live view's lines, once the cluster exists
        self.footer = []
        self.last = 0.0
        color = tty and not os.environ.get("NO_COLOR")
        self.bold = (lambda s: f"\033[1m{s}\033[0m") if color else (lambda s: s)

    def say(self, text="", step=False):
        """One line of the story; step lines are the headlines (kept when room is short)."""
        self.story.append((self.bold(text) if step else text, step))
        if self.tty:
            self.draw(force=True)
        else:
            print(text, flush=True)

    def plain(self, text=""):
        """A line printed as is, also on a terminal (errors, the shutdown)."""
        print(text, flush=True)

    def recap(self):
        """On a terminal, the headlines once more below the last frame, for the scrollback."""
        if self.tty and self.story:
            for line, step in self.story:
                if step:
                    self.plain(line)

    def tick(self):
        if self.tty and time.monotonic() - self.last >= 1.0:
            self.draw()

    def draw(self, force=False):
        if not self.tty or (not force and time.monotonic() - self.last < 1.0):
            return
        self.last = time.monotonic()
        cols, rows = shutil.get_terminal_size((100, 40))
        footer = self.footer
        view = self.view(False) if self.view else []
        if len(view) + len(footer) + 8 > rows and self.view:  # a small terminal
            view, footer = self.view(True), footer[:2]
        room = max(3, rows - 1 - len(view) - len(footer) - (1 if view else 0))
        story = [line for line, _ in self.story]
        if len(story) > room:  # the headlines only, then the latest of them
            story = [line for line, step in self.story if step]
            if len(story) > room:
                story = story[len(story) - room:]
        lines = story + ([""] + view if view else []) + footer
        out = ["\033[H"]
        for line in lines[:rows - 1]:
            out.append(_cut(line, cols) + "\033[K\n")
        out.append("\033[J")
        sys.stdout.write("".join(out))
        sys.stdout.flush()

    def pause(self):
        """Lets a watcher read the view between steps (terminal only)."""
        if not self.tty:
            return
        end = time.monotonic() + self.pause_s
        while time.monotonic() < end:
            self.draw()
            time.sleep(0.05)


def _cut(line, cols):
    """Cuts a line to the terminal's width (escape sequences do not count)."""
    visible, out, i = 0, [], 0
    while i < len(line):
        if line[i] == "\033":
            j = line.find("m", i)
            j = len(line) - 1 if j < 0 else j
            out.append(line[i:j + 1])
            i = j + 1
            continue
        if visible >= cols - 1:
            break
        out.append(line[i])
        visible += 1
        i += 1
    return "".join(out)


# ---------------------------------------------------------------------------------------------

class Demo:
    def __init__(self, bin_dir, screen, keep):
        self.bin = bin_dir
        self.screen = screen
        self.keep = keep
        self.workdir = None
        self.procs = []  # every Proc ever started, for the clean-up
        self.etcd = None
        self.nodes = {}  # name -> Proc, with .grpc_port, .rest_port, .config
        self.prober = None
        self.backends = {}  # ep name -> Proc
        self.api_token = secrets.token_hex(16)
        self.prober_token = secrets.token_hex(16)

    # -- helpers ------------------------------------------------------------------------------

    def path(self, *parts):
        return os.path.join(self.workdir, *parts)

    def logs_of(self, *procs):
        return [p.log for p in procs if p is not None]

    def all_logs(self):
        return self.logs_of(self.etcd, *self.nodes.values(), self.prober, *self.backends.values())

    def check_children(self):
        for p in self.procs:
            if p.expected and not p.running():
                p.expected = False
                raise DemoError(f"{p.name} (pid {p.pid}) exited unexpectedly with code "
                                f"{p.p.returncode}", [p.log])

    def wait(self, what, fn, timeout, logs=(), interval=0.02):
        """Polls fn until it returns a true value (returned), with a deadline; meanwhile checks
        that every process still runs and keeps the terminal view fresh."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            try:
                value = fn()
                if value:
                    return value
            except DemoError:
                raise
            except Exception as e:  # a process that is still starting may refuse
                last = e
            self.check_children()
            if time.monotonic() >= deadline:
                extra = f" (last error: {last})" if last else ""
                raise DemoError(f"timed out after {timeout:g} s waiting for {what}{extra}",
                                logs or self.all_logs())
            self.screen.tick()
            time.sleep(interval)

    def ctl(self, *args, json_out=False, timeout=5):
        """dhafctl against node-1 (address and token from its config). Returns stdout; raises
        RuntimeError with dhafctl's message when it fails."""
        node = self.nodes["node-1"]
        argv = [os.path.join(self.bin, "dhafctl"), *args, "--config", node.config,
                "--timeout", "2"] + (["-o", "json"] if json_out else [])
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, env=_child_env())
        if r.returncode != 0:
            raise RuntimeError((r.stderr or r.stdout).strip() or f"dhafctl exit {r.returncode}")
        return json.loads(r.stdout) if json_out else r.stdout

    def service(self):
        st = self.ctl("status-services", json_out=True)
        svcs = st.get("services", st) if isinstance(st, dict) else st
        return next(s for s in svcs if s.get("name") == SERVICE)

    def hosts(self):
        """(ip, mtime in ns) of site.demo in the hosts file, or (None, None)."""
        try:
            with open(self.path("hosts")) as f:  # replaced by rename: stat what was opened
                st = os.fstat(f.fileno())
                for line in f:
                    fields = line.split("#", 1)[0].split()
                    if len(fields) >= 2 and DOMAIN in fields[1:]:
                        return fields[0], st.st_mtime_ns
        except OSError:
            pass
        return None, None

    def wait_hosts(self, ep, timeout, t0_wall):
        """Waits until the hosts file points to ep and the service state says so too; returns
        the seconds from t0_wall (time.time()) to the file's rewrite."""
        ip = IP_OF[ep]

        def switched():
            got, mtime = self.hosts()
            if got != ip:
                return None
            return mtime if self.service().get("current_entry_point") == ep else None
        leader = self.leader_proc()
        mtime = self.wait(f"site.demo to point to {ep} ({ip}) in {self.path('hosts')}",
                          switched, timeout, self.logs_of(leader) if leader else ())
        return max(0.0, mtime / 1e9 - t0_wall)

    def leader_proc(self):
        try:
            return self.nodes.get(self.ctl("status-dhaf", json_out=True).get("leader"))
        except Exception:
            return None

    def via_hosts(self):
        """GET http://site.demo:PORT/ with site.demo resolved by the hosts file."""
        ip, _ = self.hosts()
        conn = http.client.HTTPConnection(ip, self.backend_port, timeout=2)
        try:
            conn.request("GET", "/", headers={"Host": f"{DOMAIN}:{self.backend_port}"})
            r = conn.getresponse()
            return f'GET http://{DOMAIN}:{self.backend_port}/ -> {ip} (hosts file): ' \
                   f'{r.status} "{r.read().decode(errors="replace").strip()}"'
        finally:
            conn.close()

    def last_event(self, kind):
        evs = self.ctl("events", "-s", SERVICE, "-n", "20", json_out=True)
        evs = evs.get("events", evs) if isinstance(evs, dict) else evs
        return next((e for e in evs if e.get("kind") == kind), None)

    def live_view(self, compact=False):
        """The terminal's live view: leader, dhafctl status-services, the hosts file. Compact
        (for a small terminal): the entry-point table without the summary table."""
        out = []
        try:
            st = self.ctl("status-dhaf", json_out=True)
            healthy = [n["name"] for n in st.get("nodes", []) if n.get("healthy")]
            probers = [p["name"] for p in st.get("probers", []) if p.get("healthy")]
            out.append(f"cluster {st.get('cluster')}: leader {st.get('leader') or '(none)'}, "
                       f"epoch {st.get('epoch')}; nodes up: {' '.join(healthy) or '-'}; "
                       f"probers: {' '.join(probers) or '-'}")
        except Exception as e:
            out.append(f"(no answer from node-1 yet: {str(e)[:70]})")
        out.append("$ dhafctl status-services")
        try:
            lines = [l for l in self.ctl("status-services").splitlines()
                     if l.strip() and not l.startswith("=====")]
            if compact:
                at = next((i for i, l in enumerate(lines) if "-> Entry points" in l), 0)
                lines = lines[at:]
            out += lines
        except Exception as e:
            out.append(f"  ({str(e)[:90]})")
        out.append(f"$ cat {self.path('hosts')}")
        try:
            with open(self.path("hosts")) as f:
                out += f.read().splitlines() or ["(empty)"]
        except OSError:
            out.append("(no hosts file yet: no switch so far)")
        return out

    # -- setup --------------------------------------------------------------------------------

    def check_prerequisites(self):
        missing = [p for p in (os.path.join(self.bin, b)
                               for b in ("dhaf-node", "dhaf-prober", "dhafctl"))
                   if not os.access(p, os.X_OK)]
        if missing:
            raise DemoError(f"{', '.join(missing)} not found: run `make build` first "
                            f"(or pass --bin DIR)")
        if not os.access(ETCD, os.X_OK):
            raise DemoError(f"{ETCD} not found: run `make deps` (scripts/install-deps.sh "
                            f"installs etcd-server)")

    def make_workdir(self):
        self.workdir = tempfile.mkdtemp(prefix="dhaf-demo.")
        for script in ("hosts-switch.sh", "hosts-init.sh", "backend.py"):
            dst = self.path(script)
            shutil.copyfile(os.path.join(TEMPLATES, script), dst)
            os.chmod(dst, 0o755)
        with open(self.path("hosts"), "w") as f:
            f.write("# site.demo: no entry point yet (the leader's first switch writes it)\n")

    def render(self, template, out, **values):
        with open(os.path.join(TEMPLATES, template)) as f:
            text = string.Template(f.read()).substitute(values)
        with open(out, "w") as f:
            f.write(text)
        os.chmod(out, 0o600)  # it holds the tokens

    def add(self, proc):
        self.procs.append(proc)
        return proc

    def start_etcd(self):
        data = self.path("etcd-data")
        for attempt in range(PORT_ATTEMPTS):
            cport, pport = free_port(), free_port()
            peer, client = f"http://127.0.0.1:{pport}", f"http://127.0.0.1:{cport}"
            p = self.add(Proc("etcd", [
                ETCD, "--name", "demo", "--data-dir", data,
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"demo={peer}",
                "--heartbeat-interval", "25", "--election-timeout", "250"],
                self.path("etcd.log"), self.workdir))
            p.start()
            # healthy() reports an exit at start itself (with a retry on a taken port), so the
            # generic "exited unexpectedly" check must not race it.
            p.expected = False

            def healthy():
                if not p.running():
                    return "exited"
                with urllib.request.urlopen(f"{client}/health", timeout=1) as r:
                    return json.loads(r.read()).get("health") == "true"
            state = self.wait(f"etcd to answer on 127.0.0.1:{cport}", healthy, 20, [p.log])
            if state is True:
                p.expected = True
                self.etcd, self.etcd_port = p, cport
                return
            p.expected = False
            shutil.rmtree(data, ignore_errors=True)
            if attempt + 1 == PORT_ATTEMPTS or not in_log(p.log, "address already in use"):
                raise DemoError(f"etcd exited at start (code {p.p.returncode})", [p.log])

    def write_node_config(self, proc):
        proc.grpc_port, proc.rest_port = free_port(), free_port()
        self.render("node.dhaf.in", proc.config, node=proc.name, grpc_port=proc.grpc_port,
                    rest_port=proc.rest_port, api_token=self.api_token, etcd_port=self.etcd_port,
                    workdir=self.workdir, backend_port=self.backend_port,
                    prober_token=self.prober_token)

    def start_nodes(self):
        bin_node = os.path.join(self.bin, "dhaf-node")
        for name in NODES:
            config = self.path(f"{name}.dhaf")
            p = self.add(Proc(name, [bin_node, "--config", config], self.path(f"{name}.log"),
                              self.workdir))
            p.config, p.attempts = config, 1
            self.write_node_config(p)
            check = subprocess.run([bin_node, "--check-config", "--config", config],
                                   capture_output=True, text=True, timeout=10)
            if check.returncode != 0:
                raise DemoError(f"the generated {config} is invalid:\n{check.stdout}"
                                f"{check.stderr}")
            self.nodes[name] = p.start()

    def restart_port_clashes(self):
        """A node that could not bind its API port gets new ports and another start."""
        for name, p in list(self.nodes.items()):
            if p.expected and not p.running() and p.attempts < PORT_ATTEMPTS and \
                    in_log(p.log, "cannot listen", "address in use"):
                fresh = self.add(Proc(name, p.argv, p.log, self.workdir))
                fresh.config, fresh.attempts = p.config, p.attempts + 1
                p.expected = False
                self.write_node_config(fresh)
                self.nodes[name] = fresh.start()

    def start_backend(self, ep, port):
        p = self.add(Proc(f"backend {ep}", ["/usr/bin/python3", self.path("backend.py"), ep,
                                            IP_OF[ep], str(port)],
                          self.path(f"backend-{ep}.log"), self.workdir))
        p.start()

        def listening():
            if not p.running():
                return "exited"
            return tcp_open(IP_OF[ep], port)
        if self.wait(f"the {ep} backend to listen on {IP_OF[ep]}:{port}", listening, 10,
                     [p.log]) is True:
            self.backends[ep] = p
            return True
        p.expected = False
        return False

    def start_backends(self):
        for _attempt in range(PORT_ATTEMPTS):
            port = free_port(IP_OF["ep-1"])
            if self.start_backend("ep-1", port):
                if self.start_backend("ep-2", port):
                    self.backend_port = port
                    return
                self.backends.pop("ep-1").stop()
        raise DemoError(f"could not start the two backends on one free port "
                        f"({PORT_ATTEMPTS} tries)",
                        [self.path("backend-ep-1.log"), self.path("backend-ep-2.log")])

    def start_prober(self):
        config = self.path(f"{PROBER}.prober")
        self.render("probe-1.prober.in", config, prober_token=self.prober_token,
                    nodes=", ".join(f"127.0.0.1:{n.grpc_port}" for n in self.nodes.values()))
        bin_prober = os.path.join(self.bin, "dhaf-prober")
        check = subprocess.run([bin_prober, "--check-config", "--config", config],
                               capture_output=True, text=True, timeout=10)
        if check.returncode != 0:
            raise DemoError(f"the generated {config} is invalid:\n{check.stdout}{check.stderr}")
        self.prober = self.add(Proc(PROBER, [bin_prober, "--config", config],
                                    self.path(f"{PROBER}.log"), self.workdir))
        self.prober.start()

    # -- the story ----------------------------------------------------------------------------

    def run_story(self):
        s = self.screen
        say = s.say
        self.check_prerequisites()
        self.make_workdir()
        say("dhaf demo: a three-node dhaf cluster on this machine's loopback", step=True)
        say(f"  work dir  {self.workdir}  (configs and *.log; removed at the end)")

        # 1. cluster up
        t_start = time.monotonic()
        self.start_backends()
        self.start_etcd()
        t_etcd = time.monotonic() - t_start
        wall_nodes = time.time()
        self.start_nodes()
        s.view = self.live_view

        def cluster_up():
            self.restart_port_clashes()
            st = self.ctl("status-dhaf", json_out=True)
            up = [n for n in st.get("nodes", []) if n.get("healthy")]
            return st if st.get("leader") and len(up) == len(NODES) else None
        st = self.wait("a leader and 3 healthy nodes (dhafctl status-dhaf)", cluster_up, 30,
                       self.logs_of(*self.nodes.values()))
        leader = st["leader"]
        t_leader = max(0.0, st.get("leader_since_ms", wall_nodes * 1000) / 1000 - wall_nodes)
        t0 = time.monotonic()
        self.start_prober()
        self.wait(f"{PROBER}'s vote to be counted (4 voters in dhafctl status-services)",
                  lambda: all(e.get("voters") == 4 for e in self.service()["entry_points"]), 20,
                  self.logs_of(self.prober, *self.nodes.values()))
        t_prober = time.monotonic() - t0
        total = time.monotonic() - t_start
        say(f"[1/7] cluster up in {fmt_s(total)}: etcd {fmt_s(t_etcd)}, leader {leader} elected "
            f"{fmt_s(t_leader)} after the nodes started, {PROBER} voting after "
            f"{fmt_s(t_prober)}", step=True)
        say(f"      etcd 127.0.0.1:{self.etcd_port}; nodes "
            + ", ".join(f"{n} 127.0.0.1:{p.grpc_port}" for n, p in self.nodes.items())
            + f" (gRPC); remote prober {PROBER}")
        say(f"      backends: ep-1 http://127.0.0.11:{self.backend_port}/ (primary), "
            f"ep-2 http://127.0.0.12:{self.backend_port}/; every voter checks both each second")
        say(f"      switcher: exec, rewrites {self.path('hosts')} (\"127.0.0.11 site.demo\"). "
            f"In production this would be Cloudflare DNS (the cloudflare switcher sets "
            f"site.demo's A record); a file lets you watch it with cat.")
        s.pause()

        # 2. traffic on ep-1
        self.wait_hosts("ep-1", 15, wall_nodes)
        _, mtime = self.hosts()
        t_first = max(0.0, mtime / 1e9 - st.get("leader_since_ms", wall_nodes * 1000) / 1000)
        say(f"[2/7] traffic on ep-1 (primary): {leader} wrote the hosts file {fmt_s(t_first)} "
            f"after it was elected", step=True)
        say(f"      {self.via_hosts()}")
        s.pause()

        # 3. the primary stops: failover
        t0 = time.time()
        self.backends["ep-1"].stop()
        took = self.wait_hosts("ep-2", 15, t0)
        svc = self.service()
        ep1 = next(e for e in svc["entry_points"] if e["name"] == "ep-1")
        ev = self.last_event("failover") or {}
        say(f"[3/7] stopped ep-1's backend -> failover to ep-2 in {fmt_s(took)} (backend "
            f"stopped -> hosts file rewritten)", step=True)
        # reasons: "voter: code text" items; show each distinct "code text" once
        reasons = sorted({item.split(": ", 1)[-1].strip()
                          for r in ep1.get("reasons") or [] for item in str(r).split("; ")})
        say(f"      ep-1 down for {ep1.get('votes_unhealthy')} of {ep1.get('voters')} voters "
            f"({'; '.join(reasons) or 'no reason given'}); event: "
            f"{ev.get('message', '?').split('; ')[0]}")
        say(f"      {self.via_hosts()}")
        s.pause()

        # 4. it comes back: switching back
        self.wait(f"port {self.backend_port} on 127.0.0.11 to be free again",
                  lambda: not tcp_open("127.0.0.11", self.backend_port), 5)
        if not self.start_backend("ep-1", self.backend_port):
            raise DemoError("could not start ep-1's backend again", [self.path("backend-ep-1.log")])
        t0 = time.time()
        took = self.wait_hosts("ep-1", 15, t0)
        say(f"[4/7] started ep-1's backend again -> switching back to ep-1 in {fmt_s(took)} "
            f"(backend answering -> hosts file rewritten)", step=True)
        say(f"      {self.via_hosts()}")
        s.pause()

        # 5. switchover, pinned
        t0 = time.time()
        reply = self.ctl("switchover-to", "ep-2", "-s", SERVICE).strip()
        took = self.wait_hosts("ep-2", 15, t0)
        say(f"[5/7] dhafctl switchover-to ep-2 -s {SERVICE} -> moved to ep-2 in {fmt_s(took)} "
            f"(command -> hosts file rewritten)", step=True)
        say(f"      dhafctl: {reply}")
        t_pin = time.monotonic()
        self.wait("3 s of the pin holding", lambda: time.monotonic() - t_pin >= 3, 5,
                  interval=0.1)
        svc = self.service()
        ip, _ = self.hosts()
        if ip != IP_OF["ep-2"] or svc.get("switchover_requirement") != "ep-2":
            raise DemoError(f"the switchover did not stay pinned (hosts: {ip}, request: "
                            f"{svc.get('switchover_requirement')!r})", self.all_logs())
        say(f"      pinned: ep-1 is healthy and first, yet traffic stayed on ep-2 for "
            f"{fmt_s(time.monotonic() - t_pin)} (the request stays until purged)")
        s.pause()

        # 6. purge: back to ep-1
        t0 = time.time()
        reply = self.ctl("switchover-purge", "-s", SERVICE).strip()
        took = self.wait_hosts("ep-1", 15, t0)
        say(f"[6/7] dhafctl switchover-purge -s {SERVICE} -> back to ep-1 in {fmt_s(took)} "
            f"(command -> hosts file rewritten)", step=True)
        say(f"      dhafctl: {reply}")
        s.pause()

        # 7. the history
        t0 = time.monotonic()
        table = self.ctl("events", "-s", SERVICE, "-n", "12")
        say(f"[7/7] dhafctl events -s {SERVICE}: the history kept in etcd, newest first "
            f"(answered in {fmt_s(time.monotonic() - t0)})", step=True)
        for line in table.splitlines():
            if line.strip() and not line.startswith("Events ("):
                say(f"      {line}")
        say(f"The story is over ({fmt_s(time.monotonic() - t_start)} since the start): failover, "
            f"switching back, switchover and purge, each timed above.", step=True)
        s.pause()

    def live(self, once):
        s = self.screen
        node1 = self.nodes["node-1"]
        if once:
            s.say("--once: stopping now.")
            return
        if not s.tty:
            s.say(f"The cluster keeps running. Try: {os.path.join(self.bin, 'dhafctl')} "
                  f"status-services --config {node1.config}")
        s.footer = ["", s.bold("Live view, refreshed every second. Press Ctrl-C to stop."),
                    f"In another terminal: {os.path.join(self.bin, 'dhafctl')} status-dhaf "
                    f"--config {node1.config}"]
        s.say("Press Ctrl-C to stop (everything started is stopped and the work dir removed).")
        while True:  # until a signal raises Stop
            for p in self.procs:
                if p.expected and not p.running():
                    p.expected = False
                    s.say(f"note: {p.name} exited (code {p.p.returncode}); see {p.log}")
            s.draw()
            time.sleep(0.2)

    # -- clean-up -----------------------------------------------------------------------------

    def shutdown(self, failed):
        """Stops everything in order (prober, nodes with SIGTERM, backends, etcd), sweeps any
        process still naming the work dir, removes the work dir. Never raises."""
        for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(s, signal.SIG_IGN)
        t0 = time.monotonic()
        stopped = []
        try:
            if self.prober and self.prober.running():
                self.prober.stop(5)
                stopped.append("the prober")
            nodes = [p for p in self.procs if p.name.startswith("node-") and p.running()]
            for p in nodes:  # all at once: each revokes its leases and exits within 2 s
                p.signal(signal.SIGTERM)
            deadline = time.monotonic() + 5
            for p in nodes:
                p.wait(deadline - time.monotonic())
            if nodes:
                stopped.append(f"{len(nodes)} nodes")
            rest = [p for p in self.procs if p.name.startswith("backend") and p.running()]
            for p in rest:
                p.stop(5)
            if rest:
                stopped.append(f"{len(rest)} backends")
            etcd = [p for p in self.procs if p.name == "etcd" and p.running()]
            for p in etcd:
                p.stop(10)
            if etcd:
                stopped.append("etcd")
            for p in self.procs:  # anything else, however it got here
                if p.running():
                    p.p.kill()
                    p.p.wait()
        except Exception as e:  # keep cleaning
            self.screen.plain(f"demo: clean-up: {e}")
        swept = self.sweep()
        keep = self.keep if self.keep is not None else failed
        where = ""
        if self.workdir:
            if keep:
                shutil.rmtree(self.path("etcd-data"), ignore_errors=True)
                where = f"; kept {self.workdir} (logs: *.log)"
            else:
                shutil.rmtree(self.workdir, ignore_errors=True)
                where = f"; removed {self.workdir}"
        if stopped or self.workdir:
            self.screen.plain(f"Stopped {', '.join(stopped) or 'nothing'} in "
                              f"{fmt_s(time.monotonic() - t0)}"
                              + (f", killed {swept} stray process(es)" if swept else "")
                              + where + ".")

    def sweep(self):
        """Kills any process whose command line names the work dir (a switcher script left by
        a killed node, say). Returns how many."""
        if not self.workdir:
            return 0
        n = 0
        me = os.getpid()
        for pid in os.listdir("/proc"):
            if not pid.isdigit() or int(pid) == me:
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if self.workdir in cmd:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    n += 1
                except OSError:
                    pass
        return n


def main():
    ap = argparse.ArgumentParser(description="The local dhaf demo cluster (make demo).")
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "bin"))
    ap.add_argument("--once", action="store_true", default=os.environ.get("DEMO_ONCE") == "1")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    keep = True if args.keep else {"1": True, "0": False}.get(os.environ.get("DEMO_KEEP", ""))

    sys.stdout.reconfigure(line_buffering=True)
    tty = sys.stdout.isatty() and os.environ.get("TERM", "dumb") != "dumb"
    try:
        pause = float(os.environ.get("DEMO_PAUSE", "3" if tty else "0"))
    except ValueError:
        pause = 3.0 if tty else 0.0
    screen = Screen(tty, pause)
    demo = Demo(os.path.abspath(args.bin), screen, keep)
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)

    rc = 0
    try:
        if tty:
            sys.stdout.write("\033[H\033[2J")
        demo.run_story()
        demo.live(args.once)
    except Stop as e:
        screen.plain(f"\n{e} received: stopping the demo.")
        screen.recap()
    except DemoError as e:
        rc = 1
        screen.plain(f"\ndemo failed: {e}")
        for log in e.logs:
            lines = tail(log, 12)
            screen.plain(f"--- last lines of {log} ---")
            for line in lines or ["(empty)"]:
                screen.plain(f"  {line}")
        if e.logs and demo.keep is not False:
            screen.plain("(the logs stay in the work dir; DEMO_KEEP=0 removes them)")
    except Exception as e:  # a bug here must still stop every process
        rc = 1
        import traceback
        traceback.print_exc()
        screen.plain(f"demo failed: {type(e).__name__}: {e}")
    finally:
        demo.shutdown(failed=rc != 0)
    return rc


if __name__ == "__main__":
    sys.exit(main())
