/* SPDX-License-Identifier: MIT */
/* Repeat collapsing: a table of windows, one per subject (kind, service, node, from, to). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "repeats.h"

struct window {
    char *key;   /* the subject */
    int64_t end; /* Unix ms; the window holds events whose time is before it */
    int64_t len; /* its length (ms), for the summary's text */
    size_t n;    /* events held */
    json_t *last;
};

struct repeats {
    int64_t window_ms;
    struct window w[REPEATS_MAX];
    size_t n;
    bool dirty;
};

/* The subject of a record: events "like it" have the same one. */
static char *subject(const json_t *rec)
{
    static const char *const fields[] = {"kind", "service", "node", "from", "to"};
    char *key = dhaf_xstrdup("");
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        const char *v = dhaf_json_str(rec, fields[i]);
        char *next = dhaf_xasprintf("%s%s%s", key, i ? "\x1f" : "", v ? v : "");
        free(key);
        key = next;
    }
    return key;
}

static int64_t at_of(const json_t *rec)
{
    int64_t at = 0;
    dhaf_json_int(rec, "at", &at);
    return at;
}

static struct window *find(const struct repeats *r, const char *key)
{
    for (size_t i = 0; i < r->n; i++)
        if (strcmp(r->w[i].key, key) == 0)
            return (struct window *)&r->w[i];
    return NULL;
}

static void drop(struct repeats *r, size_t i)
{
    free(r->w[i].key);
    if (r->w[i].last)
        json_decref(r->w[i].last);
    r->w[i] = r->w[--r->n];
    r->dirty = true;
}

static void clear(struct repeats *r)
{
    while (r->n)
        drop(r, r->n - 1);
}

struct repeats *repeats_new(int64_t window_ms)
{
    struct repeats *r = dhaf_xcalloc(1, sizeof(*r));
    r->window_ms = window_ms > 0 ? window_ms : 0;
    return r;
}

void repeats_free(struct repeats *r)
{
    if (!r)
        return;
    clear(r);
    free(r);
}

bool repeats_would_hold(const struct repeats *r, const json_t *rec)
{
    if (r->window_ms <= 0)
        return false;
    char *key = subject(rec);
    const struct window *w = find(r, key);
    free(key);
    return w && at_of(rec) < w->end;
}

void repeats_hold(struct repeats *r, json_t *rec)
{
    char *key = subject(rec);
    struct window *w = find(r, key);
    free(key);
    if (!w)
        return;
    if (w->last)
        json_decref(w->last);
    w->last = json_incref(rec);
    w->n++;
    r->dirty = true;
}

void repeats_sent(struct repeats *r, const json_t *rec)
{
    if (r->window_ms <= 0)
        return;
    char *key = subject(rec);
    struct window *w = find(r, key);
    if (w) { /* a window that ended but was not flushed: start it again, keeping what it holds */
        w->end = at_of(rec) + r->window_ms;
        w->len = r->window_ms;
        free(key);
    } else if (r->n < REPEATS_MAX) {
        r->w[r->n++] =
            (struct window){.key = key, .end = at_of(rec) + r->window_ms, .len = r->window_ms};
    } else {
        free(key); /* no room: this subject is not collapsed */
    }
    r->dirty = true;
}

json_t *repeats_due(struct repeats *r, int64_t now_ms, size_t *slot)
{
    for (size_t i = 0; i < r->n;) {
        if (r->w[i].n == 0 && r->w[i].end <= now_ms)
            drop(r, i); /* ended quiet: forgotten */
        else
            i++;
    }
    size_t best = r->n;
    for (size_t i = 0; i < r->n; i++)
        if (r->w[i].n && r->w[i].end <= now_ms && (best == r->n || r->w[i].end < r->w[best].end))
            best = i;
    if (best == r->n)
        return NULL;
    const struct window *w = &r->w[best];
    json_t *sum = json_deep_copy(w->last);
    size_t others = w->n - 1;
    if (others) {
        const char *msg = dhaf_json_str(sum, "message");
        char *text = dhaf_xasprintf("%s (and %zu more like it in %lld s)", msg ? msg : "", others,
                                    (long long)((w->len + 999) / 1000));
        json_object_set_new(sum, "message", json_string(text));
        free(text);
    }
    json_object_set_new(sum, "repeats", json_integer((json_int_t)others));
    *slot = best;
    return sum;
}

void repeats_flushed(struct repeats *r, size_t slot)
{
    if (slot >= r->n)
        return;
    struct window *w = &r->w[slot];
    if (r->window_ms <= 0) {
        drop(r, slot);
        return;
    }
    json_decref(w->last);
    w->last = NULL;
    w->n = 0;
    w->end += r->window_ms;
    w->len = r->window_ms;
    r->dirty = true;
}

int64_t repeats_next_due(const struct repeats *r)
{
    int64_t next = INT64_MAX;
    for (size_t i = 0; i < r->n; i++)
        if (r->w[i].n && r->w[i].end < next)
            next = r->w[i].end;
    return next;
}

size_t repeats_held(const struct repeats *r)
{
    size_t n = 0;
    for (size_t i = 0; i < r->n; i++)
        n += r->w[i].n;
    return n;
}

bool repeats_dirty(const struct repeats *r)
{
    return r->dirty;
}

void repeats_saved(struct repeats *r)
{
    r->dirty = false;
}

char *repeats_save(const struct repeats *r)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < r->n; i++) {
        const struct window *w = &r->w[i];
        json_t *o = json_object();
        json_object_set_new(o, "key", json_string(w->key));
        json_object_set_new(o, "end", json_integer(w->end));
        json_object_set_new(o, "len", json_integer(w->len));
        json_object_set_new(o, "n", json_integer((json_int_t)w->n));
        if (w->last)
            json_object_set(o, "last", w->last);
        json_array_append_new(arr, o);
    }
    json_t *root = json_object();
    json_object_set_new(root, "windows", arr);
    char *text = dhaf_json_dump(root);
    json_decref(root);
    return text;
}

int repeats_load(struct repeats *r, const char *text, struct dhaf_err *err)
{
    clear(r);
    json_t *root = NULL;
    int rc = dhaf_json_parse_object(text, strlen(text), "the repeats state", &root, err);
    if (rc)
        return rc;
    const json_t *arr = json_object_get(root, "windows");
    size_t n = json_is_array(arr) ? json_array_size(arr) : 0;
    if (!json_is_array(arr) || n > REPEATS_MAX) {
        json_decref(root);
        return dhaf_err_set(err, DHAF_EINVAL, "the repeats state has no valid windows list");
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *o = json_array_get(arr, i);
        const char *key = dhaf_json_str(o, "key");
        int64_t end, len, held;
        json_t *last = json_object_get(o, "last");
        if (!key || dhaf_json_int(o, "end", &end) || dhaf_json_int(o, "len", &len) || len < 0 ||
            dhaf_json_int(o, "n", &held) || held < 0 || (held > 0) != json_is_object(last)) {
            clear(r);
            json_decref(root);
            return dhaf_err_set(err, DHAF_EINVAL, "the repeats state's window %zu is malformed", i);
        }
        r->w[r->n++] = (struct window){.key = dhaf_xstrdup(key),
                                       .end = end,
                                       .len = len,
                                       .n = (size_t)held,
                                       .last = held ? json_incref(last) : NULL};
    }
    json_decref(root);
    r->dirty = false;
    return 0;
}
