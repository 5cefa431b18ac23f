/* SPDX-License-Identifier: MIT */
/* etcd upkeep in virtual time on the in-memory store: the etcd monitor (node/etcdmon.c) finds
 * a NOSPACE alarm at the first refused write, reports it once (state, one etcd-alarm event
 * recorded once etcd takes writes again, one etcd-alarm-cleared), also across a change of
 * leader, and counts a run of refused writes without an alarm as an unwritable etcd; the
 * leader's compaction (node/compactor.c) keeps the retention, skips a revision that did not
 * advance, and the node's watch resumes (the view reloads) across a compaction. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "compactor.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "etcdmon.h"
#include "node_fixture.h"

#define YAML(node, etcd_extra)                                                                     \
    "dhaf:\n  cluster-name: fx\n  node-name: " node "\n  heartbeat-interval: 1\n"                  \
    "  healthy-node-status-ttl: 5\n  tact-interval: 1\n  probe: false\n"                           \
    "etcd:\n  hosts: 127.0.0.1:1\n  leader-key-ttl: 3\n" etcd_extra                                \
    "services:\n  - name: web\n    domain: site.test\n    entry-points:\n"                         \
    "      - {name: primary, ip: 127.0.0.61}\n      - {name: backup, ip: 127.0.0.62}\n"            \
    "    switcher: {type: exec, init: /bin/true, switch: /bin/true, timeout: 2}\n"                 \
    "    health-checker: {type: tcp, port: 80}\n"

#define MEMBER 0x8e9e05c52164694dULL

/* A fixture node whose store is observed by its own etcd monitor, as dhaf-node wires it. */
struct mnode {
    struct fx_node n;
    struct etcdmon *mon;
};

static void mnode_init(struct mnode *x, struct memstore *ms, struct vclock *vc, const char *yaml,
                       const struct duty *duties, size_t n_duties)
{
    memset(x, 0, sizeof(*x));
    x->n.snaps = fx_snaps(yaml);
    struct view_opts vo = {.store = memstore_store(ms),
                           .clock = &vc->base,
                           .prefix = "/dhaf/fx/",
                           .progress_ms = 1000,
                           .stale_ms = 3000};
    x->n.view = view_new(&vo);
    struct etcdmon_opts mo = {
        .store = memstore_store(ms), .clock = &vc->base, .view = x->n.view, .prefix = "/dhaf/fx/"};
    x->mon = etcdmon_new(&mo);
    struct cluster_opts co = {.store = etcdmon_store(x->mon),
                              .clock = &vc->base,
                              .view = x->n.view,
                              .snaps = x->n.snaps,
                              .etcdmon = x->mon};
    x->n.c = cluster_new(&co);
    for (size_t i = 0; i < n_duties; i++)
        cluster_add_duty(x->n.c, &duties[i]);
}

static void mnode_release(struct mnode *x)
{
    fx_node_release(&x->n);
    etcdmon_free(x->mon);
}

/* A write through the node's store (the cluster's, as every module writes). */
static int node_write(struct mnode *x, struct dhaf_err *err)
{
    return store_put(cluster_store(x->n.c), "/dhaf/fx/ext/t/k", "v", 0, err);
}

/* ms of virtual time, 1 s at a time, with each node's threads' steps in between (the leader's
 * lease lives 3 s). */
static void pass(struct vclock *vc, int64_t ms, struct mnode **nodes, size_t n)
{
    for (int64_t t = 0; t < ms; t += 1000) {
        vclock_advance(vc, ms - t < 1000 ? ms - t : 1000);
        for (size_t i = 0; i < n; i++) {
            fx_step(&nodes[i]->n);
            etcdmon_step(nodes[i]->mon);
        }
    }
}

/* The message of the newest event of kind in the store ("" when none). */
static void last_message(struct memstore *ms, const char *kind, char *buf, size_t len)
{
    struct store s = memstore_store(ms);
    struct dhaf_kvs kvs;
    struct dhaf_err err;
    buf[0] = '\0';
    assert_int_equal(store_get_prefix(&s, "/dhaf/fx/events/", 0, &kvs, &err), 0);
    for (size_t i = 0; i < kvs.n; i++) {
        json_t *j = json_loads(kvs.kvs[i].value, 0, NULL);
        const char *k = j ? dhaf_json_str(j, "kind") : NULL;
        if (k && strcmp(k, kind) == 0)
            snprintf(buf, len, "%s", dhaf_json_str(j, "message"));
        json_decref(j);
    }
    dhaf_kvs_release(&kvs);
}

struct world {
    struct vclock vc;
    struct memstore *ms;
};

static int setup(void **state)
{
    struct world *w = calloc(1, sizeof(*w));
    vclock_init(&w->vc, 1000000, 1790000000000);
    w->ms = memstore_new(&w->vc.base);
    dhaf_log_limit_reset(&w->vc.base);
    *state = w;
    return 0;
}

static int teardown(void **state)
{
    struct world *w = *state;
    memstore_free(w->ms);
    dhaf_log_limit_reset(NULL);
    free(w);
    return 0;
}

static void test_nospace_reported_once(void **state)
{
    struct world *w = *state;
    struct mnode a;
    mnode_init(&a, w->ms, &w->vc, YAML("node-a", ""), NULL, 0);
    struct mnode *nodes[] = {&a};
    fx_step(&a.n);
    etcdmon_step(a.mon);
    struct etcdmon_state st;
    etcdmon_state(a.mon, &st);
    assert_true(st.writable);
    assert_string_equal(st.problem, "");
    assert_true(st.revision > 0);
    struct dhaf_waker wk;
    dhaf_waker_init(&wk);
    etcdmon_subscribe(a.mon, &wk, 4);

    /* the database is full: the first refused write asks for the alarms at once */
    memstore_set_alarm(w->ms, MEMBER, DHAF_ETCD_ALARM_NOSPACE, true);
    struct dhaf_err err;
    assert_int_equal(node_write(&a, &err), DHAF_ETOOBIG);
    assert_true(dhaf_etcd_err_nospace(&err));
    uint64_t listed = memstore_calls(w->ms, MS_ALARMS);
    etcdmon_step(a.mon); /* no time passed */
    assert_int_equal(memstore_calls(w->ms, MS_ALARMS), listed + 1);
    etcdmon_state(a.mon, &st);
    assert_false(st.writable);
    assert_int_equal(st.alarms.n, 1);
    assert_true(etcdmon_alarm_raised(&st, DHAF_ETCD_ALARM_NOSPACE));
    assert_non_null(strstr(st.problem, "etcd alarm NOSPACE on member 8e9e05c52164694d"));
    assert_non_null(strstr(st.problem, "etcdctl alarm disarm"));
    assert_int_equal(st.since_wall_ms, dhaf_clock_wall(&w->vc.base));
    assert_int_equal(dhaf_waker_wait(&wk, 1), 4);

    /* the leader tries to record it once; etcd refuses that too, and it is not tried again
     * while etcd refuses writes */
    struct term *t = cluster_term(a.n.c);
    assert_non_null(t);
    assert_int_not_equal(etcdmon_record(a.mon, t, &err), 0);
    uint64_t txns = memstore_calls(w->ms, MS_TXN);
    assert_int_equal(etcdmon_record(a.mon, t, &err), 0);
    assert_int_equal(memstore_calls(w->ms, MS_TXN), txns);
    term_put(t);

    /* 3 minutes of refused writes: the state stays, nothing new is kicked */
    for (int i = 0; i < 36; i++) {
        assert_int_equal(node_write(&a, &err), DHAF_ETOOBIG);
        pass(&w->vc, 5000, nodes, 1);
    }
    etcdmon_state(a.mon, &st);
    assert_false(st.writable);
    assert_int_equal(dhaf_waker_wait(&wk, 1), 0);
    t = cluster_term(a.n.c);
    assert_non_null(t); /* keep-alives go on under NOSPACE: the leader stayed */
    assert_int_equal(etcdmon_record(a.mon, t, &err), 0);
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm"), 0);

    /* compacted, defragmented and disarmed: dhaf resumes by itself */
    memstore_set_alarm(w->ms, MEMBER, DHAF_ETCD_ALARM_NOSPACE, false);
    pass(&w->vc, 5000, nodes, 1);
    etcdmon_state(a.mon, &st);
    assert_true(st.writable);
    assert_string_equal(st.problem, "");
    assert_int_equal(dhaf_waker_wait(&wk, 1), 4);
    assert_int_equal(node_write(&a, &err), 0);
    assert_int_equal(etcdmon_record(a.mon, t, &err), 0);
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm"), 1);
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm-cleared"), 1);
    char msg[600];
    last_message(w->ms, "etcd-alarm", msg, sizeof(msg));
    assert_non_null(strstr(msg, "alarm NOSPACE on member 8e9e05c52164694d"));
    assert_non_null(strstr(msg, "etcd refused writes meanwhile"));
    last_message(w->ms, "etcd-alarm-cleared", msg, sizeof(msg));
    assert_non_null(strstr(msg, "accepts the writes of cluster fx again after 18"));
    /* once */
    pass(&w->vc, 10000, nodes, 1);
    assert_int_equal(etcdmon_record(a.mon, t, &err), 0);
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm"), 1);
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm-cleared"), 1);
    term_put(t);
    etcdmon_unsubscribe(a.mon, &wk);
    dhaf_waker_release(&wk);
    mnode_release(&a);
}

static void test_unwritable_without_alarm(void **state)
{
    struct world *w = *state;
    struct mnode a;
    mnode_init(&a, w->ms, &w->vc, YAML("node-a", ""), NULL, 0);
    struct mnode *nodes[] = {&a};
    fx_step(&a.n);
    etcdmon_step(a.mon);
    /* every transaction fails (the keep-alives go on): a member that cannot commit */
    memstore_fail(w->ms, MS_TXN, 1000, DHAF_ETIMEOUT, false);
    struct dhaf_err err;
    assert_int_equal(node_write(&a, &err), DHAF_ETIMEOUT);
    pass(&w->vc, 9000, nodes, 1);
    assert_int_equal(node_write(&a, &err), DHAF_ETIMEOUT);
    struct etcdmon_state st;
    etcdmon_state(a.mon, &st);
    assert_true(st.writable); /* not yet: a blip is no outage */
    pass(&w->vc, 1000, nodes, 1);
    etcdmon_state(a.mon, &st);
    assert_false(st.writable);
    assert_true(st.unwritable);
    assert_int_equal(st.alarms.n, 0);
    assert_non_null(strstr(st.problem, "accepted none of this node's writes for 10 s"));
    /* while it lasts, the monitor's own probe (a txn that writes nothing) keeps failing */
    uint64_t txns = memstore_calls(w->ms, MS_TXN);
    pass(&w->vc, 5000, nodes, 1);
    assert_true(memstore_calls(w->ms, MS_TXN) > txns);
    etcdmon_state(a.mon, &st);
    assert_false(st.writable);
    /* etcd takes writes again and nothing else writes: the probe finds it, with no revision */
    memstore_fail(w->ms, MS_TXN, 0, 0, false);
    int64_t rev = memstore_revision(w->ms);
    pass(&w->vc, 5000, nodes, 1);
    etcdmon_state(a.mon, &st);
    assert_true(st.writable);
    assert_int_equal(memstore_revision(w->ms), rev);
    assert_null(memstore_value(w->ms, "/dhaf/fx/etcdmon-probe"));
    /* and once writable, nothing probes, and the alarms are seen in the member's status (no
     * alarm list, which is a raft round) */
    txns = memstore_calls(w->ms, MS_TXN);
    uint64_t lists = memstore_calls(w->ms, MS_ALARMS), statuses = memstore_calls(w->ms, MS_STATUS);
    pass(&w->vc, 10000, nodes, 1);
    assert_int_equal(memstore_calls(w->ms, MS_TXN), txns);
    assert_int_equal(memstore_calls(w->ms, MS_ALARMS), lists);
    assert_int_equal(memstore_calls(w->ms, MS_STATUS), statuses + 2);
    struct term *t = cluster_term(a.n.c);
    assert_non_null(t);
    assert_int_equal(etcdmon_record(a.mon, t, &err), 0);
    term_put(t);
    char msg[600];
    last_message(w->ms, "etcd-alarm", msg, sizeof(msg));
    assert_non_null(strstr(msg, "no write accepted for 10 s"));
    last_message(w->ms, "etcd-alarm-cleared", msg, sizeof(msg));
    assert_non_null(strstr(msg, "after 20 s"));
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm-cleared"), 1);
    mnode_release(&a);
}

static void test_recorded_once_across_leaders(void **state)
{
    struct world *w = *state;
    struct mnode a, b;
    mnode_init(&a, w->ms, &w->vc, YAML("node-a", ""), NULL, 0);
    mnode_init(&b, w->ms, &w->vc, YAML("node-b", ""), NULL, 0);
    struct mnode *both[] = {&a, &b};
    pass(&w->vc, 1000, both, 2);
    assert_int_equal(cluster_role(a.n.c), ROLE_LEADER);
    assert_int_not_equal(cluster_role(b.n.c), ROLE_LEADER);
    /* an episode both see; the leader records it; the next leader does not again */
    memstore_set_alarm(w->ms, MEMBER, DHAF_ETCD_ALARM_NOSPACE, true);
    pass(&w->vc, 6000, both, 2);
    struct etcdmon_state st;
    etcdmon_state(b.mon, &st);
    assert_false(st.writable);
    memstore_set_alarm(w->ms, MEMBER, DHAF_ETCD_ALARM_NOSPACE, false);
    pass(&w->vc, 6000, both, 2);
    struct dhaf_err err;
    struct term *t = cluster_term(a.n.c);
    assert_non_null(t);
    assert_int_equal(etcdmon_record(a.mon, t, &err), 0);
    term_put(t);
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm"), 1);
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm-cleared"), 1);
    pass(&w->vc, 1000, both, 2);

    /* a second episode: the leader goes before recording it; the next one records it */
    memstore_set_alarm(w->ms, MEMBER, DHAF_ETCD_ALARM_NOSPACE, true);
    pass(&w->vc, 6000, both, 2);
    memstore_set_alarm(w->ms, MEMBER, DHAF_ETCD_ALARM_NOSPACE, false);
    pass(&w->vc, 6000, both, 2);
    mnode_release(&a);
    struct mnode *one[] = {&b};
    pass(&w->vc, 2000, one, 1);
    assert_int_equal(cluster_role(b.n.c), ROLE_LEADER);
    t = cluster_term(b.n.c);
    assert_int_equal(etcdmon_record(b.mon, t, &err), 0);
    assert_int_equal(etcdmon_record(b.mon, t, &err), 0);
    term_put(t);
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm"), 2);
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm-cleared"), 2);
    mnode_release(&b);
}

/* The duties as dhaf-node runs them (threads): the recorder records an episode by itself. */
static void test_duties(void **state)
{
    struct world *w = *state;
    struct mnode a;
    mnode_init(&a, w->ms, &w->vc, YAML("node-a", ""), NULL, 0);
    struct duty duties[] = {compactor_duty(a.n.c), etcdmon_duty(a.mon)};
    for (size_t i = 0; i < 2; i++)
        cluster_add_duty(a.n.c, &duties[i]);
    fx_step(&a.n);
    etcdmon_step(a.mon);
    assert_int_equal(cluster_role(a.n.c), ROLE_LEADER);
    memstore_set_alarm(w->ms, MEMBER, DHAF_ETCD_ALARM_NOSPACE, true);
    struct dhaf_err err;
    assert_int_equal(node_write(&a, &err), DHAF_ETOOBIG);
    etcdmon_step(a.mon);
    memstore_set_alarm(w->ms, MEMBER, DHAF_ETCD_ALARM_NOSPACE, false);
    struct mnode *nodes[] = {&a};
    pass(&w->vc, 5000, nodes, 1); /* writable again: the recorder's thread is kicked */
    int64_t until = dhaf_mono_ms() + 10000;
    while (fx_count_events(w->ms, "etcd-alarm-cleared") == 0 && dhaf_mono_ms() < until) {
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
        view_step(a.n.view, 0);
    }
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm"), 1);
    assert_int_equal(fx_count_events(w->ms, "etcd-alarm-cleared"), 1);
    mnode_release(&a);
}

static void test_compaction(void **state)
{
    struct world *w = *state;
    struct mnode a;
    mnode_init(&a, w->ms, &w->vc,
               YAML("node-a", "  compaction-interval: 60\n  compaction-retention: 10\n"), NULL, 0);
    fx_step(&a.n);
    struct term *t = cluster_term(a.n.c);
    assert_non_null(t);
    for (int i = 0; i < 40; i++)
        assert_int_equal(memstore_put(w->ms, "/dhaf/fx/ext/t/k", "v", 0), 0);
    fx_step(&a.n);
    struct compactor *k = compactor_new(t);
    struct dhaf_err err;
    int64_t at = 0, rev = memstore_revision(w->ms);
    assert_int_equal(compactor_round(k, &at, &err), 0);
    assert_int_equal(at, rev - 10);
    assert_int_equal(memstore_compact_revision(w->ms), rev - 10);
    /* the revision did not advance: nothing to do */
    assert_int_equal(compactor_round(k, &at, &err), 0);
    assert_int_equal(at, 0);
    assert_int_equal(memstore_calls(w->ms, MS_COMPACT), 1);
    for (int i = 0; i < 5; i++)
        assert_int_equal(memstore_put(w->ms, "/dhaf/fx/ext/t/k", "w", 0), 0);
    assert_int_equal(compactor_round(k, &at, &err), 0);
    assert_int_equal(at, rev + 5 - 10);
    /* someone compacted further (etcd's own auto-compaction): no error, nothing done */
    assert_int_equal(memstore_put(w->ms, "/dhaf/fx/ext/t/k", "x", 0), 0);
    memstore_compact(w->ms, memstore_revision(w->ms));
    assert_int_equal(compactor_round(k, &at, &err), 0);
    assert_int_equal(at, 0);
    /* the view's connected watch saw every change through the compactions */
    view_step(a.n.view, 0);
    struct view_sync vs;
    view_rdlock(a.n.view);
    vs = view_sync(a.n.view);
    view_unlock(a.n.view);
    assert_int_equal(vs.revision, memstore_revision(w->ms));

    /* a watch that broke while its revision was compacted resumes by reloading the view */
    memstore_set_down(w->ms, true);
    view_step(a.n.view, 0);
    assert_int_equal(memstore_put(w->ms, "/dhaf/fx/services/web/switchover",
                                  "{\"ep\":\"backup\",\"requested_by\":\"t\",\"at\":1}", 0),
                     0);
    memstore_compact(w->ms, memstore_revision(w->ms));
    memstore_set_down(w->ms, false);
    view_step(a.n.view, 0); /* ECOMPACTED: the watch is dropped */
    view_step(a.n.view, 0); /* reloaded from etcd, watching anew */
    view_rdlock(a.n.view);
    const struct view_rec *req = view_find(a.n.view, VS_REQUEST, "web");
    bool have = req && req->j && strcmp(dhaf_json_str(req->j, "ep"), "backup") == 0;
    view_unlock(a.n.view);
    assert_true(have);

    /* off (0): a reload that turns it off stops the next round */
    struct dhaf_config cfg;
    fx_load(YAML("node-a", "  compaction-interval: 0\n"), &cfg);
    snap_publish(a.n.snaps, &cfg);
    assert_int_equal(memstore_put(w->ms, "/dhaf/fx/ext/t/k", "y", 0), 0);
    for (int i = 0; i < 20; i++)
        assert_int_equal(memstore_put(w->ms, "/dhaf/fx/ext/t/k", "z", 0), 0);
    uint64_t calls = memstore_calls(w->ms, MS_COMPACT);
    assert_int_equal(compactor_round(k, &at, &err), 0);
    assert_int_equal(memstore_calls(w->ms, MS_COMPACT), calls);
    compactor_free(k);
    term_put(t);
    mnode_release(&a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_nospace_reported_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_without_alarm, setup, teardown),
        cmocka_unit_test_setup_teardown(test_recorded_once_across_leaders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duties, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
