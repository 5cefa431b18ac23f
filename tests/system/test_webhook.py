# SPDX-License-Identifier: MIT
"""The webhook notifier from a real cluster: three nodes fail over on real backends and POST to
a local receiver (tests/fakes/webhook.py) that checks the HMAC signature. The JSON hook gets the
failover signed, after two answers 500 (retried, the same delivery id); its filters keep out
what they should (an info event below min-severity, kinds not listed); the Slack hook gets
{"text"} only; a redirect is not followed; neither the secret nor the URL's path reaches a log.
Repeats of one entry point's ep-down within the window arrive as the first at once and then
one message with a count, and the counts add up to what etcd recorded.
usage: /usr/bin/python3 test_webhook.py BUILD_BIN_DIR"""
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from dhafsys import Cluster, FileSwitcher, fake_call, free_port, fresh, run_tests, wait_until  # noqa: E402

BIN = sys.argv[1] if len(sys.argv) > 1 else "build/bin"
FAKES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes")
SECRET = "wh-5ecret-7f3a9c1e42"
WINDOW = 20


def spawn(args):
    p = subprocess.Popen(["/usr/bin/python3", *args, "--watch-stdin"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    assert line.startswith("LISTENING"), (args, line)
    return p, int(line.split()[1])


def make():
    work = tempfile.mkdtemp(prefix="dhaf-webhook-")
    hook, hook_port = spawn([os.path.join(FAKES, "webhook.py"), "--port", "0", "--secret",
                             SECRET])
    port = free_port()
    sw = FileSwitcher(work)
    base = f"http://127.0.0.1:{hook_port}/hooks"
    services = f"""services:
  - name: web
    domain: site.test
    entry-points:
      - {{name: ep-1, ip: 127.0.0.81}}
      - {{name: ep-2, ip: 127.0.0.82}}
    switcher: {sw.yaml}
    health-checker: {{type: web, port: {port}, path: /ok, timeout: 1, retries: 0}}
notifiers:
  - {{type: webhook, name: hook-json, url: "{base}/json", secret: "{SECRET}",
      min-severity: warning, events: [failover, ep-down, ep-up], retries: 3, timeout: 5}}
  - {{type: webhook, name: hook-slack, url: "{base}/slack", format: slack}}
  - {{type: webhook, name: hook-redirect, url: "{base}/redirect", events: [failover]}}
  - {{type: webhook, name: hook-collapse, url: "{base}/collapse", events: [ep-down],
      repeat-window: {WINDOW}}}
"""
    c = Cluster(BIN, n=3, ttl=3, services=services)
    c.work, c.hook, c.hook_port, c.sw = work, hook, hook_port, sw
    c.b1 = c.add_backend("127.0.0.81", port)
    c.b2 = c.add_backend("127.0.0.82", port)
    return c


def close(c):
    c.close()
    if c.hook.poll() is None:
        c.hook.terminate()
        c.hook.wait(5)
    shutil.rmtree(c.work, ignore_errors=True)


def current(c):
    return c.sw.current()


def received(c, name):
    return fake_call(c.hook_port, f"/_fake/received?path=/hooks/{name}")["requests"]


def delivered(c, name, kind=None):
    """The bodies (JSON) the receiver answered 200 at /hooks/<name>, of kind (JSON hooks)."""
    return [r["json"] for r in received(c, name)
            if r["status"] == 200 and (kind is None or r["json"].get("kind") == kind)]


def slack_has(c, word):
    return [b for b in delivered(c, "slack") if word in b.get("text", "")]


def test_signed_json_filters_slack(c):
    fake_call(c.hook_port, "/_fake/fail", {"path": "/hooks/json", "status": 500, "count": 2})
    fake_call(c.hook_port, "/_fake/fail", {"path": "/hooks/redirect", "status": 302, "count": 100,
                                      "location": f"http://127.0.0.1:{c.hook_port}/hooks/json"})
    c.start_all()
    wait_until("traffic on ep-1", lambda: current(c) == "ep-1", 15)
    c.b1.stop()
    wait_until("failover", lambda: current(c) == "ep-2", 10)
    wait_until("the failover at the JSON hook", lambda: delivered(c, "json", "failover"), 30)

    reqs = received(c, "json")
    assert all(r["sig"] == "ok" for r in reqs), [(r["sig"], r["headers"]) for r in reqs]
    # the first event there was answered 500 twice and retried with the same delivery id
    assert [r["status"] for r in reqs[:3]] == [500, 500, 200], [r["status"] for r in reqs]
    ids = {r["headers"]["x-dhaf-delivery"] for r in reqs[:3]}
    assert len(ids) == 1, ids
    ev = next(r for r in reqs if r["status"] == 200 and r["json"]["kind"] == "failover")
    body = ev["json"]
    assert body["severity"] == "warning" and body["service"] == "web" and \
        body["from"] == "ep-1" and body["to"] == "ep-2" and body["cluster"] == "c1", body
    assert body["message"].startswith("failover of web from ep-1 to ep-2"), body
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["time"]), body
    assert body["id"] == f"c1-{body['seq']}" and body["notifier"] == "hook-json", body
    assert ev["headers"]["x-dhaf-event"] == "failover", ev["headers"]
    assert ev["headers"]["content-type"] == "application/json", ev["headers"]
    assert ev["headers"]["x-dhaf-delivery"] == body["id"], ev["headers"]
    # filters: new-leader and node-up (info, not listed) never came, before the failover either
    kinds = {r["json"]["kind"] for r in reqs}
    assert kinds <= {"failover", "ep-down"}, kinds
    # the Slack hook: {"text"} and nothing else, unsigned
    wait_until("the failover at the Slack hook", lambda: slack_has(c, "failover"), 30)
    for r in received(c, "slack"):
        assert list(r["json"]) == ["text"], r["body"]
        assert "x-dhaf-signature" not in r["headers"], r["headers"]
    text = slack_has(c, "failover")[0]["text"]
    assert text.startswith("*WARNING* failover | c1 | web\n"), text

    # ep-1 back (ep-up: info, below the JSON hook's min-severity), then down again
    c.b1.start()
    wait_until("switching back", lambda: current(c) == "ep-1", 15)
    wait_until("ep-up at the Slack hook", lambda: slack_has(c, "ep-1 of web is UP"), 30)
    c.b1.stop()
    wait_until("second failover", lambda: current(c) == "ep-2", 10)
    wait_until("the second failover at the JSON hook",
               lambda: len(delivered(c, "json", "failover")) == 2, 30)
    kinds = [r["json"]["kind"] for r in received(c, "json")]
    assert "ep-up" not in kinds, kinds

    # the redirect: answered 302 once per event, never followed, given up with a clear error
    wait_until("the redirect given up", lambda: any(
        "hook-redirect" in line and "redirect" in line and "302" in line
        for n in c.nodes for line in n.log_lines() if "notify-given-up" in line), 30)
    redirected = received(c, "redirect")
    assert all(r["status"] == 302 for r in redirected), redirected
    assert len(redirected) == len({r["headers"]["x-dhaf-delivery"] for r in redirected}), \
        "a refused event was sent again"
    assert not [r for r in received(c, "json") if r["json"].get("notifier") == "hook-redirect"]

    # neither the secret nor the URLs' paths reach the logs
    for n in c.nodes:
        for line in n.log_lines():
            assert SECRET not in line and "/hooks/" not in line, line
    return (f"{len(reqs)} signed POSTs (2 answered 500, retried with the same id), "
            f"JSON hook kinds {sorted(set(kinds))}, Slack {{text}} only, "
            f"{len(redirected)} redirect(s) given up")


def ep2_downs(c):
    return [e for e in c.events("ep-down", "web") if e.get("from") == "ep-2"]


def test_repeats_collapse(c):
    c.start_all()
    wait_until("traffic on ep-1", lambda: current(c) == "ep-1", 15)
    # ep-2 (not in use) flaps until etcd has at least 3 ep-down events of it
    t0 = time.monotonic()
    while len(ep2_downs(c)) < 3:
        assert time.monotonic() - t0 < 60, f"only {len(ep2_downs(c))} ep-down of ep-2"
        n = len(ep2_downs(c))
        c.b2.stop()
        wait_until("ep-2 down", lambda k=n: len(ep2_downs(c)) > k, 15)
        c.b2.start()
        wait_until("ep-2 up", lambda: any(e.get("from") == "ep-2" and e["seq"] >
                                          ep2_downs(c)[-1]["seq"] for e in c.events("ep-up", "web")),
                   15)
    first_at = ep2_downs(c)[0]["at"] / 1000

    def counted():
        total = 0
        for b in delivered(c, "collapse"):
            m = re.search(r"\(and (\d+) more like it in (\d+) s\)$", b["message"])
            total += 1 + (int(m.group(1)) if m else 0)
        return total

    downs = len(ep2_downs(c))
    wait_until("every ep-down of ep-2 accounted for at the hook",
               lambda: counted() == len(ep2_downs(c)), WINDOW * 3)
    msgs = delivered(c, "collapse")
    assert all(b["kind"] == "ep-down" and b["from"] == "ep-2" for b in msgs), msgs
    assert len(msgs) < len(ep2_downs(c)), [b["message"] for b in msgs]  # some were collapsed
    summaries = [b for b in msgs if "more like it in" in b["message"]]
    assert summaries and summaries[0]["message"].endswith(f"in {WINDOW} s)"), msgs
    arrivals = [r["at"] for r in received(c, "collapse") if r["status"] == 200]
    assert arrivals[0] - first_at < 5, "the first one did not go out at once"
    assert arrivals[1] - first_at >= WINDOW - 1, "a repeat went out before its window ended"
    return (f"{len(ep2_downs(c))} ep-down of ep-2 in etcd ({downs} when the flapping stopped) "
            f"-> {len(msgs)} messages: {[b['message'][-34:] for b in msgs]}")


def with_cluster(fn):
    return fresh(fn, make, close)


if __name__ == "__main__":
    sys.exit(run_tests([
        ("webhook: signed JSON after two 500s, filters, Slack {text}, redirect not followed",
         with_cluster(test_signed_json_filters_slack)),
        ("webhook: repeats of one entry point's ep-down collapse into one message with a count",
         with_cluster(test_repeats_collapse)),
    ]))
