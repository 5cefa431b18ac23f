/* SPDX-License-Identifier: MIT */
/* The store over lib/etcd, and the wrappers every caller uses. */
#include "store.h"

static int e_get(void *ud, const char *key, bool prefix, int64_t limit, struct dhaf_kvs *out,
                 struct dhaf_err *err)
{
    return prefix ? dhaf_etcd_get_prefix(ud, key, limit, out, err)
                  : dhaf_etcd_get(ud, key, out, err);
}

static int e_get_from(void *ud, const char *from, const char *prefix, int64_t limit,
                      struct dhaf_kvs *out, struct dhaf_err *err)
{
    return dhaf_etcd_get_from(ud, from, prefix, limit, out, err);
}

static int e_latest_mod(void *ud, const char *prefix, int64_t *mod_rev, struct dhaf_err *err)
{
    return dhaf_etcd_latest_mod(ud, prefix, mod_rev, err);
}

static int e_txn(void *ud, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                 const struct dhaf_etcd_op *then, size_t n_then,
                 const struct dhaf_etcd_op *otherwise, size_t n_otherwise,
                 struct dhaf_etcd_txn_result *res, struct dhaf_err *err)
{
    return dhaf_etcd_txn(ud, cmps, n_cmps, then, n_then, otherwise, n_otherwise, res, err);
}

static int e_grant(void *ud, int64_t ttl, int64_t *id, struct dhaf_err *err)
{
    return dhaf_etcd_lease_grant(ud, ttl, id, NULL, err);
}

static int e_revoke(void *ud, int64_t id, int timeout_ms, struct dhaf_err *err)
{
    return dhaf_etcd_lease_revoke_within(ud, id, timeout_ms, err);
}

static struct store_keepalive *e_ka_new(void *ud, int64_t lease)
{
    return (struct store_keepalive *)dhaf_etcd_keepalive_new(ud, lease);
}

static int e_ka_once(struct store_keepalive *ka, int64_t *ttl, int timeout_ms, struct dhaf_err *err)
{
    return dhaf_etcd_keepalive_once((struct dhaf_etcd_keepalive *)ka, ttl, timeout_ms, err);
}

static void e_ka_free(struct store_keepalive *ka)
{
    dhaf_etcd_keepalive_free((struct dhaf_etcd_keepalive *)ka);
}

static struct store_watch *e_watch_new(void *ud, const char *key, bool prefix, int64_t start_rev,
                                       struct dhaf_err *err)
{
    return (struct store_watch *)dhaf_etcd_watch_new(ud, key, prefix, start_rev, err);
}

static int e_watch_next(struct store_watch *w, struct dhaf_etcd_events *out, int timeout_ms,
                        struct dhaf_err *err)
{
    return dhaf_etcd_watch_next((struct dhaf_etcd_watch *)w, out, timeout_ms, err);
}

static int64_t e_watch_heard(struct store_watch *w)
{
    return dhaf_etcd_watch_heard((struct dhaf_etcd_watch *)w);
}

static int e_watch_progress(struct store_watch *w, struct dhaf_err *err)
{
    return dhaf_etcd_watch_request_progress((struct dhaf_etcd_watch *)w, 500, err);
}

static void e_watch_free(struct store_watch *w)
{
    dhaf_etcd_watch_free((struct dhaf_etcd_watch *)w);
}

static const struct store_ops etcd_ops = {
    .get = e_get,
    .get_from = e_get_from,
    .latest_mod = e_latest_mod,
    .txn = e_txn,
    .lease_grant = e_grant,
    .lease_revoke = e_revoke,
    .keepalive_new = e_ka_new,
    .keepalive_once = e_ka_once,
    .keepalive_free = e_ka_free,
    .watch_new = e_watch_new,
    .watch_next = e_watch_next,
    .watch_heard = e_watch_heard,
    .watch_progress = e_watch_progress,
    .watch_free = e_watch_free,
};

struct store store_etcd(struct dhaf_etcd *etcd)
{
    return (struct store){&etcd_ops, etcd};
}

int store_get(const struct store *s, const char *key, struct dhaf_kvs *out, struct dhaf_err *err)
{
    return s->ops->get(s->ud, key, false, 0, out, err);
}

int store_get_prefix(const struct store *s, const char *prefix, int64_t limit, struct dhaf_kvs *out,
                     struct dhaf_err *err)
{
    return s->ops->get(s->ud, prefix, true, limit, out, err);
}

int store_txn(const struct store *s, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
              const struct dhaf_etcd_op *then, size_t n_then, const struct dhaf_etcd_op *otherwise,
              size_t n_otherwise, struct dhaf_etcd_txn_result *res, struct dhaf_err *err)
{
    return s->ops->txn(s->ud, cmps, n_cmps, then, n_then, otherwise, n_otherwise, res, err);
}

int store_put(const struct store *s, const char *key, const char *value, int64_t lease,
              struct dhaf_err *err)
{
    struct dhaf_etcd_op op = {.type = DHAF_ETCD_OP_PUT, .key = key, .value = value, .lease = lease};
    struct dhaf_etcd_txn_result res;
    int rc = store_txn(s, NULL, 0, &op, 1, NULL, 0, &res, err);
    if (rc == 0)
        dhaf_etcd_txn_result_release(&res);
    return rc;
}
