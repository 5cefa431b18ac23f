/* SPDX-License-Identifier: MIT */
/* The prober's probe plan: limits, the exec-allow rule, and the services built from a plan. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/cfgkeys.h"
#include "dhaf/registry.h"
#include "dhaf/valid.h"
#include "plan.h"

int plan_check_limits(const Dhaf__V1__ProbePlan *m, struct dhaf_err *err)
{
    if (m->n_services > PLAN_MAX_SERVICES)
        return dhaf_err_set(err, DHAF_ETOOBIG, "plan: %zu services; a prober takes at most %d",
                            m->n_services, PLAN_MAX_SERVICES);
    if (m->interval_s > PLAN_MAX_INTERVAL_S)
        return dhaf_err_set(err, DHAF_EINVAL, "plan: interval %u s; at most %d s", m->interval_s,
                            PLAN_MAX_INTERVAL_S);
    size_t total = 0;
    for (size_t i = 0; i < m->n_services; i++) {
        const Dhaf__V1__PlanService *ps = m->services[i];
        if (ps->n_entry_points > PLAN_MAX_EPS_PER_SERVICE)
            return dhaf_err_set(err, DHAF_ETOOBIG,
                                "plan: service %zu has %zu entry points; at most %d per service", i,
                                ps->n_entry_points, PLAN_MAX_EPS_PER_SERVICE);
        total += ps->n_entry_points;
        if (total > PLAN_MAX_EPS)
            return dhaf_err_set(err, DHAF_ETOOBIG,
                                "plan: more than %d entry points in all (a vote holds at most %d "
                                "results)",
                                PLAN_MAX_EPS, PLAN_MAX_EPS);
        size_t cj = ps->checker_json ? strlen(ps->checker_json) : 0;
        if (cj > PLAN_MAX_CHECKER_JSON)
            return dhaf_err_set(err, DHAF_ETOOBIG,
                                "plan: service %zu: health checker of %zu bytes; at most %d", i, cj,
                                PLAN_MAX_CHECKER_JSON);
    }
    size_t len = dhaf__v1__probe_plan__get_packed_size(m);
    if (len > PLAN_MAX_BYTES)
        return dhaf_err_set(err, DHAF_ETOOBIG, "plan: %zu bytes; a prober takes at most %d", len,
                            PLAN_MAX_BYTES);
    return 0;
}

/* An absolute path with no empty, "." or ".." component (a trailing '/' is allowed when dir). */
static bool normalised(const char *p, bool dir)
{
    if (p[0] != '/')
        return false;
    const char *c = p + 1;
    while (*c) {
        const char *e = strchr(c, '/');
        size_t n = e ? (size_t)(e - c) : strlen(c);
        if (n == 0 || (n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return false;
        if (!e)
            break;
        c = e + 1;
        if (!*c && !dir)
            return false; /* "/a/b/" names a directory, not a program */
    }
    return true;
}

int plan_check_allow_entry(const char *entry, char *why, size_t wl)
{
    size_t n = strlen(entry);
    if (entry[0] != '/') {
        snprintf(why, wl, "\"%.200s\" is not an absolute path", entry);
        return -1;
    }
    if (n == 1) {
        snprintf(why, wl, "\"/\" would allow every program: name a directory of checks");
        return -1;
    }
    if (!normalised(entry, true)) {
        snprintf(why, wl, "\"%.200s\" has an empty, \".\" or \"..\" component", entry);
        return -1;
    }
    return 0;
}

bool plan_exec_allowed(const struct dhaf_strlist *allow, const char *path)
{
    if (!allow || !path || !normalised(path, false))
        return false;
    size_t pl = strlen(path);
    for (size_t i = 0; i < allow->n; i++) {
        const char *a = allow->v[i];
        size_t al = strlen(a);
        if (al && a[al - 1] == '/') {
            if (pl > al && strncmp(path, a, al) == 0)
                return true;
        } else if (strcmp(path, a) == 0) {
            return true;
        }
    }
    return false;
}

/* Why pol forbids section s (written to why), or NULL when it may run. An exec checker runs
 * the programs of its path keys (init, check): each must be allowed; every one that is not is
 * named. */
static const char *forbidden(const struct dhaf_section *s, const struct plan_policy *pol, char *why,
                             size_t wl)
{
    const struct dhaf_provider *prov =
        s->type ? dhaf_registry_find(DHAF_PKIND_CHECKER, s->type) : NULL;
    if (!prov || strcmp(prov->type, "exec") != 0 || !s->keys || !s->conf)
        return NULL;
    size_t o = 0;
    for (const struct dhaf_cfgkey *k = s->keys; k->key; k++) {
        if (k->type != DHAF_CFG_PATH)
            continue;
        const char *v = *(char *const *)((const char *)s->conf + k->offset);
        if (!v || plan_exec_allowed(pol ? pol->exec_allow : NULL, v))
            continue;
        if (o == 0)
            o = (size_t)snprintf(why, wl, "exec checker program not allowed by prober.exec-allow:");
        if (o < wl)
            o += (size_t)snprintf(why + o, wl - o, " %s %.160s", k->key, v);
    }
    return o ? why : NULL;
}

static int cmp_name(const void *a, const void *b)
{
    const Dhaf__V1__PlanService *const *x = a, *const *y = b;
    return strcmp((*x)->name, (*y)->name);
}

/* The name of a service that appears twice, or NULL. */
static const char *duplicate_service(const Dhaf__V1__ProbePlan *m)
{
    if (m->n_services < 2)
        return NULL;
    const Dhaf__V1__PlanService **v = dhaf_xcalloc(m->n_services, sizeof(*v));
    memcpy(v, m->services, m->n_services * sizeof(*v));
    qsort(v, m->n_services, sizeof(*v), cmp_name);
    const char *dup = NULL;
    for (size_t i = 1; i < m->n_services && !dup; i++)
        if (strcmp(v[i - 1]->name, v[i]->name) == 0)
            dup = v[i]->name;
    free(v);
    return dup;
}

static void service_release(struct dhaf_service *s)
{
    for (size_t e = 0; e < s->n_eps; e++) {
        free(s->eps[e].name);
        free(s->eps[e].ip);
    }
    free(s->eps);
    free(s->name);
    free(s->domain);
    dhaf_section_release(&s->checker);
    memset(s, 0, sizeof(*s));
}

/* Builds one service of the plan into s; a malformed one is an error of the whole plan. A
 * forbidden checker leaves s empty and writes the reason to why (returns 1). */
static int service_build(struct dhaf_service *s, const Dhaf__V1__PlanService *ps, size_t i,
                         const struct plan_policy *pol, char *why, size_t wl, struct dhaf_err *err)
{
    if (!dhaf_valid_name(ps->name))
        return dhaf_err_set(err, DHAF_EINVAL, "plan: service %zu has no valid name", i);
    if (!ps->n_entry_points)
        return dhaf_err_set(err, DHAF_EINVAL, "plan: service %s has no entry point", ps->name);
    s->name = dhaf_xstrdup(ps->name);
    s->domain = dhaf_xstrdup(ps->domain ? ps->domain : "");
    s->eps = dhaf_xcalloc(ps->n_entry_points, sizeof(*s->eps));
    for (size_t e = 0; e < ps->n_entry_points; e++) {
        const Dhaf__V1__PlanEntryPoint *pe = ps->entry_points[e];
        if (!dhaf_valid_name(pe->name) || !dhaf_valid_ip(pe->ip, &s->eps[e].family))
            return dhaf_err_set(err, DHAF_EINVAL, "plan: service %s: entry point %zu is malformed",
                                ps->name, e);
        for (size_t d = 0; d < e; d++)
            if (strcmp(s->eps[d].name, pe->name) == 0)
                return dhaf_err_set(err, DHAF_EINVAL,
                                    "plan: service %s: entry point %s appears twice", ps->name,
                                    pe->name);
        s->eps[e].name = dhaf_xstrdup(pe->name);
        s->eps[e].ip = dhaf_xstrdup(pe->ip);
        s->n_eps++;
    }
    struct dhaf_cfg_report rep;
    char what[128];
    snprintf(what, sizeof(what), "plan.%s.health-checker", ps->name);
    dhaf_cfg_report_init(&rep, "plan");
    const char *cj = ps->checker_json ? ps->checker_json : "";
    int rc = dhaf_section_load_mem(DHAF_PKIND_CHECKER, cj, strlen(cj), what,
                                   dhaf_registry_catalog(), &s->checker, &rep);
    if (rc) {
        dhaf_err_set(err, DHAF_EINVAL, "%s: %s", rep.n_errs ? rep.errs[0].path : what,
                     rep.n_errs ? rep.errs[0].msg : "invalid");
        dhaf_cfg_report_release(&rep);
        return rc;
    }
    dhaf_cfg_report_release(&rep);
    if (forbidden(&s->checker, pol, why, wl)) {
        service_release(s);
        return 1;
    }
    return 0;
}

int plan_build(struct plan *p, Dhaf__V1__ProbePlan *msg, const struct plan_policy *pol,
               struct dhaf_err *err)
{
    p->msg = msg;
    int rc = plan_check_limits(msg, err);
    if (rc)
        return rc;
    const char *dup = duplicate_service(msg);
    if (dup)
        return dhaf_err_set(err, DHAF_EINVAL, "plan: service %s appears twice", dup);
    p->svcs = dhaf_xcalloc(msg->n_services + 1, sizeof(*p->svcs));
    for (size_t i = 0; i < msg->n_services; i++) {
        char why[400];
        struct dhaf_service *s = &p->svcs[p->n];
        rc = service_build(s, msg->services[i], i, pol, why, sizeof(why), err);
        if (rc < 0) {
            service_release(s); /* the others are released by plan_free */
            break;
        }
        if (rc == 1) {
            if (!p->refused)
                p->refused = dhaf_xcalloc(msg->n_services, sizeof(*p->refused));
            p->refused[p->n_refused].service = dhaf_xstrdup(msg->services[i]->name);
            p->refused[p->n_refused++].why = dhaf_xstrdup(why);
            rc = 0;
            continue;
        }
        p->n++;
    }
    if (rc) {
        Dhaf__V1__ProbePlan *keep = p->msg;
        p->msg = NULL;
        plan_free(p);
        p->msg = keep;
    }
    return rc;
}

int plan_decode(struct plan *p, const uint8_t *buf, size_t len, const struct plan_policy *pol,
                struct dhaf_err *err)
{
    memset(p, 0, sizeof(*p));
    if (len > PLAN_MAX_BYTES)
        return dhaf_err_set(err, DHAF_ETOOBIG, "plan: %zu bytes; a prober takes at most %d", len,
                            PLAN_MAX_BYTES);
    Dhaf__V1__ProbePlan *m = dhaf__v1__probe_plan__unpack(NULL, len, buf);
    if (!m)
        return dhaf_err_set(err, DHAF_EPROTO, "plan: not a ProbePlan message (%zu bytes)", len);
    return plan_build(p, m, pol, err);
}

void plan_free(struct plan *p)
{
    for (size_t i = 0; i < p->n; i++)
        service_release(&p->svcs[i]);
    free(p->svcs);
    for (size_t i = 0; i < p->n_refused; i++) {
        free(p->refused[i].service);
        free(p->refused[i].why);
    }
    free(p->refused);
    if (p->msg)
        dhaf__v1__probe_plan__free_unpacked(p->msg, NULL);
    memset(p, 0, sizeof(*p));
}
