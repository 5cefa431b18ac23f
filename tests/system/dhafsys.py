# SPDX-License-Identifier: MIT
"""System-test harness: real etcd and real dhaf processes on loopback, polled with deadlines.

Used by the tests in tests/system/ and the benchmarks in bench/. Standard library only, so it
runs under /usr/bin/python3 with nothing else installed.
"""
import base64
import json
import os
import sys
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ETCD = os.environ.get("DHAF_TEST_ETCD", "/usr/bin/etcd")
ETCDCTL = os.environ.get("DHAF_TEST_ETCDCTL", "/usr/bin/etcdctl")


PROTO_DIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                         "proto"))
_STUB_DIRS = {}


def grpc_stub_dir(name):
    """A folder (removed at exit) holding dhaf/v1/<name>_pb2.py and _pb2_grpc.py, generated
    from proto/dhaf/v1/<name>.proto with protoc and grpc_python_plugin; for Python grpcio
    clients ("dhaf" or "prober"). Add it to sys.path (or a client script's) to import them."""
    if name not in _STUB_DIRS:
        import atexit
        out = tempfile.mkdtemp(prefix=f"dhaf-py-{name}-")
        atexit.register(shutil.rmtree, out, True)
        subprocess.run(["protoc", f"-I{PROTO_DIR}", f"--python_out={out}", f"--grpc_out={out}",
                        "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin",
                        os.path.join(PROTO_DIR, "dhaf", "v1", f"{name}.proto")], check=True)
        _STUB_DIRS[name] = out
    return _STUB_DIRS[name]


def grpc_or_skip(bin_dir, *programs):
    """The grpc module, once bin_dir holds every program named (and Debian's python3-grpcio is
    importable); otherwise says why and exits 77, which ctest reports as skipped."""
    try:
        import grpc
    except ImportError:
        print("skipped: python3-grpcio is not installed (run with /usr/bin/python3)")
        sys.exit(77)
    for prog in programs:
        if not os.path.exists(os.path.join(bin_dir, prog)):
            print(f"skipped: no {bin_dir}/{prog}")
            sys.exit(77)
    return grpc


def grpc_modules(name):
    """(dhaf.v1.<name>_pb2, dhaf.v1.<name>_pb2_grpc), generated (grpc_stub_dir) and imported."""
    import importlib
    d = grpc_stub_dir(name)
    if d not in sys.path:
        sys.path.insert(0, d)
    return (importlib.import_module(f"dhaf.v1.{name}_pb2"),
            importlib.import_module(f"dhaf.v1.{name}_pb2_grpc"))


def web_service_yaml(ips, port, name="web",
                     switcher="{type: exec, init: /bin/true, switch: /bin/true, timeout: 2}"):
    """A services: list with one service of entry points ep-1, ep-2, ... on ips, checked by
    the web checker on port (/ok, timeout 1 s, no retry)."""
    eps = "".join(f"      - {{name: ep-{i + 1}, ip: {ip}}}\n" for i, ip in enumerate(ips))
    return f"""services:
  - name: {name}
    domain: site.test
    entry-points:
{eps}    switcher: {switcher}
    health-checker: {{type: web, port: {port}, path: /ok, timeout: 1, retries: 0}}
"""


def make_pki(d, clients=("client",)):
    """Test certificates in folder d: ca.pem/ca.key (a CA), server.pem/.key (for 127.0.0.1),
    <cn>.pem/.key for each client common name (client auth), all from the CA, and
    rogue.pem/.key (self-signed: a client certificate no node should take)."""
    def openssl(*args):
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
            "ca.pem", "-days", "2", "-subj", "/CN=dhaf test CA")
    exts = [("server", "subjectAltName=IP:127.0.0.1")]
    exts += [(cn, "extendedKeyUsage=clientAuth") for cn in clients]
    for name, ext in exts:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out",
                f"{name}.csr", "-subj", f"/CN={name}")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(ext + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile",
                f"{name}.ext")
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "rogue.key", "-out",
            "rogue.pem", "-days", "2", "-subj", "/CN=rogue")


_PORT_LOCKS = []  # reservations held for the life of this process
_PORT_DIR = os.path.join(tempfile.gettempdir(), "dhaf-test-ports")


def free_port():
    """A free TCP port on 127.0.0.1 for a server of this test, kept from the other tests.

    Port 0 would hand out a port of the kernel's ephemeral range, which every outgoing
    connection (etcd clients, checks) also draws from, and which a test running beside this one
    may be handed too: the node would then fail to bind, and this test would talk to another
    test's node. So: a random port below the ephemeral range, reserved with a lock file that
    this process holds until it exits, and checked free with a bind."""
    import fcntl
    import random
    os.makedirs(_PORT_DIR, exist_ok=True)
    for _ in range(200):
        port = random.randint(20000, 32000)
        fd = os.open(os.path.join(_PORT_DIR, str(port)), os.O_CREAT | os.O_RDWR, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                os.close(fd)
                continue
        _PORT_LOCKS.append(fd)
        return port
    raise RuntimeError("no free port in 20000-32000")


def terminate(proc, timeout=10):
    """SIGTERM to a child process, SIGKILL if it has not exited within timeout s; reaped."""
    if proc and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until(what, fn, timeout, interval=0.02):
    """Polls fn until it returns a true value; returns it, or raises after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # a probe may fail while things start
            last = e
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Etcd:
    """One etcd member on free loopback ports with its own data dir."""

    def __init__(self, workdir):
        self.dir = os.path.join(workdir, "etcd")
        self.client_port = free_port()
        self.peer_port = free_port()
        self.proc = None
        self.log = os.path.join(workdir, "etcd.log")
        self.endpoint = f"127.0.0.1:{self.client_port}"

    def start(self):
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.client_port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ETCD_", "ETCDCTL_"))}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [ETCD, "--name", "m0", "--data-dir", self.dir,
                 "--listen-client-urls", client, "--advertise-client-urls", client,
                 "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                 "--initial-cluster", f"m0={peer}",
                 "--heartbeat-interval", "25", "--election-timeout", "250"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        wait_until("etcd to answer", lambda: self.ctl("endpoint", "health").returncode == 0, 15)

    def stop(self):
        terminate(self.proc)
        self.proc = None

    def ctl(self, *args, timeout=10):
        env = dict(os.environ, ETCDCTL_API="3")
        return subprocess.run([ETCDCTL, f"--endpoints={self.endpoint}", "--command-timeout=3s",
                               *args], capture_output=True, text=True, env=env, timeout=timeout)

    def get_prefix(self, prefix):
        """{key: (value, lease, create_revision)} of every key under prefix."""
        r = self.ctl("get", "--prefix", prefix, "-w", "json")
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        out = {}
        for kv in json.loads(r.stdout).get("kvs", []):
            key = base64.b64decode(kv["key"]).decode()
            val = base64.b64decode(kv.get("value", "")).decode()
            out[key] = (val, int(kv.get("lease", 0)), int(kv.get("create_revision", 0)))
        return out

    def mod_revisions(self, prefix):
        """({key: mod_revision} under prefix, the store's revision), from one read."""
        r = self.ctl("get", "--prefix", prefix, "-w", "json")
        if r.returncode != 0:
            raise RuntimeError(r.stderr)
        j = json.loads(r.stdout)
        return ({base64.b64decode(kv["key"]).decode(): int(kv["mod_revision"])
                 for kv in j.get("kvs", [])}, int(j["header"]["revision"]))

    def get_json(self, key):
        r = self.ctl("get", key, "--print-value-only")
        if r.returncode != 0 or not r.stdout.strip():
            return None
        return json.loads(r.stdout.strip().splitlines()[0])


class Node:
    """One dhaf-node process with a generated config and a log file."""

    DEFAULT_SERVICES = """services:
  - name: main
    domain: foo.com
    entry-points:
      - {name: ep-1, ip: 127.0.0.11}
      - {name: ep-2, ip: 127.0.0.12}
    switcher: {type: exec, init: /bin/true, switch: /bin/true, timeout: 2}
    health-checker: {type: tcp, port: 80}
"""

    def __init__(self, cluster, name, bin_dir, workdir, etcd_endpoint, ttl=3, extra="",
                 services=None, tact=1):
        self.name = name
        self.bin = os.path.join(bin_dir, "dhaf-node")
        self.config = os.path.join(workdir, f"{name}.dhaf")
        self.log = os.path.join(workdir, f"{name}.log")
        self.proc = None
        self.grpc_port = free_port()
        self.rest_port = free_port()
        self.services = services or self.DEFAULT_SERVICES
        self.tact = tact
        self.write_config(cluster, etcd_endpoint, ttl, extra)

    def write_config(self, cluster, etcd_endpoint, ttl, extra="", log_level="info", dhaf_extra=""):
        """dhaf_extra: more lines of the dhaf: section, each indented by two spaces."""
        with open(self.config, "w") as f:
            f.write(f"""dhaf:
  cluster-name: {cluster}
  node-name: {self.name}
  heartbeat-interval: 1
  healthy-node-status-ttl: {ttl}
  tact-interval: {self.tact}
{dhaf_extra}  grpc-api: {{host: 127.0.0.1, port: {self.grpc_port}}}
  web-api: {{host: 127.0.0.1, port: {self.rest_port}}}
etcd:
  hosts: {etcd_endpoint}
  leader-key-ttl: {ttl}
log:
  level: {log_level}
{self.services}{extra}""")

    def start(self, *args):
        log = open(self.log, "ab")
        self.proc = subprocess.Popen([self.bin, "--config", self.config, *args], stdout=log,
                                     stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        return self

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        if self.alive():
            self.proc.kill()
            self.proc.wait()

    def terminate(self, timeout=5):
        """SIGTERM; returns (exit code, seconds it took)."""
        t0 = time.monotonic()
        self.proc.terminate()
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0

    def log_lines(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read().splitlines()
        except FileNotFoundError:
            return []

    def log_events(self, kind=None):
        """Parsed key=value fields of the log lines with event=kind (all events if None)."""
        out = []
        for line in self.log_lines():
            fields = parse_kv(line)
            if "event" in fields and (kind is None or fields["event"] == kind):
                out.append(fields)
        return out


def parse_kv(line):
    """Fields of one `key=value key2="quoted value"` log line."""
    fields, i, n = {}, 0, len(line)
    while i < n:
        while i < n and line[i] == " ":
            i += 1
        j = i
        while j < n and line[j] not in "= ":
            j += 1
        if j >= n or line[j] != "=":
            break
        key = line[i:j]
        j += 1
        if j < n and line[j] == '"':
            k = j + 1
            val = []
            while k < n and line[k] != '"':
                if line[k] == "\\" and k + 1 < n:
                    k += 1
                val.append(line[k])
                k += 1
            fields[key] = "".join(val)
            i = k + 1
        else:
            k = j
            while k < n and line[k] != " ":
                k += 1
            fields[key] = line[j:k]
            i = k
    return fields


class Backend:
    """tests/fakes/backend.py serving one entry point (http, or https with a cert)."""

    SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes",
                          "backend.py")

    def __init__(self, host, port=0, tls=None):
        self.host, self.port, self.tls, self.proc = host, port, tls, None

    def start(self):
        args = ["/usr/bin/python3", self.SCRIPT, "--host", self.host, "--port", str(self.port),
                "--watch-stdin"]
        if self.tls:
            args += ["--tls-cert", self.tls[0], "--tls-key", self.tls[1]]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()  # blocks until it listens (or dies)
        if not line.startswith("LISTENING"):
            raise RuntimeError(f"backend on {self.host} did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


class Prober:
    """One dhaf-prober process with a generated config."""

    def __init__(self, name, bin_dir, workdir, nodes, token, location="test"):
        self.name = name
        self.bin = os.path.join(bin_dir, "dhaf-prober")
        self.config = os.path.join(workdir, f"{name}.prober")
        self.log = os.path.join(workdir, f"{name}.log")
        self.proc = None
        with open(self.config, "w") as f:
            f.write(f"""prober:
  name: {name}
  location: {location}
  token: "{token}"
  nodes: [{", ".join(f"127.0.0.1:{n.grpc_port}" for n in nodes)}]
  timeout: 2
""")

    start = Node.start
    alive = Node.alive
    kill = Node.kill
    log_lines = Node.log_lines
    log_events = Node.log_events


class FileSwitcher:
    """An exec switcher whose switch writes the entry point into work/current (init reads it
    back): yaml is the service's switcher: value, current(service) the entry point traffic is
    on. per_service: one file per service, work/current-<service> (the exec switcher sets
    DHAF_SERVICE)."""

    def __init__(self, work, per_service=False):
        self.work, self.per_service = work, per_service
        self.file = os.path.join(work, "current-$DHAF_SERVICE" if per_service else "current")
        for name, body in (("sw-init.sh", f"#!/bin/sh\ncat {self.file} 2>/dev/null || true\n"),
                           ("sw-switch.sh", f"#!/bin/sh\necho \"$1\" > {self.file}\n")):
            with open(os.path.join(work, name), "w") as f:
                f.write(body)
            os.chmod(os.path.join(work, name), 0o755)
        self.yaml = (f"{{type: exec, init: {work}/sw-init.sh, switch: {work}/sw-switch.sh, "
                     "timeout: 2}")

    def current(self, service=None):
        path = os.path.join(self.work, f"current-{service}") if self.per_service else self.file
        try:
            with open(path) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None


def fake_call(port, path, body=None, timeout=10):
    """A test fake's control API on 127.0.0.1:port (tests/fakes/: /_fake/...): GET path, or
    POST body as JSON; the reply's JSON."""
    import urllib.request
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                 data=json.dumps(body).encode() if body is not None else None,
                                 method="POST" if body is not None else "GET",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read() or b"null")


class CloudflareFake:
    """tests/fakes/cloudflare.py on a reserved port, with the zone site.test; eps maps entry
    point names to addresses; the A record of site.test points at start_ep when given; log: the
    file where the fake writes every change (--log)."""

    TOKEN = "cf-test-token-1234"

    def __init__(self, eps, start_ep=None, log=None):
        self.eps = eps
        args = ["/usr/bin/python3", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes", "cloudflare.py"),
                "--port", str(free_port()), "--token", self.TOKEN, "--zone", "site.test",
                "--watch-stdin"]
        if log:
            args += ["--log", log]
        if start_ep:
            args += ["--record", f"site.test:A:{eps[start_ep]}:false"]
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        line = self.proc.stdout.readline()
        assert line.startswith("LISTENING"), line
        self.port = int(line.split()[1])

    def yaml(self):
        """The switcher section of a service that uses this fake."""
        return (f"{{type: cloudflare, api-token: {self.TOKEN}, zone: site.test, "
                f"api-url: http://127.0.0.1:{self.port}/client/v4}}")

    def call(self, path, body=None):
        """GET path, or POST body as JSON; the reply's JSON."""
        return fake_call(self.port, path, body, timeout=5)

    def ep_of(self, ip):
        """The entry point with address ip ("?" for another)."""
        return next((ep for ep, a in self.eps.items() if a == ip), "?")

    def points_to(self):
        """The entry point the A record of site.test points to ("?": another address; None:
        no record)."""
        for r in self.call("/_fake/records")["records"]:
            if r.get("name") == "site.test" and r.get("type") == "A":
                return self.ep_of(r.get("content"))
        return None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)


class Cluster:
    """An etcd member plus n dhaf nodes, in a temporary directory removed on close()."""

    def __init__(self, bin_dir, n=3, ttl=3, name="c1", services=None, extra="", tact=1):
        self.workdir = tempfile.mkdtemp(prefix="dhaf-sys-")
        self.name = name
        self.bin_dir = bin_dir
        self.etcd = Etcd(self.workdir)
        self.etcd.start()
        self.nodes = [Node(name, f"node-{i + 1}", bin_dir, self.workdir, self.etcd.endpoint, ttl,
                           extra, services, tact) for i in range(n)]
        self.probers = []
        self.backends = []
        self.prefix = f"/dhaf/{name}/"

    def add_prober(self, name, token):
        p = Prober(name, self.bin_dir, self.workdir, self.nodes, token)
        self.probers.append(p)
        return p

    def add_backend(self, host, port=0, tls=None):
        b = Backend(host, port, tls).start()
        self.backends.append(b)
        return b

    def start_all(self):
        for n in self.nodes:
            n.start()
        return self

    def node(self, name):
        return next(n for n in self.nodes if n.name == name)

    def leader(self):
        v = self.etcd.get_json(self.prefix + "leader")
        return v["node"] if v else None

    def wait_leader(self, timeout, other_than=None):
        return wait_until("a leader" + (f" other than {other_than}" if other_than else ""),
                          lambda: (lambda l: l if l and l != other_than else None)(self.leader()),
                          timeout, 0.01)

    def events(self, kind=None, service=None):
        """Event records in etcd (events/<seq>): the cluster's (service None) or one service's,
        in seq order (the outbox's counter), each with its etcd create revision as _rev."""
        base = self.prefix + "events/"
        evs = []
        for key, (val, _lease, rev) in self.etcd.get_prefix(base).items():
            if not key[len(base):].isdigit():
                continue
            e = json.loads(val) | {"_rev": rev}
            if e.get("service") == service:
                evs.append(e)
        evs.sort(key=lambda e: e["seq"])
        return [e for e in evs if kind is None or e["kind"] == kind]

    def close(self):
        for p in self.probers:
            p.kill()
        for b in self.backends:
            b.stop()
        for n in self.nodes:
            n.kill()
        self.etcd.stop()
        if os.environ.get("DHAF_KEEP_TMP"):
            print(f"kept {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)


def fresh(fn, setup, teardown):
    """A test of run_tests that gets its own fixture: fn(setup()), then teardown(it) always."""
    def run():
        c = setup()
        try:
            return fn(c)
        finally:
            teardown(c)
    return run


def run_tests(tests):
    """Runs (name, fn) pairs; prints one line each and `N passed, M failed`; exit code."""
    passed = failed = 0
    for name, fn in tests:
        t0 = time.monotonic()
        try:
            note = fn()
            passed += 1
            print(f"ok   {name} ({time.monotonic() - t0:.1f}s){': ' + note if note else ''}",
                  flush=True)
        except Exception as e:  # one failing test must not hide the others
            failed += 1
            print(f"FAIL {name} ({time.monotonic() - t0:.1f}s): {type(e).__name__}: {e}",
                  flush=True)
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


__all__ = ["Backend", "Cluster", "Etcd", "Node", "Prober", "parse_kv", "run_tests", "wait_until", "free_port",
           "signal"]
