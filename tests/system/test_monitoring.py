# SPDX-License-Identifier: MIT
"""deploy/monitoring against a real node: every metric name the alert rules and the Grafana
dashboard use is on the /metrics of a real dhaf-node (with a remote dhaf-prober, a failing
switcher and a failing notifier, so that every series exists), and the series added for them
behave: failed switch calls and notifier attempts are counted, a prober's report age grows
once it stops and its vote goes. usage: /usr/bin/python3 test_monitoring.py BUILD_BIN_DIR
SOURCE_DIR"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import Cluster, free_port, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
SRC = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "..", "..")
MON = os.path.join(SRC, "deploy", "monitoring")
TOKEN = "pr0be-t0ken"
NAME = re.compile(r"\b((?:dhaf|process)_[a-z0-9_]+)\b")


def services(port, smtp_port, switch):
    """web on two backends; its exec switcher (the script switch) fails while its flag file
    exists, so the first placement is a failed switch call; the email notifier's SMTP port
    has no server."""
    return f"""services:
  - name: web
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: 127.0.0.181}}
      - {{name: ep-2, ip: 127.0.0.182}}
    switcher: {{type: exec, init: /bin/true, switch: {switch}, timeout: 2}}
    health-checker: {{type: web, port: {port}, path: /ok, timeout: 1, retries: 0}}
probers:
  - {{name: probe-1, token: "{TOKEN}", location: test}}
notifiers:
  - {{type: email, name: mail-down, from: dhaf@site.test, to: ops@site.test,
      smtp: {{server: 127.0.0.1, port: {smtp_port}, timeout: 2}}}}
"""


def scrape_text(node):
    with urllib.request.urlopen(f"http://127.0.0.1:{node.rest_port}/metrics", timeout=5) as r:
        return r.read().decode()


def scrape(node, text=None):
    """{series name: [(labels dict, value)]} of the node's /metrics (or of text)."""
    text = text if text is not None else scrape_text(node)
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        assert m, f"not an exposition line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return out


def value(metrics, name, **labels):
    """The value of the series name with exactly these labels, or None."""
    for lb, v in metrics.get(name, []):
        if lb == labels:
            return v
    return None


def used_names():
    """{metric name: where} for every dhaf_/process_ name in the rules' expressions and the
    dashboard's queries (histogram series by their base name)."""
    import yaml
    names = {}
    with open(os.path.join(MON, "dhaf-alerts.yml")) as f:
        for group in yaml.safe_load(f)["groups"]:
            for rule in group["rules"]:
                # the expression and the queries in the annotations' templates
                text = " ".join([rule["expr"], *rule.get("annotations", {}).values()])
                for n in NAME.findall(text):
                    names.setdefault(n, f"rule {rule.get('alert') or rule.get('record')}")
    with open(os.path.join(MON, "dhaf-dashboard.json")) as f:
        dash = json.load(f)
    exprs = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [("variable " + v["name"], v["definition"])
              for v in dash["templating"]["list"] if v.get("definition")]
    exprs += [("annotation " + a["name"], a["expr"]) for a in dash["annotations"]["list"]]
    for where, expr in exprs:
        for n in NAME.findall(expr):
            names.setdefault(n, f"dashboard panel {where!r}")
    return names


def exposed(metrics, name):
    if name in metrics:
        return True
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return base != name and f"{base}_bucket" in metrics


def start():
    work = tempfile.mkdtemp(prefix="dhaf-monitoring-")
    flag, switch = os.path.join(work, "fail"), os.path.join(work, "switch.sh")
    with open(switch, "w") as f:
        f.write(f"#!/bin/sh\n! test -e {flag}\n")
    os.chmod(switch, 0o755)
    open(flag, "w").close()
    port = free_port()
    c = Cluster(BIN, n=1, ttl=3, services=services(port, free_port(), switch))
    c.switch_flag = flag
    try:
        c.add_backend("127.0.0.181", port)
        c.add_backend("127.0.0.182", port)
        c.start_all()
        c.wait_leader(15)
        c.add_prober("probe-1", TOKEN).start()
    except Exception:
        c.close()
        raise
    return c


def test_names(c):
    node = c.nodes[0]
    # every series is there once the prober reported, a switch call and a delivery failed
    m = wait_until("the prober's report, a failed switch call and a failed delivery",
                   lambda: (lambda m: m if value(m, "dhaf_prober_up", prober="probe-1") == 1
                            and "dhaf_prober_report_age_seconds" in m
                            and (value(m, "dhaf_switch_failures_total", service="web",
                                       switcher="exec") or 0) >= 1
                            and (value(m, "dhaf_notification_failures_total", notifier="mail-down",
                                       type="email", outcome="retry") or 0) >= 1
                            else None)(scrape(node)), 30, 0.2)
    # the exposition passes Prometheus' own lint (names, types, units, _total on counters)
    promtool = shutil.which("promtool")
    if promtool:
        r = subprocess.run([promtool, "check", "metrics"], input=scrape_text(node),
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr
    names = used_names()
    assert len(names) >= 30, f"only {len(names)} metric names found in the rules and dashboard"
    missing = {n: where for n, where in names.items() if not exposed(m, n)}
    assert not missing, f"used but not on /metrics: {missing}"
    return (f"{len(names)} names used by the rules and the dashboard, all on /metrics"
            + ("; promtool check metrics: clean" if promtool else "; no promtool to lint"))


def test_series(c):
    node = c.nodes[0]
    m = scrape(node)
    # one series per configured service / notifier, with these labels and no others
    assert [lb for lb, _ in m["dhaf_switch_failures_total"]] == [
        {"service": "web", "switcher": "exec"}], m["dhaf_switch_failures_total"]
    assert value(m, "dhaf_notifications_total", notifier="mail-down", type="email") == 0
    outcomes = sorted(lb["outcome"] for lb, _ in m["dhaf_notification_failures_total"])
    assert outcomes == ["given-up", "init-failed", "retry"], outcomes
    assert value(m, "dhaf_notification_failures_total", notifier="mail-down", type="email",
                 outcome="given-up") == 0
    # the node's log has the failures the counters count
    fails = wait_until("switch-failed and notify-retry in the log",
                       lambda: (lambda ev: ev if "switch-failed" in ev and "notify-retry" in ev
                                else None)({e["event"] for e in node.log_events()}), 10)
    assert fails
    # the counters keep counting the retries (switch: 1 s, 2 s ...; mail: 0.5 s, 1 s ...)
    before = value(m, "dhaf_switch_failures_total", service="web", switcher="exec")
    wait_until("more failed switch calls",
               lambda: value(scrape(node), "dhaf_switch_failures_total", service="web",
                             switcher="exec") > before, 15, 0.2)
    # the switcher works again: the retry lands, counted as a switch; no more failures
    os.unlink(c.switch_flag)
    m = wait_until("the placement counted as a switch", lambda: (lambda m: m if value(
        m, "dhaf_switches_total", service="web", kind="switching") == 1 else None)(scrape(node)),
        30, 0.2)
    failed = value(m, "dhaf_switch_failures_total", service="web", switcher="exec")
    assert value(m, "dhaf_ep_current", service="web", entry_point="ep-1") == 1
    assert value(scrape(node), "dhaf_switch_failures_total", service="web",
                 switcher="exec") == failed
    # process series are plausible
    assert 1 << 20 < value(m, "process_resident_memory_bytes") < 1 << 30
    assert 3 <= value(m, "process_open_fds") <= value(m, "process_max_fds")
    assert value(m, "dhaf_threads") >= 2
    assert value(m, "dhaf_voters_expected") == 2 and value(m, "dhaf_voters_needed") == 2
    return (f"{failed:.0f} failed switch calls, then 1 switch; notification retries "
            f"{value(m, 'dhaf_notification_failures_total', notifier='mail-down', type='email', outcome='retry'):.0f}, "
            f"RSS {value(m, 'process_resident_memory_bytes') / 2**20:.1f} MiB, "
            f"{value(m, 'process_open_fds'):.0f} FDs")


def test_prober_age(c):
    node = c.nodes[0]
    fresh = wait_until("a fresh report of probe-1", lambda: (lambda a: a is not None and a < 1.5)(
        value(scrape(node), "dhaf_prober_report_age_seconds", prober="probe-1")), 10, 0.1)
    assert fresh
    c.probers[0].kill()
    # the age grows past 3 tacts (3 s) and the vote goes with its lease
    wait_until("probe-1's report age above 3 s",
               lambda: value(scrape(node), "dhaf_prober_report_age_seconds",
                             prober="probe-1") > 3, 10, 0.2)
    m = wait_until("probe-1's vote gone", lambda: (lambda m: m if value(
        m, "dhaf_prober_up", prober="probe-1") == 0 else None)(scrape(node)), 15, 0.2)
    age = value(m, "dhaf_prober_report_age_seconds", prober="probe-1")
    assert age > 3, age
    assert value(m, "dhaf_voters_fresh") == 1 and value(m, "dhaf_services_without_quorum") == 1
    return f"age {age:.1f} s when the vote was gone; quorum lost for 1 service"


def main():
    if not os.path.exists(os.path.join(BIN, "dhaf-prober")):
        print(f"skipped: no {BIN}/dhaf-prober")
        return 77
    if importlib.util.find_spec("yaml") is None:
        print("skipped: python3-yaml is not installed (run with /usr/bin/python3)")
        return 77
    c = start()
    try:
        return run_tests([
            ("every metric of the rules and the dashboard is on a real node's /metrics",
             lambda: test_names(c)),
            ("switch and notification failures counted, one series per service / notifier",
             lambda: test_series(c)),
            ("a stopped prober: its report age grows, its vote and the quorum go",
             lambda: test_prober_age(c)),
        ])
    finally:
        c.close()
        shutil.rmtree(os.path.dirname(c.switch_flag), ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
