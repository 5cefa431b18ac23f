# SPDX-License-Identifier: MIT
"""Plugins: three real nodes (and a remote prober) load the example plugins of
providers/examples from their extensions directory and run a service on them - the
example-file checker decides health from files, failover goes through the
example-file-switcher (its file changes) and, when the node delivers events to notifiers, the
example-log notifier writes lines. A node given the bad-ABI plugin does not start; a config
naming an unknown type lists the plugin types among the known ones.
usage: /usr/bin/python3 test_plugins.py BUILD_BIN_DIR EXTENSIONS_DIR EXTENSIONS_BAD_DIR"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import Cluster, Node, run_tests, wait_until  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
EXT = os.path.abspath(sys.argv[2] if len(sys.argv) > 2 else os.path.join(BIN, "..", "extensions"))
EXT_BAD = os.path.abspath(sys.argv[3] if len(sys.argv) > 3 else
                          os.path.join(BIN, "..", "extensions-bad"))
PLUGINS = {"example_checker.so", "example_switcher.so", "example_notifier.so"}
TOKEN = "pl-prober-t0ken"


def services(d):
    """The service on the example checker and switcher, and the example notifier."""
    return f"""services:
  - name: web
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: 127.0.0.61}}
      - {{name: ep-2, ip: 127.0.0.62}}
    switcher: {{type: example-file-switcher, file: {d}/current}}
    health-checker: {{type: example-file, dir: {d}/ok}}
notifiers:
  - {{type: example-log, name: audit, file: {d}/events.log}}
probers:
  - {{name: probe-1, token: "{TOKEN}", location: lab}}
  - {{name: probe-2, token: "{TOKEN}", location: lab}}
"""


def set_key(path, section, line):
    """Adds `line` (indented) right under the top-level `section:` of a generated config."""
    with open(path) as f:
        text = f.read()
    assert f"{section}:\n" in text, text
    with open(path, "w") as f:
        f.write(text.replace(f"{section}:\n", f"{section}:\n  {line}\n", 1))


def make_cluster():
    d = tempfile.mkdtemp(prefix="dhaf-plug-")
    os.mkdir(os.path.join(d, "ok"))
    c = Cluster(BIN, n=3, ttl=3, services=services(d))
    c.d = d
    # Three ways to the same plugins: an absolute extensions-dir (node-1), a relative one,
    # resolved against the config file's directory (node-2: a copy, as an install would do),
    # and the default `extensions` next to the config (node-3: a link to the build's).
    set_key(c.nodes[0].config, "dhaf", f"extensions-dir: {EXT}")
    os.mkdir(os.path.join(c.workdir, "plugins"))
    for so in PLUGINS:
        shutil.copy(os.path.join(EXT, so), os.path.join(c.workdir, "plugins", so))
    set_key(c.nodes[1].config, "dhaf", "extensions-dir: plugins")
    os.symlink(EXT, os.path.join(c.workdir, "extensions"))
    return c


def ok_file(c, ep, healthy):
    p = os.path.join(c.d, "ok", ep)
    if healthy:
        open(p, "w").close()
    elif os.path.exists(p):
        os.unlink(p)


def switcher_points_to(c):
    try:
        with open(os.path.join(c.d, "current")) as f:
            return f.read().strip() or None
    except FileNotFoundError:
        return None


def state(c):
    return c.etcd.get_json(c.prefix + "services/web/state") or {}


def svc_events(c, kind=None):
    return c.events(kind, service="web")


def wait_points_to(c, ep, timeout):
    return wait_until(f"the example switcher's file to say {ep}",
                      lambda: switcher_points_to(c) == ep and state(c).get("current") == ep,
                      timeout, 0.02)


def notifier_lines(c):
    try:
        with open(os.path.join(c.d, "events.log")) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def test_examples_run_a_service(c):
    ok_file(c, "ep-1", True)
    ok_file(c, "ep-2", True)
    c.start_all()
    for n in c.nodes:
        loaded = wait_until(f"{n.name} to load the plugins",
                            lambda n=n: (lambda e: e if len(e) == 3 else None)(
                                n.log_events("plugin-loaded")), 5)
        assert {e["type"] for e in loaded} == {"example-file", "example-file-switcher",
                                               "example-log"}, loaded
        assert {os.path.basename(e["file"]) for e in loaded} == PLUGINS, loaded
    assert os.path.dirname(c.nodes[1].log_events("plugin-loaded")[0]["file"]) == \
        os.path.join(c.workdir, "plugins")
    assert os.path.dirname(c.nodes[2].log_events("plugin-loaded")[0]["file"]) == \
        os.path.join(c.workdir, "extensions")

    # A prober with the plugin votes with it; one without cannot use the plan.
    p1 = c.add_prober("probe-1", TOKEN)
    set_key(p1.config, "prober", f"extensions-dir: {EXT}")
    p1.start()

    wait_points_to(c, "ep-1", 10)  # nothing set yet: the switcher is asked for ep-1
    assert svc_events(c, "switching")[-1]["to"] == "ep-1", svc_events(c)

    ok_file(c, "ep-1", False)  # the checker's file goes: ep-1 is down everywhere
    wait_points_to(c, "ep-2", 10)
    ev = svc_events(c, "failover")[-1]
    assert ev["from"] == "ep-1" and ev["to"] == "ep-2", ev
    downs = svc_events(c, "ep-down")
    assert downs and "missing" in json.dumps(downs[-1]), downs  # the plugin's reason code
    assert state(c)["eps"]["ep-1"] == "down", state(c)

    ok_file(c, "ep-1", True)
    wait_points_to(c, "ep-1", 10)  # healthy again and first: switching back
    assert svc_events(c, "switching")[-1]["to"] == "ep-1"

    vote = wait_until("probe-1's vote from the plugin checker",
                      lambda: c.etcd.get_json(c.prefix + "votes/probe-1"), 10)
    got = {r["ep"]: r for r in vote["results"]}
    # a reason code only for a failing check (compact votes): ep-1's is the plugin's own
    assert got["ep-1"].get("reason", "missing") == "missing" and got["ep-2"]["healthy"] and \
        "reason" not in got["ep-2"], vote
    assert p1.log_events("plugin-loaded"), p1.log_lines()
    assert not [e for e in p1.log_events("plan-failed") if "example" in e.get("reason", "")], \
        p1.log_lines()

    p2 = c.add_prober("probe-2", TOKEN)  # its extensions-dir does not exist: no plugins
    set_key(p2.config, "prober", "extensions-dir: no-such-dir")
    p2.start()
    failed = wait_until("probe-2 to refuse the plan",
                        lambda: [e for e in p2.log_events("plan-failed")
                                 if "example-file" in e.get("reason", "")], 10)
    assert "unknown health-checker type" in failed[-1]["reason"], failed

    # Notifiers: only when this node delivers events to them (the leader logs notifier-ready).
    lead = c.node(c.wait_leader(3))
    if lead.log_events("notifier-ready"):
        lines = wait_until("the example notifier's lines",
                           lambda: (lambda ls: ls if any("kind=failover" in l for l in ls)
                                    else None)(notifier_lines(c)), 15)
        fo = next(l for l in lines if "kind=failover" in l)
        assert "notifier=audit" in fo and "from=ep-1" in fo and "to=ep-2" in fo, fo
        notified = f"the notifier wrote {len(lines)} lines"
    else:
        notified = ("notifier NOT checked: this build delivers no events to notifiers "
                    "(no event=notifier-ready)")

    # A clean stop with plugin instances in use (under ASan: no leak, no bad access).
    rc, _took = lead.terminate(10)
    assert rc == 0, (rc, lead.log_lines()[-20:])
    return ("checker, switcher and failover through the plugins; prober voted with the plugin "
            "checker; " + notified + "; the leader stopped cleanly")


def test_bad_abi_refused():
    work = tempfile.mkdtemp(prefix="dhaf-plug-bad-")
    try:
        n = Node("c1", "node-1", BIN, work, "127.0.0.1:1")
        set_key(n.config, "dhaf", f"extensions-dir: {EXT_BAD}")
        n.start()
        rc = n.proc.wait(10)
        log = "\n".join(n.log_lines())
        assert rc == 2, (rc, log)
        assert ("dhaf-node: plugin " + os.path.join(EXT_BAD, "example_bad_abi.so") +
                ": ABI version 999, this dhaf speaks 2") in log, log
        assert "was refused; fix or remove it (exit code 2)" in log, log
        assert "node-start" not in log, log
        # --check-config says the same
        r = subprocess.run([n.bin, "--config", n.config, "--check-config"], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 2 and "ABI version 999, this dhaf speaks 2" in r.stderr, r
        return "exit 2 at start: " + next(l for l in log.splitlines() if "ABI version" in l)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_check_config_knows_plugin_types():
    work = tempfile.mkdtemp(prefix="dhaf-plug-cfg-")
    try:
        n = Node("c1", "node-1", BIN, work, "127.0.0.1:1", services=services(work))
        set_key(n.config, "dhaf", f"extensions-dir: {EXT}")

        def check():
            return subprocess.run([n.bin, "--config", n.config, "--check-config"],
                                  capture_output=True, text=True, timeout=10)
        r = check()
        assert r.returncode == 0 and r.stdout.strip() == "OK", (r.stdout, r.stderr)

        with open(n.config) as f:
            text = f.read()
        with open(n.config, "w") as f:
            f.write(text.replace("type: example-file,", "type: example-fil,"))
        r = check()
        assert r.returncode == 2, r
        assert ('unknown health-checker type "example-fil" (did you mean "example-file"?); '
                'known types: web, tcp, exec, example-file') in r.stderr, r.stderr

        # the same config without the plugins does not validate
        with open(n.config, "w") as f:
            f.write(text.replace(f"extensions-dir: {EXT}", f"extensions-dir: {work}/none"))
        r = check()
        assert r.returncode == 2 and 'unknown switcher type "example-file-switcher"' in r.stderr, \
            r.stderr
        return "unknown type lists example-file; without the plugins the config is invalid"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def with_cluster(fn):
    def run():
        c = make_cluster()
        try:
            return fn(c)
        finally:
            c.close()
            shutil.rmtree(c.d, ignore_errors=True)
    return run


if __name__ == "__main__":
    missing = [so for so in PLUGINS if not os.path.exists(os.path.join(EXT, so))]
    if missing:
        print(f"FAIL the example plugins are not built in {EXT}: {missing}")
        sys.exit(1)
    sys.exit(run_tests([
        ("a node with the bad-ABI plugin refuses to start", test_bad_abi_refused),
        ("--check-config lists plugin types among the known ones",
         test_check_config_knows_plugin_types),
        ("example checker, switcher and notifier run a service on three nodes and a prober",
         with_cluster(test_examples_run_a_service)),
    ]))
