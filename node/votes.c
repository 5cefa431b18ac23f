/* SPDX-License-Identifier: MIT */
/* Vote records (encode, validate) and the majority tally of fresh votes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/valid.h"
#include "votes.h"

struct dhaf_probe_result *vote_from_report(const struct dhaf_config *cfg,
                                           const Dhaf__V1__ReportRequest *req, struct dhaf_err *err)
{
    Dhaf__V1__CheckResult *const *results = req->results;
    size_t n = req->n_results;
    if (req->seq > INT64_MAX) { /* a vote's seq is a JSON integer: it would be unreadable */
        dhaf_err_set(err, DHAF_EINVAL, "seq %llu is larger than %lld", (unsigned long long)req->seq,
                     (long long)INT64_MAX);
        return NULL;
    }
    if (n > VOTE_MAX_RESULTS) {
        dhaf_err_set(err, DHAF_EINVAL, "%zu results; at most %d", n, VOTE_MAX_RESULTS);
        return NULL;
    }
    struct dhaf_probe_result *res = dhaf_xcalloc(n + 1, sizeof(*res));
    for (size_t i = 0; i < n; i++) {
        const Dhaf__V1__CheckResult *r = results[i];
        const struct dhaf_service *svc = dhaf_config_service(cfg, r->service);
        char qs[80], qe[80];
        if (!svc || dhaf_service_ep_index(svc, r->entry_point) < 0) {
            dhaf_err_set(err, DHAF_EINVAL, "result %zu: no entry point %s/%s in the plan", i,
                         dhaf_log_quote(qs, sizeof(qs), r->service),
                         dhaf_log_quote(qe, sizeof(qe), r->entry_point));
            free(res);
            return NULL;
        }
        if (r->reason[0] && (strlen(r->reason) > 32 || !dhaf_valid_name(r->reason))) {
            dhaf_err_set(err, DHAF_EINVAL,
                         "result %zu: reason code \"%s\" is not a code (1-32 of A-Z a-z 0-9 _ -)",
                         i, dhaf_log_quote(qs, sizeof(qs), r->reason));
            free(res);
            return NULL;
        }
        res[i].service = r->service;
        res[i].ep = r->entry_point;
        res[i].healthy = r->healthy;
        res[i].held = r->held;
        res[i].suspect = r->suspect && r->held;
        res[i].reason = r->reason;
        dhaf_utf8_clean(res[i].text, sizeof(res[i].text), r->reason_text);
        res[i].known = true;
    }
    return res;
}

bool vote_round_impaired(const struct dhaf_probe_result *r, size_t n)
{
    size_t checked = 0, failing = 0;
    for (size_t i = 0; i < n; i++) {
        checked += r[i].known;
        failing += r[i].known && (!r[i].healthy || r[i].held);
    }
    return checked >= 2 && failing == checked;
}

/* The opinion a vote carries for r: a held failure reads healthy (not yet witnessed), unless
 * the round is impaired - then the vote says what was seen, and counts for nothing. */
static bool carried(const struct dhaf_probe_result *r, bool impaired)
{
    return r->healthy && !(impaired && r->held);
}

char *vote_encode(const char *voter, const char *kind, uint64_t seq,
                  const struct dhaf_probe_result *r, size_t n)
{
    json_t *results = json_array();
    bool impaired = vote_round_impaired(r, n);
    for (size_t i = 0; i < n; i++) {
        if (!r[i].known)
            continue;
        json_t *o = json_object();
        bool healthy = carried(&r[i], impaired);
        json_object_set_new(o, "service", json_string(r[i].service));
        json_object_set_new(o, "ep", json_string(r[i].ep));
        json_object_set_new(o, "healthy", json_boolean(healthy));
        if (!healthy) {
            json_object_set_new(o, "reason", json_string(r[i].reason ? r[i].reason : ""));
            char text[VOTE_TEXT_WRITE + 1];
            if (dhaf_utf8_clean(text, sizeof(text), r[i].text))
                json_object_set_new(o, "text", json_string(text));
        }
        json_array_append_new(results, o);
    }
    json_t *v = json_object();
    json_object_set_new(v, "voter", json_string(voter));
    json_object_set_new(v, "kind", json_string(kind));
    json_object_set_new(v, "seq", json_integer((json_int_t)seq));
    json_object_set_new(v, "at", json_integer((json_int_t)dhaf_wall_ms()));
    json_object_set_new(v, "results", results);
    if (impaired)
        json_object_set_new(v, "impaired", json_true());
    char *text = dhaf_json_dump(v);
    json_decref(v);
    return text;
}

static const char *reason_of(const struct dhaf_probe_result *r, bool impaired)
{
    return carried(r, impaired) ? "" : r->reason ? r->reason : "";
}

/* Results are kept in (service, entry point) order, so a tally finds one by binary search. */
static int by_target(const void *x, const void *y)
{
    const struct vote_result *a = x, *b = y;
    int c = strcmp(a->service, b->service);
    return c ? c : strcmp(a->ep, b->ep);
}

#define POOL_BLOCK 16384

struct vote_pool {
    struct vote_pool *next;
    size_t used, cap;
    char data[];
};

/* A copy of s[0..len) in v's pool (blocks never move, so earlier copies stay valid). */
static const char *pool_str(struct vote *v, const char *s, size_t len)
{
    if (len == 0)
        return "";
    struct vote_pool *b = v->pool;
    if (!b || b->cap - b->used < len + 1) {
        size_t cap = len + 1 > POOL_BLOCK ? len + 1 : POOL_BLOCK;
        b = dhaf_xmalloc(sizeof(*b) + cap);
        b->next = v->pool;
        b->used = 0;
        b->cap = cap;
        v->pool = b;
    }
    char *out = b->data + b->used;
    memcpy(out, s, len);
    out[len] = 0;
    b->used += len + 1;
    return out;
}

void vote_release(struct vote *v)
{
    while (v->pool) {
        struct vote_pool *next = v->pool->next;
        free(v->pool);
        v->pool = next;
    }
    free(v->results);
    free(v->voter);
    free(v->kind);
    memset(v, 0, sizeof(*v));
}

/* A string member of at most max bytes, or NULL. */
static const char *bounded_str(const json_t *o, const char *key, size_t max)
{
    const char *s = dhaf_json_str(o, key);
    return s && strlen(s) <= max ? s : NULL;
}

int vote_decode(const char *text, size_t len, const char *what, const struct dhaf_config *cfg,
                struct vote *v, struct dhaf_err *err)
{
    memset(v, 0, sizeof(*v));
    json_t *j = NULL;
    int rc = dhaf_json_parse_object(text, len, what, &j, err);
    if (rc)
        return rc;
    const char *voter = bounded_str(j, "voter", DHAF_NAME_MAX);
    const char *kind = bounded_str(j, "kind", 16);
    int64_t seq = 0, at = 0;
    const json_t *results = json_object_get(j, "results");
    if (!voter || !dhaf_valid_name(voter) || !kind ||
        (strcmp(kind, "node") && strcmp(kind, "prober")) || dhaf_json_int(j, "seq", &seq) ||
        seq < 0 || !json_is_array(results) || json_array_size(results) > VOTE_MAX_RESULTS) {
        json_decref(j);
        return dhaf_err_set(err, DHAF_EINVAL,
                            "%s: not a vote (needs voter, kind node|prober, seq, results[])", what);
    }
    dhaf_json_int(j, "at", &at);
    v->voter = dhaf_xstrdup(voter);
    v->kind = dhaf_xstrdup(kind);
    v->seq = (uint64_t)seq;
    v->at_ms = at;
    v->impaired = json_is_true(json_object_get(j, "impaired"));
    v->results = dhaf_xcalloc(json_array_size(results) + 1, sizeof(*v->results));
    size_t i;
    const json_t *r;
    json_array_foreach(results, i, r)
    {
        const char *svc = bounded_str(r, "service", DHAF_NAME_MAX);
        const char *ep = bounded_str(r, "ep", DHAF_NAME_MAX);
        const json_t *h = json_object_get(r, "healthy");
        if (!svc || !ep || !json_is_boolean(h)) {
            vote_release(v);
            json_decref(j);
            return dhaf_err_set(err, DHAF_EINVAL,
                                "%s: result %zu needs service, ep and a boolean healthy", what, i);
        }
        const struct dhaf_service *s = cfg ? dhaf_config_service(cfg, svc) : NULL;
        if (cfg && (!s || dhaf_service_ep_index(s, ep) < 0))
            continue; /* not (or no longer) in our config */
        struct vote_result *vr = &v->results[v->n++];
        vr->service = pool_str(v, svc, strlen(svc));
        vr->ep = pool_str(v, ep, strlen(ep));
        vr->healthy = json_is_true(h);
        const char *reason = vr->healthy ? NULL : bounded_str(r, "reason", 32);
        const char *t = vr->healthy ? NULL : dhaf_json_str(r, "text");
        vr->reason = reason ? pool_str(v, reason, strlen(reason)) : "";
        vr->text = t ? pool_str(v, t, strnlen(t, VOTE_TEXT_MAX)) : "";
    }
    json_decref(j);
    qsort(v->results, v->n, sizeof(*v->results), by_target);
    /* one opinion per voter and entry point: a target named twice keeps one result */
    size_t kept = 0;
    for (size_t k = 0; k < v->n; k++) {
        if (kept && by_target(&v->results[kept - 1], &v->results[k]) == 0)
            continue;
        v->results[kept++] = v->results[k];
    }
    v->n = kept;
    return 0;
}

const struct vote_result *vote_find(const struct vote *v, const char *service, const char *ep)
{
    struct vote_result key = {.service = service, .ep = ep};
    return v->n ? bsearch(&key, v->results, v->n, sizeof(*v->results), by_target) : NULL;
}

bool vote_same(const struct vote *v, const struct dhaf_probe_result *r, size_t n)
{
    size_t known = 0;
    bool impaired = vote_round_impaired(r, n);
    if (impaired != v->impaired)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!r[i].known)
            continue;
        known++;
        const struct vote_result *vr = vote_find(v, r[i].service, r[i].ep);
        if (!vr || vr->healthy != carried(&r[i], impaired) ||
            strcmp(vr->reason, reason_of(&r[i], impaired)) != 0)
            return false;
    }
    return known == v->n;
}

unsigned quorum_need(const struct dhaf_config *cfg, unsigned expected)
{
    if (cfg->min_voters > 0)
        return (unsigned)cfg->min_voters;
    return expected / 2 + 1;
}

bool vote_has_service(const struct vote *v, const struct dhaf_service *svc)
{
    for (size_t e = 0; e < svc->n_eps; e++)
        if (vote_find(v, svc->name, svc->eps[e].name))
            return true;
    return false;
}

unsigned tally_service(const struct dhaf_service *svc, const struct vote *const *votes, size_t n,
                       struct ep_tally *out)
{
    unsigned fresh = 0;
    for (size_t i = 0; i < n; i++)
        fresh += vote_has_service(votes[i], svc);
    for (size_t e = 0; e < svc->n_eps; e++) {
        struct ep_tally *t = &out[e];
        memset(t, 0, sizeof(*t));
        for (size_t i = 0; i < n; i++) {
            const struct vote *v = votes[i];
            const struct vote_result *r = vote_find(v, svc->name, svc->eps[e].name);
            if (!r)
                continue;
            t->voters++;
            if (r->healthy) {
                t->healthy++;
            } else {
                t->unhealthy++;
                size_t used = strlen(t->reasons);
                snprintf(t->reasons + used, sizeof(t->reasons) - used, "%s%s: %s%s%s",
                         used ? "; " : "", v->voter, r->reason, r->text[0] ? " " : "", r->text);
            }
        }
        t->known = t->voters > 0;
        /* Unhealthy only if a strict majority of the voters that checked it says so. */
        t->is_healthy = !(t->known && t->unhealthy * 2 > t->voters);
    }
    return fresh;
}

unsigned tally_votes(const struct dhaf_config *cfg, const struct dhaf_service *svc,
                     const struct vote *const *votes, size_t n, unsigned expected,
                     struct ep_tally *out, struct quorum *q)
{
    const struct vote *sv[64] = {NULL};
    const struct vote **use = n <= 64 ? sv : dhaf_xcalloc(n, sizeof(*use));
    size_t k = 0;
    unsigned impaired = 0;
    for (size_t i = 0; i < n; i++) {
        if (votes[i]->impaired) /* counted, not tallied */
            impaired += vote_has_service(votes[i], svc);
        else
            use[k++] = votes[i];
    }
    unsigned fresh = tally_service(svc, use, k, out);
    bool all_impaired = fresh == 0 && impaired > 0;
    if (all_impaired) {
        /* Every fresh voter sees every entry point fail: a real outage of everything, or of
         * dhaf's whole network - from nowhere is anything up. Their votes are tallied then:
         * all down means panic (nothing is switched) and service-down is announced, as the
         * operator must hear; without them it would only be no-quorum. */
        fresh = tally_service(svc, votes, n, out);
    }
    if (use != sv)
        free(use);
    if (q)
        *q = (struct quorum){.fresh = fresh,
                             .impaired = all_impaired ? 0 : impaired,
                             .all_impaired = all_impaired,
                             .expected = expected,
                             .need = quorum_need(cfg, expected)};
    return fresh;
}
