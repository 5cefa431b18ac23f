#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A fake HTTP(S) backend for tests: a stand-in for a service's entry point.

Usage:
    backend.py --host 127.0.0.X --port P [--tls-cert FILE --tls-key FILE] [--watch-stdin]

Prints "LISTENING <port>" on stdout (flushed) once it accepts connections; --port 0 picks a
free port. IPv6 hosts ("::1") work too. Threaded (one thread per connection), quiet (no
access log), exits on SIGTERM or SIGINT; with --watch-stdin also when its stdin reaches EOF,
so a crashed test cannot leave it behind (give it a pipe and keep the write end open).
With --tls-cert/--tls-key it serves HTTPS; the TLS handshake runs in the connection's
thread, and a client that rejects the certificate only ends its own connection.

Every method (GET, POST, HEAD, PUT, DELETE, OPTIONS, PATCH) is served; HEAD gets the
headers of the GET answer without the body. Paths (query parameters after "?"):
    /ok                200 "all ok"
    /500               500 "internal error"
    /status?code=N     status N (100-599), body "status N"
    /redirect          302, Location: /ok
    /redirect?to=URL   302, Location: URL
    /loop              302, Location: /loop (a redirect loop)
    /slow?ms=N         sleeps N ms, then 200 "slow ok"
    /body              200 "Status: HEALTHY here"
    /big?kb=N&marker=M&at=start|end
                       200 with N KiB of filler and M at the start or at the end
    /host              200, body = the received Host header ("" if none)
    /method            200, body = the request method
    /sni               200, body = the TLS SNI name of this connection ("(none)" without
                       SNI or without TLS)
    /seen?tag=T        200, JSON about the requests that carried tag=T in their query:
                       {"count": N, "method": ..., "host": ..., "sni": ..., "path": ...}
                       (method, host, sni and path of the last one); count 0 when none
    anything else      404 "not found"
Any request may carry tag=T (any path) to be counted by /seen?tag=T; /seen itself is never
counted.
"""

import json
import os
import ssl
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402

SEEN_LOCK = threading.Lock()
SEEN = {}  # tag -> {"count", "method", "host", "sni", "path"}


class Handler(fakelib.Handler):
    server_version = "dhaf-test-backend"

    def sni(self):
        return getattr(self.connection, "dhaf_sni", None)

    def reply(self, code, body=b"", headers=()):
        self.send_body(code, body, headers=headers)

    def handle_any(self):
        url = urlsplit(self.path)
        path = url.path
        q = {k: v[-1] for k, v in parse_qs(url.query).items()}
        self.read_body()  # drain a request body so that the connection stays in sync
        if "tag" in q and path != "/seen":
            with SEEN_LOCK:
                rec = SEEN.setdefault(q["tag"], {"count": 0})
                rec.update(count=rec["count"] + 1, method=self.command,
                           host=self.headers.get("Host", ""), sni=self.sni() or "",
                           path=path)

        if path == "/ok":
            self.reply(200, "all ok")
        elif path == "/500":
            self.reply(500, "internal error")
        elif path == "/status":
            try:
                code = int(q.get("code", "200"))
            except ValueError:
                code = 400
            if not 100 <= code <= 599:
                code = 400
            self.reply(code, "status %d" % code)
        elif path == "/redirect":
            self.reply(302, "moved", [("Location", q.get("to", "/ok"))])
        elif path == "/loop":
            self.reply(302, "again", [("Location", "/loop")])
        elif path == "/slow":
            try:
                ms = int(q.get("ms", "1000"))
            except ValueError:
                ms = 1000
            time.sleep(max(0, min(ms, 600000)) / 1000.0)
            self.reply(200, "slow ok")
        elif path == "/body":
            self.reply(200, "Status: HEALTHY here")
        elif path == "/big":
            kb = max(0, min(int(q.get("kb", "100")), 100000))
            marker = q.get("marker", "")
            filler = "x" * (kb * 1024)
            body = marker + filler if q.get("at", "end") == "start" else filler + marker
            self.reply(200, body)
        elif path == "/host":
            self.reply(200, self.headers.get("Host", ""))
        elif path == "/method":
            self.reply(200, self.command)
        elif path == "/sni":
            self.reply(200, self.sni() or "(none)")
        elif path == "/seen":
            with SEEN_LOCK:
                rec = dict(SEEN.get(q.get("tag", ""), {"count": 0}))
            self.reply(200, json.dumps(rec), [("Content-Type", "application/json")])
        else:
            self.reply(404, "not found")

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = do_OPTIONS = do_PATCH = handle_any


class Server(fakelib.Server):
    request_queue_size = 256  # many checks connect at once
    tls = None  # an ssl.SSLContext for HTTPS

    def finish_request(self, request, client_address):
        # Runs in the connection's thread: a slow or failing handshake stalls nobody else.
        if self.tls is not None:
            request.settimeout(30)
            request = self.tls.wrap_socket(request, server_side=True)
        self.RequestHandlerClass(request, client_address, self)


def main():
    ap = fakelib.arg_parser("Fake HTTP(S) backend for dhaf tests.", host=True)
    ap.add_argument("--tls-cert")
    ap.add_argument("--tls-key")
    args = fakelib.parse_args(ap)

    httpd = fakelib.http_server(args, Handler, Server)
    if args.tls_cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)

        def on_sni(sslobj, name, _ctx):
            sslobj.dhaf_sni = name

        ctx.sni_callback = on_sni
        httpd.tls = ctx
    fakelib.serve(httpd, args)


if __name__ == "__main__":
    main()
