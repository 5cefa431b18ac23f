#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A fake SMTP server for tests: accepts mail with aiosmtpd and files it away.

Usage:
    smtp_sink.py --port P --dir OUTDIR [--host 127.0.0.1]
                 [--starttls CERT KEY] [--require-starttls] [--implicit-tls CERT KEY]
                 [--auth USER:PASS] [--down-for SECONDS] [--greylist N]
                 [--reject-rcpt ADDR] [--data-delay MS] [--watch-stdin]

Prints "LISTENING <port>" on stdout (flushed) once it accepts connections (with --down-for:
once the port is bound); --port 0 picks a free port. Exits on SIGTERM or SIGINT; with --watch-stdin also when its stdin reaches EOF, so a
crashed test cannot leave it behind (give it a pipe and keep the write end open).

    --starttls CERT KEY   offer STARTTLS with this certificate
    --require-starttls    refuse everything but EHLO/STARTTLS/QUIT before STARTTLS
    --implicit-tls CERT KEY
                          TLS from the first byte (smtps)
    --auth USER:PASS      offer AUTH PLAIN/LOGIN, accept only this pair, and require a login
                          before MAIL (with --starttls, AUTH is offered after STARTTLS only)
    --down-for SECONDS    the port is bound but refuses connections for that long after
                          start (a server that is down, then comes back on the same port)
    --greylist N          answer the first N RCPT commands "451 4.7.1" (try again later)
    --reject-rcpt ADDR    answer RCPT TO:<ADDR> "550 5.1.1" (a permanent refusal)
    --data-delay MS       hold each message MS milliseconds after the client sent all of it,
                          before filing it and answering 250 (a slow server). A client that
                          hangs up during the delay never saw the 250: its message is dropped,
                          not filed, so the sink records only what was acknowledged. Each
                          held message gets a line {"event": "held", "message_id", "subject",
                          "at" (Unix seconds)} in OUTDIR/held.jsonl when the delay starts,
                          and a dropped one a line with "event": "dropped" too.

Each accepted message is written to OUTDIR/<n>.eml (n = 1, 2, ... as received, the bytes as
sent after dot-unstuffing), then one JSON line is appended to OUTDIR/messages.jsonl:
    {"n", "file", "mail_from", "rcpt_tos", "tls" (bool), "tls_mode" ("starttls", "implicit"
     or null), "auth_user" (or null), "subject", "from", "to", "date", "date_ts" (Unix
     seconds or null), "message_id", "content_type", "parts": [{"type", "charset", "cte",
     "body"}], "defects": [...], "bare_lf" (bool), "max_line" (longest line without CRLF)}
with headers and parts decoded by Python's email package (policy.default). The line is
written before the server answers the end of DATA, so a client that saw 250 finds it.
"""

import asyncio
import email
import email.policy
import email.utils
import json
import logging
import os
import signal
import socket
import ssl
import sys
import threading
import time
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402


class Sink:
    """The aiosmtpd handler: RCPT rules and filing of messages."""

    def __init__(self, outdir, greylist, reject_rcpt, data_delay_ms=0):
        self.outdir = outdir
        self.data_delay = data_delay_ms / 1000.0
        self.greylist = greylist
        self.reject_rcpt = (reject_rcpt or "").lower()
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.greylist > 0:
            self.greylist -= 1
            return "451 4.7.1 Greylisted, please try again later"
        if self.reject_rcpt and address.lower() == self.reject_rcpt:
            return "550 5.1.1 <%s>: Recipient address rejected: no such user" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        if self.data_delay > 0 and not await self.hold(server, raw):
            return "421 4.4.2 Client gone during DATA, message dropped"
        with self.lock:
            self.count += 1
            n = self.count
        name = "%d.eml" % n
        with open(os.path.join(self.outdir, name), "wb") as f:
            f.write(raw)
        transport = server.transport
        tls = transport is not None and transport.get_extra_info("ssl_object") is not None
        mode = None
        if tls:
            mode = "starttls" if server._tls_protocol is not None else "implicit"
        user = None
        if session.authenticated and isinstance(session.auth_data, LoginPassword):
            user = session.auth_data.login.decode("utf-8", "replace")
        rec = {
            "n": n,
            "file": name,
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "tls": tls,
            "tls_mode": mode,
            "auth_user": user,
        }
        rec.update(describe(raw))
        line = json.dumps(rec) + "\n"
        with self.lock, open(os.path.join(self.outdir, "messages.jsonl"), "a") as f:
            f.write(line)
        return "250 OK queued as %d" % n

    async def hold(self, server, raw):
        """Waits data_delay; false (the message is dropped) when the client left meanwhile."""
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        note = {"message_id": str(msg.get("message-id")), "subject": str(msg.get("subject"))}
        self.held(dict(event="held", at=time.time(), **note))
        try:
            # aiosmtpd cancels the handler when the client's EOF or a reset arrives
            await asyncio.sleep(self.data_delay)
        except asyncio.CancelledError:
            self.held(dict(event="dropped", at=time.time(), **note))
            raise
        transport = server.transport
        if transport is None or transport.is_closing():  # in case the cancel did not come
            self.held(dict(event="dropped", at=time.time(), **note))
            return False
        return True

    def held(self, rec):
        with self.lock, open(os.path.join(self.outdir, "held.jsonl"), "a") as f:
            f.write(json.dumps(rec) + "\n")


def describe(raw):
    """Headers and parts of a message as the email package decodes them."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    out = {}
    for key in ("subject", "from", "to", "date", "message-id", "content-type"):
        value = msg.get(key)
        out[key.replace("-", "_")] = None if value is None else str(value)
    try:
        out["date_ts"] = email.utils.parsedate_to_datetime(msg.get("date")).timestamp()
    except (TypeError, ValueError):
        out["date_ts"] = None
    parts, defects = [], [type(d).__name__ for d in msg.defects]
    for part in msg.walk():
        defects += [type(d).__name__ for d in part.defects]
        if part.is_multipart():
            continue
        try:
            body = part.get_content()
        except (LookupError, ValueError) as e:
            body = "<undecodable: %s>" % e
        if isinstance(body, bytes):
            body = body.decode("utf-8", "replace")
        parts.append({
            "type": part.get_content_type(),
            "charset": part.get_content_charset(),
            "cte": part.get("Content-Transfer-Encoding"),
            "body": body,
        })
    out["parts"] = parts
    out["defects"] = defects
    lines = raw.split(b"\r\n")
    out["bare_lf"] = any(b"\n" in line or b"\r" in line for line in lines)
    out["max_line"] = max((len(line) for line in lines), default=0)
    return out


def tls_context(cert, key):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


async def serve(args, sock, stop):
    loop = asyncio.get_running_loop()
    sink = Sink(args.dir, args.greylist, args.reject_rcpt, args.data_delay)
    starttls = tls_context(*args.starttls) if args.starttls else None
    implicit = tls_context(*args.implicit_tls) if args.implicit_tls else None
    user = password = None
    if args.auth:
        user, _, password = args.auth.partition(":")

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (isinstance(auth_data, LoginPassword)
              and auth_data.login.decode("utf-8", "replace") == user
              and auth_data.password.decode("utf-8", "replace") == password)
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    def factory():
        return SMTP(sink, hostname="dhaf-test-sink", ident="dhaf-test-sink",
                    tls_context=starttls, require_starttls=args.require_starttls,
                    authenticator=authenticator if args.auth else None,
                    auth_required=bool(args.auth),
                    # implicit TLS is encrypted all along (aiosmtpd only knows STARTTLS)
                    auth_require_tls=bool(starttls), loop=loop)

    if args.down_for > 0:
        try:
            await asyncio.wait_for(stop.wait(), args.down_for)
            return
        except asyncio.TimeoutError:
            pass
    sock.listen(64)
    server = await loop.create_server(factory, sock=sock, ssl=implicit)
    await stop.wait()
    server.close()


def main():
    ap = fakelib.arg_parser("Fake SMTP server for dhaf tests.", host=True)
    ap.add_argument("--dir", required=True, help="where messages are written")
    ap.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--require-starttls", action="store_true")
    ap.add_argument("--implicit-tls", nargs=2, metavar=("CERT", "KEY"))
    ap.add_argument("--auth", metavar="USER:PASS")
    ap.add_argument("--down-for", type=float, default=0, metavar="SECONDS")
    ap.add_argument("--greylist", type=int, default=0, metavar="N")
    ap.add_argument("--reject-rcpt", metavar="ADDR")
    ap.add_argument("--data-delay", type=int, default=0, metavar="MS")
    args = fakelib.parse_args(ap)
    if args.require_starttls and not args.starttls:
        ap.error("--require-starttls needs --starttls")
    if args.starttls and args.implicit_tls:
        ap.error("--starttls and --implicit-tls exclude each other")
    os.makedirs(args.dir, exist_ok=True)
    logging.getLogger("mail.log").setLevel(logging.ERROR)  # quiet (aiosmtpd's own log)
    warnings.filterwarnings("ignore", message="Requiring AUTH while not requiring TLS")

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    if args.down_for <= 0:
        sock.listen(64)  # connections wait in the backlog until the loop accepts them
    # else: bound, not listening, so connections are refused until serve() listens

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if args.watch_stdin:
        fakelib.watch_stdin()
    fakelib.listening(sock.getsockname()[1])
    try:
        loop.run_until_complete(serve(args, sock, stop))
    finally:
        sock.close()
        loop.close()


if __name__ == "__main__":
    main()
