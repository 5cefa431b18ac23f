/* SPDX-License-Identifier: MIT */
/* libFuzzer target: vote decoding (node/votes.c vote_decode) of what a voter wrote to etcd,
 * with and without a config to filter by; a decoded vote is tallied, encoded and decoded again.
 * The first input byte chooses the config (even: none, odd: two services); the rest is the
 * vote's JSON. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/cfgkeys.h"
#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/log.h"
#include "dhaf/probe.h"
#include "dhaf/registry.h"
#include "votes.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char cfg_text[] =
    "dhaf: {cluster-name: fuzz, node-name: node-1}\n"
    "etcd: {hosts: \"127.0.0.1:2379\"}\n"
    "services:\n"
    "- name: main\n"
    "  domain: foo.com\n"
    "  entry-points: [{name: ep-1, ip: 10.0.0.1}, {name: ep-2, ip: 10.0.0.2}]\n"
    "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
    "  health-checker: {type: tcp, port: 80}\n"
    "- name: second\n"
    "  domain: bar.com\n"
    "  entry-points: [{name: a, ip: 10.0.1.1}]\n"
    "  switcher: {type: exec, init: /bin/true, switch: /bin/true}\n"
    "  health-checker: {type: tcp, port: 80}\n";

static struct dhaf_config cfg;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    struct dhaf_cfg_report rep;
    dhaf_log_setup(DHAF_LOG_ERROR, DHAF_LOG_TEXT);
    dhaf_cfg_report_init(&rep, "fuzz_votes.dhaf");
    if (dhaf_config_load_mem(cfg_text, strlen(cfg_text), "fuzz_votes.dhaf", "/",
                             dhaf_registry_catalog(), &cfg, &rep) != 0) {
        dhaf_cfg_report_print(&rep, stderr);
        abort();
    }
    dhaf_cfg_report_release(&rep);
    return 0;
}

/* Results sorted by (service, ep), one each, every one findable; with a config, only its
 * entry points. */
static void check_vote(const struct vote *v, const struct dhaf_config *c)
{
    for (size_t i = 0; i < v->n; i++) {
        const struct vote_result *r = &v->results[i];
        if (!r->service || !r->ep || !r->reason || !r->text)
            abort();
        if (strlen(r->text) > VOTE_TEXT_MAX || strlen(r->reason) > 32)
            abort();
        if (i > 0) {
            const struct vote_result *p = &v->results[i - 1];
            int d = strcmp(p->service, r->service);
            if (d > 0 || (d == 0 && strcmp(p->ep, r->ep) >= 0))
                abort();
        }
        if (vote_find(v, r->service, r->ep) != r)
            abort();
        if (c) {
            const struct dhaf_service *s = dhaf_config_service(c, r->service);
            if (!s || dhaf_service_ep_index(s, r->ep) < 0)
                abort();
        }
    }
}

/* What vote_encode would write for v's results, as a probe round. */
static struct dhaf_probe_result *as_round(const struct vote *v)
{
    struct dhaf_probe_result *r = calloc(v->n + 1, sizeof(*r));
    if (!r)
        abort();
    for (size_t i = 0; i < v->n; i++) {
        r[i].service = v->results[i].service;
        r[i].ep = v->results[i].ep;
        r[i].healthy = v->results[i].healthy;
        r[i].reason = v->results[i].reason;
        snprintf(r[i].text, sizeof(r[i].text), "%s", v->results[i].text);
        r[i].known = true;
    }
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const struct dhaf_config *c = (data[0] & 1) ? &cfg : NULL;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    struct vote v, again;
    struct dhaf_err err = {0};

    if (vote_decode(text, len, "votes/fuzz", c, &v, &err) != 0) {
        /* refused: with a reason, and nothing kept */
        if (!err.msg[0] || v.results || v.voter || v.pool)
            abort();
        return 0;
    }
    if (!v.voter || !v.kind || (strcmp(v.kind, "node") && strcmp(v.kind, "prober")))
        abort();
    check_vote(&v, c);
    for (size_t s = 0; s < cfg.n_services; s++) {
        struct ep_tally t[8];
        const struct vote *vs[1] = {&v};
        if (cfg.services[s].n_eps > 8)
            abort();
        tally_service(&cfg.services[s], vs, 1, t);
        for (size_t e = 0; e < cfg.services[s].n_eps; e++)
            if (t[e].healthy + t[e].unhealthy != t[e].voters || t[e].voters > 1)
                abort();
    }
    /* What a node re-encodes from a decoded vote decodes to the same opinions. */
    struct dhaf_probe_result *r = as_round(&v);
    char *json = vote_encode(v.voter, v.kind, v.seq, r, v.n);
    if (!json)
        abort();
    if (vote_decode(json, strlen(json), "votes/fuzz-again", NULL, &again, &err) != 0)
        abort();
    if (again.n != v.n || again.seq != v.seq || strcmp(again.voter, v.voter) != 0 ||
        !vote_same(&again, r, v.n))
        abort();
    vote_release(&again);
    free(json);
    free(r);
    vote_release(&v);
    return 0;
}
