# SPDX-License-Identifier: MIT
"""Issue 15, item 7: plugins that others can write are refused.

Finding: a world-writable extensions directory with a mode-666 .so was loaded (as root): any
local user could run code as dhaf. Now the directory and every .so must belong to root or to
the running user and be writable by nobody else, or the node (and the prober) refuses to start
with an error naming the file.
usage: test_config_extensions.py BUILD_BIN_DIR
"""
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "system"))
from dhafsys import run_tests  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
NODE = os.path.join(BIN, "dhaf-node")
PLUGIN = os.path.join(BIN, "..", "extensions", "example_notifier.so")


def setup(tmp):
    ext = os.path.join(tmp, "ext")
    os.mkdir(ext, 0o755)
    os.chmod(ext, 0o755)
    so = os.path.join(ext, "example_notifier.so")
    shutil.copyfile(PLUGIN, so)
    os.chmod(so, 0o644)
    cfg = os.path.join(tmp, "node.dhaf")
    with open(cfg, "w") as f:
        f.write(f"""dhaf:
  cluster-name: c1
  node-name: n1
  extensions-dir: {ext}
etcd:
  hosts: http://127.0.0.1:2379
services:
  - name: main
    domain: foo.com
    entry-points:
      - {{name: ep-1, ip: 127.0.0.11}}
    switcher: {{type: exec, init: /bin/true, switch: /bin/true, timeout: 2}}
    health-checker: {{type: tcp, port: 80}}
notifiers:
  - {{type: example-log, file: {tmp}/events.log}}
""")
    return ext, so, cfg


def check(cfg):
    r = subprocess.run([NODE, "--check-config", "--config", cfg], capture_output=True, text=True,
                       timeout=30)
    return r.returncode, r.stdout + r.stderr


def refused(cfg, *must):
    rc, out = check(cfg)
    assert rc == 2, f"want exit 2, got {rc}: {out}"
    for m in must:
        assert m in out, f"no {m!r} in: {out}"
    return out.strip().splitlines()[0]


def trusted_loads():
    with tempfile.TemporaryDirectory(prefix="dhaf-sec-ext-") as tmp:
        _ext, _so, cfg = setup(tmp)
        rc, out = check(cfg)
        assert rc == 0 and "OK" in out, (rc, out)
    return "0755 dir, 0644 .so owned by this user: loaded (example-log notifier accepted)"


def writable_dir_refused():
    with tempfile.TemporaryDirectory(prefix="dhaf-sec-ext-") as tmp:
        ext, _so, cfg = setup(tmp)
        os.chmod(ext, 0o777)
        note = refused(cfg, f"extensions directory {ext} is writable by every user",
                       "chmod go-w")
        os.chmod(ext, 0o775)
        refused(cfg, f"extensions directory {ext} is writable by its group")
    return note


def writable_so_refused():
    with tempfile.TemporaryDirectory(prefix="dhaf-sec-ext-") as tmp:
        _ext, so, cfg = setup(tmp)
        os.chmod(so, 0o666)
        note = refused(cfg, f"plugin {so} is writable by every user (mode 0666)")
        os.chmod(so, 0o664)
        refused(cfg, f"plugin {so} is writable by its group")
    return note


def foreign_owner_refused():
    if os.geteuid() != 0:
        return "not root here: cannot give a file to another user (checked by the others)"
    with tempfile.TemporaryDirectory(prefix="dhaf-sec-ext-") as tmp:
        ext, so, cfg = setup(tmp)
        os.chown(so, 65534, 65534)
        note = refused(cfg, f"plugin {so} is owned by uid 65534", "chown it")
        os.chown(so, 0, 0)
        os.chown(ext, 65534, 65534)
        refused(cfg, f"extensions directory {ext} is owned by uid 65534")
    return note


def main():
    if not (os.access(NODE, os.X_OK) and os.path.isfile(PLUGIN)):
        print(f"skipped: no {NODE} or no {PLUGIN}")
        return 77
    return run_tests([
        ("a plugin only this user can write is loaded", trusted_loads),
        ("a group/world-writable extensions directory is refused", writable_dir_refused),
        ("a group/world-writable .so is refused", writable_so_refused),
        ("a .so or directory of another user is refused", foreign_owner_refused),
    ])


if __name__ == "__main__":
    sys.exit(main())
