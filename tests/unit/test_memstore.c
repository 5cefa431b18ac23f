/* SPDX-License-Identifier: MIT */
/* The in-memory etcd (tests/common/memstore.c) in virtual time, and one scripted run compared
 * with the same run on a real etcd. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "dhaf/etcd.h"
#include "etcd_harness.h"
#include "memstore.h"
#include "store.h"
#include "vclock.h"

/* ------------------------------------------------------------------ fixture and helpers */

struct fx {
    struct vclock vc;
    struct memstore *m;
    struct store s;
};

static int fx_setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    vclock_init(&f->vc, 10000, 1700000000000);
    f->m = memstore_new(&f->vc.base);
    f->s = memstore_store(f->m);
    *state = f;
    return 0;
}

static int fx_teardown(void **state)
{
    struct fx *f = *state;
    memstore_free(f->m);
    free(f);
    return 0;
}

/* A txn of the given ops without compares; returns the revision after it. */
static int64_t write_ops(struct store *s, const struct dhaf_etcd_op *ops, size_t n)
{
    struct dhaf_etcd_txn_result res;
    struct dhaf_err err;
    int rc = store_txn(s, NULL, 0, ops, n, NULL, 0, &res, &err);
    if (rc)
        fail_msg("txn: %s", err.msg);
    int64_t rev = res.revision;
    dhaf_etcd_txn_result_release(&res);
    return rev;
}

static int64_t put(struct store *s, const char *key, const char *value, int64_t lease)
{
    struct dhaf_etcd_op op = {.type = DHAF_ETCD_OP_PUT, .key = key, .value = value, .lease = lease};
    return write_ops(s, &op, 1);
}

static int64_t del(struct store *s, const char *key, bool prefix)
{
    struct dhaf_etcd_op op = {.type = DHAF_ETCD_OP_DELETE, .key = key, .prefix = prefix};
    return write_ops(s, &op, 1);
}

/* Reads one key into *kv (key and value freed by the caller's dhaf_kvs_release of *kvs);
 * returns false when it does not exist. */
static bool get1(struct store *s, const char *key, struct dhaf_kvs *kvs)
{
    struct dhaf_err err;
    if (store_get(s, key, kvs, &err))
        fail_msg("get %s: %s", key, err.msg);
    return kvs->n == 1;
}

static void assert_kv(struct store *s, const char *key, const char *value, int64_t create,
                      int64_t mod, int64_t version, int64_t lease)
{
    struct dhaf_kvs kvs;
    assert_true(get1(s, key, &kvs));
    assert_string_equal(kvs.kvs[0].key, key);
    assert_string_equal(kvs.kvs[0].value, value);
    assert_int_equal(kvs.kvs[0].value_len, strlen(value));
    assert_int_equal(kvs.kvs[0].create_rev, create);
    assert_int_equal(kvs.kvs[0].mod_rev, mod);
    assert_int_equal(kvs.kvs[0].version, version);
    assert_int_equal(kvs.kvs[0].lease, lease);
    dhaf_kvs_release(&kvs);
}

static bool guarded(struct store *s, const struct dhaf_etcd_cmp *cmp)
{
    struct dhaf_etcd_txn_result res;
    struct dhaf_err err;
    if (store_txn(s, cmp, 1, NULL, 0, NULL, 0, &res, &err))
        fail_msg("txn: %s", err.msg);
    bool ok = res.succeeded;
    dhaf_etcd_txn_result_release(&res);
    return ok;
}

/* ------------------------------------------------------------------ the virtual clock */

static void *advance_many(void *arg)
{
    for (int i = 0; i < 1000; i++)
        vclock_advance(arg, 1);
    return NULL;
}

static void test_vclock(void **state)
{
    (void)state;
    struct vclock vc;
    vclock_init(&vc, 5, 1000);
    const struct dhaf_clock *c = &vc.base;
    assert_int_equal(dhaf_clock_mono(c), 5);
    assert_int_equal(dhaf_clock_wall(c), 1000);
    vclock_advance(&vc, 20);
    assert_int_equal(dhaf_clock_mono(c), 25);
    assert_int_equal(dhaf_clock_wall(c), 1020);
    vclock_set(&vc, 100);
    assert_int_equal(dhaf_clock_mono(c), 100);
    assert_int_equal(dhaf_clock_wall(c), 1095);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, advance_many, &vc), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    assert_int_equal(dhaf_clock_mono(c), 4100);
    assert_int_equal(dhaf_clock_wall(c), 5095);
}

/* ------------------------------------------------------------------ KV and txn */

static void test_revisions(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    struct dhaf_kvs kvs;
    assert_int_equal(memstore_revision(f->m), 1);
    assert_false(get1(s, "/a", &kvs));
    assert_int_equal(kvs.revision, 1);
    assert_int_equal(kvs.count, 0);
    dhaf_kvs_release(&kvs);

    assert_int_equal(put(s, "/a", "1", 0), 2);
    assert_kv(s, "/a", "1", 2, 2, 1, 0);
    assert_int_equal(put(s, "/a", "2", 0), 3);
    assert_kv(s, "/a", "2", 2, 3, 2, 0);

    /* one txn, one revision for all its writes */
    struct dhaf_etcd_op two[] = {
        {.type = DHAF_ETCD_OP_PUT, .key = "/a", .value = "3"},
        {.type = DHAF_ETCD_OP_PUT, .key = "/b", .value = "x\0y", .value_len = 3},
    };
    assert_int_equal(write_ops(s, two, 2), 4);
    assert_kv(s, "/a", "3", 2, 4, 3, 0);
    assert_true(get1(s, "/b", &kvs));
    assert_int_equal(kvs.kvs[0].value_len, 3);
    assert_memory_equal(kvs.kvs[0].value, "x\0y", 4);
    assert_int_equal(kvs.kvs[0].create_rev, 4);
    dhaf_kvs_release(&kvs);

    /* reads and deletes of missing keys write nothing */
    struct dhaf_etcd_op rd = {.type = DHAF_ETCD_OP_GET, .key = "/a"};
    assert_int_equal(write_ops(s, &rd, 1), 4);
    assert_int_equal(del(s, "/missing", false), 4);
    assert_int_equal(del(s, "/missing/", true), 4);
    assert_int_equal(memstore_revision(f->m), 4);

    /* a deleted key comes back new */
    assert_int_equal(del(s, "/a", false), 5);
    assert_false(get1(s, "/a", &kvs));
    dhaf_kvs_release(&kvs);
    assert_int_equal(put(s, "/a", "again", 0), 6);
    assert_kv(s, "/a", "again", 6, 6, 1, 0);

    /* a prefix delete takes one revision and stays under its prefix */
    put(s, "/p/1", "", 0);
    put(s, "/p/2", "", 0);
    put(s, "/p", "", 0);
    put(s, "/q", "", 0);
    assert_int_equal(memstore_revision(f->m), 10);
    assert_int_equal(del(s, "/p/", true), 11);
    assert_int_equal(memstore_count_prefix(f->m, "/p"), 1);
    assert_int_equal(memstore_count_prefix(f->m, ""), 4);

    /* the direct helpers write like a txn */
    assert_int_equal(memstore_put(f->m, "/h", "v", 0), 0);
    assert_int_equal(memstore_revision(f->m), 12);
    char *v = memstore_value(f->m, "/h");
    assert_string_equal(v, "v");
    free(v);
    assert_int_equal(memstore_put(f->m, "/h", "v", 0x4242), DHAF_ENOTFOUND);
    memstore_delete(f->m, "/h");
    memstore_delete(f->m, "/h");
    assert_int_equal(memstore_revision(f->m), 13);
    assert_null(memstore_value(f->m, "/h"));
}

struct cmp_case {
    const char *key;
    enum dhaf_etcd_target target;
    enum dhaf_etcd_result result;
    int64_t num;
    const char *value;
    bool want;
};

static void test_compares(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    put(s, "/k", "m", 0); /* rev 2 */
    put(s, "/x", "", 0);  /* rev 3 */
    put(s, "/k", "m", 0); /* rev 4: /k create 2, mod 4, version 2 */
    static const struct cmp_case cases[] = {
        {"/k", DHAF_ETCD_VALUE, DHAF_ETCD_EQ, 0, "m", true},
        {"/k", DHAF_ETCD_VALUE, DHAF_ETCD_NE, 0, "m", false},
        {"/k", DHAF_ETCD_VALUE, DHAF_ETCD_GT, 0, "l", true},
        {"/k", DHAF_ETCD_VALUE, DHAF_ETCD_GT, 0, "ma", false},
        {"/k", DHAF_ETCD_VALUE, DHAF_ETCD_LT, 0, "ma", true},
        {"/k", DHAF_ETCD_VALUE, DHAF_ETCD_LT, 0, "", false},
        {"/k", DHAF_ETCD_CREATE_REV, DHAF_ETCD_EQ, 2, NULL, true},
        {"/k", DHAF_ETCD_CREATE_REV, DHAF_ETCD_LT, 2, NULL, false},
        {"/k", DHAF_ETCD_MOD_REV, DHAF_ETCD_EQ, 4, NULL, true},
        {"/k", DHAF_ETCD_MOD_REV, DHAF_ETCD_GT, 3, NULL, true},
        {"/k", DHAF_ETCD_MOD_REV, DHAF_ETCD_NE, 4, NULL, false},
        {"/k", DHAF_ETCD_VERSION, DHAF_ETCD_EQ, 2, NULL, true},
        {"/k", DHAF_ETCD_VERSION, DHAF_ETCD_LT, 3, NULL, true},
        {"/k", DHAF_ETCD_LEASE, DHAF_ETCD_EQ, 0, NULL, true},
        {"/x", DHAF_ETCD_VALUE, DHAF_ETCD_EQ, 0, "", true},
        {"/x", DHAF_ETCD_VALUE, DHAF_ETCD_EQ, 0, NULL, true},
        /* a missing key: revisions, version and lease are 0; a value compare is false */
        {"/none", DHAF_ETCD_CREATE_REV, DHAF_ETCD_EQ, 0, NULL, true},
        {"/none", DHAF_ETCD_MOD_REV, DHAF_ETCD_LT, 1, NULL, true},
        {"/none", DHAF_ETCD_VERSION, DHAF_ETCD_EQ, 0, NULL, true},
        {"/none", DHAF_ETCD_VERSION, DHAF_ETCD_GT, 0, NULL, false},
        {"/none", DHAF_ETCD_LEASE, DHAF_ETCD_EQ, 0, NULL, true},
        {"/none", DHAF_ETCD_VALUE, DHAF_ETCD_EQ, 0, "", false},
        {"/none", DHAF_ETCD_VALUE, DHAF_ETCD_NE, 0, "x", false},
        {"/none", DHAF_ETCD_VALUE, DHAF_ETCD_GT, 0, "", false},
        {"/none", DHAF_ETCD_VALUE, DHAF_ETCD_LT, 0, "z", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct cmp_case *c = &cases[i];
        struct dhaf_etcd_cmp cmp = {c->key, c->target, c->result, c->num, c->value};
        if (guarded(s, &cmp) != c->want)
            fail_msg("case %zu (%s target %d result %d): want %d", i, c->key, (int)c->target,
                     (int)c->result, (int)c->want);
    }
    /* the lease compare, and every compare must hold */
    struct dhaf_err err;
    int64_t lease = 0;
    assert_int_equal(s->ops->lease_grant(s->ud, 10, &lease, &err), 0);
    assert_true(lease != 0);
    put(s, "/l", "v", lease);
    struct dhaf_etcd_cmp lc = {"/l", DHAF_ETCD_LEASE, DHAF_ETCD_EQ, lease, NULL};
    assert_true(guarded(s, &lc));
    struct dhaf_etcd_cmp both[] = {lc, {"/k", DHAF_ETCD_VERSION, DHAF_ETCD_EQ, 7, NULL}};
    struct dhaf_etcd_txn_result res;
    assert_int_equal(store_txn(s, both, 2, NULL, 0, NULL, 0, &res, &err), 0);
    assert_false(res.succeeded);
    dhaf_etcd_txn_result_release(&res);
}

static void test_txn_branches(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    put(s, "/n/a", "1", 0); /* 2 */
    put(s, "/n/b", "2", 0); /* 3 */
    struct dhaf_etcd_cmp absent = {"/n/a", DHAF_ETCD_CREATE_REV, DHAF_ETCD_EQ, 0, NULL};
    struct dhaf_etcd_op then[] = {{.type = DHAF_ETCD_OP_PUT, .key = "/n/a", .value = "new"}};
    struct dhaf_etcd_op otherwise[] = {
        {.type = DHAF_ETCD_OP_GET, .key = "/n/a"},
        {.type = DHAF_ETCD_OP_GET, .key = "/n/", .prefix = true},
        {.type = DHAF_ETCD_OP_GET, .key = "/n/zz"},
    };
    struct dhaf_etcd_txn_result res;
    struct dhaf_err err;
    assert_int_equal(store_txn(s, &absent, 1, then, 1, otherwise, 3, &res, &err), 0);
    assert_false(res.succeeded);
    assert_int_equal(res.revision, 3);
    assert_int_equal(res.n_gets, 3);
    assert_int_equal(res.gets[0].n, 1);
    assert_string_equal(res.gets[0].kvs[0].value, "1");
    assert_int_equal(res.gets[0].revision, 3);
    assert_int_equal(res.gets[1].n, 2);
    assert_int_equal(res.gets[1].count, 2);
    assert_string_equal(res.gets[1].kvs[1].key, "/n/b");
    assert_int_equal(res.gets[2].n, 0);
    assert_int_equal(res.gets[2].count, 0);
    dhaf_etcd_txn_result_release(&res);

    /* reads see the branch's earlier writes, at the revision being made */
    struct dhaf_etcd_op writes[] = {
        {.type = DHAF_ETCD_OP_GET, .key = "/n/a"},
        {.type = DHAF_ETCD_OP_PUT, .key = "/n/a", .value = "x"},
        {.type = DHAF_ETCD_OP_DELETE, .key = "/n/b"},
        {.type = DHAF_ETCD_OP_GET, .key = "/n/", .prefix = true},
    };
    struct dhaf_etcd_cmp present = {"/n/a", DHAF_ETCD_VERSION, DHAF_ETCD_EQ, 1, NULL};
    assert_int_equal(store_txn(s, &present, 1, writes, 4, NULL, 0, &res, &err), 0);
    assert_true(res.succeeded);
    assert_int_equal(res.revision, 4);
    assert_int_equal(res.n_gets, 2);
    assert_int_equal(res.gets[0].revision, 3);
    assert_string_equal(res.gets[0].kvs[0].value, "1");
    assert_int_equal(res.gets[1].revision, 4);
    assert_int_equal(res.gets[1].n, 1);
    assert_string_equal(res.gets[1].kvs[0].value, "x");
    assert_int_equal(res.gets[1].kvs[0].mod_rev, 4);
    dhaf_etcd_txn_result_release(&res);

    /* etcd refuses a branch that writes a key twice, and applies nothing */
    struct dhaf_etcd_op dup[] = {
        {.type = DHAF_ETCD_OP_PUT, .key = "/n/c", .value = "1"},
        {.type = DHAF_ETCD_OP_DELETE, .key = "/n/", .prefix = true},
    };
    assert_int_equal(store_txn(s, NULL, 0, dup, 2, NULL, 0, &res, &err), DHAF_EINVAL);
    assert_non_null(strstr(err.msg, "duplicate key"));
    struct dhaf_etcd_op dup2[] = {
        {.type = DHAF_ETCD_OP_PUT, .key = "/n/c", .value = "1"},
        {.type = DHAF_ETCD_OP_PUT, .key = "/n/c", .value = "2"},
    };
    assert_int_equal(store_txn(s, NULL, 0, dup2, 2, NULL, 0, &res, &err), DHAF_EINVAL);
    assert_int_equal(memstore_revision(f->m), 4);

    /* a put with an unknown lease fails the whole txn */
    struct dhaf_etcd_op bad[] = {
        {.type = DHAF_ETCD_OP_PUT, .key = "/n/c", .value = "1"},
        {.type = DHAF_ETCD_OP_PUT, .key = "/n/d", .value = "1", .lease = 0x777},
    };
    assert_int_equal(store_txn(s, NULL, 0, bad, 2, NULL, 0, &res, &err), DHAF_ENOTFOUND);
    assert_string_equal(err.msg, "etcdserver: requested lease not found");
    assert_int_equal(memstore_revision(f->m), 4);
    assert_null(memstore_value(f->m, "/n/c"));
    /* ... but only in the branch that runs */
    assert_int_equal(store_txn(s, &absent, 1, bad, 2, then, 1, &res, &err), 0);
    assert_false(res.succeeded);
    dhaf_etcd_txn_result_release(&res);
}

static void test_get_ranges(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    const char *keys[] = {"/r/b", "/r/a", "/r/\xc3\xa9", "/r/B", "/r", "/r0", "/s/a"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        put(s, keys[i], keys[i], 0);
    struct dhaf_kvs kvs;
    struct dhaf_err err;
    assert_int_equal(store_get_prefix(s, "/r/", 0, &kvs, &err), 0);
    assert_int_equal(kvs.n, 4);
    assert_int_equal(kvs.count, 4);
    assert_false(kvs.more);
    assert_int_equal(kvs.revision, 8);
    /* byte order */
    assert_string_equal(kvs.kvs[0].key, "/r/B");
    assert_string_equal(kvs.kvs[1].key, "/r/a");
    assert_string_equal(kvs.kvs[2].key, "/r/b");
    assert_string_equal(kvs.kvs[3].key, "/r/\xc3\xa9");
    dhaf_kvs_release(&kvs);

    assert_int_equal(store_get_prefix(s, "/r/", 2, &kvs, &err), 0);
    assert_int_equal(kvs.n, 2);
    assert_int_equal(kvs.count, 4);
    assert_true(kvs.more);
    dhaf_kvs_release(&kvs);

    assert_int_equal(s->ops->get_from(s->ud, "/r/a", "/r/", 2, &kvs, &err), 0);
    assert_int_equal(kvs.n, 2);
    assert_int_equal(kvs.count, 3);
    assert_true(kvs.more);
    assert_string_equal(kvs.kvs[0].key, "/r/a");
    assert_string_equal(kvs.kvs[1].key, "/r/b");
    dhaf_kvs_release(&kvs);
    assert_int_equal(s->ops->get_from(s->ud, "/r/aa", "/r/", 0, &kvs, &err), 0);
    assert_int_equal(kvs.n, 2);
    assert_false(kvs.more);
    dhaf_kvs_release(&kvs);
    assert_int_equal(s->ops->get_from(s->ud, "/s/a", "/r/", 0, &kvs, &err), DHAF_EINVAL);
    assert_int_equal(kvs.n, 0);
    dhaf_kvs_release(&kvs);
    assert_int_equal(store_get(s, "/r", &kvs, &err), 0);
    assert_int_equal(kvs.n, 1);
    dhaf_kvs_release(&kvs);
}

/* ------------------------------------------------------------------ leases */

/* Reads every pending event of w; returns its count (0 on DHAF_ETIMEOUT). */
static size_t events(struct store *s, struct store_watch *w, struct dhaf_etcd_events *ev)
{
    struct dhaf_err err;
    int rc = s->ops->watch_next(w, ev, 1000, &err);
    if (rc == DHAF_ETIMEOUT)
        return 0;
    if (rc)
        fail_msg("watch_next: %s", err.msg);
    return ev->n;
}

static void test_lease_expiry(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    struct dhaf_err err;
    int64_t l1 = 0, l2 = 0;
    assert_int_equal(s->ops->lease_grant(s->ud, 2, &l1, &err), 0);
    assert_int_equal(s->ops->lease_grant(s->ud, 3, &l2, &err), 0);
    assert_true(l1 != 0 && l2 != 0 && l1 != l2);
    put(s, "/e/b", "1", l1);
    put(s, "/e/a", "1", l1);
    put(s, "/e/c", "1", l2);
    put(s, "/e/d", "1", 0);
    assert_int_equal(memstore_revision(f->m), 5);
    struct store_watch *w = s->ops->watch_new(s->ud, "/e/", true, 0, &err);
    assert_non_null(w);

    vclock_advance(&f->vc, 1999);
    assert_int_equal(memstore_count_prefix(f->m, "/e/"), 4);
    vclock_advance(&f->vc, 1);
    /* both keys of l1 go in one revision, in key order */
    struct dhaf_etcd_events ev;
    assert_int_equal(events(s, w, &ev), 2);
    assert_int_equal(ev.v[0].type, DHAF_ETCD_EV_DELETE);
    assert_string_equal(ev.v[0].kv.key, "/e/a");
    assert_int_equal(ev.v[0].kv.mod_rev, 6);
    assert_string_equal(ev.v[0].kv.value, "");
    assert_int_equal(ev.v[0].kv.value_len, 0);
    assert_int_equal(ev.v[0].kv.create_rev, 0);
    assert_string_equal(ev.v[1].kv.key, "/e/b");
    assert_int_equal(ev.v[1].kv.mod_rev, 6);
    assert_int_equal(ev.revision, 6);
    dhaf_etcd_events_release(&ev);
    assert_int_equal(memstore_count_prefix(f->m, "/e/"), 2);

    assert_int_equal(s->ops->lease_revoke(s->ud, l1, 100, &err), DHAF_ENOTFOUND);
    struct store_keepalive *ka = s->ops->keepalive_new(s->ud, l1);
    int64_t ttl = 0;
    assert_int_equal(s->ops->keepalive_once(ka, &ttl, 100, &err), DHAF_ENOTFOUND);
    s->ops->keepalive_free(ka);
    struct dhaf_etcd_op op = {.type = DHAF_ETCD_OP_PUT, .key = "/e/x", .value = "", .lease = l1};
    struct dhaf_etcd_txn_result res;
    assert_int_equal(store_txn(s, NULL, 0, &op, 1, NULL, 0, &res, &err), DHAF_ENOTFOUND);

    /* a key moved to another lease leaves with that lease */
    put(s, "/e/d", "2", l2); /* 7 */
    vclock_advance(&f->vc, 5000);
    assert_int_equal(memstore_revision(f->m), 8);
    assert_int_equal(events(s, w, &ev), 3);
    assert_int_equal(ev.v[0].type, DHAF_ETCD_EV_PUT);
    assert_int_equal(ev.v[0].kv.lease, l2);
    assert_string_equal(ev.v[1].kv.key, "/e/c");
    assert_string_equal(ev.v[2].kv.key, "/e/d");
    assert_int_equal(ev.v[2].kv.mod_rev, 8);
    dhaf_etcd_events_release(&ev);
    assert_int_equal(memstore_count_prefix(f->m, ""), 0);
    s->ops->watch_free(w);
}

static void test_keepalive_and_revoke(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    struct dhaf_err err;
    int64_t l = 0;
    assert_int_equal(s->ops->lease_grant(s->ud, 3, &l, &err), 0);
    put(s, "/ka", "1", l);
    struct store_keepalive *ka = s->ops->keepalive_new(s->ud, l);
    vclock_advance(&f->vc, 2000);
    int64_t ttl = 0;
    assert_int_equal(s->ops->keepalive_once(ka, &ttl, 100, &err), 0);
    assert_int_equal(ttl, 3);
    vclock_advance(&f->vc, 2999); /* 4999 ms after the grant, 2999 after the renewal */
    assert_int_equal(memstore_count_prefix(f->m, "/ka"), 1);
    vclock_advance(&f->vc, 1);
    assert_int_equal(memstore_count_prefix(f->m, "/ka"), 0);
    assert_int_equal(s->ops->keepalive_once(ka, &ttl, 100, &err), DHAF_ENOTFOUND);
    s->ops->keepalive_free(ka);

    /* revoke: the keys go in one revision; a lease without keys takes none */
    int64_t a = 0, b = 0;
    assert_int_equal(s->ops->lease_grant(s->ud, 60, &a, &err), 0);
    assert_int_equal(s->ops->lease_grant(s->ud, 60, &b, &err), 0);
    put(s, "/r/1", "", a);
    put(s, "/r/2", "", a);
    int64_t rev = memstore_revision(f->m);
    assert_int_equal(s->ops->lease_revoke(s->ud, a, 0, &err), 0);
    assert_int_equal(memstore_revision(f->m), rev + 1);
    assert_int_equal(memstore_count_prefix(f->m, "/r/"), 0);
    assert_int_equal(s->ops->lease_revoke(s->ud, a, 0, &err), DHAF_ENOTFOUND);
    assert_int_equal(s->ops->lease_revoke(s->ud, b, 0, &err), 0);
    assert_int_equal(memstore_revision(f->m), rev + 1);
}

/* ------------------------------------------------------------------ watches */

static void test_watch_from_revision(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    put(s, "/w/a", "1", 0); /* 2 */
    put(s, "/x", "1", 0);   /* 3 */
    put(s, "/w/b", "1", 0); /* 4 */
    put(s, "/w/a", "2", 0); /* 5 */
    struct dhaf_err err;
    struct store_watch *all = s->ops->watch_new(s->ud, "/w/", true, 3, &err);
    struct store_watch *one = s->ops->watch_new(s->ud, "/w/a", false, 2, &err);
    struct store_watch *now = s->ops->watch_new(s->ud, "/w/", true, 0, &err);
    assert_non_null(all);
    assert_non_null(one);
    assert_non_null(now);
    struct dhaf_etcd_events ev;
    assert_int_equal(events(s, all, &ev), 2);
    assert_string_equal(ev.v[0].kv.key, "/w/b");
    assert_int_equal(ev.v[0].kv.mod_rev, 4);
    assert_int_equal(ev.v[0].kv.create_rev, 4);
    assert_int_equal(ev.v[1].kv.mod_rev, 5);
    assert_int_equal(ev.v[1].kv.version, 2);
    assert_string_equal(ev.v[1].kv.value, "2");
    assert_int_equal(ev.revision, 5);
    dhaf_etcd_events_release(&ev);
    assert_int_equal(events(s, all, &ev), 0);
    assert_int_equal(s->ops->watch_next(all, &ev, 10, &err), DHAF_ETIMEOUT);
    assert_null(ev.v);

    assert_int_equal(events(s, one, &ev), 2);
    assert_int_equal(ev.v[0].kv.mod_rev, 2);
    assert_int_equal(ev.v[1].kv.mod_rev, 5);
    dhaf_etcd_events_release(&ev);
    assert_int_equal(events(s, now, &ev), 0);

    /* "/w/ab" is under "/w/" but is not "/w/a" */
    struct dhaf_etcd_op ops[] = {
        {.type = DHAF_ETCD_OP_PUT, .key = "/w/ab", .value = "1"},
        {.type = DHAF_ETCD_OP_DELETE, .key = "/w/a"},
    };
    assert_int_equal(write_ops(s, ops, 2), 6);
    assert_int_equal(events(s, now, &ev), 2);
    assert_int_equal(ev.v[0].type, DHAF_ETCD_EV_PUT);
    assert_string_equal(ev.v[0].kv.key, "/w/ab");
    assert_int_equal(ev.v[1].type, DHAF_ETCD_EV_DELETE);
    assert_string_equal(ev.v[1].kv.key, "/w/a");
    assert_int_equal(ev.v[1].kv.mod_rev, 6);
    dhaf_etcd_events_release(&ev);
    assert_int_equal(events(s, one, &ev), 1);
    assert_int_equal(ev.v[0].type, DHAF_ETCD_EV_DELETE);
    dhaf_etcd_events_release(&ev);
    s->ops->watch_free(all);
    s->ops->watch_free(one);
    s->ops->watch_free(now);
}

static void test_watch_compacted(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    struct dhaf_err err;
    struct store_watch *old = s->ops->watch_new(s->ud, "/c/", true, 0, &err);
    for (int i = 0; i < 5; i++)
        put(s, "/c/k", "v", 0); /* 2..6 */
    memstore_compact(f->m, 4);
    assert_null(s->ops->watch_new(s->ud, "/c/", true, 3, &err));
    assert_int_equal(err.code, DHAF_ECOMPACTED);
    assert_non_null(strstr(err.msg, "was compacted"));
    struct store_watch *w = s->ops->watch_new(s->ud, "/c/", true, 4, &err);
    assert_non_null(w);
    struct dhaf_etcd_events ev;
    assert_int_equal(events(s, w, &ev), 3);
    assert_int_equal(ev.v[0].kv.mod_rev, 4);
    dhaf_etcd_events_release(&ev);
    /* a connected watch gets what it had not had yet, as from etcd */
    assert_int_equal(events(s, old, &ev), 5);
    assert_int_equal(ev.v[0].kv.mod_rev, 2);
    dhaf_etcd_events_release(&ev);
    memstore_compact(f->m, 100); /* clamped to the current revision */
    put(s, "/c/k", "v", 0);
    assert_int_equal(events(s, w, &ev), 1);
    assert_int_equal(ev.v[0].kv.mod_rev, 7);
    dhaf_etcd_events_release(&ev);
    s->ops->watch_free(old);

    /* a stream broken by an outage resumes from its next revision... */
    put(s, "/c/k", "v", 0); /* 8 */
    memstore_set_down(f->m, true);
    memstore_set_down(f->m, false);
    assert_int_equal(events(s, w, &ev), 1);
    assert_int_equal(ev.v[0].kv.mod_rev, 8);
    dhaf_etcd_events_release(&ev);
    /* ... unless that was compacted meanwhile */
    put(s, "/c/k", "v", 0); /* 9 */
    memstore_set_down(f->m, true);
    memstore_put(f->m, "/c/k", "v", 0); /* 10 */
    memstore_compact(f->m, 10);
    memstore_set_down(f->m, false);
    assert_int_equal(s->ops->watch_next(w, &ev, 10, &err), DHAF_ECOMPACTED);
    assert_non_null(strstr(err.msg, "revision 9 was compacted"));
    assert_int_equal(s->ops->watch_next(w, &ev, 10, &err), DHAF_ECOMPACTED);
    s->ops->watch_free(w);
}

/* Alarms as etcd keeps them: NOSPACE refuses what grows the database, CORRUPT reads and
 * writes; the alarm list stays readable; compaction's answers (the conformance run compares
 * the NOSPACE half with a real etcd). */
static void test_alarms(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    struct dhaf_err err;
    put(s, "/a/k", "v", 0);
    memstore_set_alarm(f->m, 0xabc, DHAF_ETCD_ALARM_NOSPACE, true);
    memstore_set_alarm(f->m, 0xabc, DHAF_ETCD_ALARM_NOSPACE, true); /* once */
    struct dhaf_etcd_alarms al;
    assert_int_equal(s->ops->alarms(s->ud, &al, &err), 0);
    assert_int_equal(al.n, 1);
    assert_int_equal(al.v[0].member, 0xabc);
    assert_int_equal(al.v[0].type, DHAF_ETCD_ALARM_NOSPACE);
    assert_int_equal(store_put(s, "/a/k", "w", 0, &err), DHAF_ETOOBIG);
    assert_true(dhaf_etcd_err_nospace(&err));
    int64_t id;
    assert_int_equal(s->ops->lease_grant(s->ud, 5, &id, &err), DHAF_ETOOBIG);
    struct dhaf_kvs kvs;
    assert_int_equal(store_get(s, "/a/k", &kvs, &err), 0);
    dhaf_kvs_release(&kvs);
    memstore_set_alarm(f->m, 0xdef, DHAF_ETCD_ALARM_CORRUPT, true);
    assert_int_equal(store_get(s, "/a/k", &kvs, &err), DHAF_EPROTO);
    assert_non_null(strstr(err.msg, "corrupt"));
    assert_false(dhaf_etcd_err_nospace(&err));
    assert_int_equal(s->ops->alarms(s->ud, &al, &err), 0);
    assert_int_equal(al.n, 2);
    memstore_set_alarm(f->m, 0xabc, DHAF_ETCD_ALARM_NOSPACE, false);
    memstore_set_alarm(f->m, 0xdef, DHAF_ETCD_ALARM_CORRUPT, false);
    assert_int_equal(s->ops->alarms(s->ud, &al, &err), 0);
    assert_int_equal(al.n, 0);
    assert_int_equal(store_put(s, "/a/k", "w", 0, &err), 0);
    /* compaction through the store */
    int64_t rev = memstore_revision(f->m);
    assert_int_equal(s->ops->compact(s->ud, rev + 1, &err), DHAF_EINVAL);
    assert_int_equal(s->ops->compact(s->ud, rev, &err), 0);
    assert_int_equal(memstore_compact_revision(f->m), rev);
    assert_int_equal(s->ops->compact(s->ud, rev, &err), DHAF_ECOMPACTED);
    memstore_fail(f->m, MS_COMPACT, 1, DHAF_EUNAVAILABLE, false);
    assert_int_equal(s->ops->compact(s->ud, rev, &err), DHAF_EUNAVAILABLE);
    assert_int_equal(memstore_calls(f->m, MS_COMPACT), 4);
    struct dhaf_etcd_status st;
    assert_int_equal(s->ops->status(s->ud, &st, &err), 0);
    assert_int_equal(st.revision, rev);
}

static void test_watch_heard(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    struct dhaf_err err;
    struct store_watch *w = s->ops->watch_new(s->ud, "/h", false, 0, &err);
    assert_int_equal(s->ops->watch_heard(w), 0); /* a creation is no proof of a working watch */
    vclock_advance(&f->vc, 500);
    struct dhaf_etcd_events ev;
    assert_int_equal(events(s, w, &ev), 0);
    assert_int_equal(s->ops->watch_heard(w), 0);
    assert_int_equal(s->ops->watch_progress(w, &err), 0);
    assert_int_equal(s->ops->watch_heard(w), 10500);
    vclock_advance(&f->vc, 500);
    put(s, "/h", "1", 0);
    assert_int_equal(events(s, w, &ev), 1);
    dhaf_etcd_events_release(&ev);
    assert_int_equal(s->ops->watch_heard(w), 11000);
    s->ops->watch_free(w);
}

/* ------------------------------------------------------------------ failures */

static void test_injected_failures(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    struct dhaf_err err;
    struct dhaf_etcd_op op = {.type = DHAF_ETCD_OP_PUT, .key = "/f", .value = "1"};
    struct dhaf_etcd_txn_result res;

    memstore_fail(f->m, MS_TXN, 2, DHAF_ETIMEOUT, false);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(store_txn(s, NULL, 0, &op, 1, NULL, 0, &res, &err), DHAF_ETIMEOUT);
        assert_string_equal(err.msg, "memstore: injected failure");
        assert_null(res.gets);
    }
    assert_int_equal(memstore_revision(f->m), 1);
    assert_int_equal(store_txn(s, NULL, 0, &op, 1, NULL, 0, &res, &err), 0);
    dhaf_etcd_txn_result_release(&res);
    assert_int_equal(memstore_calls(f->m, MS_TXN), 3);
    assert_int_equal(memstore_revision(f->m), 2);

    /* applied: the write happened, the caller cannot know */
    memstore_fail(f->m, MS_TXN, 1, DHAF_EUNKNOWN_OUTCOME, true);
    op.value = "2";
    assert_int_equal(store_txn(s, NULL, 0, &op, 1, NULL, 0, &res, &err), DHAF_EUNKNOWN_OUTCOME);
    assert_null(res.gets);
    assert_int_equal(memstore_revision(f->m), 3);
    char *v = memstore_value(f->m, "/f");
    assert_string_equal(v, "2");
    free(v);

    struct dhaf_kvs kvs;
    memstore_fail(f->m, MS_GET, 1, DHAF_EUNAVAILABLE, false);
    assert_int_equal(store_get(s, "/f", &kvs, &err), DHAF_EUNAVAILABLE);
    assert_int_equal(kvs.n, 0);
    memstore_fail(f->m, MS_GET, 1, DHAF_ETIMEOUT, true);
    assert_int_equal(store_get(s, "/f", &kvs, &err), DHAF_ETIMEOUT);
    assert_null(kvs.kvs);
    assert_int_equal(store_get(s, "/f", &kvs, &err), 0);
    dhaf_kvs_release(&kvs);
    assert_int_equal(memstore_calls(f->m, MS_GET), 3);

    int64_t l = 0;
    memstore_fail(f->m, MS_GRANT, 1, DHAF_EUNAVAILABLE, false);
    assert_int_equal(s->ops->lease_grant(s->ud, 5, &l, &err), DHAF_EUNAVAILABLE);
    assert_int_equal(l, 0);
    assert_int_equal(s->ops->lease_grant(s->ud, 5, &l, &err), 0);
    put(s, "/fl", "1", l); /* 4 */

    struct store_keepalive *ka = s->ops->keepalive_new(s->ud, l);
    int64_t ttl = 0;
    memstore_fail(f->m, MS_KEEPALIVE, 1, DHAF_ETIMEOUT, false);
    vclock_advance(&f->vc, 3000);
    assert_int_equal(s->ops->keepalive_once(ka, &ttl, 100, &err), DHAF_ETIMEOUT);
    /* applied: the lease was renewed although the reply was lost */
    memstore_fail(f->m, MS_KEEPALIVE, 1, DHAF_ETIMEOUT, true);
    assert_int_equal(s->ops->keepalive_once(ka, &ttl, 100, &err), DHAF_ETIMEOUT);
    assert_int_equal(ttl, 0);
    vclock_advance(&f->vc, 4000);
    assert_int_equal(memstore_count_prefix(f->m, "/fl"), 1);
    assert_int_equal(memstore_calls(f->m, MS_KEEPALIVE), 2);
    s->ops->keepalive_free(ka);

    memstore_fail(f->m, MS_REVOKE, 1, DHAF_EUNAVAILABLE, false);
    assert_int_equal(s->ops->lease_revoke(s->ud, l, 100, &err), DHAF_EUNAVAILABLE);
    assert_int_equal(memstore_count_prefix(f->m, "/fl"), 1);
    memstore_fail(f->m, MS_REVOKE, 1, DHAF_ETIMEOUT, true);
    assert_int_equal(s->ops->lease_revoke(s->ud, l, 100, &err), DHAF_ETIMEOUT);
    assert_int_equal(memstore_count_prefix(f->m, "/fl"), 0);

    memstore_fail(f->m, MS_WATCH_NEW, 1, DHAF_EUNAVAILABLE, false);
    assert_null(s->ops->watch_new(s->ud, "/f", false, 0, &err));
    assert_int_equal(err.code, DHAF_EUNAVAILABLE);
    memstore_fail(f->m, MS_WATCH_NEW, 3, DHAF_EUNAVAILABLE, true);
    memstore_fail(f->m, MS_WATCH_NEW, 0, 0, false); /* cancelled */
    struct store_watch *w = s->ops->watch_new(s->ud, "/f", false, 0, &err);
    assert_non_null(w);
    s->ops->watch_free(w);
    assert_int_equal(memstore_calls(f->m, MS_WATCH_NEW), 2);
}

static void test_down(void **state)
{
    struct fx *f = *state;
    struct store *s = &f->s;
    struct dhaf_err err;
    int64_t l = 0;
    assert_int_equal(s->ops->lease_grant(s->ud, 2, &l, &err), 0);
    put(s, "/d/l", "1", l); /* 2 */
    struct store_watch *w = s->ops->watch_new(s->ud, "/d/", true, 0, &err);
    struct store_keepalive *ka = s->ops->keepalive_new(s->ud, l);
    memstore_fail(f->m, MS_TXN, 1, DHAF_ETIMEOUT, false);

    memstore_set_down(f->m, true);
    struct dhaf_kvs kvs;
    struct dhaf_etcd_txn_result res;
    struct dhaf_etcd_op op = {.type = DHAF_ETCD_OP_PUT, .key = "/d/x", .value = "1"};
    int64_t ttl = 0, l2 = 0;
    assert_int_equal(store_get(s, "/d/l", &kvs, &err), DHAF_EUNAVAILABLE);
    assert_string_equal(err.msg, "memstore: etcd is down");
    assert_int_equal(store_txn(s, NULL, 0, &op, 1, NULL, 0, &res, &err), DHAF_EUNAVAILABLE);
    assert_int_equal(s->ops->lease_grant(s->ud, 2, &l2, &err), DHAF_EUNAVAILABLE);
    assert_int_equal(s->ops->lease_revoke(s->ud, l, 0, &err), DHAF_EUNAVAILABLE);
    assert_int_equal(s->ops->keepalive_once(ka, &ttl, 100, &err), DHAF_EUNAVAILABLE);
    assert_null(s->ops->watch_new(s->ud, "/d/", true, 0, &err));
    assert_int_equal(err.code, DHAF_EUNAVAILABLE);
    assert_int_equal(s->ops->watch_progress(w, &err), DHAF_EUNAVAILABLE);

    /* the world goes on: a test's direct write, and the lease expiring by the clock */
    memstore_put(f->m, "/d/y", "1", 0); /* 3 */
    vclock_advance(&f->vc, 2000);       /* the lease's key goes at 4 */
    struct dhaf_etcd_events ev;
    assert_int_equal(s->ops->watch_next(w, &ev, 1000, &err), DHAF_ETIMEOUT);
    assert_int_equal(ev.n, 0);
    assert_int_equal(memstore_revision(f->m), 4);

    memstore_set_down(f->m, false);
    assert_int_equal(events(s, w, &ev), 2);
    assert_int_equal(ev.v[0].type, DHAF_ETCD_EV_PUT);
    assert_string_equal(ev.v[0].kv.key, "/d/y");
    assert_int_equal(ev.v[1].type, DHAF_ETCD_EV_DELETE);
    assert_string_equal(ev.v[1].kv.key, "/d/l");
    assert_int_equal(ev.v[1].kv.mod_rev, 4);
    dhaf_etcd_events_release(&ev);
    assert_int_equal(s->ops->keepalive_once(ka, &ttl, 100, &err), DHAF_ENOTFOUND);
    /* the injection was not used up while down */
    assert_int_equal(store_txn(s, NULL, 0, &op, 1, NULL, 0, &res, &err), DHAF_ETIMEOUT);
    assert_int_equal(store_txn(s, NULL, 0, &op, 1, NULL, 0, &res, &err), 0);
    dhaf_etcd_txn_result_release(&res);
    assert_int_equal(memstore_calls(f->m, MS_TXN), 4);
    assert_int_equal(s->ops->watch_progress(w, &err), 0);
    s->ops->keepalive_free(ka);
    s->ops->watch_free(w);
}

/* ------------------------------------------------------------------ threads */

/* Increments /t/n with guarded txns (compare mod_rev, retry on a lost race). */
static void *increment(void *arg)
{
    struct store *s = arg;
    for (int i = 0; i < 200; i++) {
        for (;;) {
            struct dhaf_kvs kvs;
            struct dhaf_err err;
            if (store_get(s, "/t/n", &kvs, &err))
                return "get failed";
            long n = kvs.n ? atol(kvs.kvs[0].value) : 0;
            int64_t mod = kvs.n ? kvs.kvs[0].mod_rev : 0;
            dhaf_kvs_release(&kvs);
            char v[32];
            snprintf(v, sizeof(v), "%ld", n + 1);
            struct dhaf_etcd_cmp c = {"/t/n", DHAF_ETCD_MOD_REV, DHAF_ETCD_EQ, mod, NULL};
            struct dhaf_etcd_op op = {.type = DHAF_ETCD_OP_PUT, .key = "/t/n", .value = v};
            struct dhaf_etcd_txn_result res;
            if (store_txn(s, &c, 1, &op, 1, NULL, 0, &res, &err))
                return "txn failed";
            bool ok = res.succeeded;
            dhaf_etcd_txn_result_release(&res);
            if (ok)
                break;
        }
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct fx *f = *state;
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, increment, &f->s), 0);
    for (int i = 0; i < 4; i++) {
        void *r = NULL;
        pthread_join(t[i], &r);
        assert_null(r);
    }
    char *v = memstore_value(f->m, "/t/n");
    assert_string_equal(v, "800");
    free(v);
    assert_int_equal(memstore_revision(f->m), 801);
}

/* ------------------------------------------------------------------ conformance with etcd */

/*
 * One script, run on a real etcd (through lib/etcd and node/store.c) and on the memstore, writes
 * a trace of what it observed; the traces must be equal. Revisions are written relative to the
 * revision at the start, lease IDs as L0, L1, ... in grant order.
 */
struct env {
    struct store s;
    struct vclock *vc;      /* the memstore's clock; NULL on etcd */
    struct memstore *m;     /* NULL on etcd */
    struct etcd_cluster *c; /* NULL on the memstore */
    int64_t base;           /* the revision before the script */
    int64_t leases[4];
    size_t n_leases;
    char trace[16384];
    size_t len;
};

static void tr(struct env *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void tr(struct env *e, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(e->trace + e->len, sizeof(e->trace) - e->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(e->trace) - e->len)
        fail_msg("conformance trace too long");
    e->len += (size_t)n;
}

static const char *lease_name(const struct env *e, int64_t id, char *buf, size_t len)
{
    if (id == 0)
        return "-";
    for (size_t i = 0; i < e->n_leases; i++) {
        if (e->leases[i] == id) {
            snprintf(buf, len, "L%zu", i);
            return buf;
        }
    }
    return "L?";
}

static void tr_kv(struct env *e, const struct dhaf_kv *kv)
{
    char b[16];
    tr(e, " [%s=%s c%+lld m%+lld v%lld %s]", kv->key, kv->value,
       (long long)(kv->create_rev ? kv->create_rev - e->base : 0),
       (long long)(kv->mod_rev - e->base), (long long)kv->version,
       lease_name(e, kv->lease, b, sizeof(b)));
}

static void tr_kvs(struct env *e, const struct dhaf_kvs *kvs)
{
    tr(e, " {rev%+lld n%zu count%lld more%d", (long long)(kvs->revision - e->base), kvs->n,
       (long long)kvs->count, (int)kvs->more);
    for (size_t i = 0; i < kvs->n; i++)
        tr_kv(e, &kvs->kvs[i]);
    tr(e, "}");
}

static void tr_rc(struct env *e, const char *what, int rc)
{
    tr(e, "%s: %s\n", what, dhaf_strerror_name(rc));
}

static void step_txn(struct env *e, const char *what, const struct dhaf_etcd_cmp *cmps,
                     size_t n_cmps, const struct dhaf_etcd_op *then, size_t n_then,
                     const struct dhaf_etcd_op *otherwise, size_t n_otherwise)
{
    struct dhaf_etcd_txn_result res;
    struct dhaf_err err;
    int rc = store_txn(&e->s, cmps, n_cmps, then, n_then, otherwise, n_otherwise, &res, &err);
    if (rc) {
        tr_rc(e, what, rc); /* etcd's messages carry more context than the memstore's */
        return;
    }
    tr(e, "%s: ok succeeded%d rev%+lld", what, (int)res.succeeded,
       (long long)(res.revision - e->base));
    for (size_t i = 0; i < res.n_gets; i++)
        tr_kvs(e, &res.gets[i]);
    tr(e, "\n");
    dhaf_etcd_txn_result_release(&res);
}

static void step_get(struct env *e, const char *what, const char *from, const char *prefix,
                     int64_t limit)
{
    struct dhaf_kvs kvs;
    struct dhaf_err err;
    int rc = prefix ? e->s.ops->get_from(e->s.ud, from, prefix, limit, &kvs, &err)
                    : store_get(&e->s, from, &kvs, &err);
    if (rc) {
        tr_rc(e, what, rc);
        return;
    }
    tr(e, "%s: ok", what);
    tr_kvs(e, &kvs);
    tr(e, "\n");
    dhaf_kvs_release(&kvs);
}

static int64_t step_grant(struct env *e, int64_t ttl)
{
    int64_t id = 0;
    struct dhaf_err err;
    int rc = e->s.ops->lease_grant(e->s.ud, ttl, &id, &err);
    if (rc)
        fail_msg("lease grant: %s", err.msg);
    assert_true(e->n_leases < sizeof(e->leases) / sizeof(e->leases[0]));
    e->leases[e->n_leases++] = id;
    tr(e, "grant %lld: L%zu\n", (long long)ttl, e->n_leases - 1);
    return id;
}

static void step_keepalive(struct env *e, int64_t lease)
{
    struct store_keepalive *ka = e->s.ops->keepalive_new(e->s.ud, lease);
    int64_t ttl = 0;
    struct dhaf_err err;
    int rc = e->s.ops->keepalive_once(ka, &ttl, 2000, &err);
    e->s.ops->keepalive_free(ka);
    char b[16];
    tr(e, "keepalive %s: %s ttl %lld\n", lease_name(e, lease, b, sizeof(b)), dhaf_strerror_name(rc),
       (long long)ttl);
}

static int64_t current_rev(struct env *e)
{
    struct dhaf_kvs kvs;
    struct dhaf_err err;
    if (store_get(&e->s, "/conf", &kvs, &err))
        fail_msg("get: %s", err.msg);
    int64_t rev = kvs.revision;
    dhaf_kvs_release(&kvs);
    return rev;
}

/*
 * Reads events from w until one of revision >= until_rev came, waiting at most 10 s: on etcd in
 * watch_next, on the memstore by moving the virtual clock (which expires leases there).
 * Writes the events to the trace under label.
 */
static void collect(struct env *e, struct store_watch *w, int64_t until_rev, const char *label)
{
    tr(e, "%s:", label);
    int64_t last = 0;
    int rc = 0;
    for (int i = 0; i < 100 && last < until_rev && rc == 0; i++) {
        if (e->vc)
            vclock_advance(e->vc, 100);
        struct dhaf_etcd_events ev;
        struct dhaf_err err;
        rc = e->s.ops->watch_next(w, &ev, 100, &err);
        if (rc == DHAF_ETIMEOUT) {
            rc = 0;
            continue;
        }
        if (rc) {
            tr(e, " %s", dhaf_strerror_name(rc));
            break;
        }
        for (size_t j = 0; j < ev.n; j++) {
            tr(e, " %s", ev.v[j].type == DHAF_ETCD_EV_PUT ? "PUT" : "DEL");
            tr_kv(e, &ev.v[j].kv);
            last = ev.v[j].kv.mod_rev;
        }
        dhaf_etcd_events_release(&ev);
    }
    tr(e, "%s\n", rc == 0 && last < until_rev ? " (incomplete)" : "");
}

static void compact(struct env *e, int64_t rev)
{
    if (e->m) {
        memstore_compact(e->m, rev);
        return;
    }
    char out[256];
    if (etcd_cluster_ctl(e->c, out, sizeof(out), "compact %lld", (long long)rev) != 0)
        fail_msg("etcdctl compact %lld failed", (long long)rev);
}

static void pause_ms(int ms)
{
    /* only between polls of a condition with a deadline, never to wait for a state */
    struct timespec ts = {0, (long)ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* etcd goes away (its member is killed: the client's streams break) or comes back (restarted,
 * and polled until the client reaches it again); the memstore goes down or up. */
static void set_down(struct env *e, bool down)
{
    if (e->m) {
        memstore_set_down(e->m, down);
        return;
    }
    if (down) {
        if (etcd_member_kill(e->c, 0) != 0)
            fail_msg("etcd kill failed");
        return;
    }
    if (etcd_member_restart(e->c, 0) != 0)
        fail_msg("etcd restart failed");
    /* the client reconnects after its backoff (at most 1 s) */
    int rc = -1;
    for (int i = 0; i < 200 && rc != 0; i++) {
        struct dhaf_kvs kvs;
        struct dhaf_err err;
        rc = store_get(&e->s, "/conf", &kvs, &err);
        if (rc == 0)
            dhaf_kvs_release(&kvs);
        else
            pause_ms(50);
    }
    if (rc != 0)
        fail_msg("the client did not reach etcd again within 10 s");
}

/* A watch from a compacted revision: etcd may confirm it and report the compaction on the
 * first watch_next; the memstore refuses it at once. Both count as "compacted". */
static void step_watch_compacted(struct env *e, int64_t start_rev)
{
    struct dhaf_err err;
    struct store_watch *w = e->s.ops->watch_new(e->s.ud, "/conf/", true, start_rev, &err);
    int rc = w ? 0 : err.code;
    for (int i = 0; w && rc == 0 && i < 50; i++) {
        struct dhaf_etcd_events ev;
        rc = e->s.ops->watch_next(w, &ev, 100, &err);
        if (rc == DHAF_ETIMEOUT)
            rc = 0;
        else if (rc == 0) {
            dhaf_etcd_events_release(&ev);
            break; /* events: not compacted */
        }
    }
    e->s.ops->watch_free(w);
    tr(e, "watch from %+lld: %s\n", (long long)(start_rev - e->base), dhaf_strerror_name(rc));
}

/* Raises or disarms NOSPACE: on etcd through its Maintenance/Alarm API (as a full database
 * would, without filling a disk), on the memstore by hand. */
static void set_nospace(struct env *e, bool active)
{
    if (e->m) {
        memstore_set_alarm(e->m, 1, DHAF_ETCD_ALARM_NOSPACE, active);
        return;
    }
    struct dhaf_etcd *etcd = e->s.ud;
    struct dhaf_etcd_status st;
    struct dhaf_err err;
    if (dhaf_etcd_status(etcd, &st, &err) != 0 ||
        dhaf_etcd_alarm_set(etcd, st.member, DHAF_ETCD_ALARM_NOSPACE, active, &err) != 0)
        fail_msg("alarm %s: %s", active ? "activate" : "deactivate", err.msg);
}

/* Compaction through the store, and what NOSPACE refuses. */
static void script_maintenance(struct env *e)
{
    struct store *s = &e->s;
    struct dhaf_err err;
    struct dhaf_etcd_op put_m = {.type = DHAF_ETCD_OP_PUT, .key = "/conf/m", .value = "1"};
    step_txn(e, "put m 1", NULL, 0, &put_m, 1, NULL, 0);
    put_m.value = "2";
    step_txn(e, "put m 2", NULL, 0, &put_m, 1, NULL, 0);
    int64_t rev = current_rev(e);
    tr_rc(e, "compact at the revision before", s->ops->compact(s->ud, rev - 1, &err));
    tr_rc(e, "compact there again", s->ops->compact(s->ud, rev - 1, &err));
    tr_rc(e, "compact below it", s->ops->compact(s->ud, rev - 2, &err));
    tr_rc(e, "compact in the future", s->ops->compact(s->ud, rev + 10, &err));
    tr_rc(e, "compact at the revision", s->ops->compact(s->ud, rev, &err));
    step_watch_compacted(e, rev - 1);
    struct dhaf_etcd_status st;
    int rc = s->ops->status(s->ud, &st, &err);
    tr(e, "status: %s rev%+lld db>0 %d errors \"%s\"\n", dhaf_strerror_name(rc),
       (long long)(st.revision - e->base), st.db_size > 0, st.errors);

    struct dhaf_etcd_alarms al;
    rc = s->ops->alarms(s->ud, &al, &err);
    tr(e, "alarms: %s n%zu\n", dhaf_strerror_name(rc), al.n);
    set_nospace(e, true);
    rc = s->ops->alarms(s->ud, &al, &err);
    tr(e, "alarms: %s n%zu %s\n", dhaf_strerror_name(rc), al.n,
       al.n ? dhaf_etcd_alarm_name(al.v[0].type) : "-");
    rc = s->ops->status(s->ud, &st, &err);
    tr(e, "status while NOSPACE: %s errors name it %d\n", dhaf_strerror_name(rc),
       strstr(st.errors, "alarm:NOSPACE") != NULL);
    put_m.value = "3";
    struct dhaf_etcd_txn_result res;
    rc = store_txn(s, NULL, 0, &put_m, 1, NULL, 0, &res, &err);
    tr(e, "put while NOSPACE: %s nospace %d\n", dhaf_strerror_name(rc),
       rc ? dhaf_etcd_err_nospace(&err) : 0);
    if (rc == 0)
        dhaf_etcd_txn_result_release(&res);
    struct dhaf_etcd_op del_m = {.type = DHAF_ETCD_OP_DELETE, .key = "/conf/m"};
    step_txn(e, "delete while NOSPACE", NULL, 0, &del_m, 1, NULL, 0);
    step_get(e, "get while NOSPACE", "/conf/a", NULL, 0);
    int64_t lease = 0;
    tr_rc(e, "lease grant while NOSPACE", s->ops->lease_grant(s->ud, 10, &lease, &err));
    tr_rc(e, "compact while NOSPACE", s->ops->compact(s->ud, current_rev(e), &err));
    set_nospace(e, false);
    rc = s->ops->alarms(s->ud, &al, &err);
    tr(e, "alarms after the disarm: %s n%zu\n", dhaf_strerror_name(rc), al.n);
    step_txn(e, "put after the disarm", NULL, 0, &put_m, 1, NULL, 0);
}

static void script(struct env *e)
{
    struct store *s = &e->s;
    struct dhaf_err err;
    e->base = current_rev(e);
    step_get(e, "empty prefix", "/conf/", "/conf/", 0);
    struct store_watch *all = s->ops->watch_new(s->ud, "/conf/", true, 0, &err);
    assert_non_null(all);

    struct dhaf_etcd_op put_a = {.type = DHAF_ETCD_OP_PUT, .key = "/conf/a", .value = "1"};
    step_txn(e, "put a", NULL, 0, &put_a, 1, NULL, 0);
    struct dhaf_etcd_cmp a_absent = {"/conf/a", DHAF_ETCD_CREATE_REV, DHAF_ETCD_EQ, 0, NULL};
    struct dhaf_etcd_op get_a = {.type = DHAF_ETCD_OP_GET, .key = "/conf/a"};
    step_txn(e, "create a or get", &a_absent, 1, &put_a, 1, &get_a, 1);
    struct dhaf_etcd_cmp v1[] = {{"/conf/a", DHAF_ETCD_VERSION, DHAF_ETCD_EQ, 1, NULL},
                                 {"/conf/a", DHAF_ETCD_VALUE, DHAF_ETCD_EQ, 0, "1"}};
    struct dhaf_etcd_op three[] = {
        {.type = DHAF_ETCD_OP_GET, .key = "/conf/", .prefix = true},
        {.type = DHAF_ETCD_OP_PUT, .key = "/conf/a", .value = "2"},
        {.type = DHAF_ETCD_OP_PUT, .key = "/conf/b", .value = "x"},
        {.type = DHAF_ETCD_OP_GET, .key = "/conf/", .prefix = true},
    };
    step_txn(e, "two puts", v1, 2, three, 4, NULL, 0);

    /* compares on a missing key and on /conf/a (create +1, mod +2, version 2, value "2") */
    const struct dhaf_etcd_cmp cmps[] = {
        {"/conf/none", DHAF_ETCD_VALUE, DHAF_ETCD_EQ, 0, ""},
        {"/conf/none", DHAF_ETCD_VALUE, DHAF_ETCD_NE, 0, "x"},
        {"/conf/none", DHAF_ETCD_VALUE, DHAF_ETCD_GT, 0, ""},
        {"/conf/none", DHAF_ETCD_VALUE, DHAF_ETCD_LT, 0, "z"},
        {"/conf/none", DHAF_ETCD_CREATE_REV, DHAF_ETCD_EQ, 0, NULL},
        {"/conf/none", DHAF_ETCD_MOD_REV, DHAF_ETCD_LT, 1, NULL},
        {"/conf/none", DHAF_ETCD_VERSION, DHAF_ETCD_EQ, 0, NULL},
        {"/conf/none", DHAF_ETCD_VERSION, DHAF_ETCD_GT, 0, NULL},
        {"/conf/none", DHAF_ETCD_LEASE, DHAF_ETCD_EQ, 0, NULL},
        {"/conf/none", DHAF_ETCD_LEASE, DHAF_ETCD_NE, 0, NULL},
        {"/conf/a", DHAF_ETCD_VALUE, DHAF_ETCD_GT, 0, "1"},
        {"/conf/a", DHAF_ETCD_VALUE, DHAF_ETCD_LT, 0, "2x"},
        {"/conf/a", DHAF_ETCD_VALUE, DHAF_ETCD_NE, 0, "2"},
        {"/conf/a", DHAF_ETCD_CREATE_REV, DHAF_ETCD_EQ, e->base + 1, NULL},
        {"/conf/a", DHAF_ETCD_MOD_REV, DHAF_ETCD_GT, e->base + 1, NULL},
        {"/conf/a", DHAF_ETCD_MOD_REV, DHAF_ETCD_LT, e->base + 2, NULL},
        {"/conf/a", DHAF_ETCD_VERSION, DHAF_ETCD_EQ, 2, NULL},
        {"/conf/a", DHAF_ETCD_LEASE, DHAF_ETCD_GT, 0, NULL},
    };
    for (size_t i = 0; i < sizeof(cmps) / sizeof(cmps[0]); i++) {
        char what[32];
        snprintf(what, sizeof(what), "compare %zu", i);
        step_txn(e, what, &cmps[i], 1, NULL, 0, NULL, 0);
    }
    struct dhaf_etcd_op del_none = {.type = DHAF_ETCD_OP_DELETE, .key = "/conf/none"};
    step_txn(e, "delete missing", NULL, 0, &del_none, 1, NULL, 0);

    /* leases */
    int64_t l0 = step_grant(e, 60);
    struct dhaf_etcd_op lputs[] = {
        {.type = DHAF_ETCD_OP_PUT, .key = "/conf/l2", .value = "y", .lease = l0},
        {.type = DHAF_ETCD_OP_PUT, .key = "/conf/l1", .value = "x", .lease = l0},
    };
    step_txn(e, "put with lease", NULL, 0, lputs, 2, NULL, 0);
    struct dhaf_etcd_cmp lc = {"/conf/l1", DHAF_ETCD_LEASE, DHAF_ETCD_EQ, l0, NULL};
    step_txn(e, "compare lease", &lc, 1, NULL, 0, NULL, 0);
    struct dhaf_etcd_op bad[] = {
        {.type = DHAF_ETCD_OP_PUT, .key = "/conf/c", .value = "1"},
        {.type = DHAF_ETCD_OP_PUT, .key = "/conf/d", .value = "1", .lease = 1},
    };
    step_txn(e, "unknown lease", NULL, 0, bad, 2, NULL, 0);
    struct dhaf_etcd_op dup[] = {
        {.type = DHAF_ETCD_OP_PUT, .key = "/conf/c", .value = "1"},
        {.type = DHAF_ETCD_OP_DELETE, .key = "/conf/", .prefix = true},
    };
    step_txn(e, "duplicate key", NULL, 0, dup, 2, NULL, 0);
    step_get(e, "c after failures", "/conf/c", NULL, 0);

    /* ranges */
    step_get(e, "from b limit 1", "/conf/b", "/conf/", 1);
    step_get(e, "from a", "/conf/a", "/conf/", 0);
    step_get(e, "from l limit 2", "/conf/l", "/conf/", 2);
    step_get(e, "from outside", "/x", "/conf/", 0);

    step_keepalive(e, l0);
    tr_rc(e, "revoke L0", s->ops->lease_revoke(s->ud, l0, 2000, &err));
    tr_rc(e, "revoke L0 again", s->ops->lease_revoke(s->ud, l0, 2000, &err));
    step_keepalive(e, l0);

    struct dhaf_etcd_op del_all[] = {
        {.type = DHAF_ETCD_OP_DELETE, .key = "/conf/", .prefix = true},
        {.type = DHAF_ETCD_OP_GET, .key = "/conf/", .prefix = true},
    };
    step_txn(e, "delete all", NULL, 0, del_all, 2, NULL, 0);

    /* a lease that expires: its keys go in one revision, in key order */
    int64_t l1 = step_grant(e, 1);
    struct dhaf_etcd_op eputs[] = {
        {.type = DHAF_ETCD_OP_PUT, .key = "/conf/e2", .value = "2", .lease = l1},
        {.type = DHAF_ETCD_OP_PUT, .key = "/conf/e1", .value = "1", .lease = l1},
        {.type = DHAF_ETCD_OP_PUT, .key = "/conf/f", .value = "kept"},
    };
    step_txn(e, "put expiring", NULL, 0, eputs, 3, NULL, 0);
    struct store_watch *exp = s->ops->watch_new(s->ud, "/conf/e", true, 0, &err);
    assert_non_null(exp);
    collect(e, exp, current_rev(e) + 1, "expired");
    s->ops->watch_free(exp);
    step_get(e, "after expiry", "/conf/", "/conf/", 0);
    step_keepalive(e, l1);

    /* compaction */
    int64_t last = current_rev(e);
    compact(e, last - 1);
    step_watch_compacted(e, last - 2);
    struct store_watch *tail = s->ops->watch_new(s->ud, "/conf/", true, last - 1, &err);
    assert_non_null(tail);
    collect(e, tail, last, "from the compaction");
    s->ops->watch_free(tail);

    collect(e, all, last, "everything");
    s->ops->watch_free(all);

    /* an outage: the watch resumes where it was, or finds its revision compacted */
    struct store_watch *w = s->ops->watch_new(s->ud, "/conf/g", false, 0, &err);
    assert_non_null(w);
    struct dhaf_etcd_op put_g = {.type = DHAF_ETCD_OP_PUT, .key = "/conf/g", .value = "1"};
    step_txn(e, "put g 1", NULL, 0, &put_g, 1, NULL, 0);
    set_down(e, true);
    step_get(e, "get while down", "/conf/g", NULL, 0);
    set_down(e, false);
    put_g.value = "2";
    step_txn(e, "put g 2", NULL, 0, &put_g, 1, NULL, 0);
    collect(e, w, current_rev(e), "after an outage");
    put_g.value = "3";
    step_txn(e, "put g 3", NULL, 0, &put_g, 1, NULL, 0);
    set_down(e, true);
    set_down(e, false);
    put_g.value = "4";
    step_txn(e, "put g 4", NULL, 0, &put_g, 1, NULL, 0);
    compact(e, current_rev(e));
    collect(e, w, current_rev(e), "resumed after a compaction");
    s->ops->watch_free(w);
    script_maintenance(e);
}

/* Line by line: print_message cuts long messages. */
static void print_trace(const char *name, const char *trace)
{
    print_message("---- %s\n", name);
    for (const char *p = trace; *p;) {
        size_t n = strcspn(p, "\n");
        print_message("%.*s\n", (int)n, p);
        p += n + (p[n] == '\n');
    }
}

static void test_conformance(void **state)
{
    (void)state;
    struct etcd_cluster c;
    if (etcd_cluster_start(&c, 1) != 0) {
        etcd_cluster_stop(&c);
        skip();
    }
    const char *ep = c.endpoints;
    struct dhaf_etcd_opts o = {.endpoints = &ep, .n_endpoints = 1, .timeout_ms = 2000};
    struct dhaf_err err;
    struct dhaf_etcd *etcd = dhaf_etcd_new(&o, &err);
    assert_non_null(etcd);
    struct env *real = calloc(1, sizeof(*real));
    assert_non_null(real);
    real->s = store_etcd(etcd);
    real->c = &c;
    script(real);
    dhaf_etcd_free(etcd);
    etcd_cluster_stop(&c);

    struct vclock vc;
    vclock_init(&vc, 1000, 1700000000000);
    struct memstore *m = memstore_new(&vc.base);
    struct env *mem = calloc(1, sizeof(*mem));
    assert_non_null(mem);
    mem->s = memstore_store(m);
    mem->vc = &vc;
    mem->m = m;
    script(mem);
    memstore_free(m);

    if (getenv("MEMSTORE_TRACE") || strcmp(real->trace, mem->trace) != 0) {
        print_trace("etcd", real->trace);
        print_trace("memstore", mem->trace);
    }
    /* the first line that differs, for a short failure message */
    const char *a = real->trace, *b = mem->trace;
    while (*a && *a == *b) {
        const char *na = strchr(a, '\n'), *nb = strchr(b, '\n');
        if (!na || !nb || na - a != nb - b || strncmp(a, b, (size_t)(na - a)) != 0)
            break;
        a = na + 1;
        b = nb + 1;
    }
    if (*a || *b)
        fail_msg("etcd and memstore differ:\n  etcd:     %.*s\n  memstore: %.*s",
                 (int)strcspn(a, "\n"), a, (int)strcspn(b, "\n"), b);
    free(real);
    free(mem);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vclock),
        cmocka_unit_test_setup_teardown(test_revisions, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_compares, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_txn_branches, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_get_ranges, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_lease_expiry, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_and_revoke, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_watch_from_revision, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_watch_compacted, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_watch_heard, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_alarms, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_injected_failures, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_down, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_threads, fx_setup, fx_teardown),
        cmocka_unit_test(test_conformance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
