# SPDX-License-Identifier: MIT
"""A throw-away network for the fault campaign: one network namespace per host, joined by veth
pairs to a bridge that lives in a namespace of its own, and partitions as nftables drop rules.

Nothing is changed in the machine's own namespace: the bridge, the veth pairs and the rules
exist only inside namespaces named dhchaos<pid>-*, which close() deletes (deleting a namespace
takes its interfaces with it). Leftovers of an earlier run that died without cleaning up (its
pid gone) are deleted by Lab() before it creates anything. Needs root, iproute2 and nft.

Addresses come from 198.18.0.0/24 (RFC 2544's benchmarking range: never routed anywhere).
"""
import os
import re
import subprocess

PREFIX = "dhchaos"
NET = "198.18.0"


def _run(args, check=True, input=None):
    r = subprocess.run(args, capture_output=True, text=True, input=input, timeout=20)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(args)}: {r.stderr.strip() or r.stdout.strip()}")
    return r


def missing():
    """Why a lab cannot be built here (None when it can)."""
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    for tool in ("ip", "nft"):
        if _run(["sh", "-c", f"command -v {tool}"], check=False).returncode != 0:
            return f"needs {tool} (apt install {'iproute2' if tool == 'ip' else 'nftables'})"
    # What the kernel must allow: a namespace, a bridge and a veth pair in it, an nft table.
    ns = f"{PREFIX}{os.getpid()}-selftest"
    try:
        for args in (["ip", "netns", "add", ns],
                     ["ip", "-n", ns, "link", "add", "br0", "type", "bridge"],
                     ["ip", "-n", ns, "link", "add", "v0", "type", "veth", "peer", "name", "v1"],
                     ["ip", "netns", "exec", ns, "nft", "add", "table", "inet", "probe"]):
            r = _run(args, check=False)
            if r.returncode != 0:
                return f"cannot build the lab here: {' '.join(args)}: {r.stderr.strip()}"
    finally:
        _run(["ip", "netns", "del", ns], check=False)
    return None


def sweep_leftovers():
    """Deletes the namespaces of earlier labs whose process is gone. Returns their names."""
    gone = []
    out = _run(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        m = re.match(rf"{PREFIX}(\d+)-", name)
        if m and not os.path.exists(f"/proc/{m.group(1)}"):
            _run(["ip", "netns", "del", name], check=False)
            gone.append(name)
    return gone


class Lab:
    """Hosts on one bridge. add(name) makes host `name` with address NET.<index>; ns(name) is
    its namespace's name (for `ip netns exec`); cut(a, b) drops everything between hosts a and
    b (rules in a's namespace, both directions); heal() removes every cut."""

    def __init__(self):
        sweep_leftovers()
        self.tag = f"{PREFIX}{os.getpid()}"
        self.hosts = {}  # name -> (index, [addresses])
        self.cuts = set()  # frozenset({a, b})
        self.hub = f"{self.tag}-hub"
        _run(["ip", "netns", "add", self.hub])
        self._in(self.hub, "ip", "link", "add", "br0", "type", "bridge")
        self._in(self.hub, "ip", "link", "set", "br0", "up")
        self._in(self.hub, "ip", "link", "set", "lo", "up")

    @staticmethod
    def _in(ns, *args, check=True, input=None):
        return _run(["ip", "netns", "exec", ns, *args], check=check, input=input)

    def ns(self, name):
        return f"{self.tag}-{name}"

    def add(self, name, index, extra=()):
        """Host name with address NET.index (and NET.e for each e of extra, on the same
        interface). Returns its first address."""
        if name in self.hosts or not 1 <= index <= 254:
            raise ValueError(f"host {name}: bad or repeated (index {index})")
        ns = self.ns(name)
        _run(["ip", "netns", "add", ns])
        peer = f"h{index}"
        _run(["ip", "-n", self.hub, "link", "add", peer, "type", "veth", "peer", "name", "eth0",
              "netns", ns])
        _run(["ip", "-n", self.hub, "link", "set", peer, "master", "br0", "up"])
        addrs = [f"{NET}.{i}" for i in (index, *extra)]
        for a in addrs:
            _run(["ip", "-n", ns, "addr", "add", f"{a}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        self.hosts[name] = (index, addrs)
        return addrs[0]

    def addr(self, name):
        return self.hosts[name][1][0]

    def addrs(self, name):
        return list(self.hosts[name][1])

    def exec_args(self, name):
        """The argv prefix that runs a program in host name's namespace."""
        return ["ip", "netns", "exec", self.ns(name)]

    def _write_rules(self, name):
        peers = sorted({p for c in self.cuts if name in c for p in c if p != name})
        ips = [ip for p in peers for ip in self.hosts[p][1]]
        script = "table inet chaos\ndelete table inet chaos\ntable inet chaos {\n"
        if ips:
            s = ", ".join(ips)
            script += (f"  chain in {{ type filter hook input priority 0; ip saddr {{ {s} }} drop; }}\n"
                       f"  chain out {{ type filter hook output priority 0; ip daddr {{ {s} }} drop; }}\n")
        script += "}\n"
        self._in(self.ns(name), "nft", "-f", "-", input=script)

    def cut(self, a, b):
        """Drops every packet between hosts a and b, from now on (open connections stall, as
        on a real partition: nothing is refused)."""
        self.cuts.add(frozenset((a, b)))
        self._write_rules(a)
        self._write_rules(b)

    def heal(self):
        """Removes every cut."""
        touched = {h for c in self.cuts for h in c}
        self.cuts.clear()
        for h in touched:
            self._write_rules(h)

    def reachable(self, a, b):
        return frozenset((a, b)) not in self.cuts

    def close(self):
        for name in list(self.hosts):
            _run(["ip", "netns", "del", self.ns(name)], check=False)
        _run(["ip", "netns", "del", self.hub], check=False)
        self.hosts.clear()
