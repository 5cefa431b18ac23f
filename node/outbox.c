/* SPDX-License-Identifier: MIT */
/* The event outbox: commits with the counter compared in the same transaction, unfenced
 * records, and the trimming duty. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "outbox.h"
#include "worker.h"

#define COMMIT_ATTEMPTS 6
#define TRIM_BATCH      100 /* deletes per transaction (etcd allows 128 ops) */

const char *outbox_key(const struct cluster *c, uint64_t seq, char *buf, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "events/%012" PRIu64, seq);
    return cluster_key(c, buf, len, path);
}

/* The counter's value and mod revision from a GET of event-seq (0, 0: absent). */
static void counter_of(const struct dhaf_kvs *kvs, uint64_t *seq, int64_t *rev)
{
    *seq = 0;
    *rev = 0;
    if (kvs && kvs->n == 1) {
        *seq = strtoull(kvs->kvs[0].value, NULL, 10);
        *rev = kvs->kvs[0].mod_rev;
    }
}

/* The best guess of the counter: what this term last wrote, or what the view saw later. */
static void counter_hint(struct cluster *c, struct term *t, uint64_t *seq, int64_t *rev)
{
    uint64_t vs = 0;
    int64_t vr = 0;
    struct view *v = cluster_view(c);
    if (v) {
        view_rdlock(v);
        view_event_counter(v, &vs, &vr);
        view_unlock(v);
    }
    *seq = vs;
    *rev = vr;
    if (t) {
        uint64_t ts;
        int64_t tr;
        term_counter(t, &ts, &tr);
        if (tr > vr) {
            *seq = ts;
            *rev = tr;
        }
    }
}

/* The ops that write evs from seq+1 on and advance the counter; texts and keys are kept in
 * the caller's arrays (freed with free_texts). */
struct staged {
    char *texts[OUTBOX_MAX_EVENTS + 1];
    char keys[OUTBOX_MAX_EVENTS + 1][256];
    json_t *recs[OUTBOX_MAX_EVENTS];
    size_t n;
};

static void stage(struct cluster *c, struct staged *s, const struct event *evs, size_t n_evs,
                  uint64_t seq, int64_t epoch, struct dhaf_etcd_op *ops)
{
    int64_t at = dhaf_clock_wall(cluster_clock(c));
    s->n = n_evs;
    for (size_t i = 0; i < n_evs; i++) {
        s->recs[i] =
            event_record(&evs[i], seq + 1 + i, cluster_name(c), cluster_node(c), epoch, at);
        s->texts[i] = dhaf_json_dump(s->recs[i]);
        outbox_key(c, seq + 1 + i, s->keys[i], sizeof(s->keys[i]));
        ops[i] = (struct dhaf_etcd_op){
            .type = DHAF_ETCD_OP_PUT, .key = s->keys[i], .value = s->texts[i]};
    }
    s->texts[n_evs] = dhaf_xasprintf("%" PRIu64, seq + n_evs);
    cluster_key(c, s->keys[n_evs], sizeof(s->keys[n_evs]), "event-seq");
    ops[n_evs] = (struct dhaf_etcd_op){
        .type = DHAF_ETCD_OP_PUT, .key = s->keys[n_evs], .value = s->texts[n_evs]};
}

static void unstage(struct staged *s, bool log)
{
    for (size_t i = 0; i < s->n; i++) {
        if (log)
            event_log_record(s->recs[i]);
        json_decref(s->recs[i]);
        free(s->texts[i]);
    }
    free(s->texts[s->n]);
    s->n = 0;
}

/* Says which events could not be recorded. A node's own statement (statement: leader-lost)
 * is still logged as the event it is, so the operator has it; a leader's event, or one that
 * comes with an API's change, reports a change that was not written either, so it is no event: only
 * event-not-recorded says what it would have been (at debug level when the term was over: the next
 * leader decides it again; else at most once per 10 s, with the count held back, since it repeats
 * every round while etcd refuses writes). */
static void log_unrecorded(struct cluster *c, const struct term *t, bool statement,
                           const struct event *evs, size_t n, const struct dhaf_err *err)
{
    char q[400], m[600], msg[1024];
    for (size_t i = 0; i < n; i++) {
        if (statement) {
            json_t *rec = event_record(&evs[i], 0, cluster_name(c), cluster_node(c), 0,
                                       dhaf_clock_wall(cluster_clock(c)));
            event_log_record(rec);
            json_decref(rec);
        }
        event_render(&evs[i], cluster_name(c), msg, sizeof(msg));
        if (t && err->code == DHAF_EFENCED)
            DHAF_LOG(DHAF_LOG_DEBUG, "event=event-not-recorded kind=%s reason=\"%s\" msg=\"%s\"",
                     event_kind_info(evs[i].kind)->name, dhaf_log_quote(q, sizeof(q), err->msg),
                     dhaf_log_quote(m, sizeof(m), msg));
        else /* repeats every round while etcd refuses writes: one line per 10 s */
            DHAF_LOG_LIMITED("event-not-recorded", DHAF_LOG_WARN,
                             "event=event-not-recorded kind=%s reason=\"%s\" msg=\"%s\"",
                             event_kind_info(evs[i].kind)->name,
                             dhaf_log_quote(q, sizeof(q), err->msg),
                             dhaf_log_quote(m, sizeof(m), msg));
    }
}

/* One commit loop for both flavours: fenced by t, or (t NULL) comparing the counter only. */
static int commit(struct cluster *c, struct term *t, const struct dhaf_etcd_cmp *cmps,
                  size_t n_cmps, const struct dhaf_etcd_op *ops, size_t n_ops,
                  const struct event *evs, size_t n_evs, struct dhaf_err *err)
{
    if (n_evs > OUTBOX_MAX_EVENTS || n_cmps + 1 > 15 || n_ops + n_evs + 1 > 120)
        return dhaf_err_set(err, DHAF_EINVAL, "outbox: too much for one transaction");
    char ckey[256];
    cluster_key(c, ckey, sizeof(ckey), "event-seq");
    uint64_t seq;
    int64_t rev;
    counter_hint(c, t, &seq, &rev);
    struct dhaf_etcd_cmp all_cmps[16];
    struct dhaf_etcd_op all_ops[128];
    struct dhaf_etcd_op get = {.type = DHAF_ETCD_OP_GET, .key = ckey};
    int rc = DHAF_ECONFLICT;
    for (int attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
        if (n_cmps)
            memcpy(all_cmps, cmps, n_cmps * sizeof(*cmps));
        all_cmps[n_cmps] = (struct dhaf_etcd_cmp){
            .key = ckey, .target = DHAF_ETCD_MOD_REV, .result = DHAF_ETCD_EQ, .num = rev};
        if (n_ops)
            memcpy(all_ops, ops, n_ops * sizeof(*ops));
        struct staged s;
        stage(c, &s, evs, n_evs, seq, t ? term_epoch(t) : 0, all_ops + n_ops);
        struct dhaf_etcd_txn_result res;
        size_t n_all = n_ops + n_evs + 1;
        if (t)
            rc = term_txn(t, all_cmps, n_cmps + 1, all_ops, n_all, &get, 1, &res, err);
        else
            rc = store_txn(cluster_store(c), all_cmps, n_cmps + 1, all_ops, n_all, &get, 1, &res,
                           err);
        if (rc == 0 && !t && !res.succeeded)
            rc = DHAF_ECONFLICT;
        if (rc == 0) {
            if (t)
                term_set_counter(t, seq + n_evs, res.revision);
            dhaf_etcd_txn_result_release(&res);
            unstage(&s, true);
            return 0;
        }
        unstage(&s, false);
        if (rc != DHAF_ECONFLICT)
            break;
        /* Was it the counter (another writer got there first) or the caller's compare? */
        uint64_t now_seq;
        int64_t now_rev;
        counter_of(res.n_gets ? &res.gets[res.n_gets - 1] : NULL, &now_seq, &now_rev);
        dhaf_etcd_txn_result_release(&res);
        if (now_rev == rev) {
            dhaf_err_set(err, DHAF_ECONFLICT, "a compare of the transaction failed");
            return DHAF_ECONFLICT; /* nothing was written: the caller re-reads and decides */
        }
        seq = now_seq;
        rev = now_rev;
        if (t)
            term_set_counter(t, seq, rev);
    }
    if (rc == DHAF_ECONFLICT)
        dhaf_err_set(err, DHAF_ECONFLICT, "outbox: the event counter kept changing");
    if (rc != DHAF_EUNKNOWN_OUTCOME)
        log_unrecorded(c, t, !t && n_ops == 0, evs, n_evs, err);
    return rc;
}

int outbox_commit(struct term *t, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                  const struct dhaf_etcd_op *ops, size_t n_ops, const struct event *evs,
                  size_t n_evs, struct dhaf_err *err)
{
    return commit(term_cluster(t), t, cmps, n_cmps, ops, n_ops, evs, n_evs, err);
}

int outbox_record(struct cluster *c, const struct event *evs, size_t n_evs, struct dhaf_err *err)
{
    return commit(c, NULL, NULL, 0, NULL, 0, evs, n_evs, err);
}

int outbox_record_ops(struct cluster *c, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                      const struct dhaf_etcd_op *ops, size_t n_ops, const struct event *evs,
                      size_t n_evs, struct dhaf_err *err)
{
    return commit(c, NULL, cmps, n_cmps, ops, n_ops, evs, n_evs, err);
}

/* ------------------------------------------------------------------ trimming */

struct trimmer {
    struct cluster *c;
    struct term *t;
    bool legacy_done; /* records of older versions (events/<service>/...) removed */
};

/* The lowest seq every configured notifier has delivered (UINT64_MAX: no notifier has a
 * cursor yet, so none holds anything back). Returns 0 or an etcd error. */
static int lowest_cursor(struct trimmer *tr, uint64_t *low, struct dhaf_err *err)
{
    *low = UINT64_MAX;
    struct snap *s = snap_get(cluster_snaps(tr->c));
    int rc = 0;
    for (size_t i = 0; i < s->cfg.n_notifiers && rc == 0; i++) {
        char path[300], key[512];
        snprintf(path, sizeof(path), "ext/notifier/%s/%s/delivered", s->cfg.notifiers[i].type,
                 s->cfg.notifiers[i].name);
        if (!cluster_key(tr->c, key, sizeof(key), path))
            continue;
        struct dhaf_kvs kvs;
        rc = store_get(cluster_store(tr->c), key, &kvs, err);
        if (rc == 0 && kvs.n == 1) {
            uint64_t d = strtoull(kvs.kvs[0].value, NULL, 10);
            if (d < *low)
                *low = d;
        }
        if (rc == 0)
            dhaf_kvs_release(&kvs);
    }
    snap_put(s);
    return rc;
}

/* Deletes keys in batches with fenced transactions. */
static int delete_keys(struct trimmer *tr, char **keys, size_t n, struct dhaf_err *err)
{
    for (size_t at = 0; at < n; at += TRIM_BATCH) {
        struct dhaf_etcd_op ops[TRIM_BATCH];
        size_t k = 0;
        for (; k < TRIM_BATCH && at + k < n; k++)
            ops[k] = (struct dhaf_etcd_op){.type = DHAF_ETCD_OP_DELETE, .key = keys[at + k]};
        struct dhaf_etcd_txn_result res;
        int rc = term_txn(tr->t, NULL, 0, ops, k, NULL, 0, &res, err);
        if (rc)
            return rc;
        dhaf_etcd_txn_result_release(&res);
    }
    return 0;
}

/* Removes the per-service history folders of versions before the outbox (events/<name>/...). */
static void drop_legacy(struct trimmer *tr)
{
    char pfx[256];
    cluster_key(tr->c, pfx, sizeof(pfx), "events/");
    struct dhaf_kvs kvs;
    struct dhaf_err err;
    if (store_get_prefix(cluster_store(tr->c), pfx, 0, &kvs, &err) != 0)
        return;
    char **keys = dhaf_xcalloc(kvs.n + 1, sizeof(*keys));
    size_t n = 0;
    for (size_t i = 0; i < kvs.n; i++)
        if (strchr(kvs.kvs[i].key + strlen(pfx), '/'))
            keys[n++] = kvs.kvs[i].key;
    if (n && delete_keys(tr, keys, n, &err) == 0)
        DHAF_LOG(DHAF_LOG_INFO, "event=legacy-events-removed count=%zu", n);
    tr->legacy_done = n == 0 || err.code == 0;
    free(keys);
    dhaf_kvs_release(&kvs);
}

int outbox_trim(struct term *t, size_t *deleted, struct dhaf_err *err)
{
    struct cluster *c = term_cluster(t);
    struct trimmer tr = {.c = c, .t = t};
    *deleted = 0;
    struct view *v = cluster_view(c);
    view_rdlock(v);
    size_t n = view_events(v);
    uint64_t first = n ? view_event_at(v, 0)->seq : 0;
    uint64_t last = n ? view_event_at(v, n - 1)->seq : 0;
    view_unlock(v);
    if (n <= OUTBOX_KEEP)
        return 0;
    uint64_t low;
    int rc = lowest_cursor(&tr, &low, err);
    if (rc != 0)
        return rc;
    /* Delivered events beyond the history kept go; undelivered ones only past the cap. */
    uint64_t upto = last - OUTBOX_KEEP;
    uint64_t dropped_to = 0;
    if (low != UINT64_MAX && low < upto) {
        if (last - low > OUTBOX_CAP) {
            dropped_to = last - OUTBOX_CAP;
            upto = dropped_to;
        } else {
            upto = low;
        }
    }
    if (upto < first)
        return 0;
    view_rdlock(v);
    size_t end = view_event_after(v, upto);
    char **keys = dhaf_xcalloc(end + 1, sizeof(*keys));
    for (size_t i = 0; i < end; i++) {
        keys[i] = dhaf_xmalloc(256);
        outbox_key(c, view_event_at(v, i)->seq, keys[i], 256);
    }
    view_unlock(v);
    rc = delete_keys(&tr, keys, end, err);
    for (size_t i = 0; i < end; i++)
        free(keys[i]);
    free(keys);
    if (rc != 0)
        return rc;
    *deleted = end;
    DHAF_LOG(DHAF_LOG_DEBUG, "event=events-trimmed count=%zu upto=%" PRIu64, end, upto);
    if (dropped_to) {
        char detail[300];
        snprintf(detail, sizeof(detail),
                 "%" PRIu64 " events were dropped before every notifier had them (more than %d "
                 "waited for delivery); the oldest kept is #%" PRIu64,
                 dropped_to - low, OUTBOX_CAP, dropped_to + 1);
        struct event ev = {.kind = EVK_EVENTS_DROPPED, .detail = detail};
        rc = outbox_commit(t, NULL, 0, NULL, 0, &ev, 1, err);
    }
    return rc;
}

static void trim_body(struct worker *w)
{
    struct trimmer *tr = worker_ud(w);
    while (!worker_quit(w)) {
        if (!tr->legacy_done)
            drop_legacy(tr);
        size_t deleted;
        struct dhaf_err err;
        if (outbox_trim(tr->t, &deleted, &err) != 0 && err.code != DHAF_EFENCED) {
            char q[300];
            DHAF_LOG(DHAF_LOG_WARN, "event=events-not-trimmed reason=\"%s\"",
                     dhaf_log_quote(q, sizeof(q), err.msg));
        }
        /* woken by new events; a minute at most, for cursors that moved */
        worker_wait(w, dhaf_mono_ms() + 60000);
    }
}

static void trim_release(void *ud)
{
    struct trimmer *tr = ud;
    term_put(tr->t);
    free(tr);
}

static void *trim_start(struct term *t, void *ud)
{
    struct trimmer *tr = dhaf_xcalloc(1, sizeof(*tr));
    tr->c = ud;
    tr->t = t;
    term_hold(t);
    struct dhaf_err err;
    return term_worker_start(t, "outbox-trim", trim_body, trim_release, tr, VIEW_EVENTS, false,
                             &err);
}

static bool trim_stop(void *handle, int deadline_ms)
{
    return term_worker_stop(handle, deadline_ms);
}

struct duty outbox_trim_duty(struct cluster *c)
{
    return (struct duty){"outbox-trim", trim_start, trim_stop, c};
}
