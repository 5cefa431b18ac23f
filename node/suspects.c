/* SPDX-License-Identifier: MIT */
/* Writing suspect/ keys: see suspects.h. */
#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/valid.h"
#include "snap.h"
#include "suspects.h"
#include "view.h"
#include "votes.h"

struct suspects {
    struct cluster *c;
    pthread_mutex_t lock;  /* guards what follows; never held across a call to etcd */
    int64_t lease;         /* shared by the suspicions written within half its TTL (0: none) */
    int64_t lease_ms;      /* when it was granted (monotonic) */
    int lease_ttl;         /* seconds */
    struct dhaf_rate rate; /* suspicions written (SUSPECT_MAX_PER_S) */
};

struct suspects *suspects_new(struct cluster *c)
{
    struct suspects *s = dhaf_xcalloc(1, sizeof(*s));
    s->c = c;
    pthread_mutex_init(&s->lock, NULL);
    return s;
}

void suspects_free(struct suspects *s)
{
    if (!s)
        return;
    pthread_mutex_destroy(&s->lock);
    free(s); /* the lease expires on its own, with the keys on it */
}

/* Whether ep is svc's current entry point in the view. */
static bool is_current(struct view *v, const char *svc, const char *ep)
{
    view_rdlock(v);
    const struct view_rec *rec = view_find(v, VS_STATE, svc);
    const char *cur = rec && rec->j ? dhaf_json_str(rec->j, "current") : NULL;
    bool yes = cur && strcmp(cur, ep) == 0;
    view_unlock(v);
    return yes;
}

/* The lease suspicions are written on: TTL two tacts (at least 2 s), a new one once half of it
 * has passed, so that a suspicion lives between one and two tacts. */
static int64_t lease_for(struct suspects *s, struct dhaf_err *err)
{
    struct snap *sn = snap_get(cluster_snaps(s->c));
    int ttl = 2 * sn->cfg.tact_interval;
    snap_put(sn);
    if (ttl < 2)
        ttl = 2;
    int64_t now = dhaf_clock_mono(cluster_clock(s->c));
    pthread_mutex_lock(&s->lock);
    int64_t id = s->lease && s->lease_ttl == ttl && now - s->lease_ms < ttl * 500LL ? s->lease : 0;
    pthread_mutex_unlock(&s->lock);
    if (id)
        return id;
    const struct store *st = cluster_store(s->c);
    if (st->ops->lease_grant(st->ud, ttl, &id, err) != 0)
        return 0;
    pthread_mutex_lock(&s->lock); /* (two threads may both grant one: the last is kept) */
    s->lease = id;
    s->lease_ms = now;
    s->lease_ttl = ttl;
    pthread_mutex_unlock(&s->lock);
    return id;
}

void suspects_raise(struct suspects *s, const char *voter, const struct dhaf_probe_result *r,
                    size_t n)
{
    size_t flagged = 0;
    for (size_t i = 0; i < n; i++)
        flagged += r[i].suspect;
    if (!flagged || vote_round_impaired(r, n))
        return;
    if (flagged > SUSPECT_MAX_AT_ONCE) {
        DHAF_LOG(DHAF_LOG_DEBUG,
                 "event=suspect-skipped voter=%s count=%zu note=\"so many at once "
                 "speak of the voter's own trouble\"",
                 voter, flagged);
        return;
    }
    struct view *v = cluster_view(s->c);
    for (size_t i = 0; i < n; i++) {
        if (!r[i].suspect || !is_current(v, r[i].service, r[i].ep))
            continue;
        int64_t now = dhaf_clock_mono(cluster_clock(s->c));
        pthread_mutex_lock(&s->lock);
        bool over = !dhaf_rate_take(&s->rate, now, SUSPECT_MAX_PER_S);
        pthread_mutex_unlock(&s->lock);
        if (over) {
            DHAF_LOG(DHAF_LOG_DEBUG,
                     "event=suspect-skipped service=%s ep=%s voter=%s "
                     "note=\"more than %d suspicions in a second\"",
                     r[i].service, r[i].ep, voter, SUSPECT_MAX_PER_S);
            continue;
        }
        struct dhaf_err err = {0};
        char path[3 * DHAF_NAME_MAX + 16], key[512];
        snprintf(path, sizeof(path), "suspect/%s/%s", r[i].service, r[i].ep);
        int64_t lease = lease_for(s, &err);
        int rc = DHAF_EUNAVAILABLE;
        if (lease && cluster_key(s->c, key, sizeof(key), path)) {
            json_t *j = json_pack("{s:s, s:I}", "voter", voter, "at",
                                  (json_int_t)dhaf_clock_wall(cluster_clock(s->c)));
            char *text = dhaf_json_dump(j);
            json_decref(j);
            rc = store_put(cluster_store(s->c), key, text, lease, &err);
            free(text);
            if (rc == DHAF_ENOTFOUND) { /* the lease expired under us: a new one next time */
                pthread_mutex_lock(&s->lock);
                if (s->lease == lease)
                    s->lease = 0;
                pthread_mutex_unlock(&s->lock);
            }
        }
        if (rc == 0)
            DHAF_LOG(DHAF_LOG_DEBUG, "event=suspect-raised service=%s ep=%s voter=%s", r[i].service,
                     r[i].ep, voter);
        else
            DHAF_LOG(DHAF_LOG_DEBUG, "event=suspect-not-written service=%s ep=%s reason=\"%s\"",
                     r[i].service, r[i].ep, err.msg);
    }
}
