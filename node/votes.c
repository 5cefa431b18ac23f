/* SPDX-License-Identifier: MIT */
/* Vote records (encode, validate) and the majority tally of fresh votes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/json.h"
#include "dhaf/valid.h"
#include "votes.h"

char *vote_encode(const char *voter, const char *kind, uint64_t seq,
                  const struct dhaf_probe_result *r, size_t n)
{
    json_t *results = json_array();
    for (size_t i = 0; i < n; i++) {
        json_t *o = json_object();
        json_object_set_new(o, "service", json_string(r[i].service));
        json_object_set_new(o, "ep", json_string(r[i].ep));
        json_object_set_new(o, "healthy", json_boolean(r[i].healthy));
        json_object_set_new(o, "reason", json_string(r[i].reason ? r[i].reason : ""));
        json_object_set_new(o, "text", json_string(r[i].text));
        json_object_set_new(o, "latency_ms", json_integer(r[i].latency_ms));
        json_array_append_new(results, o);
    }
    json_t *v = json_object();
    json_object_set_new(v, "voter", json_string(voter));
    json_object_set_new(v, "kind", json_string(kind));
    json_object_set_new(v, "seq", json_integer((json_int_t)seq));
    json_object_set_new(v, "at", json_integer((json_int_t)dhaf_wall_ms()));
    json_object_set_new(v, "results", results);
    char *text = dhaf_json_dump(v);
    json_decref(v);
    return text;
}

/* Results are kept in (service, entry point) order, so a tally finds one by binary search. */
static int by_target(const void *x, const void *y)
{
    const struct vote_result *a = x, *b = y;
    int c = strcmp(a->service, b->service);
    return c ? c : strcmp(a->ep, b->ep);
}

void vote_release(struct vote *v)
{
    for (size_t i = 0; i < v->n; i++) {
        free(v->results[i].service);
        free(v->results[i].ep);
        free(v->results[i].reason);
        free(v->results[i].text);
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
        vr->service = dhaf_xstrdup(svc);
        vr->ep = dhaf_xstrdup(ep);
        vr->healthy = json_is_true(h);
        const char *reason = bounded_str(r, "reason", 32);
        const char *t = dhaf_json_str(r, "text");
        vr->reason = dhaf_xstrdup(reason ? reason : "");
        vr->text = dhaf_xstrndup(t ? t : "", t ? strnlen(t, VOTE_TEXT_MAX) : 0);
        int64_t lat = 0;
        if (dhaf_json_int(r, "latency_ms", &lat) == 0 && lat >= 0 && lat < 86400000)
            vr->latency_ms = (uint32_t)lat;
    }
    json_decref(j);
    qsort(v->results, v->n, sizeof(*v->results), by_target);
    /* one opinion per voter and entry point: a target named twice keeps one result */
    size_t kept = 0;
    for (size_t k = 0; k < v->n; k++) {
        if (kept && by_target(&v->results[kept - 1], &v->results[k]) == 0) {
            free(v->results[k].service);
            free(v->results[k].ep);
            free(v->results[k].reason);
            free(v->results[k].text);
            continue;
        }
        v->results[kept++] = v->results[k];
    }
    v->n = kept;
    return 0;
}

const struct vote_result *vote_find(const struct vote *v, const char *service, const char *ep)
{
    struct vote_result key = {.service = (char *)service, .ep = (char *)ep};
    return v->n ? bsearch(&key, v->results, v->n, sizeof(*v->results), by_target) : NULL;
}

void tally_service(const struct dhaf_service *svc, const struct seen_vote *votes, size_t n,
                   int64_t now_ms, int64_t fresh_ms, struct ep_tally *out)
{
    for (size_t e = 0; e < svc->n_eps; e++) {
        struct ep_tally *t = &out[e];
        memset(t, 0, sizeof(*t));
        for (size_t i = 0; i < n; i++) {
            if (votes[i].seen_ms <= 0 || now_ms - votes[i].seen_ms > fresh_ms)
                continue; /* never seen written, or stale: the voter stopped rewriting it */
            const struct vote *v = votes[i].vote;
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
}
