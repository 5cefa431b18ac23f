/* SPDX-License-Identifier: MIT */
/* The leader's compaction of etcd's history, bound to its term. */
#include <stdio.h>
#include <stdlib.h>

#include "compactor.h"
#include "dhaf/alloc.h"
#include "dhaf/log.h"
#include "metrics.h"
#include "worker.h"

struct compactor {
    struct cluster *c;
    struct term *t;
    int64_t done_at; /* the last revision compacted at (by this term, or found done) */
};

struct compactor *compactor_new(struct term *t)
{
    struct compactor *k = dhaf_xcalloc(1, sizeof(*k));
    k->c = term_cluster(t);
    k->t = t;
    term_hold(t);
    return k;
}

void compactor_free(struct compactor *k)
{
    if (!k)
        return;
    term_put(k->t);
    free(k);
}

int compactor_round(struct compactor *k, int64_t *compacted_at, struct dhaf_err *err)
{
    if (compacted_at)
        *compacted_at = 0;
    struct snap *s = snap_get(cluster_snaps(k->c));
    int interval = s->cfg.etcd.compaction_interval;
    int64_t retention = s->cfg.etcd.compaction_retention;
    snap_put(s);
    if (interval <= 0 || !term_valid(k->t))
        return 0;
    const struct store *st = cluster_store(k->c);
    struct dhaf_etcd_status es;
    int rc = st->ops->status(st->ud, &es, err);
    if (rc != 0)
        return rc;
    int64_t target = es.revision - retention;
    if (target <= k->done_at || target <= 0)
        return 0; /* the revision has not advanced past the retention since */
    /* etcd cannot fence a compaction; only a valid term asks for one, and two leaders that
     * overlap for a moment do no harm: compacting twice at a revision is refused, not done */
    if (!term_valid(k->t))
        return 0;
    rc = st->ops->compact(st->ud, target, err);
    if (rc == DHAF_ECOMPACTED) {
        k->done_at = target; /* an earlier leader (or etcd's own auto-compaction) was there */
        return 0;
    }
    if (rc != 0)
        return rc;
    k->done_at = target;
    if (compacted_at)
        *compacted_at = target;
    metrics_compaction(target);
    DHAF_LOG(DHAF_LOG_INFO,
             "event=etcd-compacted revision=%lld compacted_to=%lld kept=%lld db_size=%lld "
             "db_size_in_use=%lld",
             (long long)es.revision, (long long)target, (long long)retention, (long long)es.db_size,
             (long long)es.db_size_in_use);
    return 0;
}

static void compact_body(struct worker *w)
{
    struct compactor *k = worker_ud(w);
    while (!worker_quit(w) && term_valid(k->t)) {
        struct snap *s = snap_get(cluster_snaps(k->c));
        int64_t interval_ms = (int64_t)s->cfg.etcd.compaction_interval * 1000;
        snap_put(s);
        if (interval_ms <= 0) {
            worker_wait(w, 0); /* off: only a reload (or the term's end) wakes it */
            continue;
        }
        /* the first one an interval after the term began, as every next one */
        if (!worker_wait(w, dhaf_mono_ms() + interval_ms) && !worker_quit(w)) {
            struct dhaf_err err;
            if (compactor_round(k, NULL, &err) != 0) {
                char q[300];
                DHAF_LOG_LIMITED("etcd-not-compacted", DHAF_LOG_WARN,
                                 "event=etcd-not-compacted reason=\"%s\"",
                                 dhaf_log_quote(q, sizeof(q), err.msg));
            }
        }
    }
}

static void compact_release(void *ud)
{
    compactor_free(ud);
}

static void *compact_start(struct term *t, void *ud)
{
    (void)ud;
    struct compactor *k = compactor_new(t);
    struct dhaf_err err;
    return term_worker_start(t, "etcd-compaction", compact_body, compact_release, k, 0, true, &err);
}

static bool compact_stop(void *handle, int deadline_ms)
{
    return term_worker_stop(handle, deadline_ms);
}

struct duty compactor_duty(struct cluster *c)
{
    return (struct duty){"etcd-compaction", compact_start, compact_stop, c};
}
