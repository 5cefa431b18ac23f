# SPDX-License-Identifier: MIT
"""The Debian packages of `make deb` (issue 18 item 7), installed and started.

Builds the four packages from the build tree (cpack), checks their control data (runtime-only
dependencies: no compiler, no -dev package, no etcd-server; the prober and dhafctl without the
node's HTTP server library), then installs them into fresh Debian 12 containers that run
systemd as PID 1 (tests/deploy/podlab.py): a "node host" with dhaf-node and dhafctl, and a
"prober host" with dhaf-prober only. In each: `systemd-analyze verify` of the installed unit
(no output allowed), what apt pulled in (nothing of etcd, no compiler), the dhaf user and
/etc/dhaf 0750 root:dhaf from dhaf-common, then the operator's steps - a config in /etc/dhaf,
`systemctl enable --now` - and the service runs as the dhaf user: the node registers in etcd
(a real etcd on the host's loopback), the prober's vote arrives through the node.
`apt-get remove dhaf-prober` stops the service.

usage: /usr/bin/python3 test_deb.py SOURCE_DIR BUILD_DIR"""
import os
import re
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "system"))
import podlab  # noqa: E402
from dhafsys import Etcd, free_port  # noqa: E402

SRC = os.path.abspath(sys.argv[1])
BUILD = os.path.abspath(sys.argv[2])
SYSTEMD_IMAGE = "localhost/dhaf-test-systemd:bookworm"
CLUSTER = "deb"
PROBER_TOKEN = "deb-prober-token-0123456789abcdef"
# Nothing of these may be pulled onto a host by our packages.
FORBIDDEN = re.compile(r"^(etcd-server|etcd-client|gcc(-\d+)?|cpp(-\d+)?|clang(-\d+)?|cmake|make|"
                       r"build-essential|protobuf-compiler.*|.*-dev|python3)$")


def control(deb, field):
    return subprocess.run(["dpkg-deb", "-f", deb, field], capture_output=True, text=True,
                          check=True).stdout.strip()


def check_control(debs):
    by = {control(d, "Package"): d for d in debs}
    assert set(by) == {"dhaf-node", "dhaf-prober", "dhafctl", "dhaf-common"}, by
    for name, d in by.items():
        deps = [re.split(r"[ (]", x.strip())[0] for x in control(d, "Depends").split(",") if x]
        bad = [x for x in deps if FORBIDDEN.match(x)]
        assert not bad, f"{name} depends on {bad}"
        print(f"{name}: Depends: {', '.join(deps)}")
    for name in ("dhaf-prober", "dhafctl"):
        assert "libmicrohttpd" not in control(by[name], "Depends"), name
    files = {n: subprocess.run(["dpkg-deb", "-c", d], capture_output=True, text=True,
                               check=True).stdout for n, d in by.items()}
    for name, must in (("dhaf-node", ["./usr/bin/dhaf-node", "/dhaf-node.service"]),
                       ("dhaf-prober", ["./usr/bin/dhaf-prober", "/dhaf-prober.service"]),
                       ("dhafctl", ["./usr/bin/dhafctl", "completions/dhafctl"]),
                       ("dhaf-common", ["sysusers.d/dhaf.conf", "doc/dhaf/deploy.md"])):
        for m in must:
            assert m in files[name], f"{name} has no {m}"
    return by


class Host:
    """A Debian 12 container with systemd as PID 1 on the host network."""

    def __init__(self, lab, name, debdir):
        self.lab = lab
        self.name = lab.run(name, SYSTEMD_IMAGE, "/sbin/init",
                            opts=["--systemd=always", "-v", f"{debdir}:/debs:ro"])
        podlab.wait_until(f"systemd in {name}", lambda: self.sh(
            "systemctl is-system-running", check=False).stdout.strip() in ("running", "degraded"),
            60)

    def sh(self, script, check=True, input=None, timeout=300):
        return self.lab.podman("exec", "-i", self.name, "sh", "-c", script, check=check,
                               input=input, timeout=timeout)

    def packages(self):
        return set(self.sh("dpkg-query -W -f='${Package}\\n'").stdout.split())

    def install(self, *debs):
        before = self.packages()
        self.sh("apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install "
                "-y -q --no-install-recommends " + " ".join(f"/debs/{d}_*.deb" for d in debs),
                timeout=600)
        pulled = sorted(self.packages() - before)
        bad = [p for p in pulled if FORBIDDEN.match(p.split(":")[0])]
        assert not bad, f"installing {debs} pulled in {bad}"
        return pulled

    def write(self, path, text, mode="0640"):
        self.sh(f"cat > {path} && chown root:dhaf {path} && chmod {mode} {path}", input=text)

    def verify_unit(self, unit):
        r = self.sh(f"systemd-analyze verify /usr/lib/systemd/system/{unit}", check=False)
        out = (r.stdout + r.stderr).strip()
        assert r.returncode == 0 and not out, f"systemd-analyze verify {unit}: {out}"

    def start(self, unit):
        self.sh(f"systemctl enable --now {unit}")
        try:
            podlab.wait_until(f"{unit} active", lambda: self.sh(
                f"systemctl is-active {unit}", check=False).stdout.strip() == "active", 30)
        except AssertionError:
            print(self.sh(f"systemctl status --no-pager {unit}; journalctl --no-pager -u {unit} "
                          "| tail -30", check=False).stdout)
            raise
        pid = self.sh(f"systemctl show -p MainPID --value {unit}").stdout.strip()
        uid = self.sh(f"awk '/^Uid:/ {{print $2}}' /proc/{pid}/status").stdout.strip()
        dhaf = self.sh("id -u dhaf").stdout.strip()
        assert uid == dhaf, f"{unit} runs as uid {uid}, not dhaf ({dhaf})"


def main():
    lab = podlab.Lab(prefix="dhaf-deb")
    t_all = time.monotonic()
    print(f"base image: {lab.ensure_base()}", flush=True)
    debs = lab.build_debs(BUILD)
    check_control(debs)
    debdir = os.path.dirname(debs[0])
    if not lab.image_exists(SYSTEMD_IMAGE):
        ctx = os.path.join(lab.tmp, "systemd")
        os.makedirs(ctx)
        with open(os.path.join(ctx, "Dockerfile"), "w") as f:
            f.write("FROM debian:12\nRUN apt-get update && apt-get install -y "
                    "--no-install-recommends systemd systemd-sysv dbus "
                    "&& rm -rf /var/lib/apt/lists/*\nCMD [\"/sbin/init\"]\n")
        lab.buildah_bud(ctx, os.path.join(ctx, "Dockerfile"), SYSTEMD_IMAGE)

    etcd = Etcd(lab.tmp)
    etcd.start()
    grpc, rest = free_port(), free_port()
    prefix = f"/dhaf/{CLUSTER}/"
    try:
        # ---- the node host
        node = Host(lab, "node-host", debdir)
        pulled = node.install("dhaf-common", "dhaf-node", "dhafctl")
        print(f"node host: apt installed {len(pulled)} packages: {' '.join(pulled)}")
        st = node.sh("stat -c '%a %U:%G' /etc/dhaf; getent passwd dhaf").stdout.split("\n")
        assert st[0] == "750 root:dhaf", st
        assert st[1].endswith(":/nonexistent:/usr/sbin/nologin"), st
        node.verify_unit("dhaf-node.service")
        assert node.sh("systemctl is-enabled dhaf-node", check=False).stdout.strip() == \
            "disabled", "the package enabled the node before it has a config"
        node.write("/etc/dhaf/prober-token", PROBER_TOKEN + "\n")
        node.write("/etc/dhaf/node.dhaf", f"""dhaf:
  cluster-name: {CLUSTER}
  node-name: deb-node
  tact-interval: 1
  grpc-api: {{host: 127.0.0.1, port: {grpc}}}
  web-api: {{host: 127.0.0.1, port: {rest}}}
etcd:
  hosts: {etcd.endpoint}
services:
  - name: main
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: 127.0.0.41}}
      - {{name: ep-2, ip: 127.0.0.42}}
    switcher: {{type: exec, init: /bin/true, switch: /bin/true, timeout: 2}}
    health-checker: {{type: tcp, port: {free_port()}}}
probers:
  - {{name: deb-prober, token-file: /etc/dhaf/prober-token, location: deb}}
""")
        node.start("dhaf-node.service")
        podlab.wait_until("the node in etcd", lambda: etcd.get_json(prefix + "alive/deb-node"), 30)
        health = node.sh("dhaf-node --healthcheck --config /etc/dhaf/node.dhaf").stdout.strip()
        print(f"node host: dhaf-node.service active as dhaf, in etcd; {health}")

        # ---- the prober host: no etcd, no node
        prober = Host(lab, "prober-host", debdir)
        pulled = prober.install("dhaf-common", "dhaf-prober")
        print(f"prober host: apt installed {len(pulled)} packages: {' '.join(pulled)}")
        assert not ({"dhaf-node", "etcd-server", "libmicrohttpd12"} & prober.packages())
        prober.verify_unit("dhaf-prober.service")
        prober.write("/etc/dhaf/prober-token", PROBER_TOKEN + "\n")
        prober.write("/etc/dhaf/prober.dhaf", f"""prober:
  name: deb-prober
  location: deb
  token-file: /etc/dhaf/prober-token
  nodes: [127.0.0.1:{grpc}]
  timeout: 2
""")
        prober.start("dhaf-prober.service")
        podlab.wait_until("the prober's vote", lambda: etcd.get_json(prefix + "votes/deb-prober"),
                          30)
        print("prober host: dhaf-prober.service active as dhaf; its vote is in etcd")

        # ---- removal stops the service
        prober.sh("DEBIAN_FRONTEND=noninteractive apt-get remove -y -q dhaf-prober >/dev/null")
        left = prober.sh("for p in /proc/[0-9]*; do readlink $p/exe; done 2>/dev/null | "
                         "grep dhaf-prober || true").stdout.strip()
        assert not left, f"dhaf-prober still runs after apt-get remove: pid {left}"
        print("prober host: apt-get remove stopped and removed dhaf-prober")
    except BaseException:
        for n in lab.names():
            print(f"---- journal of {n}")
            print(lab.podman("exec", n, "journalctl", "--no-pager", "-n", "40", check=False).stdout)
        raise
    finally:
        etcd.stop()
        lab.close()
    print(f"PASS in {time.monotonic() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
