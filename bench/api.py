#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench/api: REST and gRPC status requests per second on one dhaf node, printed as a table.

One etcd member and one dhaf-node on loopback (tests/system/dhafsys.py), with
`dhaf.api-token` set, one service with two entry points (tcp checker: ep-1 is the node's own
REST port, so healthy and current; ep-2 refuses, so down) and the built-in prober voting every
second, as in a small real cluster. Then, one after the other:

- REST with wrk (`wrk -t2 -c32 -d10s --latency -H "Authorization: Bearer ..."`) against
  /api/v1/services (the v1 JSON API), /services/status (the original dhaf's path and
  envelope) and /healthz (no token check, no status: the HTTP layer alone);
- gRPC with build/bin/dhaf-bench-api-grpc (bench/api_grpc.c) calling
  /dhaf.v1.Dhaf/ListServices with 32 calls in flight (as wrk's 32 connections each have one
  request in flight), by default from one thread driving gRPC core's async API over 4
  channels: HTTP/2 multiplexes calls over a few connections, as gRPC clients do, and the
  client then costs less CPU than the node. `--grpc-channels 32` gives one connection per
  call in flight (wrk's shape; it costs client and node more per call), --grpc-loops adds
  client threads, and --grpc-sync is the previous client (lib/rpc, the client dhafctl uses:
  one thread and one channel per call in flight, blocking calls; it burns about as much CPU
  as the node);
- the same two status reads over a single connection (wrk -t1 -c1, one gRPC thread): the
  latency of one client alone.

Each status read is served from the node's in-memory view of etcd (fed by a watch; no etcd
round trip per request), so the figures are the node's own work; /healthz shows the gateway
without it. The node's CPU time during each run (from /proc) and the load generator's
(getrusage of the child) are printed per 1,000 requests. Client, node and etcd share the
machine's cores: the figures are for comparing, not for capacity planning.

wrk is installed with apt-get when missing and this runs as root (or with passwordless sudo);
otherwise the REST rows are skipped with a note. Figures only; exit code 1 when a run failed
(non-2xx replies, errors, or nothing measured). Progress goes to stderr, the table to stdout.
Every process started here is stopped on exit (also on Ctrl-C and SIGTERM).

With --perf DIR, `perf record -g` samples the node during each run (DIR/<n>-<row>.data; read
it with `perf report --no-children -i FILE`).

usage: /usr/bin/python3 bench/api.py [BUILD_BIN_DIR] [--seconds S] [--connections N]
       [--grpc-threads N] [--grpc-channels C] [--grpc-loops L] [--grpc-sync]
       [--rest-paths P,P] [--runs N] [--perf DIR] [--no-single] [--keep]
"""
import argparse
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "system"))
from dhafsys import Cluster, wait_until  # noqa: E402

TOKEN = "bench-api-token-0123456789abcdef"
SERVICE = "web"


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


def ensure_wrk():
    """Path of wrk, installing Debian's package when possible; None (with a note) if not."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0:
        sudo = []
    elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"],
                                                 capture_output=True).returncode == 0:
        sudo = ["sudo", "-n"]
    else:
        progress("bench/api: wrk is not installed and installing it needs root "
                 "(apt-get install wrk); the REST rows are skipped")
        return None
    progress("bench/api: installing wrk (apt-get install wrk)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends", "wrk"],
                       capture_output=True, text=True, env=env)
    if r.returncode != 0:
        subprocess.run(sudo + ["apt-get", "update", "-q"], capture_output=True, env=env)
        r = subprocess.run(sudo + ["apt-get", "install", "-y", "-q", "--no-install-recommends",
                                   "wrk"], capture_output=True, text=True, env=env)
    path = shutil.which("wrk")
    if not path:
        progress("bench/api: apt-get could not install wrk "
                 f"({(r.stderr or r.stdout).strip().splitlines()[-1:]}); the REST rows are skipped")
    return path


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (from /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def to_ms(text):
    """wrk's '1.23ms' / '456.00us' / '1.02s' / '2.00m' in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        return None
    v = float(m.group(1))
    return v * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def parse_wrk(out):
    """Figures of `wrk --latency` output; raises when a line is missing."""
    r = {}
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    r["avg_ms"], r["max_ms"] = to_ms(m.group(1)), to_ms(m.group(3))
    for p in ("50", "90", "99"):
        m = re.search(rf"^\s*{p}%\s+(\S+)", out, re.M)
        r[f"p{p}_ms"] = to_ms(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([\d.]+)(\w+)", out, re.M)
    r["calls"] = int(m.group(1))
    r["rps"] = float(re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M).group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    bad = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        bad += sum(int(x) for x in m.groups())
    r["errors"] = bad
    return r


def parse_grpc(out):
    line = next(ln for ln in out.splitlines() if ln.startswith("RESULT "))
    f = dict(kv.split("=", 1) for kv in line.split()[1:])
    return {"calls": int(f["calls"]), "errors": int(f["errors"]), "rps": float(f["rps"]),
            "avg_ms": float(f["avg_ms"]), "p50_ms": float(f["p50_ms"]),
            "p90_ms": float(f["p90_ms"]), "p99_ms": float(f["p99_ms"]),
            "max_ms": float(f["max_ms"])}


class Bench:
    def __init__(self, args):
        self.args = args
        self.cluster = None
        self.child = None
        self.perf = None
        self.perf_n = 0

    def run_child(self, argv, timeout):
        """Runs a load generator, remembered so that a signal can stop it."""
        self.child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True)
        try:
            out, err = self.child.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.child.kill()
            out, err = self.child.communicate()
        rc = self.child.returncode
        self.child = None
        return rc, out, err

    def start(self):
        services = f"""services:
  - name: {SERVICE}
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: 127.0.0.1}}
      - {{name: ep-2, ip: 127.0.0.2}}
    switcher: {{type: exec, init: /bin/true, switch: /bin/true, timeout: 2}}
    health-checker: {{type: tcp, port: REST_PORT, timeout: 1}}
"""
        progress("bench/api: starting etcd and one dhaf-node")
        self.cluster = Cluster(self.args.bin_dir, n=1, ttl=3, name="bench-api", services=services)
        node = self.cluster.nodes[0]
        with open(node.config) as f:
            text = f.read()
        text = text.replace("REST_PORT", str(node.rest_port))
        text = text.replace("dhaf:\n", f"dhaf:\n  api-token: {TOKEN}\n", 1)
        text = text.replace("  level: info", "  level: warn")
        with open(node.config, "w") as f:
            f.write(text)
        node.start()
        self.node = node
        self.rest = f"http://127.0.0.1:{node.rest_port}"
        self.grpc = f"127.0.0.1:{node.grpc_port}"

        def ready():
            req = urllib.request.Request(self.rest + "/api/v1/services",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
            with urllib.request.urlopen(req, timeout=2) as r:
                body = r.read().decode()
            return '"current_entry_point":"ep-1"' in body and '"quorum":true' in body

        wait_until("the node to lead and publish the service state", ready, 30, 0.1)
        # the token is enforced (a bench against a 401 would measure nothing)
        try:
            urllib.request.urlopen(self.rest + "/api/v1/services", timeout=2)
            raise RuntimeError("/api/v1/services answered without the token")
        except urllib.error.HTTPError as e:
            if e.code != 401:
                raise
        progress(f"bench/api: node ready (REST {self.rest}, gRPC {self.grpc}, token set)")

    def measure(self, fn, label):
        """Runs one load generator; adds the node's and the client's CPU ms per 1,000 calls."""
        def children():
            u = resource.getrusage(resource.RUSAGE_CHILDREN)
            return u.ru_utime + u.ru_stime
        perf = None
        if self.args.perf:
            self.perf_n += 1
            name = re.sub(r"[^A-Za-z0-9]+", "_", label)
            out = os.path.join(self.args.perf, f"{self.perf_n}-{name}.data")
            perf = subprocess.Popen(["perf", "record", "-q", "-g", "-o", out, "-p",
                                     str(self.node.proc.pid)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
            self.perf = perf
            time.sleep(0.5)  # perf attached before the load starts
        c0, k0 = cpu_seconds(self.node.proc.pid), children()
        try:
            r = fn()
        finally:
            if perf:
                perf.send_signal(signal.SIGINT)
                perf.wait(30)
                self.perf = None
        if perf:
            progress(f"bench/api: node profile in {out}")
        if r is not None:
            c1, k1 = cpu_seconds(self.node.proc.pid), children()
            per_1k = 1000 * 1000 / r["calls"] if r["calls"] else 0.0
            r["cpu_ms_per_1k"] = (c1 - c0) * per_1k
            r["client_cpu_ms_per_1k"] = (k1 - k0) * per_1k
        return r

    def wrk(self, wrk, path, threads, conns):
        secs = self.args.seconds
        argv = [wrk, f"-t{threads}", f"-c{conns}", f"-d{secs:g}s", "--latency", "--timeout", "5s",
                "-H", f"Authorization: Bearer {TOKEN}", self.rest + path]
        progress(f"bench/api: {' '.join(argv[:-3])} -H 'Authorization: Bearer ...' "
                 f"{self.rest + path}")

        def go():
            rc, out, err = self.run_child(argv, secs + 30)
            if rc != 0:
                progress(f"bench/api: wrk failed ({rc}): {err.strip()}")
                return None
            return parse_wrk(out)
        return self.measure(go, f"rest{path}-c{conns}")

    def grpc_calls(self, threads, channels, loops, sync):
        secs = self.args.seconds
        opts = ["--threads", str(threads)]
        if sync:
            opts.append("--sync")
        else:
            opts += ["--channels", str(channels), "--loops", str(loops)]
        opts += ["--seconds", f"{secs:g}", "--method", "ListServices"]
        argv = [os.path.join(self.args.bin_dir, "dhaf-bench-api-grpc"), "--target", self.grpc,
                "--token", TOKEN] + opts
        progress(f"bench/api: dhaf-bench-api-grpc {' '.join(opts)}")

        def go():
            rc, out, err = self.run_child(argv, secs + 30)
            if rc != 0 or "RESULT " not in out:
                progress(f"bench/api: dhaf-bench-api-grpc failed ({rc}): {err.strip()}")
                return None
            if err.strip():
                progress(err.strip())
            return parse_grpc(out)
        return self.measure(go, f"grpc-{threads}")

    def close(self):
        if self.perf and self.perf.poll() is None:
            self.perf.send_signal(signal.SIGINT)
            self.perf.wait(30)
        if self.child and self.child.poll() is None:
            self.child.kill()
            self.child.wait()
        if self.cluster:
            if self.args.keep:
                os.environ["DHAF_KEEP_TMP"] = "1"
            self.cluster.close()
            self.cluster = None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bin_dir", nargs="?",
                    default=os.path.join(HERE, "..", "build", "bin"),
                    help="directory of dhaf-node and dhaf-bench-api-grpc (default build/bin)")
    ap.add_argument("--seconds", type=float, default=10, help="per run (default 10)")
    ap.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    ap.add_argument("--grpc-threads", type=int, default=32,
                    help="gRPC calls in flight (default 32)")
    ap.add_argument("--grpc-channels", type=int, default=4,
                    help="gRPC channels, each one HTTP/2 connection (default 4)")
    ap.add_argument("--grpc-loops", type=int, default=1,
                    help="gRPC client threads, each driving one completion queue (default 1)")
    ap.add_argument("--grpc-sync", action="store_true",
                    help="the previous gRPC client: one thread and channel per call in flight, "
                         "blocking lib/rpc calls")
    ap.add_argument("--rest-paths", default="/api/v1/services,/services/status,/healthz",
                    help="REST paths measured with wrk, comma-separated (default all three)")
    ap.add_argument("--runs", type=int, default=1,
                    help="measure the REST and gRPC rows this many times over (default 1)")
    ap.add_argument("--perf", metavar="DIR",
                    help="perf record -g the node during each run, into DIR")
    ap.add_argument("--no-single", action="store_true",
                    help="leave out the single-connection runs")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    args.bin_dir = os.path.abspath(args.bin_dir)
    if min(args.grpc_threads, args.grpc_channels, args.grpc_loops, args.runs) < 1:
        ap.error("--grpc-threads, --grpc-channels, --grpc-loops and --runs take 1 or more")
    if args.perf:
        if not shutil.which("perf"):
            ap.error("--perf needs perf (apt-get install linux-perf)")
        os.makedirs(args.perf, exist_ok=True)
    for b in ("dhaf-node", "dhaf-bench-api-grpc"):
        if not os.access(os.path.join(args.bin_dir, b), os.X_OK):
            progress(f"bench/api: {args.bin_dir}/{b} not found; run `make build` first")
            return 1

    wrk = ensure_wrk()
    bench = Bench(args)

    def on_signal(sig, _frame):
        bench.close()
        sys.exit(128 + sig)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    rows = []  # (transport, what, concurrency, figures or None)
    try:
        bench.start()
        c = args.connections
        t = args.grpc_threads
        ch = min(args.grpc_channels, t)
        loops = min(args.grpc_loops, t)
        if args.grpc_sync:
            who = f"sync {t} thr, 1 conn each"
        else:
            who = f"{t} calls, {ch} conn, {loops} thr"
        for _ in range(args.runs):
            if wrk:
                for path in [p for p in args.rest_paths.split(",") if p]:
                    rows.append(("REST", f"GET {path}", f"wrk 2 thr, {c} conn",
                                 bench.wrk(wrk, path, 2, c)))
            rows.append(("gRPC", "ListServices", who,
                         bench.grpc_calls(t, ch, loops, args.grpc_sync)))
        if not args.no_single:
            if wrk:
                rows.append(("REST", "GET /api/v1/services", "wrk 1 thr, 1 conn",
                             bench.wrk(wrk, "/api/v1/services", 1, 1)))
            rows.append(("gRPC", "ListServices", "1 call, 1 conn",
                         bench.grpc_calls(1, 1, 1, args.grpc_sync)))
    finally:
        bench.close()

    print()
    print(f"REST and gRPC status requests on one dhaf node ({args.seconds:g} s per run; "
          f"node, etcd and client on one machine, {os.cpu_count()} CPUs)")
    head = ("transport", "request", "clients", "req/s", "avg ms", "p50 ms", "p90 ms",
            "p99 ms", "max ms", "errors", "node CPU ms/1k", "client CPU ms/1k")
    table = []
    failed = False
    for transport, what, conc, r in rows:
        if r is None:
            table.append((transport, what, conc, "failed", "", "", "", "", "", "", "", ""))
            failed = True
            continue
        failed |= r["errors"] > 0 or r["calls"] == 0
        table.append((transport, what, conc, f"{r['rps']:.0f}", f"{r['avg_ms']:.2f}",
                      f"{r['p50_ms']:.2f}", f"{r['p90_ms']:.2f}", f"{r['p99_ms']:.2f}",
                      f"{r['max_ms']:.1f}", str(r["errors"]), f"{r['cpu_ms_per_1k']:.0f}",
                      f"{r['client_cpu_ms_per_1k']:.0f}"))
    widths = [max(len(str(row[i])) for row in [head] + table) for i in range(len(head))]
    for i, row in enumerate([head] + table):
        print("  ".join(str(v).rjust(w) if j >= 3 else str(v).ljust(w)
                        for j, (v, w) in enumerate(zip(row, widths))).rstrip())
        if i == 0:
            print("  ".join("-" * w for w in widths))
    if not wrk:
        print("(REST rows skipped: wrk is not installed and could not be installed)")
    print("REST /api/v1/services and /services/status and gRPC ListServices are served from "
          "the node's view (no etcd round trip); /healthz reads nothing.")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
