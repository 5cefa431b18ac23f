#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A local webhook receiver for tests: records every POST and checks dhaf's signature.

Usage:
    webhook.py --port P [--secret S] [--max-skew 300] [--watch-stdin]

Plain HTTP on 127.0.0.1. Prints "LISTENING <port>" (flushed) once it accepts connections;
--port 0 picks a free port. Threaded, quiet, exits on SIGTERM or SIGINT; with --watch-stdin
also when its stdin reaches EOF.

POST <any path> (not under /_fake/): recorded as {"n", "path", "headers" (names lower-case),
"body" (text), "json" (the parsed body or null), "sig": "ok" | "bad" | "stale" | "none",
"status" (what was answered), "at" (Unix s)}, then answered 200 "ok" (as Slack does) unless a
fail rule applies. "sig" checks dhaf's scheme (docs/config.md): X-Dhaf-Signature is
"sha256=" + hex HMAC-SHA256 keyed with --secret over "<X-Dhaf-Timestamp>.<raw body>"; "stale"
when the timestamp is more than --max-skew seconds from the receiver's clock; "none" when the
request has no signature header (or no --secret was given). A body over 1 MiB gets 413.

Test controls (JSON bodies):
    POST /_fake/fail {"path": "/x", "status": 500, "count": 2[, "location": "..."]
                      [, "delay": S]}
                        the next `count` POSTs to path are answered `status` (a 3xx with
                        Location: location) after S seconds (default 0); recorded with that
                        status
    GET  /_fake/received[?path=/x]   {"requests": [...]} in arrival order
"""
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402

LOCK = threading.Lock()
RECEIVED = []
FAIL = {}  # path -> {"status", "count", "location"}
ARGS = None


def check_sig(headers, body):
    sig = headers.get("x-dhaf-signature")
    ts = headers.get("x-dhaf-timestamp")
    if not sig or not ARGS.secret:
        return "none"
    want = "sha256=" + hmac.new(ARGS.secret.encode(), ts.encode() + b"." + body,
                                hashlib.sha256).hexdigest() if ts else None
    if not want or not hmac.compare_digest(want, sig):
        return "bad"
    if abs(time.time() - int(ts)) > ARGS.max_skew:
        return "stale"
    return "ok"


class Handler(fakelib.Handler):
    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/_fake/received":
            self.send_json(404, {"error": "not found"})
            return
        path = urllib.parse.parse_qs(url.query).get("path", [None])[0]
        with LOCK:
            reqs = [r for r in RECEIVED if path is None or r["path"] == path]
        self.send_json(200, {"requests": reqs})

    def do_POST(self):
        try:
            body = self.read_body(too_large=ValueError("too large"))
        except ValueError:
            self.send_body(413, b"too large")
            return
        path = urllib.parse.urlsplit(self.path).path
        if path == "/_fake/fail":
            rule = json.loads(body)
            with LOCK:
                FAIL[rule["path"]] = {"status": int(rule.get("status", 500)),
                                      "count": int(rule.get("count", 1)),
                                      "location": rule.get("location"),
                                      "delay": float(rule.get("delay", 0))}
            self.send_json(200, {"ok": True})
            return
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        status, location, delay = 200, None, 0
        with LOCK:
            rule = FAIL.get(path)
            if rule and rule["count"] > 0:
                rule["count"] -= 1
                status, location, delay = rule["status"], rule["location"], rule["delay"]
            RECEIVED.append({"n": len(RECEIVED) + 1, "path": path, "headers": headers,
                             "body": body.decode("utf-8", "replace"), "json": parsed,
                             "sig": check_sig(headers, body), "status": status,
                             "at": time.time()})
        if delay:
            time.sleep(delay)
        extra = [("Location", location)] if location else []
        self.send_body(status, b"ok" if status == 200 else b"injected failure", headers=extra)


def main():
    global ARGS
    ap = fakelib.arg_parser("Local webhook receiver for dhaf tests.")
    ap.add_argument("--secret", default="")
    ap.add_argument("--max-skew", type=int, default=300)
    ARGS = fakelib.parse_args(ap)
    httpd = fakelib.http_server(ARGS, Handler)
    fakelib.serve(httpd, ARGS)


if __name__ == "__main__":
    main()
