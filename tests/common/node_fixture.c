/* SPDX-License-Identifier: MIT */
/* The node core fixture for unit tests in virtual time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dhaf/json.h"
#include "dhaf/registry.h"
#include "node_fixture.h"

char *fx_yaml(const char *node, const char *switcher, const char *extra)
{
    /* FX_YAML_SW with markers, then the markers replaced */
    static const char tmpl[] = FX_YAML_SW("@NODE@", "@SWITCHER@", "@EXTRA@");
    const char *marks[3] = {"@NODE@", "@SWITCHER@", "@EXTRA@"};
    const char *vals[3] = {node, switcher, extra ? extra : ""};
    size_t cap = sizeof(tmpl) + strlen(node) + strlen(switcher) + strlen(vals[2]) + 1;
    char *out = calloc(1, cap);
    const char *p = tmpl;
    for (int i = 0; i < 3; i++) {
        const char *m = strstr(p, marks[i]);
        strncat(out, p, (size_t)(m - p));
        strcat(out, vals[i]);
        p = m + strlen(marks[i]);
    }
    strcat(out, p);
    return out;
}

void fx_load(const char *yaml, struct dhaf_config *cfg)
{
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, "fixture.yaml");
    int rc = dhaf_config_load_mem(yaml, strlen(yaml), "fixture.yaml", "/tmp",
                                  dhaf_registry_catalog(), cfg, &rep);
    if (rc != 0)
        dhaf_cfg_report_print(&rep, stderr);
    dhaf_cfg_report_release(&rep);
    assert_int_equal(rc, 0);
}

struct snap_holder *fx_snaps(const char *yaml)
{
    struct dhaf_config cfg;
    fx_load(yaml, &cfg);
    return snap_holder_new(&cfg);
}

void fx_node_init(struct fx_node *n, struct memstore *ms, struct vclock *vc, const char *yaml,
                  const struct duty *duties, size_t n_duties)
{
    memset(n, 0, sizeof(*n));
    n->snaps = fx_snaps(yaml);
    struct view_opts vo = {.store = memstore_store(ms),
                           .clock = &vc->base,
                           .prefix = "/dhaf/fx/",
                           .progress_ms = 1000,
                           .stale_ms = 3000};
    n->view = view_new(&vo);
    struct cluster_opts co = {
        .store = memstore_store(ms), .clock = &vc->base, .view = n->view, .snaps = n->snaps};
    n->c = cluster_new(&co);
    for (size_t i = 0; i < n_duties; i++)
        cluster_add_duty(n->c, &duties[i]);
}

void fx_node_release(struct fx_node *n)
{
    cluster_stop(n->c, 100);
    cluster_free(n->c);
    view_free(n->view);
    snap_holder_free(n->snaps);
    memset(n, 0, sizeof(*n));
}

void fx_step(struct fx_node *n)
{
    view_step(n->view, 0);
    cluster_session_step(n->c);
    view_step(n->view, 0);
    cluster_election_step(n->c);
    view_step(n->view, 0);
}

char *fx_vote(const char *voter, const char *ops)
{
    const char *eps[2] = {"primary", "backup"};
    json_t *results = json_array();
    for (int i = 0; i < 2; i++)
        json_array_append_new(results, json_pack("{s:s, s:s, s:b, s:s}", "service", "web", "ep",
                                                 eps[i], "healthy", ops[i] == 'h', "reason",
                                                 ops[i] == 'h' ? "ok" : "timeout"));
    json_t *v = json_pack("{s:s, s:s, s:i, s:o}", "voter", voter, "kind", "prober", "seq", 1,
                          "results", results);
    if (ops[2] == '!')
        json_object_set_new(v, "impaired", json_true());
    char *text = dhaf_json_dump(v);
    json_decref(v);
    return text;
}

void fx_put_vote_on(struct memstore *ms, const char *voter, const char *ops, int64_t lease)
{
    char key[128];
    snprintf(key, sizeof(key), "/dhaf/fx/votes/%s", voter);
    char *text = fx_vote(voter, ops);
    assert_int_equal(memstore_put(ms, key, text, lease), 0);
    free(text);
}

void fx_put_vote(struct memstore *ms, const char *voter, const char *ops)
{
    fx_put_vote_on(ms, voter, ops, 0);
}

int64_t fx_lease(struct memstore *ms, int ttl_s)
{
    struct store st = memstore_store(ms);
    int64_t id = 0;
    struct dhaf_err err;
    assert_int_equal(st.ops->lease_grant(st.ud, ttl_s, &id, &err), 0);
    return id;
}

void fx_renew(struct memstore *ms, int64_t lease)
{
    struct store st = memstore_store(ms);
    struct store_keepalive *ka = st.ops->keepalive_new(st.ud, lease);
    int64_t ttl = 0;
    struct dhaf_err err;
    assert_int_equal(st.ops->keepalive_once(ka, &ttl, 0, &err), 0);
    st.ops->keepalive_free(ka);
}

/* The events of kind (NULL: every one) in ms: how many, and *last (when not NULL) the text of
 * the one created last (caller frees; NULL when none). */
static size_t events_of_kind(struct memstore *ms, const char *kind, char **last)
{
    size_t n = 0;
    int64_t rev = -1;
    struct store st = memstore_store(ms);
    struct dhaf_kvs kvs;
    struct dhaf_err err;
    assert_int_equal(st.ops->get(st.ud, "/dhaf/fx/events/", true, 0, &kvs, &err), 0);
    for (size_t i = 0; i < kvs.n; i++) {
        json_t *j = NULL;
        if (dhaf_json_parse_object(kvs.kvs[i].value, kvs.kvs[i].value_len, "event", &j, &err))
            continue;
        const char *k = dhaf_json_str(j, "kind");
        if (!kind || (k && strcmp(k, kind) == 0)) {
            n++;
            if (last && kvs.kvs[i].create_rev > rev) {
                rev = kvs.kvs[i].create_rev;
                free(*last);
                *last = strndup(kvs.kvs[i].value, kvs.kvs[i].value_len);
            }
        }
        json_decref(j);
    }
    dhaf_kvs_release(&kvs);
    return n;
}

char *fx_last_event(struct memstore *ms, const char *kind)
{
    char *last = NULL;
    events_of_kind(ms, kind, &last);
    return last;
}

size_t fx_count_events(struct memstore *ms, const char *kind)
{
    return events_of_kind(ms, kind, NULL);
}
