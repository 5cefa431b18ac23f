# SPDX-License-Identifier: MIT
"""deploy/monitoring's files, checked with Prometheus' promtool: the alert rules pass
`promtool check rules` and their unit tests (`promtool test rules`), every alert carries a
severity, a summary, a description and a runbook_url whose anchor is a heading of
docs/runbook.md; the Grafana dashboard is JSON with a datasource variable that every panel
uses, and each of its queries is valid PromQL (checked by promtool as a recording rule).
Skipped (exit 77) when promtool is not installed (Debian package prometheus).
usage: /usr/bin/python3 test_monitoring_files.py SOURCE_DIR"""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import run_tests  # noqa: E402

SRC = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else
                      os.path.join(os.path.dirname(__file__), "..", ".."))
MON = os.path.join(SRC, "deploy", "monitoring")
RULES = os.path.join(MON, "dhaf-alerts.yml")
DASHBOARD = os.path.join(MON, "dhaf-dashboard.json")
PROMTOOL = shutil.which("promtool")


def promtool(*args, cwd=MON):
    """(exit code, stdout + stderr) of promtool with args, within 60 s."""
    r = subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    return r.returncode, r.stdout + r.stderr


def load_rules():
    import yaml
    with open(RULES) as f:
        return [r for g in yaml.safe_load(f)["groups"] for r in g["rules"]]


def test_check_rules():
    rc, out = promtool("check", "rules", RULES)
    assert rc == 0, out
    # and promtool does catch a broken expression (this check can fail)
    with tempfile.TemporaryDirectory() as d:
        bad = os.path.join(d, "bad.yml")
        with open(bad, "w") as f:
            f.write("groups:\n  - name: bad\n    rules:\n"
                    "      - alert: Broken\n        expr: sum(dhaf_leader\n")
        rc_bad, out_bad = promtool("check", "rules", bad)
    assert rc_bad != 0, f"promtool accepted a broken expression: {out_bad}"
    return out.strip().splitlines()[-1].strip()


def test_unit_tests():
    rc, out = promtool("test", "rules", "dhaf-alerts.test.yml")
    assert rc == 0, out
    assert "SUCCESS" in out, out
    return "promtool test rules: SUCCESS"


def runbook_anchors():
    """GitHub's anchors of the headings of docs/runbook.md."""
    anchors = set()
    with open(os.path.join(SRC, "docs", "runbook.md")) as f:
        for line in f:
            m = re.match(r"#{1,6} (.*)", line)
            if m:
                slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
                anchors.add(slug)
    return anchors


def test_annotations():
    anchors = runbook_anchors()
    alerts = [r for r in load_rules() if "alert" in r]
    assert len(alerts) >= 15, f"only {len(alerts)} alerts"
    problems = []
    for r in alerts:
        name, ann = r["alert"], r.get("annotations", {})
        for key in ("summary", "description", "runbook_url"):
            if not ann.get(key, "").strip():
                problems.append(f"{name}: no {key}")
        if r.get("labels", {}).get("severity") not in ("critical", "warning", "info"):
            problems.append(f"{name}: severity {r.get('labels', {}).get('severity')!r}")
        url = ann.get("runbook_url", "")
        m = re.match(r"https://[^/]+/docs/runbook\.md#([\w-]+)$", url)
        if not m:
            problems.append(f"{name}: runbook_url {url!r} is not .../docs/runbook.md#anchor")
        elif m.group(1) not in anchors:
            problems.append(f"{name}: docs/runbook.md has no heading for #{m.group(1)}")
    assert not problems, "; ".join(problems)
    return f"{len(alerts)} alerts, each with summary, description and a runbook section"


def dashboard_queries(dash):
    out = [(p["title"], t["expr"]) for p in dash["panels"] for t in p.get("targets", [])]
    out += [("variable " + v["name"], v["definition"])
            for v in dash["templating"]["list"] if v.get("definition")]
    out += [("annotation " + a["name"], a["expr"]) for a in dash["annotations"]["list"]]
    return out


def test_dashboard():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("datasource")
    assert ds and ds["type"] == "datasource" and ds["query"] == "prometheus", ds
    panels = [p for p in dash["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), f"panel ids repeat: {ids}"
    for p in panels:
        assert p.get("datasource", {}).get("uid") == "${datasource}", p["title"]
        assert p["targets"], f"panel {p['title']!r} has no query"
        for t in p["targets"]:
            assert t.get("datasource", {}).get("uid") == "${datasource}", p["title"]
    titles = " ".join(p["title"].lower() for p in panels)
    for want in ("leader", "entry point", "switch failures", "notifications",
                 "prober report age", "check latency", "resident memory", "file descriptors"):
        assert want in titles, f"no panel about {want}"
    # each query as a recording rule, with Grafana's variables replaced: promtool parses it
    queries = dashboard_queries(dash)
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$job": ".*", "$service": ".*"}
    rules = []
    for i, (where, q) in enumerate(queries):
        if q.startswith("label_values("):  # Grafana's own function: its selector only
            q = re.match(r"label_values\((.*), *\w+\)$", q).group(1)
        for k, v in subst.items():
            q = q.replace(k, v)
        assert "$" not in q, f"{where}: unknown variable in {q!r}"
        rules.append({"record": f"dashboard:query_{i}", "expr": q})
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "dashboard-queries.yml")
        with open(path, "w") as f:
            json.dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)  # JSON is YAML
        rc, out = promtool("check", "rules", path)
    assert rc == 0, out
    return f"{len(panels)} panels, {len(queries)} queries, all valid PromQL"


def main():
    if not PROMTOOL:
        print("skipped: promtool is not installed (apt-get install prometheus; "
              "scripts/install-deps.sh does)")
        return 77
    if importlib.util.find_spec("yaml") is None:
        print("skipped: python3-yaml is not installed (run with /usr/bin/python3)")
        return 77
    return run_tests([
        ("promtool check rules", test_check_rules),
        ("promtool test rules (the main alerts on made-up series)", test_unit_tests),
        ("every alert: severity, summary, description, runbook_url to a runbook heading",
         test_annotations),
        ("the Grafana dashboard: datasource variable, panels, valid PromQL", test_dashboard),
    ])


if __name__ == "__main__":
    sys.exit(main())
