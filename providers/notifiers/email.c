/* SPDX-License-Identifier: MIT */
/* E-mail notifier: config keys and rules, and one mail per event through an SMTP server
 * (libcurl easy handle with hard deadlines) as multipart/alternative text + HTML. */
#include <ctype.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>

#include "dhaf/alloc.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "email.h"
#include "replies.h"

#define EM(field) offsetof(struct email_config, field)

static const char *const securities[] = {"ssl", "starttls", NULL};

/* clang-format off */
static const struct dhaf_cfgkey email_keys[] = {
    {"from", DHAF_CFG_EMAIL, EM(from), true, NULL, 0, 0, NULL, NULL, NULL,
     "Sender address of the notifications."},
    {"to", DHAF_CFG_EMAIL, EM(to), true, NULL, 0, 0, NULL, NULL, NULL,
     "Recipient address of the notifications."},
    {"smtp.server", DHAF_CFG_HOST, EM(server), true, NULL, 0, 0, NULL, NULL, NULL,
     "SMTP server host."},
    {"smtp.port", DHAF_CFG_INT, EM(port), true, NULL, 1, 65535, NULL, NULL, NULL,
     "SMTP server port."},
    {"smtp.security", DHAF_CFG_ENUM, EM(security), false, NULL, 0, 0, securities, NULL, NULL,
     "ssl (implicit TLS) or starttls (required); absent: STARTTLS when offered (required when "
     "a password is set)."},
    {"smtp.username", DHAF_CFG_STR, EM(username), false, NULL, 0, 0, NULL, NULL, NULL,
     "SMTP user (with password)."},
    {"smtp.password", DHAF_CFG_SECRET, EM(password), false, NULL, 0, 0, NULL, NULL, NULL,
     "SMTP password (also password-file or ${ENV})."},
    {"smtp.ca-file", DHAF_CFG_PATH, EM(ca_file), false, NULL, 0, 0, NULL, NULL, NULL,
     "PEM CA bundle to verify the server's certificate with (a private CA); absent: the "
     "system's CAs."},
    {"smtp.timeout", DHAF_CFG_INT, EM(timeout), false, "30", 1, 300, NULL, NULL, NULL,
     "Seconds one mail may take in all (connecting: at most 10 of them)."},
    DHAF_KEY_END,
};
/* clang-format on */

static void email_finish(void *conf, struct dhaf_cfg_ctx *ctx)
{
    struct email_config *e = conf;
    if (e->username && !e->password)
        dhaf_cfg_fail(ctx, "smtp.password", "missing; smtp.username and smtp.password go together");
    else if (!e->username && e->password)
        dhaf_cfg_fail(ctx, "smtp.username", "missing; smtp.username and smtp.password go together");
}

#define EMAIL_CONNECT_MAX_S 10
#define EMAIL_SUBJECT_MAX   300 /* bytes of UTF-8 before encoding; longer ones are cut */
#define EMAIL_DISPLAY_NAME  "dhaf"

/* One instance: everything copied from the config and the context at init. */
struct email_state {
    char *url;  /* smtp://host:port or smtps://host:port (never carries credentials) */
    char *from; /* bare addresses; the config refuses CR, LF, '<', '>' and spaces */
    char *to;
    char *username;  /* NULL: no AUTH */
    char *password;  /* secret: never printed, wiped at destroy */
    char *ca_file;   /* NULL: the system's CAs */
    long use_ssl;    /* CURLUSESSL_* for smtp:// */
    long timeout_ms; /* the whole mail */
    long connect_ms;
    char *cluster;  /* from the context; the event's own wins when it has one */
    char *instance; /* the notifier's name, for the footer and Message-ID */
};

/* ---- a growing text buffer ------------------------------------------------------------------ */

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_addn(struct sbuf *b, const char *s, size_t n)
{
    DHAF_GROW(b->p, b->len + n + 1, b->cap);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_add(struct sbuf *b, const char *s)
{
    sb_addn(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void sb_addf(struct sbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    char *tmp = dhaf_xmalloc((size_t)n + 1);
    va_start(ap, fmt);
    vsnprintf(tmp, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb_addn(b, tmp, (size_t)n);
    free(tmp);
}

static void sb_release(struct sbuf *b)
{
    DHAF_FREE(b->p);
    b->len = b->cap = 0;
}

/* ---- encodings ------------------------------------------------------------------------------ */

/* Appends s with every control character (CR and LF above all) made a space: the only way text
 * from events goes into a header, so no event can add a header line. */
static void sb_add_clean(struct sbuf *b, const char *s)
{
    for (; s && *s; s++) {
        char c = ((unsigned char)*s < 0x20 || *s == 0x7f) ? ' ' : *s;
        sb_addn(b, &c, 1);
    }
}

static void sb_add_html(struct sbuf *b, const char *s)
{
    for (; s && *s; s++) {
        switch (*s) {
        case '&':
            sb_add(b, "&amp;");
            break;
        case '<':
            sb_add(b, "&lt;");
            break;
        case '>':
            sb_add(b, "&gt;");
            break;
        case '"':
            sb_add(b, "&quot;");
            break;
        case '\'':
            sb_add(b, "&#39;");
            break;
        default:
            if ((unsigned char)*s < 0x20 || *s == 0x7f)
                sb_add(b, " ");
            else
                sb_addn(b, s, 1);
        }
    }
}

static void sb_add_base64(struct sbuf *b, const unsigned char *s, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)s[i + 1] << 8;
        if (i + 2 < n)
            v |= s[i + 2];
        char out[4] = {tab[(v >> 18) & 63], tab[(v >> 12) & 63],
                       i + 1 < n ? tab[(v >> 6) & 63] : '=', i + 2 < n ? tab[v & 63] : '='};
        sb_addn(b, out, 4);
    }
}

/* Quoted-printable (RFC 2045 6.7) of text whose lines end in '\n': CRLF line ends, lines of
 * at most 76 characters with soft breaks, '=' and every non-ASCII byte encoded, and no
 * white space left at a line's end. */
static void sb_add_qp(struct sbuf *b, const char *text)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t col = 0;
    for (const char *p = text; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\n') {
            sb_add(b, "\r\n");
            col = 0;
            continue;
        }
        if (c == '\r')
            continue;
        bool at_end = p[1] == '\0' || p[1] == '\n';
        bool plain = (c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !at_end);
        size_t w = plain ? 1 : 3;
        if (col + w > 75) {
            sb_add(b, "=\r\n");
            col = 0;
        }
        if (plain) {
            sb_addn(b, (const char *)&c, 1);
        } else {
            char e[3] = {'=', hex[c >> 4], hex[c & 15]};
            sb_addn(b, e, 3);
        }
        col += w;
    }
    if (col)
        sb_add(b, "\r\n");
}

/* Length of the longest prefix of s[0..n) that ends on a UTF-8 character boundary. */
static size_t utf8_cut(const char *s, size_t n)
{
    while (n > 0 && ((unsigned char)s[n] & 0xC0) == 0x80)
        n--;
    return n;
}

/* "Subject: " + subj: plain when it is short ASCII, else RFC 2047 B encoded-words of whole
 * UTF-8 characters, each line at most 76 characters (39 bytes of text on the first line,
 * 45 on each folded one). */
static void sb_add_subject(struct sbuf *b, const char *subj)
{
    bool ascii = true;
    for (const char *p = subj; *p; p++)
        if ((unsigned char)*p >= 0x80)
            ascii = false;
    sb_add(b, "Subject: ");
    if (ascii && strlen(subj) <= 78 - 9 && !strstr(subj, "=?")) {
        sb_add(b, subj);
        sb_add(b, "\r\n");
        return;
    }
    size_t len = strlen(subj), pos = 0, room = 39;
    while (pos < len) {
        size_t n = len - pos <= room ? len - pos : utf8_cut(subj + pos, room);
        if (n == 0) /* not UTF-8 after all: cut anyway */
            n = room;
        if (pos)
            sb_add(b, "\r\n ");
        sb_add(b, "=?UTF-8?B?");
        sb_add_base64(b, (const unsigned char *)subj + pos, n);
        sb_add(b, "?=");
        pos += n;
        room = 45;
    }
    sb_add(b, "\r\n");
}

/* ---- what the mail says --------------------------------------------------------------------- */

/* What follows the title in the subject. */
enum subj_shape {
    SUBJ_CLUSTER, /* | <cluster> */
    SUBJ_SERVICE, /* | <cluster> | <service> */
    SUBJ_SWITCH,  /* | <cluster> | <service> | <from> → <to> */
    SUBJ_EP,      /* | <cluster> | <service> | <ep> */
    SUBJ_EP_WHY,  /* | <cluster> | <service> | <ep> | <first reason> */
    SUBJ_NODE,    /* | <cluster> | dhaf node <node> */
};

/* Subjects of the known event kinds, like the original dhaf's; others get a generic one. */
static const struct email_kind {
    const char *kind;
    const char *title;
    enum subj_shape shape;
} email_kinds[] = {
    {"failover", "FAILOVER", SUBJ_SWITCH},
    {"switchover", "SWITCHOVER", SUBJ_SWITCH},
    {"switching", "SWITCHING", SUBJ_SWITCH},
    {"switch-failed", "SWITCH FAILED", SUBJ_SWITCH},
    {"service-down", "SERVICE DOWN", SUBJ_SERVICE},
    {"service-up", "SERVICE UP", SUBJ_SERVICE},
    {"ep-down", "DOWN", SUBJ_EP_WHY},
    {"ep-up", "UP", SUBJ_EP},
    {"no-quorum", "NO QUORUM", SUBJ_SERVICE},
    {"quorum", "QUORUM", SUBJ_SERVICE},
    {"switchover-purged", "SWITCHOVER PURGED", SUBJ_SERVICE},
    {"new-leader", "NEW DHAF LEADER", SUBJ_CLUSTER},
    {"leader-lost", "DHAF LEADER LOST", SUBJ_NODE},
    {"node-up", "UP", SUBJ_NODE},
    {"node-down", "DOWN", SUBJ_NODE},
};

static const struct email_kind *kind_find(const char *kind)
{
    for (size_t i = 0; kind && i < sizeof(email_kinds) / sizeof(email_kinds[0]); i++)
        if (strcmp(email_kinds[i].kind, kind) == 0)
            return &email_kinds[i];
    return NULL;
}

/* The event's service, or NULL for cluster events (NULL, "" or "@cluster"). */
static const char *ev_service(const struct dhaf_event_view *ev)
{
    return ev->service && ev->service[0] && ev->service[0] != '@' ? ev->service : NULL;
}

/* The entry point an ep-* event is about. */
static const char *ev_ep(const struct dhaf_event_view *ev)
{
    return ev->from ? ev->from : ev->to;
}

static const char *ev_cluster(const struct email_state *st, const struct dhaf_event_view *ev)
{
    return ev->cluster && ev->cluster[0] ? ev->cluster : st->cluster;
}

/* The reasons split into lines: each reason, and each "; "-separated part of one (the leader
 * joins the voters' reasons so). Calls fn for every non-empty line. */
static void each_reason(const struct dhaf_event_view *ev,
                        void (*fn)(struct sbuf *b, const char *s, size_t n), struct sbuf *b)
{
    for (size_t i = 0; ev->reasons && i < ev->n_reasons; i++) {
        const char *s = ev->reasons[i];
        while (s && *s) {
            const char *end = strstr(s, "; ");
            size_t n = end ? (size_t)(end - s) : strlen(s);
            while (n > 0 && s[0] == ' ')
                s++, n--;
            if (n > 0)
                fn(b, s, n);
            s = end ? end + 2 : s + n;
        }
    }
}

static void first_reason_fn(struct sbuf *b, const char *s, size_t n)
{
    if (b->len == 0)
        sb_addn(b, s, n);
}

/* "WARNING" from "warning"; "INFO" when absent. */
static void level_upper(char *out, size_t len, const char *level)
{
    size_t o = 0;
    for (const char *p = level && level[0] ? level : "info"; *p && o + 1 < len; p++)
        if (isalnum((unsigned char)*p))
            out[o++] = (char)toupper((unsigned char)*p);
    out[o] = '\0';
}

/* The title of a kind: from the table, or the kind itself in capitals ("LEASE LOST"). */
static void kind_title(char *out, size_t len, const char *kind)
{
    const struct email_kind *k = kind_find(kind);
    size_t o = 0;
    if (k) {
        snprintf(out, len, "%s", k->title);
        return;
    }
    for (const char *p = kind && kind[0] ? kind : "event"; *p && o + 1 < len; p++)
        out[o++] = *p == '-' || *p == '_' ? ' ' : (char)toupper((unsigned char)*p);
    out[o] = '\0';
}

/* The subject in UTF-8 (before encoding), with control characters made spaces. */
static void build_subject(const struct email_state *st, const struct dhaf_event_view *ev,
                          struct sbuf *out)
{
    char level[16], title[64];
    const struct email_kind *k = kind_find(ev->kind);
    const char *svc = ev_service(ev);
    level_upper(level, sizeof(level), ev->level);
    kind_title(title, sizeof(title), ev->kind);
    struct sbuf s = {0};
    sb_addf(&s, "dhaf %s: %s | ", level, title);
    sb_add_clean(&s, ev_cluster(st, ev));
    enum subj_shape shape = k ? k->shape : (svc ? SUBJ_SERVICE : SUBJ_CLUSTER);
    if (shape == SUBJ_NODE) {
        sb_add(&s, " | dhaf node ");
        sb_add_clean(&s, ev->node ? ev->node : "?");
    } else if (shape != SUBJ_CLUSTER && svc) {
        sb_add(&s, " | ");
        sb_add_clean(&s, svc);
        if (shape == SUBJ_SWITCH && (ev->from || ev->to)) {
            sb_add(&s, " | ");
            if (ev->from) {
                sb_add_clean(&s, ev->from);
                sb_add(&s, " ");
            }
            sb_add(&s, "\xe2\x86\x92 "); /* → */
            sb_add_clean(&s, ev->to ? ev->to : "?");
        } else if ((shape == SUBJ_EP || shape == SUBJ_EP_WHY) && ev_ep(ev)) {
            sb_add(&s, " | ");
            sb_add_clean(&s, ev_ep(ev));
            struct sbuf why = {0};
            if (shape == SUBJ_EP_WHY)
                each_reason(ev, first_reason_fn, &why);
            if (why.len) {
                sb_add(&s, " | ");
                sb_add_clean(&s, why.p);
            }
            sb_release(&why);
        }
    }
    if (s.len > EMAIL_SUBJECT_MAX) {
        s.len = utf8_cut(s.p, EMAIL_SUBJECT_MAX - 3);
        s.p[s.len] = '\0';
        sb_add(&s, "...");
    }
    sb_add(out, s.p);
    sb_release(&s);
}

static const char *const wdays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* RFC 5322 date in UTC, independent of the locale: "Mon, 29 Nov 2010 21:54:29 +0000". */
static void rfc5322_date(char *out, size_t len, time_t t)
{
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(out, len, "%s, %02d %s %04d %02d:%02d:%02d +0000", wdays[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

/* "2024-05-01 12:00:00.123 UTC" */
static void human_time(char *out, size_t len, int64_t at_ms)
{
    struct tm tm;
    time_t t = (time_t)(at_ms / 1000);
    gmtime_r(&t, &tm);
    snprintf(out, len, "%04d-%02d-%02d %02d:%02d:%02d.%03d UTC", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(at_ms % 1000));
}

/* Appends s keeping only dot-atom text (RFC 5322 3.2.3) letters: for Message-ID parts. */
static void sb_add_atom(struct sbuf *b, const char *s)
{
    for (; s && *s; s++) {
        char c = isalnum((unsigned char)*s) || *s == '-' || *s == '_' ? *s : '-';
        sb_addn(b, &c, 1);
    }
}

static void random_hex(char *out, size_t bytes)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char r[32];
    if (bytes > sizeof(r))
        bytes = sizeof(r);
    if (getrandom(r, bytes, GRND_NONBLOCK) != (ssize_t)bytes) {
        /* no entropy yet (early boot): uniqueness is all a boundary needs */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t v = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
        for (size_t i = 0; i < bytes; i++, v = v * 6364136223846793005ULL + 1442695040888963407ULL)
            r[i] = (unsigned char)(v >> 56);
    }
    for (size_t i = 0; i < bytes; i++) {
        out[2 * i] = hex[r[i] >> 4];
        out[2 * i + 1] = hex[r[i] & 15];
    }
    out[2 * bytes] = '\0';
}

/* The two parts. Event text goes into them with control characters made spaces, so every
 * value stays on its line. */
struct body {
    struct sbuf text, html;
};

/* One labelled row, for both parts. */
static void body_row(struct body *bd, const char *label, const char *value)
{
    if (!value || !value[0])
        return;
    sb_addf(&bd->text, "%-12s ", label);
    sb_add_clean(&bd->text, value);
    sb_add(&bd->text, "\n");
    sb_add(&bd->html, "<tr><th align=\"left\" style=\"padding:2px 12px 2px 0\">");
    sb_add_html(&bd->html, label);
    sb_add(&bd->html, "</th><td>");
    sb_add_html(&bd->html, value);
    sb_add(&bd->html, "</td></tr>\n");
}

static void reason_text_fn(struct sbuf *b, const char *s, size_t n)
{
    char *one = dhaf_xstrndup(s, n);
    sb_add(b, "  - ");
    sb_add_clean(b, one);
    sb_add(b, "\n");
    free(one);
}

static void reason_html_fn(struct sbuf *b, const char *s, size_t n)
{
    char *one = dhaf_xstrndup(s, n);
    sb_add(b, "<li>");
    sb_add_html(b, one);
    sb_add(b, "</li>\n");
    free(one);
}

/* The text and HTML parts: what happened, when, where, why, and who sent it. */
static void build_body(const struct email_state *st, const struct dhaf_event_view *ev,
                       const char *subject, struct body *bd)
{
    char level[16], title[64], when[64];
    level_upper(level, sizeof(level), ev->level);
    kind_title(title, sizeof(title), ev->kind);
    human_time(when, sizeof(when), ev->at_ms);
    const struct email_kind *k = kind_find(ev->kind);
    const char *what = ev->message && ev->message[0] ? ev->message : ev->kind ? ev->kind : "event";
    const char *colour = strcmp(level, "CRITICAL") == 0  ? "#b71c1c"
                         : strcmp(level, "WARNING") == 0 ? "#e65100"
                                                         : "#1b5e20";

    sb_addf(&bd->text, "dhaf %s: %s\n\n", level, title);
    sb_add_clean(&bd->text, what);
    sb_add(&bd->text, "\n\n");

    sb_add(&bd->html, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>");
    sb_add_html(&bd->html, subject);
    sb_add(&bd->html, "</title></head>\n<body style=\"font-family:sans-serif\">\n");
    sb_addf(&bd->html, "<h2 style=\"color:%s\">dhaf %s: ", colour, level);
    sb_add_html(&bd->html, title);
    sb_add(&bd->html, "</h2>\n<p>");
    sb_add_html(&bd->html, what);
    sb_add(&bd->html, "</p>\n<table>\n");

    body_row(bd, "Time:", when);
    body_row(bd, "Cluster:", ev_cluster(st, ev));
    body_row(bd, "Service:", ev_service(ev));
    if (k && (k->shape == SUBJ_EP || k->shape == SUBJ_EP_WHY)) {
        body_row(bd, "Entry point:", ev_ep(ev));
    } else {
        body_row(bd, "From:", ev->from);
        body_row(bd, "To:", ev->to);
    }
    body_row(bd, "Node:", ev->node);
    char event[128];
    snprintf(event, sizeof(event), "%s (#%llu)", ev->kind ? ev->kind : "?",
             (unsigned long long)ev->seq);
    body_row(bd, "Event:", event);
    sb_add(&bd->html, "</table>\n");

    size_t before = bd->text.len;
    sb_add(&bd->text, "\nReasons:\n");
    size_t mark = bd->text.len;
    each_reason(ev, reason_text_fn, &bd->text);
    if (bd->text.len == mark) { /* none */
        bd->text.len = before;
        bd->text.p[before] = '\0';
    }
    struct sbuf items = {0};
    each_reason(ev, reason_html_fn, &items);
    if (items.len) {
        sb_add(&bd->html, "<p><b>Reasons:</b></p>\n<ul>\n");
        sb_add(&bd->html, items.p);
        sb_add(&bd->html, "</ul>\n");
    }
    sb_release(&items);

    sb_addf(&bd->text, "\n-- \nSent by the dhaf notifier \"%s\" (email).\n", st->instance);
    sb_add(&bd->html, "<hr>\n<p style=\"color:#666;font-size:small\">Sent by the dhaf notifier "
                      "&quot;");
    sb_add_html(&bd->html, st->instance);
    sb_add(&bd->html, "&quot; (email).</p>\n</body></html>\n");
}

/* The whole message: RFC 5322 headers, then a multipart/alternative body of a text/plain and a
 * text/html part, both UTF-8 in quoted-printable; CRLF line ends throughout. */
static void build_message(const struct email_state *st, const struct dhaf_event_view *ev,
                          struct sbuf *msg)
{
    struct sbuf subject = {0};
    struct body bd = {{0}, {0}};
    char date[64], rnd[33], boundary[64];
    build_subject(st, ev, &subject);
    build_body(st, ev, subject.p, &bd);
    rfc5322_date(date, sizeof(date), time(NULL));
    random_hex(rnd, 12);
    /* "=_" never occurs in quoted-printable text, so no part can contain the boundary */
    snprintf(boundary, sizeof(boundary), "=_dhaf_%s", rnd);

    sb_addf(msg, "Date: %s\r\n", date);
    sb_add(msg, "From: " EMAIL_DISPLAY_NAME " <");
    sb_add_clean(msg, st->from);
    sb_add(msg, ">\r\nTo: <");
    sb_add_clean(msg, st->to);
    sb_add(msg, ">\r\n");
    sb_add_subject(msg, subject.p);
    /* The same for every attempt at one event (its seq and time), so a mail sent again after
     * a lost reply can be recognised as the same one. */
    sb_addf(msg, "Message-ID: <%llu.%lld.", (unsigned long long)ev->seq, (long long)ev->at_ms);
    sb_add_atom(msg, st->instance);
    sb_add(msg, "@dhaf.");
    sb_add_atom(msg, ev_cluster(st, ev));
    sb_add(msg, ">\r\n");
    sb_add(msg, "MIME-Version: 1.0\r\n");
    sb_addf(msg, "Content-Type: multipart/alternative;\r\n boundary=\"%s\"\r\n", boundary);
    sb_add(msg, "Auto-Submitted: auto-generated\r\n");
    sb_add(msg, "X-Dhaf-Event: ");
    sb_add_atom(msg, ev->kind ? ev->kind : "event");
    sb_add(msg, "\r\n\r\n");
    sb_add(msg, "This is a multi-part message in MIME format.\r\n");

    sb_addf(msg, "\r\n--%s\r\n", boundary);
    sb_add(msg, "Content-Type: text/plain; charset=UTF-8\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    sb_add_qp(msg, bd.text.p);
    sb_addf(msg, "\r\n--%s\r\n", boundary);
    sb_add(msg, "Content-Type: text/html; charset=UTF-8\r\n"
                "Content-Transfer-Encoding: quoted-printable\r\n\r\n");
    sb_add_qp(msg, bd.html.p);
    sb_addf(msg, "\r\n--%s--\r\n", boundary);

    sb_release(&subject);
    sb_release(&bd.text);
    sb_release(&bd.html);
}

/* ---- the SMTP transaction ------------------------------------------------------------------- */

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_global(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct upload {
    const char *p;
    size_t left;
};

static size_t on_read(char *buf, size_t size, size_t n, void *ud)
{
    struct upload *u = ud;
    size_t k = size * n < u->left ? size * n : u->left;
    memcpy(buf, u->p, k);
    u->p += k;
    u->left -= k;
    return k;
}

/* struct email_trace (what the server said, from libcurl's protocol trace) is in replies.h. */

int email_on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *ud)
{
    static const char *const verbs[] = {"EHLO", "HELO", "STARTTLS", "AUTH", "MAIL", "RCPT",
                                        "DATA", "RSET", "QUIT",     "NOOP", NULL};
    struct email_trace *t = ud;
    (void)h;
    if (type == CURLINFO_HEADER_OUT) {
        /* AUTH continuations are bare base64 lines: they match no verb and are skipped */
        for (size_t i = 0; verbs[i]; i++) {
            size_t n = strlen(verbs[i]);
            if (size >= n && strncasecmp(data, verbs[i], n) == 0 &&
                (size == n || data[n] == ' ' || data[n] == '\r' || data[n] == '\n')) {
                snprintf(t->verb, sizeof(t->verb), "%s", verbs[i]);
                break;
            }
        }
    } else if (type == CURLINFO_HEADER_IN && size >= 3 && (data[0] == '4' || data[0] == '5') &&
               isdigit((unsigned char)data[1]) && isdigit((unsigned char)data[2])) {
        size_t o = 0;
        for (size_t i = 0; i < size && data[i] != '\r' && data[i] != '\n'; i++) {
            if (o + 4 >= sizeof(t->bad_reply)) {
                memcpy(t->bad_reply + o, "...", 3);
                o += 3;
                break;
            }
            t->bad_reply[o++] = ((unsigned char)data[i] < 0x20 || data[i] == 0x7f) ? ' ' : data[i];
        }
        t->bad_reply[o] = '\0';
        snprintf(t->bad_verb, sizeof(t->bad_verb), "%s", t->verb[0] ? t->verb : "connect");
    }
    return 0;
}

/* Replaces every occurrence of secret in text by "***" (server and libcurl texts quoted in
 * errors: a server could echo what it was sent). Very short secrets are left alone: they
 * would match ordinary words, and they are never sent but in AUTH. */
void email_scrub(char *text, const char *secret)
{
    size_t sl = secret ? strlen(secret) : 0;
    char *p;
    if (!text || sl < 4)
        return;
    while ((p = strstr(text, secret)) != NULL) {
        memmove(p + 3, p + sl, strlen(p + sl) + 1); /* shorter: sl >= 4 > 3 */
        memcpy(p, "***", 3);
    }
}

/* Maps libcurl's result and the last SMTP reply to a dhaf code and err. */
static int smtp_result(const struct email_state *st, CURLcode rc, long code, struct email_trace *t,
                       char *curl_err, struct dhaf_err *err)
{
    email_scrub(curl_err, st->password);
    email_scrub(t->bad_reply, st->password);
    const char *why = curl_err[0] ? curl_err : curl_easy_strerror(rc);
    int out;
    if (rc == CURLE_OPERATION_TIMEDOUT) {
        out = dhaf_err_set(err, DHAF_ETIMEOUT, "email via %s: no answer in time: %s", st->url, why);
    } else if (code >= 400 && code < 500 && t->bad_reply[0]) {
        /* greylisting, a full queue, "try again later": the server wants a retry */
        out = dhaf_err_set(err, DHAF_EUNAVAILABLE,
                           "email via %s: temporarily refused at %s: %s (will retry)", st->url,
                           t->bad_verb, t->bad_reply);
    } else if (rc == CURLE_LOGIN_DENIED ||
               (code >= 500 &&
                (code == 530 || code == 534 || code == 535 || strcmp(t->bad_verb, "AUTH") == 0))) {
        const char *reply = t->bad_reply[0] ? t->bad_reply : why;
        if (st->username)
            out = dhaf_err_set(err, DHAF_EAUTH, "email via %s: login of user \"%s\" refused: %s",
                               st->url, st->username, reply);
        else
            out = dhaf_err_set(err, DHAF_EAUTH,
                               "email via %s: the server wants a login (set smtp.username and "
                               "smtp.password): %s",
                               st->url, reply);
    } else if (code >= 500 && code < 600 && t->bad_reply[0]) {
        out = dhaf_err_set(err, DHAF_EINVAL, "email via %s: refused at %s: %s", st->url,
                           t->bad_verb, t->bad_reply);
    } else if (rc == CURLE_USE_SSL_FAILED) {
        out = dhaf_err_set(err, DHAF_EUNAVAILABLE,
                           "email via %s: the server offers no STARTTLS, which is required%s: %s",
                           st->url, st->password ? " (a password is set)" : "", why);
    } else if (rc == CURLE_URL_MALFORMAT || rc == CURLE_UNSUPPORTED_PROTOCOL ||
               rc == CURLE_BAD_FUNCTION_ARGUMENT || rc == CURLE_NOT_BUILT_IN ||
               rc == CURLE_UNKNOWN_OPTION) {
        out = dhaf_err_set(err, DHAF_EINVAL, "email via %s: %s", st->url, why);
    } else {
        /* connection refused, name not resolved, TLS handshake or certificate, lost line */
        out = dhaf_err_set(err, DHAF_EUNAVAILABLE, "email via %s: %s%s%s", st->url, why,
                           t->bad_reply[0] ? "; last reply: " : "", t->bad_reply);
    }
    if (err)
        err->status = (int)code;
    email_scrub(err ? err->msg : NULL, st->password);
    return out;
}

/* Sends msg in one SMTP transaction with the instance's deadlines. */
static int smtp_send(const struct email_state *st, const char *msg, size_t len,
                     struct dhaf_err *err)
{
    pthread_once(&curl_once, curl_global);
    CURL *h = curl_easy_init();
    if (!h)
        return dhaf_err_set(err, DHAF_EINTERNAL, "email: libcurl could not make a handle");
    struct upload up = {msg, len};
    struct email_trace t = {{0}, {0}, {0}};
    char curl_err[CURL_ERROR_SIZE] = "";
    char *mail_from = dhaf_xasprintf("<%s>", st->from);
    char *rcpt_to = dhaf_xasprintf("<%s>", st->to);
    struct curl_slist *rcpt = curl_slist_append(NULL, rcpt_to);

    curl_easy_setopt(h, CURLOPT_URL, st->url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "smtp,smtps");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, st->connect_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, st->timeout_ms);
    curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
    if (st->use_ssl != CURLUSESSL_NONE)
        curl_easy_setopt(h, CURLOPT_USE_SSL, st->use_ssl);
    if (st->ca_file)
        curl_easy_setopt(h, CURLOPT_CAINFO, st->ca_file);
    if (st->username && st->password) {
        curl_easy_setopt(h, CURLOPT_USERNAME, st->username);
        curl_easy_setopt(h, CURLOPT_PASSWORD, st->password);
    }
    curl_easy_setopt(h, CURLOPT_MAIL_FROM, mail_from);
    curl_easy_setopt(h, CURLOPT_MAIL_RCPT, rcpt);
    curl_easy_setopt(h, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
    curl_easy_setopt(h, CURLOPT_READDATA, &up);
    curl_easy_setopt(h, CURLOPT_INFILESIZE_LARGE, (curl_off_t)len);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    /* the trace: the debug function sees the protocol lines, nothing goes to stderr */
    curl_easy_setopt(h, CURLOPT_DEBUGFUNCTION, email_on_debug);
    curl_easy_setopt(h, CURLOPT_DEBUGDATA, &t);
    curl_easy_setopt(h, CURLOPT_VERBOSE, 1L);

    CURLcode rc = curl_easy_perform(h);
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    int out = rc == CURLE_OK ? 0 : smtp_result(st, rc, code, &t, curl_err, err);
    curl_easy_cleanup(h);
    curl_slist_free_all(rcpt);
    free(rcpt_to);
    free(mail_from);
    return out;
}

/* ---- the provider --------------------------------------------------------------------------- */

static bool has_ctl(const char *s)
{
    for (; s && *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f)
            return true;
    return false;
}

static void email_destroy(void *state)
{
    struct email_state *st = state;
    if (!st)
        return;
    if (st->password) {
        explicit_bzero(st->password, strlen(st->password));
        DHAF_FREE(st->password);
    }
    free(st->url);
    free(st->from);
    free(st->to);
    free(st->username);
    free(st->ca_file);
    free(st->cluster);
    free(st->instance);
    free(st);
}

static int email_init(const void *conf, const struct dhaf_provider_ctx *ctx, void **state,
                      struct dhaf_err *err)
{
    const struct email_config *c = conf;
    *state = NULL;
    if (!c->from || !c->to || !c->server || c->port < 1 || c->port > 65535)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "email: from, to, smtp.server and smtp.port are "
                            "required");
    /* the config refuses these already; a plugin host or a test may hand anything */
    if (has_ctl(c->from) || has_ctl(c->to) || strpbrk(c->from, "<> ") || strpbrk(c->to, "<> ") ||
        has_ctl(c->server) || strpbrk(c->server, "/@?# "))
        return dhaf_err_set(err, DHAF_EINVAL, "email: from, to or smtp.server is malformed");
    if (!c->username != !c->password)
        return dhaf_err_set(err, DHAF_EINVAL, "email: smtp.username and smtp.password go together");
    if (c->security < -1 || c->security > EMAIL_SEC_STARTTLS)
        return dhaf_err_set(err, DHAF_EINVAL, "email: unknown smtp.security %d", c->security);

    struct email_state *st = dhaf_xcalloc(1, sizeof(*st));
    bool v6 = strchr(c->server, ':') != NULL;
    st->url = dhaf_xasprintf("%s://%s%s%s:%d", c->security == EMAIL_SEC_SSL ? "smtps" : "smtp",
                             v6 ? "[" : "", c->server, v6 ? "]" : "", c->port);
    st->from = dhaf_xstrdup(c->from);
    st->to = dhaf_xstrdup(c->to);
    if (c->username) {
        st->username = dhaf_xstrdup(c->username);
        st->password = dhaf_xstrdup(c->password);
    }
    st->ca_file = c->ca_file ? dhaf_xstrdup(c->ca_file) : NULL;
    if (c->security == EMAIL_SEC_SSL)
        st->use_ssl = CURLUSESSL_NONE; /* smtps:// is TLS from the first byte */
    else if (c->security == EMAIL_SEC_STARTTLS || st->password)
        st->use_ssl = CURLUSESSL_ALL; /* a password never goes out in clear text */
    else
        st->use_ssl = CURLUSESSL_TRY;
    int timeout_s = c->timeout > 0 ? c->timeout : 30;
    st->timeout_ms = timeout_s * 1000L;
    st->connect_ms = (timeout_s < EMAIL_CONNECT_MAX_S ? timeout_s : EMAIL_CONNECT_MAX_S) * 1000L;
    st->cluster = dhaf_xstrdup(ctx && ctx->cluster ? ctx->cluster : "dhaf");
    st->instance = dhaf_xstrdup(ctx && ctx->instance ? ctx->instance : "email-anon");
    *state = st;
    return 0;
}

static int email_notify(void *state, const struct dhaf_event_view *ev, struct dhaf_err *err)
{
    struct email_state *st = state;
    struct sbuf msg = {0};
    if (!st || !ev)
        return dhaf_err_set(err, DHAF_EINVAL, "email: no instance or no event");
    build_message(st, ev, &msg);
    int rc = smtp_send(st, msg.p, msg.len, err);
    if (rc == 0)
        DHAF_LOG(DHAF_LOG_DEBUG, "event=email-sent notifier=%s seq=%llu kind=%s bytes=%zu",
                 st->instance, (unsigned long long)ev->seq, ev->kind ? ev->kind : "?", msg.len);
    sb_release(&msg);
    return rc;
}

const struct dhaf_provider dhaf_notifier_email = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_NOTIFIER,
    .type = "email",
    .summary = "E-mail notifications from dhaf.",
    .keys = email_keys,
    .config_size = sizeof(struct email_config),
    .finish = email_finish,
    .init = email_init,
    .destroy = email_destroy,
    .notify = email_notify,
};
