# SPDX-License-Identifier: MIT
"""Issue 15, item 7: dhafctl's token stays out of `ps`.

Finding: `dhafctl --token T` showed the token to every user of the machine (ps,
/proc/PID/cmdline), and there was no other way to give it than DHAF_TOKEN or a node's config.
Now: --token-file FILE and DHAF_TOKEN work; --token still works but warns on stderr and wipes
the argument, so /proc/PID/cmdline no longer shows it while dhafctl waits for the node.
usage: test_ctl_token.py BUILD_BIN_DIR
"""
import os
import shutil
import socket
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
from dhafsys import Cluster, ETCD, free_port, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
CTL = os.path.join(BIN, "dhafctl")
TOKEN = "ctl-token-9d41c0be57a2e8f3"


def ctl(endpoint, *args, env_token=None, timeout=30):
    env = {k: v for k, v in os.environ.items() if k not in ("DHAF_TOKEN", "DHAF_ENDPOINT")}
    if env_token is not None:
        env["DHAF_TOKEN"] = env_token
    return subprocess.run([CTL, "version", "--endpoint", endpoint, *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def token_file(c):
    ep = f"127.0.0.1:{c.nodes[0].grpc_port}"
    path = os.path.join(c.workdir, "ctl.token")
    with open(path, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(path, 0o600)
    r = ctl(ep, "--token-file", path)
    assert r.returncode == 0 and "dhaf-node" in r.stdout, (r.returncode, r.stdout, r.stderr)
    assert "warning" not in r.stderr, r.stderr
    # a wrong token in the file is refused by the node; a missing file is a usage error
    with open(path, "w") as f:
        f.write("not-the-token-0000\n")
    r = ctl(ep, "--token-file", path)
    assert r.returncode == 1 and "invalid token" in r.stderr, (r.returncode, r.stderr)
    missing = os.path.join(c.workdir, "nope.token")
    r = ctl(ep, "--token-file", missing)
    assert r.returncode == 2 and missing in r.stderr and "No such file" in r.stderr, \
        (r.returncode, r.stderr)
    r = ctl(ep, "--token-file", path, "--token", TOKEN)
    assert r.returncode == 2 and "not both" in r.stderr, (r.returncode, r.stderr)
    return "--token-file: right token exit 0, wrong 1, missing file 2 naming it"


def env_token(c):
    ep = f"127.0.0.1:{c.nodes[0].grpc_port}"
    r = ctl(ep, env_token=TOKEN)
    assert r.returncode == 0 and "dhaf-node" in r.stdout, (r.returncode, r.stdout, r.stderr)
    assert "warning" not in r.stderr, r.stderr
    return "DHAF_TOKEN: exit 0, no warning"


def token_flag_warns_and_hides(c):
    ep = f"127.0.0.1:{c.nodes[0].grpc_port}"
    r = ctl(ep, "--token", TOKEN)
    assert r.returncode == 0, (r.returncode, r.stderr)
    assert "warning: --token" in r.stderr and "--token-file" in r.stderr, r.stderr
    assert TOKEN not in r.stderr, r.stderr
    # While dhafctl waits for a node that never answers, its command line is what `ps` shows.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", free_port()))
        silent.listen(8)
        port = silent.getsockname()[1]
        p = subprocess.Popen([CTL, "version", "--endpoint", f"127.0.0.1:{port}", "--token", TOKEN,
                              "--timeout", "10"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
        try:
            def cmdline():
                with open(f"/proc/{p.pid}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
                return args if b"version" in args and b"--token" in args else None
            # the wipe happens right after the arguments are parsed: poll for it
            try:
                args = wait_until("dhafctl to wipe its --token argument",
                                  lambda: (lambda a: a if a and TOKEN.encode() not in a else None)(
                                      cmdline()), 5)
            except AssertionError:
                raise AssertionError(f"ps shows the token: {cmdline()}")
            shown = args[args.index(b"--token") + 1]
            assert shown and set(shown) == {ord("x")}, args
        finally:
            p.kill()
            p.wait()
    return "warning on stderr; ps shows --token " + shown.decode()


def main():
    if not (os.access(CTL, os.X_OK) and shutil.which(ETCD)):
        print("skipped: no dhafctl or no etcd")
        return 77
    c = Cluster(BIN, n=1, ttl=3)
    try:
        n = c.nodes[0]
        text = open(n.config).read().replace("  tact-interval: 1\n",
                                             f"  tact-interval: 1\n  api-token: {TOKEN}\n")
        open(n.config, "w").write(text)
        c.start_all()
        c.wait_leader(10)
        return run_tests([
            ("dhafctl --token-file", lambda: token_file(c)),
            ("dhafctl with DHAF_TOKEN", lambda: env_token(c)),
            ("dhafctl --token warns and is wiped from the command line",
             lambda: token_flag_warns_and_hides(c)),
        ])
    finally:
        c.close()


if __name__ == "__main__":
    sys.exit(main())
