/* SPDX-License-Identifier: MIT */
/* Probe rounds: group targets by checker type, run each type's check() in parallel, then
 * smooth each entry point's opinion with rise/fall. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/log.h"
#include "dhaf/probe.h"
#include "dhaf/provider.h"
#include "dhaf/registry.h"

struct svc_state {
    const struct dhaf_service *svc;
    const struct dhaf_provider *prov;
    void *state;
};

struct ep_state {
    bool known;   /* an opinion exists */
    bool opinion; /* healthy? */
    int streak;   /* results in a row against the opinion */
};

struct dhaf_probe {
    struct svc_state *svcs;
    size_t n_svcs;
    struct dhaf_check_target *targets;
    struct dhaf_check_result *raw;
    struct ep_state *eps;
    struct dhaf_probe_result *out;
    size_t n; /* entry points in all */
};

struct dhaf_probe *dhaf_probe_new(const struct dhaf_service *svcs, size_t n, struct dhaf_err *err)
{
    struct dhaf_probe *p = dhaf_xcalloc(1, sizeof(*p));
    p->svcs = dhaf_xcalloc(n ? n : 1, sizeof(*p->svcs));
    p->n_svcs = n;
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += svcs[i].n_eps;
    p->n = total;
    p->targets = dhaf_xcalloc(total ? total : 1, sizeof(*p->targets));
    p->raw = dhaf_xcalloc(total ? total : 1, sizeof(*p->raw));
    p->eps = dhaf_xcalloc(total ? total : 1, sizeof(*p->eps));
    p->out = dhaf_xcalloc(total ? total : 1, sizeof(*p->out));
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        struct svc_state *s = &p->svcs[i];
        s->svc = &svcs[i];
        s->prov = dhaf_registry_find(DHAF_PKIND_CHECKER, svcs[i].checker.type);
        if (!s->prov || !s->prov->check) {
            dhaf_err_set(err, DHAF_EINVAL, "service %s: no health checker \"%s\"", svcs[i].name,
                         svcs[i].checker.type);
            dhaf_probe_free(p);
            return NULL;
        }
        struct dhaf_provider_ctx ctx = {.service = svcs[i].name,
                                        .domain = svcs[i].domain,
                                        .eps = svcs[i].eps,
                                        .n_eps = svcs[i].n_eps};
        if (s->prov->init && s->prov->init(svcs[i].checker.conf, &ctx, &s->state, err) != 0) {
            char msg[DHAF_ERR_MSG_MAX];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            dhaf_err_set(err, err->code, "service %s: %s checker: %s", svcs[i].name, s->prov->type,
                         msg);
            s->prov = NULL; /* not initialised: nothing to destroy */
            dhaf_probe_free(p);
            return NULL;
        }
        for (size_t e = 0; e < svcs[i].n_eps; e++, k++) {
            struct dhaf_check_target *t = &p->targets[k];
            t->conf = svcs[i].checker.conf;
            t->state = s->state;
            t->service = svcs[i].name;
            t->domain = svcs[i].domain;
            t->ep_name = svcs[i].eps[e].name;
            t->ep_ip = svcs[i].eps[e].ip;
            t->family = svcs[i].eps[e].family;
            t->result = &p->raw[k];
        }
    }
    return p;
}

void dhaf_probe_free(struct dhaf_probe *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_svcs; i++)
        if (p->svcs[i].prov && p->svcs[i].prov->destroy)
            p->svcs[i].prov->destroy(p->svcs[i].state);
    free(p->svcs);
    free(p->targets);
    free(p->raw);
    free(p->eps);
    free(p->out);
    free(p);
}

/* The targets of one checker type, checked by one thread. */
struct group {
    const struct dhaf_provider *prov;
    struct dhaf_check_target *targets; /* copies, contiguous for check() */
    size_t n;
    pthread_t thread;
    bool started;
};

static void *run_group(void *arg)
{
    struct group *g = arg;
    g->prov->check(g->targets, g->n);
    return NULL;
}

/* Applies rise/fall to one fresh result. */
static void smooth(struct ep_state *st, bool raw, int rise, int fall)
{
    if (!st->known) {
        st->known = true;
        st->opinion = raw;
        st->streak = 0;
        return;
    }
    if (raw == st->opinion) {
        st->streak = 0;
        return;
    }
    if (++st->streak >= (raw ? rise : fall)) {
        st->opinion = raw;
        st->streak = 0;
    }
}

void dhaf_probe_round(struct dhaf_probe *p, const struct dhaf_probe_result **out, size_t *n_out)
{
    /* Group by provider: usually three built-in types at most. */
    struct group groups[32];
    size_t n_groups = 0;
    memset(groups, 0, sizeof(groups));
    for (size_t k = 0; k < p->n; k++) {
        memset(&p->raw[k], 0, sizeof(p->raw[k]));
        p->raw[k].reason = "internal";
        snprintf(p->raw[k].text, sizeof(p->raw[k].text), "not checked");
    }
    size_t k = 0;
    for (size_t i = 0; i < p->n_svcs; i++) {
        const struct dhaf_provider *prov = p->svcs[i].prov;
        size_t g = 0;
        while (g < n_groups && groups[g].prov != prov)
            g++;
        if (g == n_groups && n_groups < 32) {
            groups[g].prov = prov;
            groups[g].targets = dhaf_xcalloc(p->n, sizeof(*groups[g].targets));
            n_groups++;
        }
        for (size_t e = 0; e < p->svcs[i].svc->n_eps; e++, k++)
            if (g < n_groups)
                groups[g].targets[groups[g].n++] = p->targets[k];
    }
    /* One thread per type; the last type (or one whose thread could not start) runs here. */
    for (size_t g = 0; g < n_groups; g++) {
        bool last = g + 1 == n_groups;
        groups[g].started =
            !last && pthread_create(&groups[g].thread, NULL, run_group, &groups[g]) == 0;
        if (!groups[g].started)
            run_group(&groups[g]);
    }
    for (size_t g = 0; g < n_groups; g++) {
        if (groups[g].started)
            pthread_join(groups[g].thread, NULL);
        free(groups[g].targets);
    }
    k = 0;
    for (size_t i = 0; i < p->n_svcs; i++) {
        const struct dhaf_section *hc = &p->svcs[i].svc->checker;
        for (size_t e = 0; e < p->svcs[i].svc->n_eps; e++, k++) {
            const struct dhaf_check_result *r = &p->raw[k];
            smooth(&p->eps[k], r->healthy, hc->rise > 0 ? hc->rise : 1,
                   hc->fall > 0 ? hc->fall : 1);
            struct dhaf_probe_result *o = &p->out[k];
            o->service = p->targets[k].service;
            o->ep = p->targets[k].ep_name;
            o->healthy = p->eps[k].opinion;
            o->raw_healthy = r->healthy;
            o->reason = r->reason ? r->reason : "internal";
            snprintf(o->text, sizeof(o->text), "%s", r->text);
            o->latency_ms = r->latency_ms;
        }
    }
    *out = p->out;
    *n_out = p->n;
}
