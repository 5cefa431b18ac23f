/* SPDX-License-Identifier: MIT */
/* The store over lib/etcd, the observed store, and the wrappers every caller uses. */
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

static int e_compact(void *ud, int64_t rev, struct dhaf_err *err)
{
    return dhaf_etcd_compact(ud, rev, err);
}

static int e_alarms(void *ud, struct dhaf_etcd_alarms *out, struct dhaf_err *err)
{
    return dhaf_etcd_alarm_list(ud, out, err);
}

static int e_status(void *ud, struct dhaf_etcd_status *out, struct dhaf_err *err)
{
    return dhaf_etcd_status(ud, out, err);
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
    .compact = e_compact,
    .alarms = e_alarms,
    .status = e_status,
};

struct store store_etcd(struct dhaf_etcd *etcd)
{
    return (struct store){&etcd_ops, etcd};
}

/* ------------------------------------------------------------------ the observed store */

/* Every call goes to the inner store; writes also report their outcome. Watches and
 * keep-alives are the inner store's own handles (their calls do not come back here). */

static bool writes(const struct dhaf_etcd_op *ops, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ops[i].type != DHAF_ETCD_OP_GET)
            return true;
    return false;
}

static int o_get(void *ud, const char *key, bool prefix, int64_t limit, struct dhaf_kvs *out,
                 struct dhaf_err *err)
{
    struct store_observer *o = ud;
    return o->inner.ops->get(o->inner.ud, key, prefix, limit, out, err);
}

static int o_get_from(void *ud, const char *from, const char *prefix, int64_t limit,
                      struct dhaf_kvs *out, struct dhaf_err *err)
{
    struct store_observer *o = ud;
    return o->inner.ops->get_from(o->inner.ud, from, prefix, limit, out, err);
}

static int o_latest_mod(void *ud, const char *prefix, int64_t *mod_rev, struct dhaf_err *err)
{
    struct store_observer *o = ud;
    return o->inner.ops->latest_mod(o->inner.ud, prefix, mod_rev, err);
}

static int o_txn(void *ud, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                 const struct dhaf_etcd_op *then, size_t n_then,
                 const struct dhaf_etcd_op *otherwise, size_t n_otherwise,
                 struct dhaf_etcd_txn_result *res, struct dhaf_err *err)
{
    struct store_observer *o = ud;
    struct dhaf_err tmp;
    if (!err)
        err = &tmp;
    int rc = o->inner.ops->txn(o->inner.ud, cmps, n_cmps, then, n_then, otherwise, n_otherwise, res,
                               err);
    if (writes(then, n_then) || writes(otherwise, n_otherwise))
        o->on_write(o->ud, rc, err);
    return rc;
}

static int o_grant(void *ud, int64_t ttl, int64_t *id, struct dhaf_err *err)
{
    struct store_observer *o = ud;
    struct dhaf_err tmp;
    if (!err)
        err = &tmp;
    int rc = o->inner.ops->lease_grant(o->inner.ud, ttl, id, err);
    o->on_write(o->ud, rc, err);
    return rc;
}

static int o_revoke(void *ud, int64_t id, int timeout_ms, struct dhaf_err *err)
{
    struct store_observer *o = ud;
    return o->inner.ops->lease_revoke(o->inner.ud, id, timeout_ms, err);
}

static struct store_keepalive *o_ka_new(void *ud, int64_t lease)
{
    struct store_observer *o = ud;
    return o->inner.ops->keepalive_new(o->inner.ud, lease);
}

static struct store_watch *o_watch_new(void *ud, const char *key, bool prefix, int64_t start_rev,
                                       struct dhaf_err *err)
{
    struct store_observer *o = ud;
    return o->inner.ops->watch_new(o->inner.ud, key, prefix, start_rev, err);
}

static int o_compact(void *ud, int64_t rev, struct dhaf_err *err)
{
    struct store_observer *o = ud;
    return o->inner.ops->compact(o->inner.ud, rev, err);
}

static int o_alarms(void *ud, struct dhaf_etcd_alarms *out, struct dhaf_err *err)
{
    struct store_observer *o = ud;
    return o->inner.ops->alarms(o->inner.ud, out, err);
}

static int o_status(void *ud, struct dhaf_etcd_status *out, struct dhaf_err *err)
{
    struct store_observer *o = ud;
    return o->inner.ops->status(o->inner.ud, out, err);
}

struct store store_observed(struct store_observer *o)
{
    /* The handle functions (keep-alives, watches) take the inner store's handles, so they are
     * the inner table's own; only the calls on ud are wrapped. One table per observer, since
     * the inner table differs between the daemon and the tests. */
    const struct store_ops *in = o->inner.ops;
    struct store_ops *t = &o->ops;
    *t = (struct store_ops){
        .get = o_get,
        .get_from = o_get_from,
        .latest_mod = o_latest_mod,
        .txn = o_txn,
        .lease_grant = o_grant,
        .lease_revoke = o_revoke,
        .keepalive_new = o_ka_new,
        .keepalive_once = in->keepalive_once,
        .keepalive_free = in->keepalive_free,
        .watch_new = o_watch_new,
        .watch_next = in->watch_next,
        .watch_heard = in->watch_heard,
        .watch_progress = in->watch_progress,
        .watch_free = in->watch_free,
        .compact = o_compact,
        .alarms = o_alarms,
        .status = o_status,
    };
    return (struct store){t, o};
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

struct dhaf_etcd *store_etcd_client(const struct dhaf_config *cfg, struct dhaf_err *err)
{
    struct dhaf_etcd_opts o = {
        .endpoints = (const char *const *)cfg->etcd.hosts,
        .n_endpoints = cfg->etcd.n_hosts,
        .tls = cfg->etcd.tls,
        .ca_file = cfg->etcd.client_tls.ca_file,
        .cert_file = cfg->etcd.client_tls.cert_file,
        .key_file = cfg->etcd.client_tls.key_file,
        .username = cfg->etcd.username,
        .password = cfg->etcd.password,
    };
    return dhaf_etcd_new(&o, err);
}
