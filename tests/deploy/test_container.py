# SPDX-License-Identifier: MIT
"""The container image, built and run (issue 18 item 1).

Builds deploy/docker/Dockerfile from a debootstrap base image (tests/deploy/podlab.py), checks
what it promises (uid/gid 10001, HEALTHCHECK, the commit in --version, the OCI labels), prints
what our layers add to the base (`podman history`), then runs etcd (a stand-in image of
Debian's etcd-server), 3 dhaf nodes and a prober as containers on the host network, with the
configs and secrets mounted read-only as 0640 files of a group that is neither root's nor the
image's (the uid/gid contract: `--group-add` that group), a Cloudflare fake and two web
backends on the host, and shows: one leader, the prober's votes, every container healthy by
its own HEALTHCHECK, a failover when the entry point in use stops, a new leader when the
leader's container is killed. Also: without --group-add the node refuses to start and says
which file it could not read; a stale prober liveness file makes --healthcheck fail.

usage: /usr/bin/python3 test_container.py SOURCE_DIR BUILD_DIR"""
import os
import re
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "system"))
import podlab  # noqa: E402
from dhafsys import Backend, CloudflareFake, Etcd, free_port  # noqa: E402

SRC = os.path.abspath(sys.argv[1])
BUILD = os.path.abspath(sys.argv[2])
IMAGE = "localhost/dhaf:test"
ETCD_IMAGE = "localhost/dhaf-etcd-standin:3.4"  # Debian's etcd-server (tests/deploy/podlab.py)
SECRET_GID = 4242  # the group of the mounted files: not 0, not the image's 10001
CLUSTER = "ct"
EPS = {"ep-1": "127.0.0.71", "ep-2": "127.0.0.72"}
PROBER_TOKEN = "container-prober-token-0123456789"


def commit():
    """The commit the build tree's binaries carry (cmake took it when it configured the tree):
    the image is built with it (DHAF_GIT_COMMIT), and its label and binaries must say it."""
    r = subprocess.run([os.path.join(BUILD, "bin", "dhafctl"), "--version"], capture_output=True,
                       text=True, timeout=10)
    m = re.search(r"\(([^)]+)\)", r.stdout)
    assert m, f"dhafctl --version: {r.stdout!r}"
    return m.group(1)


class ContainerEtcd(Etcd):
    """One etcd member in a container (host network), read by the host's etcdctl."""

    def __init__(self, lab, workdir):
        super().__init__(workdir)
        self.lab = lab
        self.name = None

    def start(self):
        peer = f"http://127.0.0.1:{self.peer_port}"
        client = f"http://127.0.0.1:{self.client_port}"
        self.name = self.lab.run(
            "etcd", ETCD_IMAGE, "--name", "m0", "--data-dir", "/tmp/etcd",
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"m0={peer}")
        podlab.wait_until("etcd to answer", lambda: self.ctl("endpoint", "health").returncode == 0,
                          30)

    def stop(self):
        if self.name:
            self.lab.podman("rm", "-f", "-t", "2", self.name, check=False)


def write_configs(d, etcd, cf, web_port, nodes):
    """/etc/dhaf of the containers: node-N.dhaf, prober.dhaf, secrets/ - 0640 root:SECRET_GID
    (0750 for the directories), as an operator would keep them on the host."""
    sec = os.path.join(d, "secrets")
    os.makedirs(sec)
    files = {"secrets/cf-token": cf.TOKEN + "\n", "secrets/prober-token": PROBER_TOKEN + "\n"}
    services = f"""services:
  - name: web
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: {EPS['ep-1']}}}
      - {{name: ep-2, ip: {EPS['ep-2']}}}
    switcher: {{type: cloudflare, api-token-file: /etc/dhaf/secrets/cf-token, zone: site.test,
                api-url: "http://127.0.0.1:{cf.port}/client/v4"}}
    health-checker: {{type: web, port: {web_port}, path: /ok, timeout: 1, retries: 0}}
probers:
  - {{name: probe-ct, token-file: /etc/dhaf/secrets/prober-token, location: container}}
"""
    for n in nodes:
        files[f"{n['name']}.dhaf"] = f"""dhaf:
  cluster-name: {CLUSTER}
  node-name: {n['name']}
  heartbeat-interval: 1
  healthy-node-status-ttl: 3
  tact-interval: 1
  grpc-api: {{host: 127.0.0.1, port: {n['grpc']}}}
  web-api: {{host: 127.0.0.1, port: {n['rest']}}}
etcd:
  hosts: {etcd.endpoint}
  leader-key-ttl: 3
{services}"""
    files["prober.dhaf"] = f"""prober:
  name: probe-ct
  location: container
  token-file: /etc/dhaf/secrets/prober-token
  nodes: [{", ".join(f"127.0.0.1:{n['grpc']}" for n in nodes)}]
  timeout: 2
"""
    for rel, text in files.items():
        p = os.path.join(d, rel)
        with open(p, "w") as f:
            f.write(text)
        os.chown(p, 0, SECRET_GID)
        os.chmod(p, 0o640)
    for p in (d, sec):
        os.chown(p, 0, SECRET_GID)
        os.chmod(p, 0o750)


def main():
    lab = podlab.Lab()
    work = lab.tmp
    t_all = time.monotonic()
    print(f"base image: {lab.ensure_base()}", flush=True)

    # ---- the image
    c = commit()
    secs, how = lab.build_dhaf_image(SRC, BUILD, IMAGE, c)
    print(f"dhaf image built in {secs:.0f} s ({how})", flush=True)
    info = lab.inspect_image(IMAGE)
    cfg = info["Config"]
    assert cfg.get("User") == "10001:10001", f"image user {cfg.get('User')!r}"
    hc = (info.get("Healthcheck") or cfg.get("Healthcheck") or {}).get("Test") or []
    assert "/usr/lib/dhaf/healthcheck" in hc, f"no HEALTHCHECK in the image: {hc}"
    labels = info.get("Labels") or cfg.get("Labels") or {}
    assert labels.get("org.opencontainers.image.revision") == c, labels
    assert cfg.get("Entrypoint") == ["/usr/bin/tini", "--"], cfg.get("Entrypoint")
    out = lab.podman("run", "--rm", "--no-healthcheck", IMAGE, "sh", "-c",
                     "dhafctl --version; dhaf-node --version; dhaf-prober --version; id -u; "
                     "id -g; dpkg-query -W -f='${Package} ' dhaf-node dhaf-prober dhafctl "
                     "dhaf-common; test ! -e /usr/bin/etcd && echo no-etcd").stdout
    assert c != "unknown" and out.count(f"({c})") == 3, f"--version does not name commit {c}:\n{out}"
    assert "\n10001\n10001\n" in out, out
    assert "dhaf-common dhaf-node dhaf-prober dhafctl" in out and "no-etcd" in out, out
    hist = lab.podman("history", "--format", "{{.Size}}\t{{.CreatedBy}}", IMAGE).stdout
    ours = [ln for ln in hist.splitlines() if "imported from" not in ln and "ADD file" not in ln]
    print("our layers over the base image (podman history):", flush=True)
    for ln in ours:
        size, by = ln.split("\t", 1)
        if size not in ("0 B", "0B"):
            print(f"  {size:>10}  {by[:100]}")
    print(f"etcd stand-in image: {lab.build_etcd_image(ETCD_IMAGE)}", flush=True)

    # ---- the cluster
    etcd = ContainerEtcd(lab, work)
    etcd.start()
    cf = CloudflareFake(EPS, start_ep="ep-1")
    web_port = free_port()
    backends = {ep: Backend(ip, web_port).start() for ep, ip in EPS.items()}
    nodes = [{"name": f"node-{i}", "grpc": free_port(), "rest": free_port()} for i in (1, 2, 3)]
    etc = os.path.join(work, "etc-dhaf")
    os.makedirs(etc)
    write_configs(etc, etcd, cf, web_port, nodes)
    mount = ["-v", f"{etc}:/etc/dhaf:ro"]
    try:
        # The contract, the wrong way first: without the files' group the node cannot read
        # its config and says so.
        r = lab.podman("run", "--rm", "--no-healthcheck", "--network=host", *mount, IMAGE,
                       "dhaf-node", "--check-config", "--config", "/etc/dhaf/node-1.dhaf",
                       check=False)
        said = r.stdout + r.stderr
        assert r.returncode != 0 and "/etc/dhaf/node-1.dhaf" in said, (r.returncode, said)
        print(f"without --group-add: exit {r.returncode}: {said.strip().splitlines()[0]}")

        opts = [*mount, "--group-add", str(SECRET_GID)]
        names = {}
        for n in nodes:
            names[n["name"]] = lab.run(n["name"], IMAGE, "dhaf-node", "--config",
                                       f"/etc/dhaf/{n['name']}.dhaf", opts=opts)
        prober = lab.run("probe-ct", IMAGE, "dhaf-prober", "--config", "/etc/dhaf/prober.dhaf",
                         opts=opts)
        t0 = time.monotonic()
        prefix = f"/dhaf/{CLUSTER}/"
        leader = podlab.wait_until("a leader", lambda: (etcd.get_json(prefix + "leader") or {})
                                   .get("node"), 30)
        print(f"leader {leader} after {time.monotonic() - t0:.1f} s")
        podlab.wait_until("the prober's vote", lambda: etcd.get_json(prefix + "votes/probe-ct"), 30)
        state = lambda: etcd.get_json(prefix + "services/web/state") or {}  # noqa: E731
        podlab.wait_until("web on ep-1", lambda: state().get("current") == "ep-1", 30)
        for name in [*names.values(), prober]:
            ok, said = podlab.wait_until(f"{name} healthy", lambda: (lambda h: h if h[0] else None)(
                lab.healthcheck(name)), 30)
            print(f"healthcheck {name}: {said or 'healthy'}")

        # ---- a failover: the entry point in use stops answering
        backends["ep-1"].stop()
        t0 = time.monotonic()
        podlab.wait_until("a failover to ep-2", lambda: state().get("current") == "ep-2"
                          and cf.points_to() == "ep-2", 30)
        print(f"failover ep-1 -> ep-2: {time.monotonic() - t0:.2f} s after ep-1 stopped "
              f"(the Cloudflare fake's record points to ep-2)")

        # ---- the leader's container is killed: another node leads
        lab.podman("kill", names[leader])
        t0 = time.monotonic()
        new = podlab.wait_until("a new leader", lambda: (lambda v: v if v and v != leader else None)(
            (etcd.get_json(prefix + "leader") or {}).get("node")), 30)
        print(f"killed {leader}'s container: {new} leads after {time.monotonic() - t0:.1f} s")
        ok, said = lab.healthcheck(names[leader])
        assert not ok, f"a killed node's container reports healthy: {said}"

        # ---- the prober's liveness file, stale: --healthcheck says so (host binary, same code)
        alive_dir = os.path.join(work, "alive")
        os.makedirs(alive_dir)
        with open(os.path.join(alive_dir, "dhaf-prober-probe-ct.alive"), "w") as f:
            f.write(f"alive-until {int(time.time()) - 5}\nwritten {int(time.time()) - 40}\n"
                    "reported yes\n")
        host_cfg = os.path.join(work, "prober-host.dhaf")
        with open(host_cfg, "w") as f:
            f.write(open(os.path.join(etc, "prober.dhaf")).read().replace(
                "/etc/dhaf/secrets/prober-token", os.path.join(etc, "secrets/prober-token")))
        r = subprocess.run([os.path.join(BUILD, "bin", "dhaf-prober"), "--healthcheck", "--config",
                            host_cfg], capture_output=True, text=True, timeout=10,
                           env=dict(os.environ, DHAF_ALIVE_DIR=alive_dir))
        assert r.returncode == 1 and "last ran 40 s ago" in r.stdout, (r.returncode, r.stdout,
                                                                        r.stderr)
        print(f"stale liveness file: exit 1: {r.stdout.strip()}")

        # ---- dhaf-node --healthcheck's own deadline (3 s): a REST port that accepts and never
        # answers, and one where nothing listens (host binary, node-2's config re-pointed)
        hung = socket.socket()
        hung.bind(("127.0.0.1", 0))
        hung.listen(4)
        closed_port = free_port()
        n2 = nodes[1]
        for port, want in ((hung.getsockname()[1], "Timeout"), (closed_port, "connect")):
            cfg_path = os.path.join(work, f"node-hc-{port}.dhaf")
            with open(cfg_path, "w") as f:
                f.write(open(os.path.join(etc, "node-2.dhaf")).read()
                        .replace("/etc/dhaf/secrets/", os.path.join(etc, "secrets") + "/")
                        .replace(f"port: {n2['rest']}", f"port: {port}"))
            t0 = time.monotonic()
            r = subprocess.run([os.path.join(BUILD, "bin", "dhaf-node"), "--healthcheck",
                                "--config", cfg_path], capture_output=True, text=True, timeout=30)
            took = time.monotonic() - t0
            assert r.returncode == 1 and want in r.stdout and took < 6, (r.returncode, r.stdout,
                                                                         r.stderr, took)
            print(f"--healthcheck, port {'hung' if want == 'Timeout' else 'closed'}: exit 1 in "
                  f"{took:.1f} s: {r.stdout.strip()}")
        hung.close()
    except BaseException:
        for n in lab.names():
            print(f"---- podman logs {n}\n{lab.logs(n)[-3000:]}")
        raise
    finally:
        for b in backends.values():
            b.stop()
        cf.stop()
        lab.close()
    print(f"PASS in {time.monotonic() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
