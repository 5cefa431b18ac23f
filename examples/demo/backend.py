#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A web backend of `make demo`: one entry point of site.demo.

usage: backend.py NAME HOST PORT
Answers every GET and HEAD with 200 "hello from NAME (HOST)". Quiet; exits on SIGTERM or
SIGINT. Standard library only.
"""
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    name, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    body = f"hello from {name} ({host})\n".encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "dhaf-demo-backend"

        def log_message(self, fmt, *args):  # quiet
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        do_HEAD = do_GET

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def handle_error(self, request, client_address):  # clients hang up: quiet
            pass

    def stop(_sig, _frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    httpd = Server((host, port), Handler)
    print(f"{name}: listening on http://{host}:{port}/", flush=True)
    try:
        httpd.serve_forever(poll_interval=0.2)
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
