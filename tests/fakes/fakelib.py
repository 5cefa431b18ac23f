# SPDX-License-Identifier: MIT
"""What the fakes of tests/fakes/ share: their common command line, the LISTENING line, the
stop on SIGTERM/SIGINT or (with --watch-stdin) on EOF of stdin, and a quiet threaded HTTP
server with JSON replies.

Every fake takes [--host H] --port P [--watch-stdin], prints "LISTENING <port>" on stdout
(flushed) once it accepts connections (--port 0 picks a free port) and exits on SIGTERM or
SIGINT; with --watch-stdin also when its stdin reaches EOF, so a crashed test cannot leave it
behind (give it a pipe and keep the write end open).

An HTTP fake:

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import fakelib

    class Handler(fakelib.Handler): ...

    ap = fakelib.arg_parser("Fake X for dhaf tests.")
    ap.add_argument(...)                 # its own options
    args = fakelib.parse_args(ap)        # adds --watch-stdin
    httpd = fakelib.http_server(args, Handler)
    fakelib.serve(httpd, args)           # LISTENING, then serves until stopped
"""

import argparse
import json
import os
import signal
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_BODY = 1 << 20


def arg_parser(description, host=False):
    """An ArgumentParser with --port (and --host, default 127.0.0.1, when host is true)."""
    ap = argparse.ArgumentParser(description=description)
    if host:
        ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    return ap


def parse_args(ap):
    """Adds --watch-stdin (last, as every fake documents it) and parses the command line."""
    ap.add_argument("--watch-stdin", action="store_true",
                    help="exit when stdin reaches EOF (the parent died)")
    return ap.parse_args()


def watch_stdin():
    """Exits the process (at once, threads and all) when stdin reaches EOF."""
    def watch():
        # os.read on the raw fd: a buffered stdin would hold its lock at shutdown
        while os.read(0, 4096):
            pass
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def stop_on_signals():
    """SIGTERM and SIGINT raise SystemExit(0) in the main thread."""
    def stop(_sig, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)


def listening(port):
    print("LISTENING %d" % port, flush=True)


class Server(ThreadingHTTPServer):
    """Threaded (one daemon thread per connection) and quiet about clients that hang up."""
    daemon_threads = True
    request_queue_size = 64

    def handle_error(self, request, client_address):  # quiet: clients hang up
        pass


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 without an access log, with reply helpers."""
    protocol_version = "HTTP/1.1"
    json_type = "application/json"  # the Content-Type of send_json

    def log_message(self, fmt, *args):  # quiet
        pass

    def send_body(self, status, body, ctype="text/plain", headers=()):
        """A reply with body (bytes or str), Content-Type ctype, then the extra headers (name,
        value); a HEAD request gets the headers only."""
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, status, obj, headers=()):
        """obj as JSON (bytes are sent as they are) with Content-Type json_type."""
        body = obj if isinstance(obj, bytes) else json.dumps(obj)
        self.send_body(status, body, self.json_type, headers)

    def read_body(self, too_large=None):
        """The request body: at most MAX_BODY bytes of it, or, when too_large (an exception)
        is given, that raised for a longer one."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY and too_large is not None:
            raise too_large
        return self.rfile.read(min(length, MAX_BODY)) if length > 0 else b""


def http_server(args, handler, server_class=Server):
    """server_class bound to (args.host, or 127.0.0.1 without --host; IPv6 too) and args.port."""
    host = getattr(args, "host", "127.0.0.1")
    if ":" in host:
        server_class = type(server_class.__name__, (server_class,),
                            {"address_family": socket.AF_INET6})
    return server_class((host, args.port), handler)


def serve(httpd, args):
    """Stops on signals (and EOF of stdin with --watch-stdin), prints LISTENING and serves
    until stopped."""
    stop_on_signals()
    if args.watch_stdin:
        watch_stdin()
    listening(httpd.server_address[1])
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()
