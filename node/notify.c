/* SPDX-License-Identifier: MIT */
/* Notifier workers: a supervisor per term that starts one worker per notifier (and restarts
 * changed ones on reload); each worker delivers the view's events after its cursor, through
 * the notifier's filters and repeat collapsing; the node's config catalog (event kinds). */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "dhaf/registry.h"
#include "events.h"
#include "metrics.h"
#include "notify.h"
#include "repeats.h"
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
    uint64_t cursor;         /* the last seq delivered (or skipped) */
    bool cursor_read;        /* cursor holds what etcd has */
    struct repeats *repeats; /* held repeats (ext/.../repeats, saved with the cursor) */
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
        metrics_notify(d->sec->name, d->sec->type, METRICS_NOTIFY_SENT);
        DHAF_LOG(DHAF_LOG_INFO, "event=notified notifier=%s kind=%s seq=%" PRIu64 " took_ms=%lld",
                 d->sec->name, ev.kind, seq, (long long)took);
        return 0;
    }
    if (rc == DHAF_EUNAVAILABLE || rc == DHAF_ETIMEOUT) {
        metrics_notify(d->sec->name, d->sec->type, METRICS_NOTIFY_RETRY);
        log_err("notify-retry", d, &err);
        return 1;
    }
    metrics_notify(d->sec->name, d->sec->type, METRICS_NOTIFY_GIVEN_UP);
    log_err("notify-given-up", d, &err);
    return 0;
}

/* True when record j passes the notifier's filters (min-severity, events). */
static bool wanted(const struct deliverer *d, const json_t *j)
{
    const char *kind = dhaf_json_str(j, "kind");
    const char *level = dhaf_json_str(j, "level");
    enum event_level lv =
        level ? event_level_named(level) : event_kind_info(event_kind_named(kind))->level;
    if ((int)lv < d->sec->min_severity + EV_INFO)
        return false;
    if (!d->sec->events.n)
        return true;
    for (size_t i = 0; kind && i < d->sec->events.n; i++)
        if (strcmp(d->sec->events.v[i], kind) == 0)
            return true;
    return false;
}

/* Writes the cursor (with_cursor) and the held repeats (when they changed) in one fenced
 * transaction: an event the cursor passes is delivered, skipped or held in the state. */
static int save_progress(struct deliverer *d, bool with_cursor, struct dhaf_err *err)
{
    char kc[600], kr[600], buf[32];
    struct dhaf_etcd_op ops[2];
    size_t n = 0;
    char *state = NULL;
    int rc = store_key(d, "delivered", kc, sizeof(kc), err);
    if (rc == 0)
        rc = store_key(d, "repeats", kr, sizeof(kr), err);
    if (rc)
        return rc;
    if (with_cursor) {
        snprintf(buf, sizeof(buf), "%" PRIu64, d->cursor);
        ops[n++] = (struct dhaf_etcd_op){.type = DHAF_ETCD_OP_PUT, .key = kc, .value = buf};
    }
    if (d->repeats && repeats_dirty(d->repeats)) {
        state = repeats_save(d->repeats);
        ops[n++] = (struct dhaf_etcd_op){.type = DHAF_ETCD_OP_PUT, .key = kr, .value = state};
    }
    if (n) {
        struct dhaf_etcd_txn_result res;
        rc = term_txn(d->t, NULL, 0, ops, n, NULL, 0, &res, err);
        if (rc == 0)
            dhaf_etcd_txn_result_release(&res);
        if (rc == 0 && state)
            repeats_saved(d->repeats); /* else it is written with the next progress */
    }
    free(state);
    return rc;
}

/* Reads the held repeats a previous leader saved (when the notifier collapses repeats or
 * held some before a reload turned it off: they still go out). */
static int read_repeats(struct deliverer *d, struct dhaf_err *err)
{
    char *text = NULL;
    int rc = st_get(d, "repeats", &text, err);
    if (rc)
        return rc;
    repeats_free(d->repeats); /* an earlier attempt's (the cursor could not be read) */
    d->repeats = repeats_new((int64_t)d->sec->repeat_window * 1000);
    if (text && repeats_load(d->repeats, text, err) != 0)
        log_err("repeats-state-unreadable", d, err); /* not ours to repair: start empty */
    free(text);
    return 0;
}

/* Sends the summaries of the windows that ended at or before now (Unix ms). Returns 0, 1 to
 * retry later, -1 when the term is over. */
static int flush_due(struct deliverer *d, int64_t now)
{
    size_t slot;
    json_t *sum;
    struct dhaf_err err;
    while (term_valid(d->t) && (sum = repeats_due(d->repeats, now, &slot)) != NULL) {
        int64_t seq = 0;
        dhaf_json_int(sum, "seq", &seq);
        int retry = deliver(d, (uint64_t)seq, sum);
        json_decref(sum);
        if (retry)
            return 1;
        repeats_flushed(d->repeats, slot);
        if (save_progress(d, false, &err) != 0) {
            log_err("repeats-not-saved", d, &err);
            return err.code == DHAF_EFENCED ? -1 : 1;
        }
    }
    return 0;
}

int64_t notify_wait_ms(const struct deliverer *d)
{
    if (!d->repeats || repeats_next_due(d->repeats) == INT64_MAX)
        return -1;
    int64_t left = repeats_next_due(d->repeats) - dhaf_clock_wall(cluster_clock(d->c));
    return left > 0 ? left : 0;
}

/* Reads the cursor; a notifier never run before starts with this term's new-leader event. */
static int read_cursor(struct deliverer *d, struct dhaf_err *err)
{
    char *cur = NULL;
    int rc = read_repeats(d, err);
    if (rc == 0)
        rc = st_get(d, "delivered", &cur, err);
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
        if (!j) /* the history is done: the windows that ended by now */
            return flush_due(d, dhaf_clock_wall(cluster_clock(d->c))) > 0 ? 1 : 0;
        if (seq > d->cursor + 1)
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=events-missed notifier=%s from=%" PRIu64 " to=%" PRIu64
                     " note=\"trimmed from the history before this notifier had them\"",
                     d->sec->name, d->cursor + 1, seq - 1);
        int64_t at = 0;
        dhaf_json_int(j, "at", &at);
        int retry = flush_due(d, at); /* windows that ended before this event, in time order */
        if (retry == 0 && wanted(d, j)) {
            if (repeats_would_hold(d->repeats, j)) {
                repeats_hold(d->repeats, j);
            } else {
                retry = deliver(d, seq, j);
                if (retry == 0)
                    repeats_sent(d->repeats, j);
            }
        }
        json_decref(j);
        if (retry)
            return retry > 0 ? 1 : 0;
        d->cursor = seq;
        if (delivered)
            (*delivered)++;
        if (save_progress(d, true, &err) != 0) {
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
        /* the view kicks us when an event arrives, the term's end too; held repeats wait for
         * the end of their window */
        int64_t wait = notify_wait_ms(d);
        worker_wait(w, wait < 0 ? 0 : dhaf_mono_ms() + (wait ? wait : 1));
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
    repeats_free(d->repeats);
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
        metrics_notify(s->cfg.notifiers[i].name, s->cfg.notifiers[i].type,
                       METRICS_NOTIFY_INIT_FAILED);
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

static const char *kind_at(const struct dhaf_cfg_catalog *cat, size_t i)
{
    (void)cat;
    return event_kind_name_at(i);
}

static struct dhaf_cfg_catalog node_catalog;
static pthread_once_t node_catalog_once = PTHREAD_ONCE_INIT;

static void node_catalog_init(void)
{
    node_catalog = *dhaf_registry_catalog();
    node_catalog.event_kind_at = kind_at;
}

const struct dhaf_cfg_catalog *notify_catalog(void)
{
    pthread_once(&node_catalog_once, node_catalog_init);
    return &node_catalog;
}
