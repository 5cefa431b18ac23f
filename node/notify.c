/* SPDX-License-Identifier: MIT */
/* Notifier workers: a supervisor per term that starts one worker per notifier (and restarts
 * changed ones on reload); each worker delivers the view's events after its cursor. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "dhaf/registry.h"
#include "events.h"
#include "notify.h"
#include "worker.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000
#define STOP_MS        1000

/* One notifier instance while a term is open. */
struct deliverer {
    struct cluster *c;
    struct term *t;
    struct snap *snap; /* sec points into it */
    const struct dhaf_section *sec;
    const struct dhaf_provider *prov;
    void *state;
    char prefix[300]; /* ext/notifier/<type>/<name>/ (full key) */
    struct dhaf_kv_store store;
    struct dhaf_provider_ctx ctx;
    uint64_t cursor;  /* the last seq delivered (or skipped) */
    bool cursor_read; /* cursor holds what etcd has */
};

static void log_err(const char *event, const struct deliverer *d, const struct dhaf_err *err)
{
    char q[400];
    DHAF_LOG(DHAF_LOG_WARN, "event=%s notifier=%s reason=\"%s\"", event, d->sec->name,
             dhaf_log_quote(q, sizeof(q), err->msg));
}

/* ------------------------------------------------------------------ the instance's store */

static int store_key(const struct deliverer *d, const char *key, char *buf, size_t len,
                     struct dhaf_err *err)
{
    int n = snprintf(buf, len, "%s%s", d->prefix, key);
    if (n < 0 || (size_t)n >= len)
        return dhaf_err_set(err, DHAF_EINVAL, "store key \"%.64s\" is too long", key);
    return 0;
}

static int st_get(void *ud, const char *key, char **value, struct dhaf_err *err)
{
    struct deliverer *d = ud;
    char k[600];
    int rc = store_key(d, key, k, sizeof(k), err);
    struct dhaf_kvs kvs;
    if (rc || (rc = store_get(cluster_store(d->c), k, &kvs, err)) != 0)
        return rc;
    *value = kvs.n ? dhaf_xstrdup(kvs.kvs[0].value) : NULL;
    dhaf_kvs_release(&kvs);
    return 0;
}

/* Writes are fenced: a deposed leader's notifier cannot change anything. */
static int st_write(struct deliverer *d, const char *key, const char *value, struct dhaf_err *err)
{
    char k[600];
    int rc = store_key(d, key, k, sizeof(k), err);
    if (rc)
        return rc;
    struct dhaf_etcd_op op = {
        .type = value ? DHAF_ETCD_OP_PUT : DHAF_ETCD_OP_DELETE, .key = k, .value = value};
    struct dhaf_etcd_txn_result res;
    rc = term_txn(d->t, NULL, 0, &op, 1, NULL, 0, &res, err);
    if (rc == 0)
        dhaf_etcd_txn_result_release(&res);
    return rc;
}

static int st_put(void *ud, const char *key, const char *value, struct dhaf_err *err)
{
    return st_write(ud, key, value, err);
}

static int st_del(void *ud, const char *key, struct dhaf_err *err)
{
    return st_write(ud, key, NULL, err);
}

static int st_list(void *ud, const char *prefix, char ***keys, char ***values, size_t *n,
                   struct dhaf_err *err)
{
    struct deliverer *d = ud;
    char k[600];
    int rc = store_key(d, prefix, k, sizeof(k), err);
    struct dhaf_kvs kvs;
    if (rc || (rc = store_get_prefix(cluster_store(d->c), k, 0, &kvs, err)) != 0)
        return rc;
    *keys = dhaf_xcalloc(kvs.n + 1, sizeof(char *));
    *values = dhaf_xcalloc(kvs.n + 1, sizeof(char *));
    size_t pl = strlen(d->prefix);
    for (size_t i = 0; i < kvs.n; i++) {
        (*keys)[i] = dhaf_xstrdup(kvs.kvs[i].key + pl);
        (*values)[i] = dhaf_xstrdup(kvs.kvs[i].value);
    }
    *n = kvs.n;
    dhaf_kvs_release(&kvs);
    return 0;
}

/* ------------------------------------------------------------------ delivery */

/* Delivers one record; returns 0 (done or given up) or 1 (retry later). */
static int deliver(struct deliverer *d, uint64_t seq, const json_t *j)
{
    struct dhaf_err err;
    const char *reasons[16];
    size_t nr = 0;
    const json_t *ra = json_object_get(j, "reasons");
    for (size_t i = 0; json_is_array(ra) && i < json_array_size(ra) && nr < 16; i++)
        if (json_is_string(json_array_get(ra, i)))
            reasons[nr++] = json_string_value(json_array_get(ra, i));
    int64_t at = 0;
    dhaf_json_int(j, "at", &at);
    /* the kind's name and level from the table when it is one of ours */
    const char *kind = dhaf_json_str(j, "kind");
    const struct event_kind_info *k = event_kind_info(event_kind_named(kind));
    struct dhaf_event_view ev = {
        .seq = seq,
        .kind = kind ? kind : k->name,
        .level = dhaf_json_str(j, "level") ? dhaf_json_str(j, "level") : event_level_name(k->level),
        .cluster = d->ctx.cluster,
        .service = dhaf_json_str(j, "service"),
        .node = dhaf_json_str(j, "node"),
        .from = dhaf_json_str(j, "from"),
        .to = dhaf_json_str(j, "to"),
        .reasons = reasons,
        .n_reasons = nr,
        .message = dhaf_json_str(j, "message") ? dhaf_json_str(j, "message") : "",
        .at_ms = at,
    };
    const struct dhaf_clock *clk = cluster_clock(d->c);
    int64_t t0 = dhaf_clock_mono(clk);
    int rc = d->prov->notify(d->state, &ev, &err);
    int64_t took = dhaf_clock_mono(clk) - t0;
    if (rc == 0) {
        DHAF_LOG(DHAF_LOG_INFO, "event=notified notifier=%s kind=%s seq=%" PRIu64 " took_ms=%lld",
                 d->sec->name, ev.kind, seq, (long long)took);
        return 0;
    }
    if (rc == DHAF_EUNAVAILABLE || rc == DHAF_ETIMEOUT) {
        log_err("notify-retry", d, &err);
        return 1;
    }
    log_err("notify-given-up", d, &err);
    return 0;
}

/* Reads the cursor; a notifier never run before starts with this term's new-leader event. */
static int read_cursor(struct deliverer *d, struct dhaf_err *err)
{
    char *cur = NULL;
    int rc = st_get(d, "delivered", &cur, err);
    if (rc)
        return rc;
    if (cur) {
        d->cursor = strtoull(cur, NULL, 10);
        free(cur);
        return 0;
    }
    uint64_t seq = term_first_seq(d->t);
    int64_t rev;
    if (!seq) /* the new-leader event was not recorded: from what this term wrote first */
        term_counter(d->t, &seq, &rev);
    d->cursor = seq ? seq - 1 : 0;
    char buf[32];
    snprintf(buf, sizeof(buf), "%" PRIu64, d->cursor);
    return st_put(d, "delivered", buf, err);
}

/* The next record after the cursor (a copy, caller decrefs), or NULL. */
static json_t *next_event(struct deliverer *d, uint64_t *seq)
{
    struct view *v = cluster_view(d->c);
    view_rdlock(v);
    size_t i = view_event_after(v, d->cursor);
    json_t *j = NULL;
    if (i < view_events(v)) {
        const struct view_event *e = view_event_at(v, i);
        *seq = e->seq;
        j = view_event_json(e);
    }
    view_unlock(v);
    return j;
}

int notify_deliver_pending(struct deliverer *d, size_t *delivered)
{
    struct dhaf_err err;
    if (delivered)
        *delivered = 0;
    if (!d->cursor_read) {
        if (read_cursor(d, &err) != 0) {
            log_err("cursor-not-read", d, &err);
            return 1;
        }
        d->cursor_read = true;
    }
    while (term_valid(d->t)) {
        uint64_t seq = 0;
        json_t *j = next_event(d, &seq);
        if (!j)
            return 0;
        if (seq > d->cursor + 1)
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=events-missed notifier=%s from=%" PRIu64 " to=%" PRIu64
                     " note=\"trimmed from the history before this notifier had them\"",
                     d->sec->name, d->cursor + 1, seq - 1);
        int retry = deliver(d, seq, j);
        json_decref(j);
        if (retry)
            return 1;
        d->cursor = seq;
        if (delivered)
            (*delivered)++;
        char buf[32];
        snprintf(buf, sizeof(buf), "%" PRIu64, seq);
        if (st_put(d, "delivered", buf, &err) != 0) {
            log_err("cursor-not-saved", d, &err);
            return err.code == DHAF_EFENCED ? 0 : 1;
        }
    }
    return 0;
}

static void deliver_body(struct worker *w)
{
    struct deliverer *d = worker_ud(w);
    int64_t backoff = BACKOFF_MIN_MS;
    while (!worker_quit(w) && term_valid(d->t)) {
        if (notify_deliver_pending(d, NULL) != 0) {
            worker_wait(w, dhaf_mono_ms() + backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        backoff = BACKOFF_MIN_MS;
        worker_wait(w, 0); /* the view kicks us when an event arrives; the term's end too */
    }
}

static void deliverer_release(void *ud)
{
    notify_deliverer_free(ud);
}

void notify_deliverer_free(struct deliverer *d)
{
    if (!d)
        return;
    if (d->prov && d->prov->destroy && d->state)
        d->prov->destroy(d->state);
    term_put(d->t);
    snap_put(d->snap);
    free(d);
}

struct deliverer *notify_deliverer_new(struct term *t, struct snap *s, size_t i,
                                       const struct dhaf_provider *prov, struct dhaf_err *err)
{
    struct cluster *c = term_cluster(t);
    struct deliverer *d = dhaf_xcalloc(1, sizeof(*d));
    d->c = c;
    d->t = t;
    term_hold(t);
    d->snap = snap_hold(s);
    d->sec = &s->cfg.notifiers[i];
    d->prov = prov ? prov : dhaf_registry_find(DHAF_PKIND_NOTIFIER, d->sec->type);
    char path[200];
    snprintf(path, sizeof(path), "ext/notifier/%s/%s/", d->sec->type, d->sec->name);
    cluster_key(c, d->prefix, sizeof(d->prefix), path);
    d->store = (struct dhaf_kv_store){d, st_get, st_put, st_del, st_list};
    d->ctx = (struct dhaf_provider_ctx){.node = cluster_node(c),
                                        .epoch = term_epoch(t),
                                        .cluster = cluster_name(c),
                                        .instance = d->sec->name,
                                        .store = &d->store};
    if (!d->prov || !d->prov->notify) {
        dhaf_err_set(err, DHAF_EINVAL, "notifier %s: type %s cannot notify", d->sec->name,
                     d->sec->type);
        notify_deliverer_free(d);
        return NULL;
    }
    if (d->prov->init && d->prov->init(d->sec->conf, &d->ctx, &d->state, err) != 0) {
        d->state = NULL;
        notify_deliverer_free(d);
        return NULL;
    }
    return d;
}

/* Starts the worker of notifier i of snapshot s; NULL when it cannot run. */
static struct worker *deliverer_start(struct term *t, struct snap *s, size_t i)
{
    struct dhaf_err err;
    struct deliverer *d = notify_deliverer_new(t, s, i, NULL, &err);
    if (!d) {
        char q[400];
        DHAF_LOG(DHAF_LOG_ERROR, "event=notifier-init-failed notifier=%s reason=\"%s\"",
                 s->cfg.notifiers[i].name, dhaf_log_quote(q, sizeof(q), err.msg));
        return NULL;
    }
    struct worker *w = term_worker_start(t, d->sec->name, deliver_body, deliverer_release, d,
                                         VIEW_EVENTS, false, &err);
    if (!w)
        return NULL;
    DHAF_LOG(DHAF_LOG_INFO, "event=notifier-ready notifier=%s type=%s epoch=%lld", d->sec->name,
             d->sec->type, (long long)term_epoch(t));
    return w;
}

static void deliverer_stop(struct worker *w)
{
    term_worker_stop(w, STOP_MS);
}

/* ------------------------------------------------------------------ the supervisor */

struct slot {
    char *fingerprint; /* type, name and config of the notifier */
    struct worker *w;
};

struct notify {
    struct cluster *c;
    struct term *t;
    struct slot *slots;
    size_t n;
    uint64_t gen;
};

static char *fingerprint(const struct dhaf_section *sec)
{
    char *conf = dhaf_section_to_json(sec);
    char *fp = dhaf_xasprintf("%s/%s/%s", sec->type, sec->name ? sec->name : "", conf ? conf : "");
    free(conf);
    return fp;
}

/* Makes the workers match the current snapshot: unchanged notifiers keep running. */
static void sync_slots(struct notify *n)
{
    struct snap *s = snap_get(cluster_snaps(n->c));
    if (n->slots && s->generation == n->gen) {
        snap_put(s);
        return;
    }
    struct slot *fresh = dhaf_xcalloc(s->cfg.n_notifiers + 1, sizeof(*fresh));
    for (size_t i = 0; i < s->cfg.n_notifiers; i++) {
        fresh[i].fingerprint = fingerprint(&s->cfg.notifiers[i]);
        for (size_t k = 0; k < n->n; k++) {
            if (n->slots[k].fingerprint &&
                strcmp(n->slots[k].fingerprint, fresh[i].fingerprint) == 0) {
                fresh[i].w = n->slots[k].w;
                DHAF_FREE(n->slots[k].fingerprint);
                n->slots[k].w = NULL;
                break;
            }
        }
    }
    for (size_t k = 0; k < n->n; k++) {
        deliverer_stop(n->slots[k].w);
        free(n->slots[k].fingerprint);
    }
    free(n->slots);
    for (size_t i = 0; i < s->cfg.n_notifiers; i++)
        if (!fresh[i].w && term_valid(n->t))
            fresh[i].w = deliverer_start(n->t, s, i);
    n->slots = fresh;
    n->n = s->cfg.n_notifiers;
    n->gen = s->generation;
    snap_put(s);
}

static void supervise(struct worker *w)
{
    struct notify *n = worker_ud(w);
    while (!worker_quit(w) && term_valid(n->t)) {
        sync_slots(n);
        worker_wait(w, 0); /* a reload or the end of the term */
    }
    for (size_t k = 0; k < n->n; k++) {
        deliverer_stop(n->slots[k].w);
        DHAF_FREE(n->slots[k].fingerprint);
        n->slots[k].w = NULL;
    }
}

static void notify_release(void *ud)
{
    struct notify *n = ud;
    free(n->slots);
    term_put(n->t);
    free(n);
}

static void *notify_start(struct term *t, void *ud)
{
    struct notify *n = dhaf_xcalloc(1, sizeof(*n));
    n->c = ud;
    n->t = t;
    term_hold(t);
    struct dhaf_err err;
    return term_worker_start(t, "notify", supervise, notify_release, n, 0, true, &err);
}

static bool notify_stop(void *handle, int deadline_ms)
{
    return term_worker_stop(handle, deadline_ms);
}

struct duty notify_duty(struct cluster *c)
{
    return (struct duty){"notify", notify_start, notify_stop, c};
}
