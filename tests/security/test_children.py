# SPDX-License-Identifier: MIT
"""Issue 15, item 7: what a node's children get, and what they leave behind.

Findings: (1) `${ENV}` secrets stayed in the node's environment and reached every exec checker
and switcher; (2) an exec checker's `setsid` grandchildren survived the timeout kill (6 `sleep
301` piled up in 9 s). Now the node takes the secret out of its environment once read (and
wipes it from /proc/PID/environ), and a check that ends, by itself or at its timeout, takes
every descendant with it, in whatever process group or session.
usage: test_children.py BUILD_BIN_DIR
"""
import os
import shutil
import stat
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
from dhafsys import Cluster, ETCD, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
SECRET = "env-secret-7f3b2c9d04e1a865"


def script(path, body):
    with open(path, "w") as f:
        f.write("#!/bin/sh\n" + body)
    os.chmod(path, stat.S_IRWXU | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)
    return path


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pids(path):
    try:
        with open(path) as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return []


def start_node(workdir, check, timeout):
    services = f"""services:
  - name: main
    domain: foo.com
    entry-points:
      - {{name: ep-1, ip: 127.0.0.11}}
    switcher: {{type: exec, init: /bin/true, switch: /bin/true, timeout: 2}}
    health-checker: {{type: exec, init: /bin/true, check: {check}, timeout: {timeout}}}
"""
    c = Cluster(BIN, n=1, ttl=3, services=services)
    n = c.nodes[0]
    text = open(n.config).read().replace(
        "  tact-interval: 1\n", "  tact-interval: 1\n  api-token: ${DHAF_SEC_API_TOKEN}\n")
    open(n.config, "w").write(text)
    os.environ["DHAF_SEC_API_TOKEN"] = SECRET
    try:
        c.start_all()
    finally:
        del os.environ["DHAF_SEC_API_TOKEN"]
    return c


def env_secret_not_inherited():
    work = os.path.realpath(os.environ.get("TMPDIR", "/tmp"))
    d = os.path.join(work, f"dhaf-sec-children-{os.getpid()}")
    os.makedirs(d, exist_ok=True)
    dump = os.path.join(d, "env.txt")
    check = script(os.path.join(d, "dump-env.sh"),
                   f"env > {dump}.tmp; mv {dump}.tmp {dump}\nexit 0\n")
    c = start_node(d, check, 2)
    try:
        text = wait_until("the exec checker to dump its environment",
                          lambda: open(dump).read() if os.path.exists(dump) else None, 20)
        assert "DHAF_SERVICE=main" in text, text  # it is the checker's environment
        leaked = [ln for ln in text.splitlines() if SECRET in ln or "DHAF_SEC_API_TOKEN" in ln]
        assert not leaked, f"the exec checker inherits the secret: {leaked}"
        with open(f"/proc/{c.nodes[0].proc.pid}/environ", "rb") as f:
            own = f.read()
        assert SECRET.encode() not in own, "the node's /proc/PID/environ still shows the secret"
        assert c.nodes[0].alive(), "the node died"
    finally:
        c.close()
        shutil.rmtree(d, ignore_errors=True)
    return f"checker env has {len(text.splitlines())} variables, none of them the secret"


def setsid_grandchildren_killed():
    work = os.path.realpath(os.environ.get("TMPDIR", "/tmp"))
    d = os.path.join(work, f"dhaf-sec-setsid-{os.getpid()}")
    os.makedirs(d, exist_ok=True)
    record = os.path.join(d, "pids")
    check = script(os.path.join(d, "leaky.sh"),
                   f"setsid sleep 301 >/dev/null 2>&1 &\necho $! >> {record}\nsleep 30\n")
    c = start_node(d, check, 1)
    started = []
    try:
        # four checks, each killed at its 1 s timeout
        wait_until("four checks to have started a setsid sleep", lambda: len(pids(record)) >= 4, 30)
        started = pids(record)
        older = started[:-1]  # the newest may belong to a check still running
        left = wait_until("the earlier checks' grandchildren to be gone",
                          lambda: (lambda a: None if a else "none")(
                              [p for p in older if alive(p)]), 5)
        assert left == "none"
        assert c.nodes[0].alive(), "the node died"
    finally:
        c.close()
        for p in pids(record):  # on the old code they would outlive the test
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if f.read() == b"sleep\x00301\x00":
                        os.kill(p, 9)
            except (FileNotFoundError, ProcessLookupError):
                pass
        shutil.rmtree(d, ignore_errors=True)
    return f"{len(started)} checks timed out; the setsid sleeps of the first {len(older)} are gone"


def main():
    if not (os.access(os.path.join(BIN, "dhaf-node"), os.X_OK) and shutil.which(ETCD)
            and shutil.which("setsid")):
        print("skipped: no dhaf-node, etcd or setsid")
        return 77
    return run_tests([
        ("an exec checker does not see a ${ENV} secret", env_secret_not_inherited),
        ("setsid grandchildren of a timed-out exec checker are killed",
         setsid_grandchildren_killed),
    ])


if __name__ == "__main__":
    sys.exit(main())
