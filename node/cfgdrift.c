/* SPDX-License-Identifier: MIT */
/* Config drift: config/<node> against the other alive nodes, and the leader's announcements. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfgdrift.h"
#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "outbox.h"
#include "snap.h"
#include "worker.h"

/* ------------------------------------------------------------------ reading */

/* A published full hash: 64 lower-case hex digits. Anything else is ignored (a broken or
 * foreign record must not make a drift of its own). */
static bool hash_ok(const char *h)
{
    return h && strlen(h) == CFGHASH_HEX - 1 && strspn(h, "0123456789abcdef") == CFGHASH_HEX - 1;
}

void cfgdrift_read(const struct view *v, struct cfgdrift *out)
{
    memset(out, 0, sizeof(*out));
    size_t n = view_count(v, VS_ALIVE);
    out->nodes = dhaf_xcalloc(n + 1, sizeof(*out->nodes));
    /* the full hash of each alive node, and its record for the parts */
    const json_t **recs = dhaf_xcalloc(n + 1, sizeof(*recs));
    const char **full = dhaf_xcalloc(n + 1, sizeof(*full));
    for (size_t i = 0; i < n; i++) {
        const struct view_rec *a = view_at(v, VS_ALIVE, i);
        struct cfgdrift_node *nd = &out->nodes[out->n++];
        snprintf(nd->name, sizeof(nd->name), "%s", a->name);
        const struct view_rec *c = view_find(v, VS_CONFIG, a->name);
        const char *h = c && c->j ? dhaf_json_str(c->j, "hash") : NULL;
        if (!hash_ok(h))
            continue;
        full[i] = h;
        recs[i] = c->j;
        snprintf(nd->hash, sizeof(nd->hash), "%.*s", CFGHASH_SHORT, h);
    }
    /* the reference: the hash most nodes publish; a tie goes to the leader's, else to the
     * smallest (every node picks the same) */
    const struct view_rec *lk = view_leader(v);
    const char *leader = lk && lk->j ? dhaf_json_str(lk->j, "node") : NULL;
    const char *ref = NULL;
    size_t ref_n = 0, ref_at = 0, kinds = 0;
    for (size_t i = 0; i < n; i++) {
        if (!full[i])
            continue;
        size_t cnt = 0;
        bool first = true;
        for (size_t k = 0; k < n; k++)
            if (full[k] && strcmp(full[k], full[i]) == 0) {
                cnt++;
                first = first && k >= i;
            }
        kinds += first;
        bool is_leader = leader && strcmp(out->nodes[i].name, leader) == 0;
        bool ref_leader = ref && leader && strcmp(out->nodes[ref_at].name, leader) == 0;
        if (!ref || cnt > ref_n ||
            (cnt == ref_n && strcmp(full[i], ref) != 0 &&
             (is_leader || (!ref_leader && strcmp(full[i], ref) < 0)))) {
            ref = full[i];
            ref_n = cnt;
            ref_at = i;
        }
    }
    out->drift = kinds > 1;
    if (ref)
        snprintf(out->ref, sizeof(out->ref), "%.*s", CFGHASH_SHORT, ref);
    const json_t *ref_parts = ref ? json_object_get(recs[ref_at], "parts") : NULL;
    for (size_t i = 0; i < n && out->drift; i++) {
        if (!full[i] || strcmp(full[i], ref) == 0)
            continue;
        struct cfgdrift_node *nd = &out->nodes[i];
        nd->differs = true;
        out->n_differ++;
        const json_t *parts = json_object_get(recs[i], "parts");
        size_t w = 0;
        for (int p = 0; p < CFGP_N; p++) {
            const char *name = cfghash_part_name(p);
            const char *a = dhaf_json_str(parts, name), *b = dhaf_json_str(ref_parts, name);
            if (a && b && strcmp(a, b) != 0 && w < sizeof(nd->parts))
                w += (size_t)snprintf(nd->parts + w, sizeof(nd->parts) - w, "%s%s", w ? "," : "",
                                      name);
        }
    }
    free(recs);
    free(full);
}

void cfgdrift_release(struct cfgdrift *d)
{
    free(d->nodes);
    memset(d, 0, sizeof(*d));
}

const char *cfgdrift_summary(const struct cfgdrift *d, char *buf, size_t len)
{
    if (!len)
        return buf;
    buf[0] = '\0';
    if (!d->drift)
        return buf;
    size_t w = 0;
    for (size_t i = 0; i < d->n && w < len; i++) {
        const struct cfgdrift_node *nd = &d->nodes[i];
        if (!nd->differs)
            continue;
        w += (size_t)snprintf(buf + w, len - w, "%s%s has %s%s%s%s", w ? "; " : "", nd->name,
                              nd->hash, nd->parts[0] ? " (" : "", nd->parts,
                              nd->parts[0] ? " differ)" : "");
    }
    if (w < len)
        snprintf(buf + w, len - w, "; the others %s", d->ref);
    return buf;
}

/* ------------------------------------------------------------------ publishing */

char *cfgdrift_record(const struct dhaf_config *cfg, uint64_t gen)
{
    struct cfghash h;
    if (cfghash_compute(cfg, &h) != 0) {
        DHAF_LOG(DHAF_LOG_ERROR, "event=config-hash-failed reason=\"SHA-256 failed\"");
        return NULL;
    }
    DHAF_LOG(DHAF_LOG_INFO, "event=config-hash node=%s hash=%.*s generation=%llu", cfg->node_name,
             CFGHASH_SHORT, h.hash, (unsigned long long)gen);
    return cfghash_record(&h, gen);
}

/* ------------------------------------------------------------------ the leader's duty */

struct announcer {
    struct cluster *c;
    struct term *t;
    int64_t drift_since; /* monotonic ms (cluster clock) this leader first saw the drift; 0: none */
};

/* Announces a drift that has lasted the grace, or the end of an announced one. Returns the
 * monotonic deadline of the next look (0: only when kicked). */
static int64_t announce(struct announcer *an)
{
    struct view *v = cluster_view(an->c);
    const struct dhaf_clock *clk = cluster_clock(an->c);
    struct snap *s = snap_get(cluster_snaps(an->c));
    int64_t grace_ms = (int64_t)s->cfg.config_drift_grace * 1000;
    snap_put(s);

    view_rdlock(v);
    struct view_sync vs = view_sync(v);
    struct cfgdrift d;
    cfgdrift_read(v, &d);
    const struct view_rec *said = view_find(v, VS_DRIFT, "config-drift");
    bool announced = said && said->j && json_is_true(json_object_get(said->j, "drift"));
    int64_t said_rev = said ? said->mod_rev : 0;
    view_unlock(v);

    int64_t next = 0;
    if (!vs.synced || d.drift == announced) {
        if (!d.drift)
            an->drift_since = 0;
        goto out;
    }
    int64_t now = dhaf_clock_mono(clk);
    if (d.drift) {
        /* a rolling change (one node reloaded before the others) is not news yet */
        if (!an->drift_since)
            an->drift_since = now;
        if (now - an->drift_since < grace_ms) {
            next = dhaf_mono_ms() + (grace_ms - (now - an->drift_since));
            goto out;
        }
    } else {
        an->drift_since = 0;
    }
    char summary[600], detail[700], key[300];
    cfgdrift_summary(&d, summary, sizeof(summary));
    cluster_key(an->c, key, sizeof(key), "config-drift");
    json_t *differing = json_array();
    const char *first = NULL;
    for (size_t i = 0; i < d.n; i++)
        if (d.nodes[i].differs) {
            json_array_append_new(differing,
                                  json_pack("{s:s, s:s, s:s}", "node", d.nodes[i].name, "hash",
                                            d.nodes[i].hash, "parts", d.nodes[i].parts));
            if (!first)
                first = d.nodes[i].name;
        }
    json_t *rec =
        json_pack("{s:b, s:I, s:s, s:o}", "drift", d.drift, "at", (json_int_t)dhaf_clock_wall(clk),
                  "hash", d.ref, "differing", differing);
    char *text = dhaf_json_dump(rec);
    json_decref(rec);
    if (d.drift)
        snprintf(detail, sizeof(detail), ": %s", summary);
    else
        snprintf(detail, sizeof(detail), " (every alive node has %s)", d.ref[0] ? d.ref : "none");
    struct dhaf_etcd_cmp cmp = {.key = key,
                                .target = said_rev ? DHAF_ETCD_MOD_REV : DHAF_ETCD_CREATE_REV,
                                .result = DHAF_ETCD_EQ,
                                .num = said_rev};
    struct dhaf_etcd_op put = {.type = DHAF_ETCD_OP_PUT, .key = key, .value = text};
    struct event ev = {.kind = d.drift ? EVK_CONFIG_DRIFT : EVK_CONFIG_DRIFT_CLEARED,
                       .node = first,
                       .detail = detail};
    struct dhaf_err err;
    int rc = outbox_commit(an->t, &cmp, 1, &put, 1, &ev, 1, &err);
    free(text);
    if (rc != 0 && rc != DHAF_ECONFLICT && rc != DHAF_EFENCED) {
        char q[300];
        DHAF_LOG_LIMITED("config-drift-not-written", DHAF_LOG_WARN,
                         "event=config-drift-not-written reason=\"%s\"",
                         dhaf_log_quote(q, sizeof(q), err.msg));
        next = dhaf_mono_ms() + 1000;
    }
    /* a conflict: config-drift changed meanwhile; the view brings it with a kick */
out:
    cfgdrift_release(&d);
    return next;
}

static void run(struct worker *w)
{
    struct announcer *an = worker_ud(w);
    while (!worker_quit(w) && term_valid(an->t))
        worker_wait(w, announce(an));
}

static void announcer_release(void *ud)
{
    struct announcer *an = ud;
    term_put(an->t);
    free(an);
}

static void *cfgdrift_start(struct term *t, void *ud)
{
    struct announcer *an = dhaf_xcalloc(1, sizeof(*an));
    an->c = ud;
    an->t = t;
    term_hold(t);
    struct dhaf_err err;
    /* kicked by config/, alive/ and config-drift changes (VIEW_MEMBERS), a synced view, and a
     * reload (the grace may change) */
    return term_worker_start(t, "cfgdrift", run, announcer_release, an, VIEW_MEMBERS | VIEW_SYNC,
                             true, &err);
}

static bool cfgdrift_stop(void *handle, int deadline_ms)
{
    return term_worker_stop(handle, deadline_ms);
}

struct duty cfgdrift_duty(struct cluster *c)
{
    return (struct duty){"cfgdrift", cfgdrift_start, cfgdrift_stop, c};
}
