#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A fake Google Cloud for tests: the OAuth2 token endpoint and the Compute Engine v1
project-metadata API (projects.get, setCommonInstanceMetadata, global operations).

Usage:
    google.py --port P --project ID --pubkey FILE --client-email E
              [--metadata key=value]... [--token-ttl S] [--log FILE] [--watch-stdin]

Plain HTTP on 127.0.0.1. Prints "LISTENING <port>" on stdout (flushed) once it accepts
connections; --port 0 picks a free port. Threaded, quiet, exits on SIGTERM or SIGINT; with
--watch-stdin also when its stdin reaches EOF (give it a pipe and keep the write end open).

Token endpoint (the service-account key's token_uri is http://127.0.0.1:<port>/token):
    POST /token   form grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT
                  The JWT must be base64url without padding, alg RS256, signed with the private
                  half of --pubkey (checked with `openssl dgst -sha256 -verify`), iss =
                  --client-email, aud = the token URL, scope with .../auth/compute (or
                  cloud-platform), exp - iat <= 3600 and not expired. Answers
                  {"access_token","expires_in","token_type":"Bearer"} or 400
                  {"error":"invalid_grant","error_description":...}.

Compute (also under /compute/v1; every call needs "Authorization: Bearer <issued token>",
else 401 authError):
    GET  /projects/{id}                                   the Project with commonInstanceMetadata
    POST /projects/{id}/setCommonInstanceMetadata[?requestId=UUID]
         body {"fingerprint","items":[{key,value}...]}: a stale fingerprint -> 412
         conditionNotMet; applied at once with a new fingerprint; answers a PENDING operation
         (a repeated requestId answers the first request's operation and changes nothing)
    GET  /projects/{id}/global/operations/{name}          the operation (a poll)
    POST /projects/{id}/global/operations/{name}/wait     the same (best-effort wait)
An operation is DONE once it has been polled `running_polls` times (default 1: the first poll
answers RUNNING) or, by default, once it is 0.5 s old.

Test controls (JSON bodies; never need a token):
    POST /_fake/set    {"key":K,"value":V}  change metadata behind dhaf's back (V null deletes)
    POST /_fake/race   {"count":N[,"key":K,"value":V]}  the next N setCommonInstanceMetadata
                                            get 412, as if someone changed the metadata in
                                            between (and set K to V: V null deletes)
    POST /_fake/fail   {"status":503,"count":N,"what":"api"|"token"|"any","body":RAW,
                        "retry_after":S,"skip":M}
                                            the next N requests of that kind (after M that
                                            pass) fail so; RAW replaces the Google error body
    POST /_fake/op     {"running_polls":N,"after":S|null,"error":{"code","message"},
                        "http_status":H}    how the next operation ends
    POST /_fake/revoke                      every issued token stops working (401)
    POST /_fake/reset                       metadata as at start, counters and controls cleared
    GET  /_fake/state                       metadata, counters, operations, the last JWT
Every change (tokens, metadata, operations, controls) is one JSON line in --log.
"""

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402

GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPES = ("https://www.googleapis.com/auth/compute",
          "https://www.googleapis.com/auth/cloud-platform")

LOCK = threading.Lock()
ARGS = None
TOKEN_URL = ""
LOG = None
S = {}  # the whole state, guarded by LOCK


def new_fingerprint():
    return base64.b64encode(secrets.token_bytes(8)).decode()


def reset_state(initial_items):
    tokens = S.get("tokens", {})  # issued tokens survive a reset
    S.clear()
    S.update(
        items=[dict(i) for i in initial_items],
        fingerprint=new_fingerprint(),
        tokens=tokens,
        counters=dict(token_requests=0, tokens_issued=0, tokens_refused=0, api_requests=0,
                      unauthorized=0, get_requests=0, set_requests=0, conflicts=0,
                      failures=0, polls=0),
        race=0,
        race_set=None,
        fail=None,
        next_op=None,
        ops={},
        request_ids={},
        last_jwt=None,
        last_op=None,
    )


def log(event, **fields):
    if LOG is None:
        return
    rec = {"ts": round(time.time(), 3), "event": event}
    rec.update(fields)
    LOG.write(json.dumps(rec) + "\n")
    LOG.flush()


def google_error(code, reason, message, status=None):
    err = {"code": code, "message": message,
           "errors": [{"domain": "global", "reason": reason, "message": message}]}
    if status:
        err["status"] = status
    return {"error": err}


def b64url_decode(part):
    if "=" in part:
        raise ValueError("base64url padding is not allowed in a JWT")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def verify_rs256(data, sig):
    """True when sig is an RS256 signature of data by the private half of --pubkey."""
    with tempfile.TemporaryDirectory(prefix="dhaf-gfake-") as d:
        dp, sp = os.path.join(d, "data"), os.path.join(d, "sig")
        with open(dp, "wb") as f:
            f.write(data)
        with open(sp, "wb") as f:
            f.write(sig)
        r = subprocess.run(["openssl", "dgst", "-sha256", "-verify", ARGS.pubkey,
                            "-signature", sp, dp],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        return r.returncode == 0


def check_jwt(assertion):
    """Returns (claims, header) or raises ValueError with the reason Google would give."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise ValueError("Invalid JWT: not three parts")
    try:
        header = json.loads(b64url_decode(parts[0]))
        claims = json.loads(b64url_decode(parts[1]))
        sig = b64url_decode(parts[2])
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError("Invalid JWT: %s" % e)
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise ValueError("Invalid JWT: header and claims must be objects")
    with LOCK:
        S["last_jwt"] = {"header": header, "claims": claims}
    if header.get("alg") != "RS256":
        raise ValueError("Invalid JWT: alg must be RS256")
    if header.get("typ", "JWT") != "JWT":
        raise ValueError("Invalid JWT: typ must be JWT")
    if claims.get("iss") != ARGS.client_email:
        raise ValueError("Invalid grant: account not found")
    if not verify_rs256((parts[0] + "." + parts[1]).encode(), sig):
        raise ValueError("Invalid JWT Signature.")
    if claims.get("aud") != TOKEN_URL:
        raise ValueError("Invalid JWT: aud must be %s" % TOKEN_URL)
    scope = claims.get("scope")
    if not isinstance(scope, str) or not any(s in scope.split(" ") for s in SCOPES):
        raise ValueError("Invalid JWT: no usable scope")
    iat, exp = claims.get("iat"), claims.get("exp")
    now = time.time()
    if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600 or \
            exp < now or iat > now + 300 or exp <= iat:
        raise ValueError("Invalid JWT: Token must be a short-lived token (60 minutes) and in a "
                         "reasonable timeframe. Check your iat and exp values in the JWT claim.")
    return claims, header


def op_view(op):
    """The Operation resource as the API shows it now."""
    out = {k: v for k, v in op.items() if not k.startswith("_")}
    return out


def op_advance(op):
    """One poll of op: DONE once polled running_polls times or (by default) 0.5 s old."""
    if op["status"] != "DONE":
        after = op["_after"]
        if op["_polls"] >= op["_running_polls"] or \
                (after is not None and time.time() - op["_created"] >= after):
            op["status"] = "DONE"
            op["progress"] = 100
            op["endTime"] = time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())
            if op["_error"] is not None:
                op["error"] = {"errors": [op["_error"]]}
                op["httpErrorStatusCode"] = op["_http_status"]
                op["httpErrorMessage"] = "BAD REQUEST" if op["_http_status"] == 400 else "ERROR"
            log("op-done", name=op["name"], error=op.get("error"))
        else:
            op["status"] = "RUNNING"
            op["progress"] = 50
    op["_polls"] += 1
    S["counters"]["polls"] += 1
    if op["status"] == "DONE":
        op["_done_served"] = True
    return op_view(op)


class Handler(fakelib.Handler):
    server_version = "dhaf-test-google"
    json_type = "application/json; charset=UTF-8"

    def injected_failure(self, kind):
        """Answers an injected failure for a request of kind ("api" or "token"); True if so."""
        with LOCK:
            f = S["fail"]
            if not f or f["count"] <= 0 or f["what"] not in (kind, "any"):
                return False
            if f["skip"] > 0:
                f["skip"] -= 1
                return False
            f["count"] -= 1
            S["counters"]["failures"] += 1
            status, body, retry_after = f["status"], f.get("body"), f.get("retry_after")
        log("failure-injected", status=status, path=self.path)
        headers = [("Retry-After", str(retry_after))] if retry_after is not None else []
        if body is not None:
            self.send_json(status, body.encode(), headers)
        else:
            self.send_json(status, google_error(status, "backendError",
                                            "The service is currently unavailable.",
                                            "UNAVAILABLE"), headers)
        return True

    # ---- dispatch ------------------------------------------------------------------------

    def do_GET(self):
        self.route("GET")

    def do_POST(self):
        self.route("POST")

    def do_PUT(self):
        self.route("PUT")

    def do_DELETE(self):
        self.route("DELETE")

    def route(self, method):
        url = urlsplit(self.path)
        path = url.path
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            body = self.read_body(ValueError("body too large"))
        except ValueError:
            self.send_json(413, google_error(413, "invalid", "request too large"))
            return
        if path.startswith("/_fake/"):
            self.control(method, path[len("/_fake/"):], body)
            return
        if path == "/token":
            if method != "POST":
                self.send_json(405, {"error": "invalid_request", "error_description": "POST only"})
                return
            self.token(body)
            return
        if path.startswith("/compute/v1/"):
            path = path[len("/compute/v1"):]
        self.compute(method, path, query, body)

    # ---- token endpoint ------------------------------------------------------------------

    def token(self, body):
        with LOCK:
            S["counters"]["token_requests"] += 1
        if self.injected_failure("token"):
            return
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != GRANT:
            self.refuse_token("unsupported_grant_type", "Invalid grant_type: %s" %
                              form.get("grant_type", ""))
            return
        try:
            claims, header = check_jwt(form.get("assertion", ""))
        except ValueError as e:
            self.refuse_token("invalid_grant", str(e))
            return
        token = "ya29.fake-" + secrets.token_urlsafe(24)
        with LOCK:
            S["tokens"][token] = time.time() + ARGS.token_ttl
            S["counters"]["tokens_issued"] += 1
        log("token-issued", iss=claims["iss"], kid=header.get("kid"))
        self.send_json(200, {"access_token": token, "expires_in": ARGS.token_ttl,
                         "token_type": "Bearer"})

    def refuse_token(self, error, description):
        with LOCK:
            S["counters"]["tokens_refused"] += 1
        log("token-refused", error=error, description=description)
        self.send_json(400, {"error": error, "error_description": description})

    # ---- compute -------------------------------------------------------------------------

    def authorized(self):
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            with LOCK:
                until = S["tokens"].get(auth[len("Bearer "):])
            if until is not None and until > time.time():
                return True
        with LOCK:
            S["counters"]["unauthorized"] += 1
        self.send_json(401, google_error(
            401, "authError",
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
            "UNAUTHENTICATED"))
        return False

    def compute(self, method, path, query, body):
        parts = [p for p in path.split("/") if p]
        with LOCK:
            S["counters"]["api_requests"] += 1
        if self.injected_failure("api"):
            return
        if not self.authorized():
            return
        if len(parts) < 2 or parts[0] != "projects":
            self.send_json(404, google_error(404, "notFound", "no such API path %s" % path))
            return
        if parts[1] != ARGS.project:
            self.send_json(404, google_error(404, "notFound", "The resource 'projects/%s' was "
                                         "not found" % parts[1], "NOT_FOUND"))
            return
        rest = parts[2:]
        if method == "GET" and not rest:
            self.project_get()
        elif method == "POST" and rest == ["setCommonInstanceMetadata"]:
            self.set_metadata(query, body)
        elif len(rest) >= 3 and rest[:2] == ["global", "operations"] and \
                ((method == "GET" and len(rest) == 3) or
                 (method == "POST" and len(rest) == 4 and rest[3] == "wait")):
            self.operation(rest[2])
        else:
            self.send_json(404, google_error(404, "notFound", "no such API path %s" % path))

    def project_get(self):
        with LOCK:
            S["counters"]["get_requests"] += 1
            meta = {"kind": "compute#metadata", "fingerprint": S["fingerprint"]}
            if S["items"]:
                meta["items"] = [dict(i) for i in S["items"]]
        self.send_json(200, {"kind": "compute#project", "id": "4242424242", "name": ARGS.project,
                         "commonInstanceMetadata": meta,
                         "selfLink": "https://www.googleapis.com/compute/v1/projects/" +
                                     ARGS.project})

    def set_metadata(self, query, body):
        try:
            meta = json.loads(body)
            if not isinstance(meta, dict):
                raise ValueError("not an object")
            items = meta.get("items", [])
            if not isinstance(items, list):
                raise ValueError("items is not a list")
            seen = set()
            for it in items:
                if not isinstance(it, dict) or not isinstance(it.get("key"), str) or \
                        not isinstance(it.get("value", ""), str):
                    raise ValueError("bad item %r" % (it,))
                if it["key"] in seen:
                    raise ValueError("duplicate key %s" % it["key"])
                seen.add(it["key"])
        except ValueError as e:
            self.send_json(400, google_error(400, "invalid", "Invalid value for field "
                                         "'resource': %s" % e, "INVALID_ARGUMENT"))
            return
        rid = query.get("requestId")
        with LOCK:
            S["counters"]["set_requests"] += 1
            conflict = None
            if rid and rid in S["request_ids"]:
                op = S["ops"][S["request_ids"][rid]]
                view = op_view(op)
                log("request-repeated", requestId=rid, op=op["name"])
            else:
                if S["race"] > 0:
                    S["race"] -= 1
                    S["fingerprint"] = new_fingerprint()  # "someone" changed it in between
                    rs = S.get("race_set")
                    if rs:  # ... and that someone changed this key
                        S["items"] = [i for i in S["items"] if i["key"] != rs["key"]]
                        if rs["value"] is not None:
                            S["items"].append({"key": rs["key"], "value": rs["value"]})
                    conflict = "race"
                elif meta.get("fingerprint") != S["fingerprint"]:
                    conflict = "stale"
                if conflict:
                    S["counters"]["conflicts"] += 1
                else:
                    view = self.apply(meta, rid)
        if conflict:
            log("conflict", kind=conflict, fingerprint=meta.get("fingerprint"))
            self.send_json(412, google_error(
                412, "conditionNotMet",
                "Supplied fingerprint does not match current metadata fingerprint.",
                "FAILED_PRECONDITION"))
            return
        self.send_json(200, view)

    def apply(self, meta, rid):
        """Applies a set (LOCK held) and returns the new operation's view."""
        cfg = S["next_op"] or {}
        S["next_op"] = None
        failing = cfg.get("error") is not None
        old = {i["key"]: i.get("value") for i in S["items"]}
        if not failing:
            S["items"] = [{"key": i["key"], "value": i.get("value", "")}
                          for i in meta.get("items", [])]
            S["fingerprint"] = new_fingerprint()
        name = "operation-%d-%s" % (int(time.time() * 1000), secrets.token_hex(8))
        now = time.strftime("%Y-%m-%dT%H:%M:%S.000-00:00", time.gmtime())
        op = {
            "kind": "compute#operation", "id": str(secrets.randbits(60)), "name": name,
            "operationType": "compute.projects.setCommonInstanceMetadata",
            "targetLink": "https://www.googleapis.com/compute/v1/projects/" + ARGS.project,
            "targetId": "4242424242", "status": "PENDING", "user": ARGS.client_email,
            "progress": 0, "insertTime": now, "startTime": now,
            "selfLink": "https://www.googleapis.com/compute/v1/projects/%s/global/operations/%s"
                        % (ARGS.project, name),
            "_created": time.time(), "_polls": 0, "_done_served": False,
            "_running_polls": cfg.get("running_polls", 1),
            "_after": cfg.get("after", None if cfg else 0.5),
            "_error": cfg.get("error"), "_http_status": cfg.get("http_status", 400),
        }
        if rid:
            op["clientOperationId"] = rid
            S["request_ids"][rid] = name
        S["ops"][name] = op
        S["last_op"] = name
        new = {i["key"]: i.get("value") for i in S["items"]}
        log("metadata-set", op=name, fingerprint=S["fingerprint"], failing=failing,
            changed={k: v for k, v in new.items() if old.get(k) != v},
            removed=[k for k in old if k not in new])
        return op_view(op)

    def operation(self, name):
        with LOCK:
            op = S["ops"].get(name)
            view = op_advance(op) if op else None
        if view is None:
            self.send_json(404, google_error(404, "notFound", "The resource 'projects/%s/global/"
                                         "operations/%s' was not found" % (ARGS.project, name),
                                         "NOT_FOUND"))
            return
        self.send_json(200, view)

    # ---- test controls -------------------------------------------------------------------

    def control(self, method, what, body):
        try:
            req = json.loads(body) if body else {}
            if not isinstance(req, dict):
                raise ValueError("not an object")
        except ValueError as e:
            self.send_json(400, {"error": "bad control body: %s" % e})
            return
        with LOCK:
            if method == "GET" and what == "state":
                out = {
                    "fingerprint": S["fingerprint"], "items": S["items"],
                    "counters": S["counters"], "last_jwt": S["last_jwt"],
                    "last_op": S["last_op"],
                    "ops": {n: {"status": o["status"], "polls": o["_polls"],
                                "done_served": o["_done_served"]} for n, o in S["ops"].items()},
                    "race": S["race"], "fail": S["fail"],
                }
                self.send_json(200, out)
                return
            if method != "POST":
                self.send_json(405, {"error": "POST only"})
                return
            if what == "set":
                key, value = req.get("key"), req.get("value")
                S["items"] = [i for i in S["items"] if i["key"] != key]
                if value is not None:
                    S["items"].append({"key": key, "value": value})
                S["fingerprint"] = new_fingerprint()
            elif what == "race":
                S["race"] = int(req.get("count", 1))
                S["race_set"] = ({"key": req["key"], "value": req.get("value")}
                                 if "key" in req else None)
            elif what == "fail":
                S["fail"] = {"status": int(req.get("status", 503)),
                             "count": int(req.get("count", 1)),
                             "what": req.get("what", "api"), "body": req.get("body"),
                             "skip": int(req.get("skip", 0)),
                             "retry_after": req.get("retry_after")}
            elif what == "op":
                S["next_op"] = req
            elif what == "revoke":
                S["tokens"].clear()
            elif what == "reset":
                reset_state(INITIAL_ITEMS)
            else:
                self.send_json(404, {"error": "unknown control %s" % what})
                return
        log("control-" + what, **{k: v for k, v in req.items() if isinstance(k, str)})
        self.send_json(200, {"ok": True})


INITIAL_ITEMS = []


def main():
    global ARGS, TOKEN_URL, LOG
    ap = fakelib.arg_parser("Fake Google Cloud (OAuth2 + Compute metadata).")
    ap.add_argument("--project", required=True)
    ap.add_argument("--pubkey", required=True, help="PEM public key of the service account")
    ap.add_argument("--client-email", required=True)
    ap.add_argument("--metadata", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--token-ttl", type=int, default=3599)
    ap.add_argument("--log")
    ARGS = fakelib.parse_args(ap)
    for kv in ARGS.metadata:
        key, sep, value = kv.partition("=")
        if not sep:
            ap.error("--metadata wants key=value, got %r" % kv)
        INITIAL_ITEMS.append({"key": key, "value": value})
    if ARGS.log:
        LOG = open(ARGS.log, "a", encoding="utf-8")
    reset_state(INITIAL_ITEMS)

    httpd = fakelib.http_server(ARGS, Handler)
    TOKEN_URL = "http://127.0.0.1:%d/token" % httpd.server_address[1]
    log("start", port=httpd.server_address[1], project=ARGS.project, items=INITIAL_ITEMS)
    fakelib.serve(httpd, ARGS)


if __name__ == "__main__":
    main()
