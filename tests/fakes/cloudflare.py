#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A local fake of the Cloudflare API v4 for tests (provider-apis.md section 1).

Usage:
    cloudflare.py [--host ADDR] --port P --token T --zone foo.com [--zone-status active] [--zone-paused]
                  [--record name:type:content[:proxied]]... [--max-per-page N] [--log FILE]
                  [--watch-stdin]

Plain HTTP on 127.0.0.1 (or --host ADDR). Prints "LISTENING <port>" (flushed) once it accepts connections;
--port 0 picks a free port. Threaded, quiet, exits on SIGTERM or SIGINT; with --watch-stdin
also when its stdin reaches EOF, so a crashed test cannot leave it behind.

--record adds a record at start (repeatable). The name is taken as is (give the FQDN);
proxied is "true" (the default) or "false". IPv6 content works: "www.foo.com:AAAA:2001:db8::1"
or "www.foo.com:AAAA:::1:false". --max-per-page caps per_page of the list endpoints (to make
pagination happen with few records).

The API (every reply in the envelope {success, errors, messages, result[, result_info]}; a
"/client/v4" prefix is accepted and ignored). Every API call needs "Authorization: Bearer T":
a missing or malformed header gets 400/6003 (error_chain 6111), a wrong token 403/10000.
Writes need "Content-Type: application/json" (else 400/6003, chain 6105) and a JSON object
body (else 400/9207).
    GET    /user/tokens/verify                  {id, status: "active"}; message 10000
    GET    /zones?name=N[&status=S]             the zone when its name is N (exact,
                                                case-insensitive); [] otherwise
    GET    /zones/{zone}                        the zone
    GET    /zones/{zone}/dns_records?type=&name=&content=&page=&per_page=
                                                filtered (exact; name case-insensitive),
                                                ordered by creation; result_info has page,
                                                per_page, count, total_count, total_pages
    GET    /zones/{zone}/dns_records/{id}       one record
    POST   /zones/{zone}/dns_records            create {type, name, content, ttl?, proxied?}
    PATCH  /zones/{zone}/dns_records/{id}       partial edit: only the fields sent change
    PUT    /zones/{zone}/dns_records/{id}       overwrite: type, name, content, ttl required;
                                                proxied false when not sent
    DELETE /zones/{zone}/dns_records/{id}       delete; result {id}
Errors: an unknown zone or record id in the path gets 400/7003 (+7000). Bad content, name,
ttl or proxied get 400/1004 "DNS Validation Error" with the reason in error_chain (9005 for
A content, 9006 for AAAA content, 9021 ttl, 9041 proxied, 9000 name or type). A record
identical to an existing one (type, name, content) gets 400/81057. Only A, AAAA, CNAME and
TXT records are accepted; only A, AAAA and CNAME may be proxied. Proxied records show ttl 1.

Every API write (POST, PATCH, PUT, DELETE) appends one JSON line to --log (and to the list
GET /_fake/changes returns), also when it was refused:
    {"time", "method", "path", "status", "id", "name", "type", "content", "proxied", "ttl",
     "body": <the request body as sent, or null>,
     "headers": {"Content-Type", "User-Agent", "Authorization": "Bearer <redacted>"}}
(name..ttl: the record after the change; before it when refused; null when there is none).

Test controls (no token needed; never logged as changes):
    POST /_fake/fail {"status": 429, "retry_after": 1, "count": 2}
        the next `count` API calls (default 1) fail: reply `status` in the envelope with
        errors [{code, message}] (code/message given or a default per status: 429 -> 971,
        5xx -> 10001, 404 -> 81044, ...), "retry_after" adds a Retry-After header;
        "body": "text" replies that raw text instead (garbage: "status" defaults to 200);
        "drop": true closes the connection without a reply (a transport error);
        "repeat": N sends "body" N times (an oversized reply);
        "apply": true carries the call out first and then fails its reply (a change made
        whose success the client never sees);
        "error_chain": [{code, message}] is added to the error;
        "method": "PATCH" and "path": "dns_records" (a substring) limit which calls match;
        "header": "node-2 epoch" limits them to calls whose X-Dhaf-Leader header contains
        the substring (a call without the header never matches), so a rule can target one
        node. Reads fail too: {"method": "GET", "status": 403, "count": 2} fails the next two
        reads, the record list and GET /zones alike.
        "freeze_pid": P sends SIGSTOP to process P when a call matches, before the call is
        carried out and answered (the fake waits, up to 2 s, until every thread of P shows
        as stopped); the answer is then sent as usual and sits in the socket until P is
        continued (SIGCONT, by the test).
        "delay_ms": N sleeps N ms (after the freeze, if any) before the call is carried out
        and answered: a request that lands late.
        A rule with freeze_pid or delay_ms and none of status, code, message, body, drop,
        apply, retry_after, error_chain, repeat only freezes or delays: the call is then
        carried out and answered normally. With one of them it also fails as above (with
        "apply": the change is made while P is already stopped, then the reply fails).
        Rules queue up in order; a call takes the first rule that matches it.
    POST /_fake/set {"name": N, "content": C[, "type": T][, "proxied": B][, "delete": true]}
        changes the record named N (of type T when given) behind the client's back, like a
        manual dashboard change; creates it when absent (type from the content's family);
        "delete": true removes every record that matches. Otherwise 409 when more than one
        record matches.
    POST /_fake/zone {"status": S[, "paused": B]}   changes the zone
    GET  /_fake/records                             {"zone": {...}, "records": [...]}
    GET  /_fake/changes                             the change log lines as a JSON array
    GET  /_fake/requests                            every API call (reads too), in the order
        they arrived, as a JSON array of {"time", "method", "path", "query", "status",
        "leader", "answered", "rule"}: time of arrival; path without "/client/v4" and without
        the query, which is in "query" (raw); status as answered (0: dropped by a rule; null
        while the call is still being held by freeze_pid/delay_ms); leader the X-Dhaf-Leader
        header or null; answered the time the answer was sent (null until then); rule true
        when a /_fake/fail rule matched the call. Not written to --log.
    POST /_fake/reset                               clears fail rules, the change list and
                                                    the request list
"""

import datetime
import hashlib
import ipaddress
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402

LOCK = threading.Lock()

STATE = {
    "token": "",
    "zone": None,        # dict
    "records": [],       # dicts in creation order
    "fail": [],          # rules, see /_fake/fail
    "changes": [],       # change log lines (dicts)
    "requests": [],      # every API call (dicts), see /_fake/requests
    "log": None,         # path or None
    "max_per_page": 5000,
}

DEFAULT_CODES = {
    400: (1004, "DNS Validation Error"),
    401: (10000, "Authentication error"),
    403: (10000, "Authentication error"),
    404: (81044, "Record does not exist."),
    429: (971, "Please wait and consider throttling your request speed"),
}


def now_iso():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_id():
    return uuid.uuid4().hex


def envelope(result=None, errors=(), messages=(), result_info=None, success=None):
    env = {
        "success": (not errors) if success is None else success,
        "errors": list(errors),
        "messages": list(messages),
        "result": result,
    }
    if result_info is not None:
        env["result_info"] = result_info
    return env


def err(code, message, chain=None):
    e = {"code": code, "message": message}
    if chain:
        e["error_chain"] = [{"code": c, "message": m} for c, m in chain]
    return e


class ApiError(Exception):
    def __init__(self, status, code, message, chain=None):
        super().__init__(message)
        self.status = status
        self.error = err(code, message, chain)


def validation(code, message):
    return ApiError(400, 1004, "DNS Validation Error", [(code, message)])


def norm_name(name):
    return name.rstrip(".").lower()


def valid_content(rtype, content):
    if not isinstance(content, str):
        return False
    try:
        if rtype == "A":
            ipaddress.IPv4Address(content)
        elif rtype == "AAAA":
            ipaddress.IPv6Address(content)
        else:
            return bool(content)
    except ValueError:
        return False
    return True


def same_content(rtype, a, b):
    if rtype in ("A", "AAAA"):
        try:
            return ipaddress.ip_address(a) == ipaddress.ip_address(b)
        except ValueError:
            return a == b
    return a == b


def make_record(zone, rtype, name, content, proxied, ttl):
    t = now_iso()
    return {
        "id": new_id(),
        "zone_id": zone["id"],
        "zone_name": zone["name"],
        "name": name,
        "type": rtype,
        "content": content,
        "proxiable": rtype in ("A", "AAAA", "CNAME"),
        "proxied": proxied,
        "ttl": 1 if proxied else ttl,
        "locked": False,
        "comment": None,
        "tags": [],
        "settings": {},
        "meta": {"auto_added": False, "managed_by_apps": False},
        "created_on": t,
        "modified_on": t,
    }


def check_record(zone, rec, others):
    """Validates a record about to be stored; raises ApiError."""
    rtype = rec.get("type")
    if rtype not in ("A", "AAAA", "CNAME", "TXT"):
        raise validation(9000, "DNS record type is invalid or not supported.")
    name = rec.get("name")
    if not isinstance(name, str) or not name:
        raise validation(9000, "DNS record name is invalid.")
    if not valid_content(rtype, rec.get("content")):
        if rtype == "A":
            raise validation(9005, "Content for A record must be a valid IPv4 address.")
        if rtype == "AAAA":
            raise validation(9006, "Content for AAAA record must be a valid IPv6 address.")
        raise validation(9000, "DNS record content is invalid.")
    ttl = rec.get("ttl")
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not (ttl == 1 or 60 <= ttl <= 86400):
        raise validation(9021, "Invalid TTL. Must be between 60 and 86400 seconds, or 1 for "
                               "Automatic.")
    proxied = rec.get("proxied")
    if not isinstance(proxied, bool):
        raise validation(9041, "Proxied must be a boolean.")
    if proxied and rtype not in ("A", "AAAA", "CNAME"):
        raise validation(9041, "This record type cannot be proxied.")
    for o in others:
        if (o["type"] == rtype and norm_name(o["name"]) == norm_name(name)
                and same_content(rtype, o["content"], rec["content"])):
            raise ApiError(400, 81057, "The record already exists.")


def qualify(zone, name):
    """Cloudflare stores FQDNs: a relative name gets the zone appended."""
    n = norm_name(name)
    z = zone["name"]
    if n == "@":
        return z
    if n == z or n.endswith("." + z):
        return n
    return n + "." + z


class Handler(fakelib.Handler):
    server_version = "dhaf-test-cloudflare"

    # ---- replies ---------------------------------------------------------------------------

    def send_error_env(self, status, error, headers=()):
        self.send_json(status, envelope(errors=[error], success=False), headers)

    # ---- request plumbing ------------------------------------------------------------------

    def json_body(self, raw):
        try:
            obj = json.loads(raw.decode() or "null")
        except (ValueError, UnicodeDecodeError):
            raise ApiError(400, 9207, "Failed to parse request body, content-type must be "
                                      "application/json")
        if not isinstance(obj, dict):
            raise ApiError(400, 9207, "Failed to parse request body: expected a JSON object")
        return obj

    def check_auth(self):
        auth = self.headers.get("Authorization")
        if auth is None or not auth.startswith("Bearer ") or not auth[7:].strip():
            raise ApiError(400, 6003, "Invalid request headers",
                           [(6111, "Invalid format for Authorization header")])
        if auth[7:] != STATE["token"]:
            raise ApiError(403, 10000, "Authentication error")

    def check_content_type(self):
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(400, 6003, "Invalid request headers",
                           [(6105, "Invalid Content-Type header, valid values are "
                                   "application/json,multipart/form-data")])

    def take_fail_rule(self, path):
        with LOCK:
            for rule in STATE["fail"]:
                if rule.get("method") and rule["method"].upper() != self.command:
                    continue
                if rule.get("path") and rule["path"] not in path:
                    continue
                if rule.get("header") is not None and \
                        str(rule["header"]) not in (self.headers.get("X-Dhaf-Leader") or "\0"):
                    continue
                rule["count"] -= 1
                if rule["count"] <= 0:
                    STATE["fail"].remove(rule)
                return dict(rule)
        return None

    def apply_fail_rule(self, rule):
        if rule.get("drop"):
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        headers = []
        if rule.get("retry_after") is not None:
            headers.append(("Retry-After", str(rule["retry_after"])))
        if "body" in rule:
            body = str(rule["body"]) * max(1, int(rule.get("repeat", 1)))
            self.send_body(int(rule.get("status", 200)), body, "text/html", headers)
            return
        status = int(rule.get("status", 500))
        dcode, dmsg = DEFAULT_CODES.get(status, (10001 if status >= 500 else 1000,
                                                 "Internal server error" if status >= 500
                                                 else "Request failed"))
        code = int(rule.get("code", dcode))
        message = rule.get("message") or {
            1038: "You cannot use this API for domains with a .cf, .ga, .gq, .ml, or .tk TLD "
                  "(top-level domain). To configure the DNS settings for this domain, use the "
                  "Cloudflare Dashboard.",
            7003: "Could not route to /zones, perhaps your object identifier is invalid?",
            81044: "Record does not exist.",
            81057: "The record already exists.",
        }.get(code, dmsg)
        error = err(code, message)
        if isinstance(rule.get("error_chain"), list):
            error["error_chain"] = rule["error_chain"]
        self.send_error_env(status, error, headers)

    # Keys that make a rule fail the call; a rule with only freeze_pid / delay_ms (and its
    # match conditions) lets the call through after its action.
    FAILING_KEYS = ("status", "code", "message", "body", "drop", "apply", "retry_after",
                    "error_chain", "repeat")

    @classmethod
    def rule_fails(cls, rule):
        if "freeze_pid" not in rule and "delay_ms" not in rule:
            return True  # as before: a plain rule fails (default status 500)
        return any(k in rule for k in cls.FAILING_KEYS)

    @staticmethod
    def freeze(pid):
        """SIGSTOP pid, then waits (up to 2 s) until all its threads show as stopped, so that
        nothing it does after this call can race the answer."""
        try:
            os.kill(pid, signal.SIGSTOP)
        except OSError:
            return
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            try:
                tids = os.listdir("/proc/%d/task" % pid)
                states = []
                for tid in tids:
                    with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                        states.append(f.read().rsplit(")", 1)[1].split()[0])
            except OSError:
                return  # gone, or not Linux: the signal was sent, that is all we can do
            if states and all(st in ("T", "t", "Z", "X") for st in states):
                return
            time.sleep(0.002)

    def hold(self, rule):
        """freeze_pid and delay_ms of a matching rule, in that order."""
        if rule.get("freeze_pid") is not None:
            self.freeze(int(rule["freeze_pid"]))
        if rule.get("delay_ms") is not None:
            time.sleep(max(0, int(rule["delay_ms"])) / 1000.0)

    def send_response(self, code, message=None):
        entry = getattr(self, "api_entry", None)
        if entry is not None:  # one answer per call: the next one is not this call's
            self.api_entry = None
            with LOCK:
                entry["status"] = code
                entry["answered"] = now_iso()
        super().send_response(code, message)

    def record_call(self, path, query, matched):
        entry = {"time": now_iso(), "method": self.command, "path": path, "query": query,
                 "status": None, "leader": self.headers.get("X-Dhaf-Leader"),
                 "answered": None, "rule": matched}
        with LOCK:
            STATE["requests"].append(entry)
        self.api_entry = entry
        return entry

    def log_change(self, path, status, rec, body):
        line = {
            "time": now_iso(),
            "method": self.command,
            "path": path,
            "status": status,
            "id": rec["id"] if rec else None,
            "name": rec["name"] if rec else None,
            "type": rec["type"] if rec else None,
            "content": rec["content"] if rec else None,
            "proxied": rec["proxied"] if rec else None,
            "ttl": rec["ttl"] if rec else None,
            "body": body,
            "headers": {
                "Content-Type": self.headers.get("Content-Type"),
                "User-Agent": self.headers.get("User-Agent"),
                "X-Dhaf-Leader": self.headers.get("X-Dhaf-Leader"),
                # the scheme only: the token never reaches the log
                "Authorization": ("Bearer <redacted>"
                                  if (self.headers.get("Authorization") or "").startswith("Bearer ")
                                  else ("<other>" if self.headers.get("Authorization") else None)),
            },
        }
        with LOCK:
            STATE["changes"].append(line)
            if STATE["log"]:
                with open(STATE["log"], "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")

    # ---- dispatch --------------------------------------------------------------------------

    def handle_any(self):
        self.api_entry = None
        url = urlsplit(self.path)
        path = url.path
        if path.startswith("/client/v4/"):
            path = path[len("/client/v4"):]
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        try:
            raw = self.read_body(ApiError(413, 9207, "Request body too large"))
        except ApiError as e:
            self.close_connection = True
            self.send_error_env(e.status, e.error)
            return
        if path.startswith("/_fake/"):
            self.handle_control(path, raw)
            return

        rule = self.take_fail_rule(path)
        entry = self.record_call(path, url.query, rule is not None)
        if rule is not None:
            self.hold(rule)
            if not self.rule_fails(rule):
                rule = None  # frozen or delayed only: carried out and answered as usual
        if rule is not None and not rule.get("apply"):
            if self.command in ("POST", "PATCH", "PUT", "DELETE"):
                self.log_change(path, 0 if rule.get("drop") else int(rule.get("status", 500)),
                                None, self.body_for_log(raw))
            if rule.get("drop"):
                with LOCK:
                    entry["status"], entry["answered"] = 0, now_iso()
            self.apply_fail_rule(rule)
            return

        write = self.command in ("POST", "PATCH", "PUT", "DELETE")
        rec_for_log = None
        try:
            self.check_auth()
            if write and self.command != "DELETE":
                self.check_content_type()
            status, env, rec_for_log = self.route(path, q, raw)
        except ApiError as e:
            status, env = e.status, envelope(errors=[e.error], success=False)
            rec_for_log = getattr(e, "record", None)
        if write:
            self.log_change(path, status, rec_for_log, self.body_for_log(raw))
        if rule is not None:  # "apply": the call took effect, but its reply is lost
            if rule.get("drop"):
                with LOCK:
                    entry["status"], entry["answered"] = 0, now_iso()
            self.apply_fail_rule(rule)
            return
        self.send_json(status, env)

    @staticmethod
    def body_for_log(raw):
        if not raw:
            return None
        try:
            return json.loads(raw.decode())
        except (ValueError, UnicodeDecodeError):
            return raw.decode(errors="replace")[:200]

    def route(self, path, q, raw):
        """Returns (status, envelope, record for the change log)."""
        parts = [p for p in path.split("/") if p]
        m = self.command
        with LOCK:
            zone = STATE["zone"]
            if parts == ["user", "tokens", "verify"] and m == "GET":
                tid = hashlib.md5(STATE["token"].encode()).hexdigest()
                return 200, envelope({"id": tid, "status": "active"}, messages=[
                    {"code": 10000, "message": "This API Token is valid and active",
                     "type": None}]), None
            if parts == ["zones"] and m == "GET":
                items = [zone] if zone["name"] == norm_name(q.get("name", zone["name"])) else []
                if "status" in q:
                    items = [z for z in items if z["status"] == q["status"]]
                return 200, self.page(items, q, 20), None
            if len(parts) >= 2 and parts[0] == "zones":
                if parts[1] != zone["id"]:
                    raise ApiError(400, 7003, "Could not route to /%s, perhaps your object "
                                              "identifier is invalid?" % "/".join(parts),
                                   [(7000, "No route for that URI")])
                if len(parts) == 2 and m == "GET":
                    return 200, envelope(zone), None
                if len(parts) >= 3 and parts[2] == "dns_records":
                    return self.route_records(zone, parts[3:], q, raw)
            raise ApiError(400, 7000, "No route for that URI")

    def page(self, items, q, default_per_page):
        try:
            page = max(1, int(q.get("page", "1")))
            per_page = max(1, int(q.get("per_page", str(default_per_page))))
        except ValueError:
            raise ApiError(400, 1004, "Invalid page or per_page")
        per_page = min(per_page, STATE["max_per_page"])
        total = len(items)
        total_pages = (total + per_page - 1) // per_page
        chunk = items[(page - 1) * per_page:page * per_page]
        return envelope(chunk, result_info={
            "page": page, "per_page": per_page, "count": len(chunk),
            "total_count": total, "total_pages": total_pages})

    def route_records(self, zone, rest, q, raw):
        m = self.command
        recs = STATE["records"]
        if not rest:
            if m == "GET":
                items = recs
                if "type" in q:
                    items = [r for r in items if r["type"] == q["type"].upper()]
                name = q.get("name", q.get("name.exact"))
                if name is not None:
                    items = [r for r in items if norm_name(r["name"]) == norm_name(name)]
                if "content" in q:
                    items = [r for r in items if r["content"] == q["content"]]
                return 200, self.page(items, q, 100), None
            if m == "POST":
                body = self.json_body(raw)
                rtype = body.get("type")
                rtype = rtype.upper() if isinstance(rtype, str) else rtype
                name = body.get("name")
                cand = {"type": rtype,
                        "name": qualify(zone, name) if isinstance(name, str) and name else name,
                        "content": body.get("content"), "proxied": body.get("proxied", False),
                        "ttl": body.get("ttl", 1)}
                check_record(zone, cand, recs)
                rec = make_record(zone, cand["type"], cand["name"], cand["content"],
                                  cand["proxied"], cand["ttl"])
                recs.append(rec)
                return 200, envelope(rec), rec
            raise ApiError(405, 10405, "Method not allowed")
        if len(rest) != 1:
            raise ApiError(400, 7000, "No route for that URI")
        rec = next((r for r in recs if r["id"] == rest[0]), None)
        if rec is None:
            raise ApiError(400, 7003, "Could not route to /zones/%s/dns_records/%s, perhaps your "
                                      "object identifier is invalid?" % (zone["id"], rest[0]),
                           [(7000, "No route for that URI")])
        if m == "GET":
            return 200, envelope(rec), None
        if m == "DELETE":
            recs.remove(rec)
            return 200, envelope({"id": rec["id"]}), rec
        body = self.json_body(raw)
        if m == "PATCH":
            new = dict(rec)
            for k in ("type", "name", "content", "proxied", "ttl", "comment", "tags"):
                if k in body:
                    new[k] = body[k]
        elif m == "PUT":
            for k in ("type", "name", "content", "ttl"):
                if k not in body:
                    e = validation(9000, "%s is required" % k)
                    e.record = rec
                    raise e
            new = dict(rec, proxied=body.get("proxied", False), comment=body.get("comment"),
                       tags=body.get("tags", []))
            for k in ("type", "name", "content", "ttl"):
                new[k] = body[k]
        else:
            raise ApiError(405, 10405, "Method not allowed")
        if isinstance(new["type"], str):
            new["type"] = new["type"].upper()
        if isinstance(new["name"], str):
            new["name"] = qualify(zone, new["name"])
        try:
            check_record(zone, new, [r for r in recs if r is not rec])
        except ApiError as e:
            e.record = rec
            raise
        if new["proxied"]:
            new["ttl"] = 1
        new["proxiable"] = new["type"] in ("A", "AAAA", "CNAME")
        new["modified_on"] = now_iso()
        rec.clear()
        rec.update(new)
        return 200, envelope(rec), rec

    # ---- test controls ---------------------------------------------------------------------

    def handle_control(self, path, raw):
        try:
            body = json.loads(raw.decode() or "{}") if self.command == "POST" else {}
            if not isinstance(body, dict):
                raise ValueError("a JSON object is expected")
        except (ValueError, UnicodeDecodeError) as e:
            self.send_json(400, {"error": "bad JSON: %s" % e})
            return
        with LOCK:
            if path == "/_fake/records" and self.command == "GET":
                self.send_json(200, {"zone": STATE["zone"], "records": STATE["records"]})
            elif path == "/_fake/changes" and self.command == "GET":
                self.send_json(200, STATE["changes"])
            elif path == "/_fake/requests" and self.command == "GET":
                self.send_json(200, STATE["requests"])
            elif path == "/_fake/fail" and self.command == "POST":
                rule = dict(body)
                rule["count"] = int(rule.get("count", 1))
                if rule["count"] > 0:
                    STATE["fail"].append(rule)
                self.send_json(200, {"ok": True, "rules": len(STATE["fail"])})
            elif path == "/_fake/set" and self.command == "POST":
                self.control_set(body)
            elif path == "/_fake/zone" and self.command == "POST":
                if "status" in body:
                    STATE["zone"]["status"] = str(body["status"])
                if "paused" in body:
                    STATE["zone"]["paused"] = bool(body["paused"])
                self.send_json(200, STATE["zone"])
            elif path == "/_fake/reset" and self.command == "POST":
                STATE["fail"].clear()
                STATE["changes"].clear()
                STATE["requests"].clear()
                self.send_json(200, {"ok": True})
            else:
                self.send_json(404, {"error": "no such control"})

    def control_set(self, body):
        """Runs under LOCK."""
        zone = STATE["zone"]
        name = body.get("name")
        if not isinstance(name, str):
            self.send_json(400, {"error": "name is required"})
            return
        name = qualify(zone, name)
        rtype = body.get("type")
        matches = [r for r in STATE["records"] if norm_name(r["name"]) == name
                   and (rtype is None or r["type"] == rtype.upper())]
        if body.get("delete"):
            for r in matches:
                STATE["records"].remove(r)
            self.send_json(200, {"deleted": len(matches)})
            return
        if len(matches) > 1:
            self.send_json(409, {"error": "%d records match" % len(matches)})
            return
        content = body.get("content")
        if not isinstance(content, str):
            self.send_json(400, {"error": "content is required"})
            return
        if matches:
            rec = matches[0]
            rec["content"] = content
            if "proxied" in body:
                rec["proxied"] = bool(body["proxied"])
            rec["modified_on"] = now_iso()
        else:
            if rtype is None:
                rtype = "AAAA" if ":" in content else "A"
            rec = make_record(zone, rtype.upper(), name, content, bool(body.get("proxied", True)),
                              1)
            STATE["records"].append(rec)
        self.send_json(200, rec)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = handle_any


def parse_record(spec, zone):
    parts = spec.split(":", 2)
    if len(parts) != 3:
        raise SystemExit("--record %r: expected name:type:content[:proxied]" % spec)
    name, rtype, rest = parts
    proxied = True
    for suffix, value in ((":true", True), (":false", False)):
        if rest.endswith(suffix):
            rest, proxied = rest[:-len(suffix)], value
            break
    rec = make_record(zone, rtype.upper(), qualify(zone, name), rest, proxied, 1)
    return rec


def main():
    ap = fakelib.arg_parser("Fake Cloudflare API v4 for dhaf tests.", host=True)
    ap.add_argument("--token", required=True)
    ap.add_argument("--zone", required=True)
    ap.add_argument("--zone-status", default="active")
    ap.add_argument("--zone-paused", action="store_true")
    ap.add_argument("--record", action="append", default=[])
    ap.add_argument("--max-per-page", type=int, default=5000)
    ap.add_argument("--log")
    args = fakelib.parse_args(ap)

    zname = norm_name(args.zone)
    STATE["token"] = args.token
    STATE["zone"] = {
        "id": hashlib.md5(zname.encode()).hexdigest(),
        "name": zname,
        "status": args.zone_status,
        "paused": args.zone_paused,
        "type": "full",
        "development_mode": 0,
        "name_servers": ["ada.ns.cloudflare.com", "bob.ns.cloudflare.com"],
        "account": {"id": "0" * 32, "name": "dhaf tests"},
        "created_on": now_iso(),
        "modified_on": now_iso(),
    }
    STATE["records"] = [parse_record(r, STATE["zone"]) for r in args.record]
    STATE["max_per_page"] = max(1, args.max_per_page)
    STATE["log"] = args.log

    fakelib.serve(fakelib.http_server(args, Handler), args)


if __name__ == "__main__":
    main()
