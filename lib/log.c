/* SPDX-License-Identifier: MIT */
/* Logging to stderr: key=value text lines or JSON objects, one write(2) per line; the
 * rate limiter of repeated failures. */
#include <pthread.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "dhaf/clock.h"
#include "dhaf/err.h"
#include "dhaf/log.h"

enum dhaf_log_level dhaf_log_threshold = DHAF_LOG_INFO;
static enum dhaf_log_format log_format = DHAF_LOG_TEXT;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void dhaf_log_setup(enum dhaf_log_level level, enum dhaf_log_format format)
{
    dhaf_log_threshold = level;
    log_format = format;
}

int dhaf_log_level_parse(const char *s, enum dhaf_log_level *out)
{
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (enum dhaf_log_level)i;
            return 0;
        }
    }
    return DHAF_EINVAL;
}

int dhaf_log_format_parse(const char *s, enum dhaf_log_format *out)
{
    if (strcasecmp(s, "text") == 0)
        *out = DHAF_LOG_TEXT;
    else if (strcasecmp(s, "json") == 0)
        *out = DHAF_LOG_JSON;
    else
        return DHAF_EINVAL;
    return 0;
}

/* Appends s to buf as a JSON string body (without quotes), escaping as needed. unquote: s is
 * the inside of a quoted log value, whose \" and \\ (dhaf_log_quote) stand for " and \. */
static size_t json_escape(char *buf, size_t cap, size_t at, const char *s, size_t n, bool unquote)
{
    for (size_t i = 0; i < n && at + 7 < cap; i++) {
        if (unquote && s[i] == '\\' && i + 1 < n && (s[i + 1] == '"' || s[i + 1] == '\\'))
            i++;
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[at++] = '\\';
            buf[at++] = (char)c;
        } else if (c < 0x20) {
            at += (size_t)snprintf(buf + at, cap - at, "\\u%04x", c);
        } else {
            buf[at++] = (char)c;
        }
    }
    return at;
}

/* Whether v (unquoted in the text line) is written bare in JSON: a number in JSON's grammar
 * without an exponent (`-12`, `0.25`; not `007`, `1.`, `0x1f`, `1e5`, `127.0.0.1`), or true or
 * false. Everything else, and every quoted value, is a string. */
static bool json_bare(const char *v, size_t n)
{
    if ((n == 4 && !memcmp(v, "true", 4)) || (n == 5 && !memcmp(v, "false", 5)))
        return true;
    size_t i = 0;
    if (i < n && v[i] == '-')
        i++;
    if (i == n || v[i] < '0' || v[i] > '9')
        return false;
    if (v[i] == '0' && i + 1 < n && v[i + 1] >= '0' && v[i + 1] <= '9')
        return false; /* a leading zero: an identifier, not a number */
    while (i < n && v[i] >= '0' && v[i] <= '9')
        i++;
    if (i < n && v[i] == '.') {
        size_t frac = ++i;
        while (i < n && v[i] >= '0' && v[i] <= '9')
            i++;
        if (i == frac)
            return false;
    }
    return i == n && n <= 24;
}

/* Keys whose values are names or identifiers: strings in JSON whatever they look like, so a
 * field keeps one type (a hex lease or hash of digits only, an entry point named "2"). So is
 * every key ending in "_id". */
static const char *const string_keys[] = {
    "cluster", "commit",  "current", "domain",  "ep",    "from", "generation", "git_commit",
    "hash",    "key",     "lease",   "member",  "name",  "node", "pending",    "plan_generation",
    "prober",  "service", "to",      "version", "voter", "zone", "id",
};

static bool string_key(const char *k, size_t n)
{
    if (n >= 3 && !memcmp(k + n - 3, "_id", 3))
        return true;
    for (size_t i = 0; i < sizeof(string_keys) / sizeof(string_keys[0]); i++)
        if (strlen(string_keys[i]) == n && !memcmp(string_keys[i], k, n))
            return true;
    return false;
}

/* Converts `k=v k2="v 2"` into JSON members appended to buf: a quoted value is a string, an
 * unquoted one a number or boolean when it is one (json_bare) and its key is not a name's
 * (string_key), else a string. Text that is
 * not a pair goes into "msg". */
static size_t pairs_to_json(char *buf, size_t cap, size_t at, const char *s)
{
    const char *p = s;
    while (*p && at + 16 < cap) {
        while (*p == ' ')
            p++;
        if (!*p)
            break;
        const char *k = p;
        while (*p && *p != '=' && *p != ' ')
            p++;
        if (*p != '=') { /* not a pair: the rest is a message */
            at += (size_t)snprintf(buf + at, cap - at, ",\"msg\":\"");
            at = json_escape(buf, cap, at, k, strlen(k), false);
            at += (size_t)snprintf(buf + at, cap - at, "\"");
            break;
        }
        size_t klen = (size_t)(p - k);
        p++;
        const char *v;
        size_t vlen;
        bool quoted = *p == '"';
        if (quoted) {
            v = ++p;
            while (*p && !(*p == '"' && p[-1] != '\\'))
                p++;
            vlen = (size_t)(p - v);
            if (*p)
                p++;
        } else {
            v = p;
            while (*p && *p != ' ')
                p++;
            vlen = (size_t)(p - v);
        }
        at += (size_t)snprintf(buf + at, cap - at, ",\"");
        at = json_escape(buf, cap, at, k, klen, false);
        if (!quoted && json_bare(v, vlen) && !string_key(k, klen) && at + vlen + 16 < cap) {
            at += (size_t)snprintf(buf + at, cap - at, "\":%.*s", (int)vlen, v);
            continue;
        }
        at += (size_t)snprintf(buf + at, cap - at, "\":\"");
        at = json_escape(buf, cap, at, v, vlen, quoted);
        at += (size_t)snprintf(buf + at, cap - at, "\"");
    }
    return at;
}

const char *dhaf_log_quote(char *buf, size_t len, const char *s)
{
    size_t o = 0;
    for (; s && *s && o + 5 < len; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            buf[o++] = '\\';
            buf[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            buf[o++] = ' ';
        } else {
            buf[o++] = (char)c;
        }
    }
    buf[o] = '\0';
    return buf;
}

void dhaf_log_write(enum dhaf_log_level level, const char *fmt, ...)
{
    char msg[2048], line[4096], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);

    struct timespec now;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof(ts) - tl, ".%03ldZ", now.tv_nsec / 1000000);

    const char *lv = level_names[level <= DHAF_LOG_ERROR ? level : DHAF_LOG_ERROR];
    size_t n;
    if (log_format == DHAF_LOG_JSON) {
        n = (size_t)snprintf(line, sizeof(line), "{\"ts\":\"%s\",\"level\":\"%s\"", ts, lv);
        n = pairs_to_json(line, sizeof(line), n, msg);
        if (n > sizeof(line) - 3)
            n = sizeof(line) - 3;
        line[n++] = '}';
    } else {
        n = (size_t)snprintf(line, sizeof(line), "ts=%s level=%s %s", ts, lv, msg);
        if (n > sizeof(line) - 2)
            n = sizeof(line) - 2;
    }
    line[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
}

/* ------------------------------------------------------------------ rate limiting */

struct limit_slot {
    char key[48];
    int64_t last_ms;    /* monotonic ms of the last line written */
    unsigned long held; /* lines held back since */
};

static pthread_mutex_t limit_lock = PTHREAD_MUTEX_INITIALIZER;
static struct limit_slot limits[DHAF_LOG_LIMIT_KEYS];
static size_t n_limits;
static const struct dhaf_clock *limit_clock; /* NULL: the system's */

bool dhaf_log_limit(const char *key, unsigned long *repeated)
{
    pthread_mutex_lock(&limit_lock);
    int64_t now = limit_clock ? dhaf_clock_mono(limit_clock) : dhaf_mono_ms();
    struct limit_slot *s = NULL;
    for (size_t i = 0; i < n_limits && !s; i++)
        if (strncmp(limits[i].key, key, sizeof(limits[i].key) - 1) == 0)
            s = &limits[i];
    bool pass;
    if (!s && n_limits == DHAF_LOG_LIMIT_KEYS)
        s = &limits[DHAF_LOG_LIMIT_KEYS - 1]; /* too many kinds: the last slot is shared */
    if (!s) {
        s = &limits[n_limits++];
        snprintf(s->key, sizeof(s->key), "%s", key);
        s->held = 0;
        pass = true;
    } else {
        pass = now - s->last_ms >= DHAF_LOG_LIMIT_MS;
    }
    *repeated = s->held;
    if (pass) {
        s->last_ms = now;
        s->held = 0;
    } else {
        s->held++;
    }
    pthread_mutex_unlock(&limit_lock);
    return pass;
}

void dhaf_log_write_repeated(enum dhaf_log_level level, unsigned long repeated, const char *fmt,
                             ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (repeated)
        dhaf_log_write(level, "%s repeated=%lu", msg, repeated);
    else
        dhaf_log_write(level, "%s", msg);
}

void dhaf_log_limit_reset(const struct dhaf_clock *clock)
{
    pthread_mutex_lock(&limit_lock);
    limit_clock = clock;
    n_limits = 0;
    memset(limits, 0, sizeof(limits));
    pthread_mutex_unlock(&limit_lock);
}
