#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A local fake of the Telegram Bot API for tests (provider-apis.md section 3).

Usage:
    telegram.py --port P --token T [--bot-username dhafbot] [--first-update-id N] [--watch-stdin]

Plain HTTP on 127.0.0.1. Prints "LISTENING <port>" (flushed) once it accepts connections;
--port 0 picks a free port. Threaded, quiet, exits on SIGTERM or SIGINT; with --watch-stdin
also when its stdin reaches EOF, so a crashed test cannot leave it behind.

The Bot API: GET or POST /bot<T>/<method> (method names case-insensitive); parameters from the
query string, an application/x-www-form-urlencoded body or a JSON object body (a JSON-typed
parameter such as allowed_updates may be JSON text in a query or form). Replies are
{"ok": true, "result": ...} or {"ok": false, "error_code": N, "description": "..."[,
"parameters": {...}]} with HTTP status N. A wrong token gets 401 "Unauthorized"; an unknown
method 404 "Not Found".
    getMe        {"id": <the digits before ':' in T>, "is_bot": true, "first_name": "dhaf",
                 "username": <--bot-username>, ...}
    getUpdates   offset, limit (1-100), timeout (s), allowed_updates. Updates below offset
                 are confirmed and forgotten; a negative offset keeps the last |offset|. A
                 real long poll: the request is held until an update of an allowed type
                 exists or timeout passes. allowed_updates is remembered between calls
                 (default: every type but chat_member); updates of other types are dropped.
                 A second getUpdates while one is held ends the held one with 409 "Conflict:
                 terminated by other getUpdates request; ...". With a webhook set (see
                 /_fake/webhook) every call gets 409 "Conflict: can't use getUpdates method
                 while webhook is active; ...".
    sendMessage  chat_id (integer or its text), text, parse_mode. An unknown chat (one that
                 never appeared in an update nor in /_fake/chat) gets 400 "Bad Request: chat
                 not found". parse_mode MarkdownV2 is parsed like Telegram does: a reserved
                 character without a preceding '\\' gets 400 "Bad Request: can't parse
                 entities: Character 'X' is reserved and must be escaped with the preceding
                 '\\'", an entity left open gets "... Can't find end of Bold entity at byte
                 offset N". Empty text after parsing: 400 "Bad Request: message text is
                 empty"; more than 4096 characters: 400 "Bad Request: message is too long".
                 Other parse modes are taken as plain text. The result is the Message.
    deleteWebhook  clears the webhook (result true).

Test controls (no token; JSON bodies):
    POST /_fake/update {update}           queues an update (update_id assigned when absent);
                                          its chats become known. Reply {"update_id": N}.
    POST /_fake/chat {"id": N, "type": T} makes a chat known without an update
    POST /_fake/block {"chat_id": N}      sendMessage to N gets 403 "Forbidden: bot was
                                          blocked by the user" (a private chat) or "Forbidden:
                                          bot was kicked from the group chat" (other chats);
                                          "unblock": true undoes it
    POST /_fake/ratelimit {"chat_id": N, "retry_after": 1, "count": 1}
                                          the next `count` sendMessage to N (to any chat
                                          without chat_id) get 429 "Too Many Requests: retry
                                          after R" with parameters.retry_after R
    POST /_fake/migrate {"chat_id": N, "to": M}
                                          sendMessage to N gets 400 "Bad Request: group chat
                                          was upgraded to a supergroup chat" with
                                          parameters.migrate_to_chat_id M (M becomes known)
    POST /_fake/fail {"method": "sendMessage", "status": 502, "count": 1[, "chat_id": N]
                      [, "description": "..."][, "drop": true][, "delay": S]}
                                          the next `count` calls of method (to chat N) fail
                                          with status (in the error envelope), or have their
                                          connection closed without a reply ("drop"); with
                                          "delay" (sendMessage only) they are held S seconds
                                          and then served normally (an attempt with "held":
                                          true and status null marks one)
    POST /_fake/webhook {"url": "https://..."}   sets (or with "" clears) a webhook
    GET  /_fake/sent     {"messages": [...], "attempts": [...]}: every accepted message
                         {message_id, chat_id, text, plain (the text without markup),
                         parse_mode, t}, and every sendMessage call {chat_id, status,
                         description, t}; t is the fake's monotonic clock in seconds
    GET  /_fake/polls    {"count": N, "in_flight": K, "polls": [{offset, limit, timeout,
                         allowed_updates, t, status (null while held), returned: [ids],
                         done_t}]}: every getUpdates call in arrival order
    GET  /_fake/pending  {"updates": [...]}: updates not yet confirmed
"""

import json
import os
import socket
import sys
import threading
import time
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fakelib  # noqa: E402

LOCK = threading.Condition()
STATE = {
    "token": "",
    "bot_id": 0,
    "username": "dhafbot",
    "next_update_id": 1,
    "updates": [],             # pending updates, in order
    "allowed": None,           # the remembered allowed_updates (None = default)
    "poll_gen": 0,             # increases with every getUpdates: a held older one ends in 409
    "webhook": "",
    "chats": {},               # id -> type
    "blocked": set(),
    "ratelimits": [],          # {"chat_id", "retry_after", "count"}
    "migrated": {},            # id -> new id
    "fails": [],               # {"method", "status", "count", "chat_id", "description", "drop"}
    "messages": [],
    "attempts": [],
    "polls": [],
    "next_message_id": 1,
}

UPDATE_TYPES = ("message", "edited_message", "channel_post", "edited_channel_post",
                "business_connection", "business_message", "edited_business_message",
                "deleted_business_messages", "message_reaction", "message_reaction_count",
                "inline_query", "chosen_inline_result", "callback_query", "shipping_query",
                "pre_checkout_query", "purchased_paid_media", "poll", "poll_answer",
                "my_chat_member", "chat_member", "chat_join_request", "chat_boost",
                "removed_chat_boost")
OPT_IN_TYPES = ("chat_member", "message_reaction", "message_reaction_count")
RESERVED = "_*[]()~`>#+-=|{}.!"
ENTITY_NAMES = {"*": "Bold", "_": "Italic", "__": "Underline", "~": "Strikethrough",
                "||": "Spoiler", "[": "TextUrl"}


class ApiError(Exception):
    def __init__(self, code, description, parameters=None):
        super().__init__(description)
        self.code = code
        self.description = description
        self.parameters = parameters


def now():
    return time.monotonic()


def update_type(u):
    for k in u:
        if k != "update_id" and k in UPDATE_TYPES:
            return k
    return None


def learn_chats(obj):
    """Every chat object inside an update becomes a known chat."""
    if isinstance(obj, dict):
        chat = obj.get("chat")
        if isinstance(chat, dict) and isinstance(chat.get("id"), int):
            STATE["chats"][chat["id"]] = chat.get("type", "private")
        if isinstance(obj.get("migrate_to_chat_id"), int):
            STATE["chats"][obj["migrate_to_chat_id"]] = "supergroup"
        for v in obj.values():
            learn_chats(v)
    elif isinstance(obj, list):
        for v in obj:
            learn_chats(v)


def parse_markdown_v2(text):
    """Returns the plain text of MarkdownV2 text, or raises ApiError like Telegram does."""
    out = []
    stack = []  # open entity markers with their byte offsets
    i, n = 0, len(text)
    at_line_start = True

    def byte_offset(k):
        return len(text[:k].encode("utf-8"))

    def bad(what):
        raise ApiError(400, "Bad Request: can't parse entities: " + what)

    def toggle(marker, k):
        if stack and stack[-1][0] == marker:
            stack.pop()
        elif any(m == marker for m, _ in stack):
            bad("Can't find end of %s entity at byte offset %d"
                % (ENTITY_NAMES[stack[-1][0]], stack[-1][1]))
        else:
            stack.append((marker, byte_offset(k)))

    while i < n:
        c = text[i]
        line_start = at_line_start
        at_line_start = c == "\n"
        if c == "\\":
            if i + 1 < n and 1 <= ord(text[i + 1]) <= 126:
                out.append(text[i + 1])
                i += 2
                continue
            bad("Character '\\' is reserved and must be escaped with the preceding '\\'")
        if c == "`":
            pre = text.startswith("```", i)
            end_marker = "```" if pre else "`"
            j = i + len(end_marker)
            body = []
            while j < n and not text.startswith(end_marker, j):
                if text[j] == "\\" and j + 1 < n and text[j + 1] in "`\\":
                    body.append(text[j + 1])
                    j += 2
                    continue
                body.append(text[j])
                j += 1
            if j >= n:
                bad("Can't find end of %s entity at byte offset %d"
                    % ("Pre" if pre else "Code", byte_offset(i)))
            out.append("".join(body))
            i = j + len(end_marker)
            continue
        if c == "_" and text.startswith("__", i):
            toggle("__", i)
            i += 2
            continue
        if c == "|" and text.startswith("||", i):
            toggle("||", i)
            i += 2
            continue
        if c in "*_~":
            toggle(c, i)
            i += 1
            continue
        if c == "[":
            stack.append(("[", byte_offset(i)))
            i += 1
            continue
        if c == "]" and stack and stack[-1][0] == "[":
            stack.pop()
            if not text.startswith("(", i + 1):
                bad("Can't find end of URL for TextUrl entity")
            j = i + 2
            while j < n and text[j] != ")":
                j += 2 if text[j] == "\\" else 1
            if j >= n:
                bad("Can't find end of a URL at byte offset %d" % byte_offset(i + 1))
            i = j + 1
            continue
        if c == ">" and line_start:
            i += 1  # a block quote
            continue
        if c in RESERVED:
            bad("Character '%s' is reserved and must be escaped with the preceding '\\'" % c)
        out.append(c)
        i += 1
    if stack:
        marker, off = stack[-1]
        bad("Can't find end of %s entity at byte offset %d" % (ENTITY_NAMES[marker], off))
    return "".join(out)


def take_fail(method, chat_id=None, delay=False):
    for rule in STATE["fails"]:
        if rule.get("method", "").lower() != method or bool(rule.get("delay")) != delay:
            continue
        if "chat_id" in rule and rule["chat_id"] != chat_id:
            continue
        rule["count"] = rule.get("count", 1) - 1
        if rule["count"] <= 0:
            STATE["fails"].remove(rule)
        return rule
    return None


def int_param(params, name, default=None):
    v = params.get(name, default)
    if v is None:
        return None
    if isinstance(v, bool):
        raise ApiError(400, "Bad Request: invalid %s" % name)
    try:
        return int(v)
    except (TypeError, ValueError):
        raise ApiError(400, "Bad Request: invalid %s" % name)


def api_getme(_handler, _params):
    return {"id": STATE["bot_id"], "is_bot": True, "first_name": "dhaf",
            "username": STATE["username"], "can_join_groups": True,
            "can_read_all_group_messages": False, "supports_inline_queries": False}


def api_getupdates(handler, params):
    offset = int_param(params, "offset", 0)
    limit = int_param(params, "limit", 100)
    timeout = int_param(params, "timeout", 0)
    if not 1 <= limit <= 100:
        limit = 100
    timeout = max(0, min(timeout, 50))
    allowed = params.get("allowed_updates")
    if isinstance(allowed, str):
        try:
            allowed = json.loads(allowed)
        except ValueError:
            raise ApiError(400, "Bad Request: can't parse allowed updates JSON object")
    if allowed is not None and not (isinstance(allowed, list)
                                    and all(isinstance(a, str) for a in allowed)):
        raise ApiError(400, "Bad Request: allowed_updates must be an array of strings")

    with LOCK:
        rec = {"offset": offset if "offset" in params else None, "limit": limit, "timeout": timeout,
               "allowed_updates": allowed, "t": now(), "status": None, "returned": [],
               "done_t": None}
        STATE["polls"].append(rec)
        try:
            if STATE["webhook"]:
                raise ApiError(409, "Conflict: can't use getUpdates method while webhook is "
                               "active; use deleteWebhook to delete the webhook first")
            rule = take_fail("getupdates")
            if rule:
                fail_with(handler, rule)
            if allowed is not None:
                STATE["allowed"] = allowed
            STATE["poll_gen"] += 1
            gen = STATE["poll_gen"]
            LOCK.notify_all()  # ends a held older poll with 409

            # Confirm what lies below offset.
            ups = STATE["updates"]
            if offset < 0:
                STATE["updates"] = ups[offset:]
            elif offset > 0:
                STATE["updates"] = [u for u in ups if u["update_id"] >= offset]
            deadline = now() + timeout
            while True:
                allow = STATE["allowed"]
                if allow is None or allow == []:
                    keep = lambda u: update_type(u) not in OPT_IN_TYPES
                else:
                    keep = lambda u: update_type(u) in allow
                # Updates of types not asked for are never delivered: drop them.
                STATE["updates"] = [u for u in STATE["updates"] if keep(u)]
                if STATE["updates"]:
                    result = STATE["updates"][:limit]
                    rec["returned"] = [u["update_id"] for u in result]
                    rec["status"] = 200
                    return result
                left = deadline - now()
                if left <= 0:
                    rec["status"] = 200
                    return []
                LOCK.wait(left)
                if STATE["poll_gen"] != gen:
                    raise ApiError(409, "Conflict: terminated by other getUpdates request; make "
                                   "sure that only one bot instance is running")
                if STATE["webhook"]:
                    raise ApiError(409, "Conflict: terminated by setWebhook request")
        except ApiError as e:
            rec["status"] = e.code
            raise
        finally:
            rec["done_t"] = now()


def fail_with(handler, rule):
    if rule.get("drop"):
        handler.drop = True
        raise ApiError(0, "dropped")
    status = int(rule.get("status", 500))
    desc = rule.get("description") or {
        400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
        409: "Conflict", 429: "Too Many Requests: retry after 1",
        500: "Internal Server Error", 502: "Bad Gateway"}.get(status, "Error")
    raise ApiError(status, desc)


def api_sendmessage(handler, params):
    chat_id = params.get("chat_id")
    text = params.get("text")
    parse_mode = params.get("parse_mode")
    with LOCK:
        key = chat_id
        if isinstance(key, str) and key.lstrip("-").isdigit():
            key = int(key)
        slow = take_fail("sendmessage", key, delay=True)
        if slow:
            STATE["attempts"].append({"chat_id": key, "status": None, "held": True,
                                      "description": "", "t": now()})
    if slow:
        time.sleep(float(slow["delay"]))
    with LOCK:
        att = {"chat_id": chat_id, "status": 200, "description": "", "t": now()}
        STATE["attempts"].append(att)
        try:
            if chat_id is None or chat_id == "":
                raise ApiError(400, "Bad Request: chat_id is empty")
            if isinstance(chat_id, str) and not chat_id.startswith("@"):
                try:
                    chat_id = int(chat_id)
                except ValueError:
                    raise ApiError(400, "Bad Request: chat not found")
            if isinstance(chat_id, bool) or not isinstance(chat_id, (int, str)):
                raise ApiError(400, "Bad Request: chat not found")
            att["chat_id"] = chat_id
            rule = take_fail("sendmessage", chat_id)
            if rule:
                fail_with(handler, rule)
            for rl in STATE["ratelimits"]:
                if rl.get("chat_id") in (None, chat_id):
                    ra = int(rl.get("retry_after", 1))
                    rl["count"] = rl.get("count", 1) - 1
                    if rl["count"] <= 0:
                        STATE["ratelimits"].remove(rl)
                    raise ApiError(429, "Too Many Requests: retry after %d" % ra,
                                   {"retry_after": ra})
            if chat_id not in STATE["chats"]:
                raise ApiError(400, "Bad Request: chat not found")
            if chat_id in STATE["migrated"]:
                raise ApiError(400, "Bad Request: group chat was upgraded to a supergroup chat",
                               {"migrate_to_chat_id": STATE["migrated"][chat_id]})
            if chat_id in STATE["blocked"]:
                if STATE["chats"][chat_id] == "private":
                    raise ApiError(403, "Forbidden: bot was blocked by the user")
                raise ApiError(403, "Forbidden: bot was kicked from the group chat")
            if not isinstance(text, str) or text == "":
                raise ApiError(400, "Bad Request: message text is empty")
            if parse_mode is not None and str(parse_mode).lower() == "markdownv2":
                plain = parse_markdown_v2(text)
            elif parse_mode in (None, ""):
                plain = text
            else:
                plain = text  # HTML and legacy Markdown are not modelled
            if plain.strip() == "":
                raise ApiError(400, "Bad Request: message text is empty")
            if len(plain) > 4096:
                raise ApiError(400, "Bad Request: message is too long")
            msg = {"message_id": STATE["next_message_id"], "date": int(time.time()),
                   "chat": {"id": chat_id, "type": STATE["chats"][chat_id]},
                   "from": {"id": STATE["bot_id"], "is_bot": True, "first_name": "dhaf",
                            "username": STATE["username"]},
                   "text": plain}
            STATE["next_message_id"] += 1
            STATE["messages"].append({"message_id": msg["message_id"], "chat_id": chat_id,
                                      "text": text, "plain": plain, "parse_mode": parse_mode,
                                      "t": att["t"]})
            return msg
        except ApiError as e:
            att["status"] = e.code
            att["description"] = e.description
            raise


def api_deletewebhook(_handler, _params):
    with LOCK:
        STATE["webhook"] = ""
        LOCK.notify_all()
    return True


API = {"getme": api_getme, "getupdates": api_getupdates, "sendmessage": api_sendmessage,
       "deletewebhook": api_deletewebhook}


class Handler(fakelib.Handler):
    server_version = "dhaf-test-telegram"

    def params(self, url, raw):
        params = {k: v[-1] for k, v in parse_qs(url.query).items()}
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if raw and ctype == "application/json":
            try:
                body = json.loads(raw)
            except ValueError:
                raise ApiError(400, "Bad Request: can't parse JSON object")
            if not isinstance(body, dict):
                raise ApiError(400, "Bad Request: can't parse JSON object")
            params.update(body)
        elif raw and ctype == "application/x-www-form-urlencoded":
            params.update({k: v[-1] for k, v in parse_qs(raw.decode("utf-8", "replace")).items()})
        return params

    def handle_any(self):
        url = urlsplit(self.path)
        raw = self.read_body()
        if url.path.startswith("/_fake/"):
            self.control(url.path[len("/_fake/"):], raw)
            return
        self.drop = False
        parts = url.path.split("/")
        if len(parts) != 3 or not parts[1].startswith("bot"):
            self.send_json(404, {"ok": False, "error_code": 404, "description": "Not Found"})
            return
        if parts[1][3:] != STATE["token"]:
            self.send_json(401, {"ok": False, "error_code": 401, "description": "Unauthorized"})
            return
        fn = API.get(parts[2].lower())
        try:
            if fn is None:
                raise ApiError(404, "Not Found")
            result = fn(self, self.params(url, raw))
            self.send_json(200, {"ok": True, "result": result})
        except ApiError as e:
            if self.drop:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            err = {"ok": False, "error_code": e.code, "description": e.description}
            if e.parameters:
                err["parameters"] = e.parameters
            self.send_json(e.code, err)

    def control(self, name, raw):
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            self.send_json(400, {"ok": False, "description": "body is not JSON"})
            return
        with LOCK:
            if self.command == "GET" and name == "sent":
                self.send_json(200, {"messages": STATE["messages"],
                                      "attempts": STATE["attempts"]})
            elif self.command == "GET" and name == "polls":
                held = sum(1 for p in STATE["polls"] if p["status"] is None)
                self.send_json(200, {"count": len(STATE["polls"]), "in_flight": held,
                                      "polls": STATE["polls"]})
            elif self.command == "GET" and name == "pending":
                self.send_json(200, {"updates": STATE["updates"]})
            elif self.command != "POST" or not isinstance(body, dict):
                self.send_json(400, {"ok": False, "description": "unknown control"})
            elif name == "update":
                u = {"update_id": body.get("update_id", STATE["next_update_id"])}
                u.update(body)
                STATE["next_update_id"] = max(STATE["next_update_id"], u["update_id"] + 1)
                learn_chats(u)
                STATE["updates"].append(u)
                LOCK.notify_all()
                self.send_json(200, {"ok": True, "update_id": u["update_id"]})
            elif name == "chat":
                STATE["chats"][int(body["id"])] = body.get("type", "private")
                self.send_json(200, {"ok": True})
            elif name == "block":
                cid = int(body["chat_id"])
                if body.get("unblock"):
                    STATE["blocked"].discard(cid)
                else:
                    STATE["blocked"].add(cid)
                self.send_json(200, {"ok": True})
            elif name == "ratelimit":
                rl = {"retry_after": int(body.get("retry_after", 1)),
                      "count": int(body.get("count", 1))}
                if "chat_id" in body:
                    rl["chat_id"] = int(body["chat_id"])
                STATE["ratelimits"].append(rl)
                self.send_json(200, {"ok": True})
            elif name == "migrate":
                STATE["migrated"][int(body["chat_id"])] = int(body["to"])
                STATE["chats"][int(body["to"])] = "supergroup"
                self.send_json(200, {"ok": True})
            elif name == "fail":
                rule = dict(body)
                rule.setdefault("method", "sendMessage")
                rule.setdefault("count", 1)
                STATE["fails"].append(rule)
                self.send_json(200, {"ok": True})
            elif name == "webhook":
                STATE["webhook"] = body.get("url", "")
                LOCK.notify_all()
                self.send_json(200, {"ok": True})
            else:
                self.send_json(404, {"ok": False, "description": "unknown control"})

    do_GET = do_POST = handle_any


def main():
    ap = fakelib.arg_parser("Fake Telegram Bot API for dhaf tests.")
    ap.add_argument("--token", required=True)
    ap.add_argument("--bot-username", default="dhafbot")
    ap.add_argument("--first-update-id", type=int, default=100000)
    args = fakelib.parse_args(ap)

    STATE["token"] = args.token
    digits = args.token.split(":", 1)[0]
    STATE["bot_id"] = int(digits) if digits.isdigit() else 1
    STATE["username"] = args.bot_username
    STATE["next_update_id"] = args.first_update_id

    fakelib.serve(fakelib.http_server(args, Handler), args)


if __name__ == "__main__":
    main()
