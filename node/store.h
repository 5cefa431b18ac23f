/* SPDX-License-Identifier: MIT */
/* The node's access to etcd: the operations node/ uses, behind one table of functions, so that
 * the cluster, view, leader and notify modules run on an in-memory store in virtual time in
 * unit tests (tests/common/memstore.c) and on lib/etcd in the daemon (store_etcd); an observed
 * store (store_observed) reports every write's outcome to the etcd monitor (etcdmon.h).
 * Semantics, retry rules and error codes are lib/etcd's (dhaf/etcd.h). */
#ifndef DHAF_NODE_STORE_H
#define DHAF_NODE_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/etcd.h"

struct store_watch;
struct store_keepalive;

struct store_ops {
    /* One key (prefix false) or every key under it, in key order (limit 0 = all). */
    int (*get)(void *ud, const char *key, bool prefix, int64_t limit, struct dhaf_kvs *out,
               struct dhaf_err *err);
    /* Keys from `from` (inclusive) to the end of prefix. */
    int (*get_from)(void *ud, const char *from, const char *prefix, int64_t limit,
                    struct dhaf_kvs *out, struct dhaf_err *err);
    /* The mod revision of the key under prefix written last (0: none). */
    int (*latest_mod)(void *ud, const char *prefix, int64_t *mod_rev, struct dhaf_err *err);
    int (*txn)(void *ud, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
               const struct dhaf_etcd_op *then, size_t n_then, const struct dhaf_etcd_op *otherwise,
               size_t n_otherwise, struct dhaf_etcd_txn_result *res, struct dhaf_err *err);
    int (*lease_grant)(void *ud, int64_t ttl, int64_t *id, struct dhaf_err *err);
    /* timeout_ms 0: the client's own per-attempt deadlines. */
    int (*lease_revoke)(void *ud, int64_t id, int timeout_ms, struct dhaf_err *err);
    struct store_keepalive *(*keepalive_new)(void *ud, int64_t lease);
    int (*keepalive_once)(struct store_keepalive *ka, int64_t *ttl, int timeout_ms,
                          struct dhaf_err *err);
    void (*keepalive_free)(struct store_keepalive *ka);
    struct store_watch *(*watch_new)(void *ud, const char *key, bool prefix, int64_t start_rev,
                                     struct dhaf_err *err);
    int (*watch_next)(struct store_watch *w, struct dhaf_etcd_events *out, int timeout_ms,
                      struct dhaf_err *err);
    int64_t (*watch_heard)(struct store_watch *w);
    int (*watch_progress)(struct store_watch *w, struct dhaf_err *err);
    void (*watch_free)(struct store_watch *w);
    /* Maintenance: history compaction at rev (DHAF_ECOMPACTED: already done), the alarms
     * raised, and the answering member's status (revision, database size). */
    int (*compact)(void *ud, int64_t rev, struct dhaf_err *err);
    int (*alarms)(void *ud, struct dhaf_etcd_alarms *out, struct dhaf_err *err);
    int (*status)(void *ud, struct dhaf_etcd_status *out, struct dhaf_err *err);
};

/* A store: the table and its instance. Copied by value; the instance outlives its users. */
struct store {
    const struct store_ops *ops;
    void *ud;
};

/** A store over an etcd client (borrowed; must outlive every use of the store). */
struct store store_etcd(struct dhaf_etcd *etcd);

/** An etcd client as cfg's etcd section says (hosts, TLS, client certificate, user):
 *  dhaf-node's, and dhaf-sim record's. NULL with err when it cannot be made. */
struct dhaf_etcd *store_etcd_client(const struct dhaf_config *cfg, struct dhaf_err *err);

/* Is told the outcome of every write made through an observed store: rc 0 (etcd applied it,
 * or answered that a compare failed) or the error. Called on the writer's thread, with no
 * lock of the store held; it must be quick (memory only). */
typedef void store_write_fn(void *ud, int rc, const struct dhaf_err *err);

/* A store that forwards to `inner` and reports the outcome of each write (a transaction with
 * a put or a delete, a lease grant) to on_write: how the node learns that etcd refuses its
 * writes, whoever wrote. Caller-owned; must outlive every use of store_observed's result. */
struct store_observer {
    struct store inner;
    store_write_fn *on_write;
    void *ud;
    struct store_ops ops; /* filled by store_observed */
};

/** The observed store over o (borrowed). */
struct store store_observed(struct store_observer *o);

/* Thin wrappers, so callers read like lib/etcd. */
int store_get(const struct store *s, const char *key, struct dhaf_kvs *out, struct dhaf_err *err);
int store_get_prefix(const struct store *s, const char *prefix, int64_t limit, struct dhaf_kvs *out,
                     struct dhaf_err *err);
int store_txn(const struct store *s, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
              const struct dhaf_etcd_op *then, size_t n_then, const struct dhaf_etcd_op *otherwise,
              size_t n_otherwise, struct dhaf_etcd_txn_result *res, struct dhaf_err *err);
/** An unguarded put (a txn of one op without compares). */
int store_put(const struct store *s, const char *key, const char *value, int64_t lease,
              struct dhaf_err *err);

#endif
