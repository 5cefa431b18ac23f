/* SPDX-License-Identifier: MIT */
/* Event delivery to notifiers: a supervisor thread follows leadership; while this node leads,
 * one worker thread per notifier delivers every event recorded after its cursor, in order,
 * retrying transient failures with back-off. Notifier instances exist only on the leader. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/provider.h"
#include "dhaf/registry.h"
#include "notify.h"

#define BACKOFF_MIN_MS 500
#define BACKOFF_MAX_MS 30000

struct worker {
    struct notify *n;
    const struct dhaf_section *sec;
    const struct dhaf_provider *prov;
    void *state;
    char prefix[300]; /* ext/notifier/<type>/<name>/ (full key) */
    struct dhaf_kv_store store;
    struct dhaf_provider_ctx ctx;
    int64_t epoch;
    pthread_t t;
    bool running;
    atomic_bool quit;
};

struct notify {
    struct cluster *c;
    pthread_mutex_t lock;
    pthread_cond_t left;
    const struct dhaf_config *cfg;
    bool reload, in_office;
    unsigned long closed; /* offices closed so far: a reload waits for the next one */
    pthread_t t;
    struct worker *w;
    size_t n_w;
    int64_t epoch;
};

static void log_err(const char *event, const struct worker *w, const struct dhaf_err *err)
{
    char q[400];
    DHAF_LOG(DHAF_LOG_WARN, "event=%s notifier=%s reason=\"%s\"", event, w->sec->name,
             dhaf_log_quote(q, sizeof(q), err->msg));
}

/* ------------------------------------------------------------------ the instance's store */

static void store_key(const struct worker *w, const char *key, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s", w->prefix, key);
}

static int st_get(void *ud, const char *key, char **value, struct dhaf_err *err)
{
    struct worker *w = ud;
    char k[600];
    store_key(w, key, k, sizeof(k));
    struct dhaf_kvs kvs;
    int rc = dhaf_etcd_get(cluster_etcd(w->n->c), k, &kvs, err);
    if (rc)
        return rc;
    *value = kvs.n ? dhaf_xstrdup(kvs.kvs[0].value) : NULL;
    dhaf_kvs_release(&kvs);
    return 0;
}

/* Writes are fenced: a deposed leader's notifier cannot change anything. */
static int st_put(void *ud, const char *key, const char *value, struct dhaf_err *err)
{
    struct worker *w = ud;
    char k[600];
    store_key(w, key, k, sizeof(k));
    struct dhaf_etcd_op op = {.type = DHAF_ETCD_OP_PUT, .key = k, .value = value};
    struct dhaf_etcd_txn_result res;
    int rc = cluster_txn_as_leader(w->n->c, NULL, 0, &op, 1, &res, err);
    if (rc == 0)
        dhaf_etcd_txn_result_release(&res);
    return rc;
}

static int st_del(void *ud, const char *key, struct dhaf_err *err)
{
    struct worker *w = ud;
    char k[600];
    store_key(w, key, k, sizeof(k));
    struct dhaf_etcd_op op = {.type = DHAF_ETCD_OP_DELETE, .key = k};
    struct dhaf_etcd_txn_result res;
    int rc = cluster_txn_as_leader(w->n->c, NULL, 0, &op, 1, &res, err);
    if (rc == 0)
        dhaf_etcd_txn_result_release(&res);
    return rc;
}

static int st_list(void *ud, const char *prefix, char ***keys, char ***values, size_t *n,
                   struct dhaf_err *err)
{
    struct worker *w = ud;
    char k[600];
    store_key(w, prefix, k, sizeof(k));
    struct dhaf_kvs kvs;
    int rc = dhaf_etcd_get_prefix(cluster_etcd(w->n->c), k, 0, &kvs, err);
    if (rc)
        return rc;
    *keys = dhaf_xcalloc(kvs.n + 1, sizeof(char *));
    *values = dhaf_xcalloc(kvs.n + 1, sizeof(char *));
    size_t pl = strlen(w->prefix);
    for (size_t i = 0; i < kvs.n; i++) {
        (*keys)[i] = dhaf_xstrdup(kvs.kvs[i].key + pl);
        (*values)[i] = dhaf_xstrdup(kvs.kvs[i].value);
    }
    *n = kvs.n;
    dhaf_kvs_release(&kvs);
    return 0;
}

/* ------------------------------------------------------------------ a worker */

static bool worker_alive(struct worker *w)
{
    int64_t epoch = 0;
    return !atomic_load(&w->quit) && !cluster_stopping(w->n->c) &&
           cluster_is_leader(w->n->c, &epoch) && epoch == w->epoch;
}

/* Sleeps ms while the worker should go on; false when it should stop. */
static bool worker_nap(struct worker *w, int64_t ms)
{
    int64_t end = dhaf_mono_ms() + ms;
    while (worker_alive(w)) {
        int64_t left = end - dhaf_mono_ms();
        if (left <= 0)
            return true;
        cluster_nap(w->n->c, left > 100 ? 100 : left);
    }
    return false;
}

static int by_revision(const void *x, const void *y)
{
    const struct dhaf_kv *a = x, *b = y;
    return a->create_rev < b->create_rev ? -1 : a->create_rev > b->create_rev;
}

/* Delivers one event record; returns 0 (done or given up) or 1 (retry later). */
static int deliver(struct worker *w, const struct dhaf_kv *kv)
{
    struct dhaf_err err;
    json_t *j = NULL;
    if (dhaf_json_parse_object(kv->value, kv->value_len, kv->key, &j, &err) != 0) {
        log_err("event-unreadable", w, &err);
        return 0;
    }
    const char *reasons[16];
    size_t nr = 0;
    const json_t *ra = json_object_get(j, "reasons");
    for (size_t i = 0; json_is_array(ra) && i < json_array_size(ra) && nr < 16; i++)
        if (json_is_string(json_array_get(ra, i)))
            reasons[nr++] = json_string_value(json_array_get(ra, i));
    int64_t at = 0;
    dhaf_json_int(j, "at", &at);
    struct dhaf_event_view ev = {
        .seq = (uint64_t)kv->create_rev,
        .kind = dhaf_json_str(j, "kind") ? dhaf_json_str(j, "kind") : "event",
        .level = dhaf_json_str(j, "level") ? dhaf_json_str(j, "level") : "info",
        .cluster = w->ctx.cluster,
        .service = dhaf_json_str(j, "service"),
        .node = dhaf_json_str(j, "node"),
        .from = dhaf_json_str(j, "from"),
        .to = dhaf_json_str(j, "to"),
        .reasons = reasons,
        .n_reasons = nr,
        .message = dhaf_json_str(j, "message") ? dhaf_json_str(j, "message") : "",
        .at_ms = at,
    };
    int64_t t0 = dhaf_mono_ms();
    int rc = w->prov->notify(w->state, &ev, &err);
    int64_t took = dhaf_mono_ms() - t0;
    int retry = 0;
    if (rc == 0) {
        DHAF_LOG(DHAF_LOG_INFO, "event=notified notifier=%s kind=%s seq=%lld took_ms=%lld",
                 w->sec->name, ev.kind, (long long)ev.seq, (long long)took);
    } else if (rc == DHAF_EUNAVAILABLE || rc == DHAF_ETIMEOUT) {
        log_err("notify-retry", w, &err);
        retry = 1;
    } else {
        log_err("notify-given-up", w, &err);
    }
    json_decref(j);
    return retry;
}

static void *worker_thread(void *arg)
{
    struct worker *w = arg;
    struct cluster *c = w->n->c;
    struct dhaf_err err;
    char events[256];
    cluster_key(c, events, sizeof(events), "events/");
    /* Where this notifier stopped: its cursor, or now for a notifier never run before. */
    char *cur = NULL;
    int64_t cursor = -1;
    while (worker_alive(w)) {
        if (st_get(w, "cursor", &cur, &err) == 0)
            break;
        worker_nap(w, 500);
    }
    if (cur) {
        cursor = strtoll(cur, NULL, 10);
        free(cur);
    }
    int64_t backoff = BACKOFF_MIN_MS;
    while (worker_alive(w)) {
        struct dhaf_kvs kvs;
        if (dhaf_etcd_get_prefix(cluster_etcd(c), events, 0, &kvs, &err) != 0) {
            worker_nap(w, 500);
            continue;
        }
        if (cursor < 0) {
            /* A notifier never run before starts with this leadership (its new-leader
             * event included), not with the whole history. */
            cursor = w->epoch - 1;
            char buf[32];
            snprintf(buf, sizeof(buf), "%lld", (long long)cursor);
            st_put(w, "cursor", buf, &err);
        }
        qsort(kvs.kvs, kvs.n, sizeof(*kvs.kvs), by_revision);
        bool retry = false;
        for (size_t i = 0; i < kvs.n && worker_alive(w); i++) {
            if (kvs.kvs[i].create_rev <= cursor)
                continue;
            if (deliver(w, &kvs.kvs[i])) {
                retry = true;
                break;
            }
            cursor = kvs.kvs[i].create_rev;
            char buf[32];
            snprintf(buf, sizeof(buf), "%lld", (long long)cursor);
            if (st_put(w, "cursor", buf, &err) != 0)
                log_err("cursor-not-saved", w, &err);
            backoff = BACKOFF_MIN_MS;
        }
        int64_t rev = kvs.revision;
        dhaf_kvs_release(&kvs);
        if (retry) {
            worker_nap(w, backoff);
            backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
            continue;
        }
        /* wait for the next event */
        struct dhaf_etcd_watch *wt =
            dhaf_etcd_watch_new(cluster_etcd(c), events, true, rev + 1, &err);
        while (wt && worker_alive(w)) {
            struct dhaf_etcd_events ev;
            int rc = dhaf_etcd_watch_next(wt, &ev, 300, &err);
            if (rc == DHAF_ETIMEOUT)
                continue;
            if (rc == 0)
                dhaf_etcd_events_release(&ev);
            break;
        }
        dhaf_etcd_watch_free(wt);
        if (!wt)
            worker_nap(w, 500);
    }
    return NULL;
}

/* ------------------------------------------------------------------ office */

static void leave_office(struct notify *n)
{
    for (size_t i = 0; i < n->n_w; i++)
        atomic_store(&n->w[i].quit, true);
    for (size_t i = 0; i < n->n_w; i++) {
        struct worker *w = &n->w[i];
        if (w->running)
            pthread_join(w->t, NULL);
        if (w->prov && w->prov->destroy && w->state)
            w->prov->destroy(w->state);
    }
    free(n->w);
    n->w = NULL;
    n->n_w = 0;
    n->epoch = 0;
    pthread_mutex_lock(&n->lock);
    n->in_office = false;
    n->closed++;
    pthread_cond_broadcast(&n->left);
    pthread_mutex_unlock(&n->lock);
}

static void take_office(struct notify *n, int64_t epoch)
{
    pthread_mutex_lock(&n->lock);
    const struct dhaf_config *cfg = n->cfg;
    n->reload = false;
    n->in_office = true;
    pthread_mutex_unlock(&n->lock);
    n->epoch = epoch;
    n->n_w = cfg->n_notifiers;
    n->w = dhaf_xcalloc(n->n_w + 1, sizeof(*n->w));
    for (size_t i = 0; i < n->n_w; i++) {
        struct worker *w = &n->w[i];
        w->n = n;
        w->sec = &cfg->notifiers[i];
        w->epoch = epoch;
        atomic_init(&w->quit, false);
        w->prov = dhaf_registry_find(DHAF_PKIND_NOTIFIER, w->sec->type);
        char path[200];
        snprintf(path, sizeof(path), "ext/notifier/%s/%s/", w->sec->type, w->sec->name);
        cluster_key(n->c, w->prefix, sizeof(w->prefix), path);
        w->store = (struct dhaf_kv_store){w, st_get, st_put, st_del, st_list};
        w->ctx = (struct dhaf_provider_ctx){.node = cluster_node(n->c),
                                            .epoch = epoch,
                                            .cluster = cfg->cluster_name,
                                            .instance = w->sec->name,
                                            .store = &w->store};
        struct dhaf_err err;
        if (!w->prov || !w->prov->notify) {
            DHAF_LOG(DHAF_LOG_ERROR, "event=notifier-unusable notifier=%s type=%s", w->sec->name,
                     w->sec->type);
            continue;
        }
        if (w->prov->init && w->prov->init(w->sec->conf, &w->ctx, &w->state, &err) != 0) {
            log_err("notifier-init-failed", w, &err);
            w->state = NULL;
            continue;
        }
        w->running = pthread_create(&w->t, NULL, worker_thread, w) == 0;
        DHAF_LOG(DHAF_LOG_INFO, "event=notifier-ready notifier=%s type=%s epoch=%lld", w->sec->name,
                 w->sec->type, (long long)epoch);
    }
}

static void *supervisor(void *arg)
{
    struct notify *n = arg;
    while (!cluster_stopping(n->c)) {
        int64_t epoch = 0;
        bool lead = cluster_is_leader(n->c, &epoch);
        pthread_mutex_lock(&n->lock);
        bool reload = n->reload;
        pthread_mutex_unlock(&n->lock);
        if (n->epoch && (!lead || epoch != n->epoch || reload))
            leave_office(n);
        if (lead && !n->epoch)
            take_office(n, epoch);
        if (reload && !lead) {
            pthread_mutex_lock(&n->lock);
            n->reload = false;
            pthread_mutex_unlock(&n->lock);
        }
        cluster_nap(n->c, 200);
    }
    leave_office(n);
    return NULL;
}

/* ------------------------------------------------------------------ lifecycle */

struct notify *notify_start(struct cluster *c, const struct dhaf_config *cfg, struct dhaf_err *err)
{
    struct notify *n = dhaf_xcalloc(1, sizeof(*n));
    n->c = c;
    n->cfg = cfg;
    pthread_mutex_init(&n->lock, NULL);
    pthread_cond_init(&n->left, NULL);
    if (pthread_create(&n->t, NULL, supervisor, n) != 0) {
        dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the notification thread");
        pthread_mutex_destroy(&n->lock);
        pthread_cond_destroy(&n->left);
        free(n);
        return NULL;
    }
    return n;
}

void notify_reload(struct notify *n, const struct dhaf_config *cfg)
{
    pthread_mutex_lock(&n->lock);
    n->cfg = cfg;
    n->reload = true;
    /* Wait for the office that uses the old config to close; the thread may reopen one at
     * once (with the new config), so count closings rather than look at in_office. */
    unsigned long closed = n->closed;
    while (n->in_office && n->closed == closed && !cluster_stopping(n->c))
        pthread_cond_wait(&n->left, &n->lock);
    pthread_mutex_unlock(&n->lock);
}

bool notify_stop(struct notify *n, int deadline_ms)
{
    if (!n)
        return true;
    if (!dhaf_join_within(n->t, deadline_ms)) {
        DHAF_LOG(DHAF_LOG_WARN, "event=stop-slow note=\"a notification is still being sent; "
                                "exiting anyway\"");
        return false;
    }
    pthread_mutex_destroy(&n->lock);
    pthread_cond_destroy(&n->left);
    free(n);
    return true;
}
