/* SPDX-License-Identifier: MIT */
/* etcd v3 client: unary KV/lease/auth/maintenance calls with endpoint failover and honest
 * retry rules, keep-alive streams and resuming watches, all over lib/rpc. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dhaf/clock.h"
#include "dhaf/alloc.h"
#include "dhaf/etcd.h"
#include "dhaf/log.h"
#include "dhaf/rpc.h"
#include "etcdserverpb/rpc.pb-c.h"

#define M_RANGE     "/etcdserverpb.KV/Range"
#define M_PUT       "/etcdserverpb.KV/Put"
#define M_DELETE    "/etcdserverpb.KV/DeleteRange"
#define M_TXN       "/etcdserverpb.KV/Txn"
#define M_COMPACT   "/etcdserverpb.KV/Compact"
#define M_GRANT     "/etcdserverpb.Lease/LeaseGrant"
#define M_REVOKE    "/etcdserverpb.Lease/LeaseRevoke"
#define M_TTL       "/etcdserverpb.Lease/LeaseTimeToLive"
#define M_KEEPALIVE "/etcdserverpb.Lease/LeaseKeepAlive"
#define M_WATCH     "/etcdserverpb.Watch/Watch"
#define M_AUTH      "/etcdserverpb.Auth/Authenticate"
#define M_ALARM     "/etcdserverpb.Maintenance/Alarm"
#define M_STATUS    "/etcdserverpb.Maintenance/Status"

#define DEFAULT_TIMEOUT_MS 2000

/* How a request may be retried on another endpoint after a failure. */
enum retry {
    RETRY_SAFE,    /* reads and idempotent lease calls */
    RETRY_GUARDED, /* transactions with compares */
    RETRY_ONCE,    /* unguarded writes: only when the request never left */
};

#define RECYCLE_MS 1000 /* a channel that cannot connect for this long is replaced */

/* A channel with the references of the calls and streams using it. gRPC 1.51 channels can
 * wedge after failed connection attempts (every new attempt is cut off although the server
 * is back), so a channel that keeps failing to connect is replaced by a fresh one; the old
 * one is freed when its last user lets go of it. */
struct chan {
    struct dhaf_rpc_channel *ch;
    int refs;
    bool retired;
};

struct dhaf_etcd {
    struct chan **ch; /* current channel of each endpoint; guarded by chan_lock */
    int64_t *failing_since;
    pthread_mutex_t chan_lock;
    struct dhaf_rpc_tls tls;
    char *ca_file, *cert_file, *key_file;
    char **endpoints;
    size_t n;
    atomic_size_t cur;
    int timeout_ms;
    char *username;
    char *password;
    pthread_mutex_t lock; /* guards token */
    char *token;
};

static struct chan *chan_new(struct dhaf_etcd *e, size_t idx, struct dhaf_err *err)
{
    struct dhaf_rpc_channel *ch = dhaf_rpc_channel_new(e->endpoints[idx], &e->tls, err);
    if (!ch)
        return NULL;
    struct chan *c = dhaf_xcalloc(1, sizeof(*c));
    c->ch = ch;
    return c;
}

/* Takes a reference to the current channel of endpoint idx. */
static struct chan *chan_get(struct dhaf_etcd *e, size_t idx)
{
    pthread_mutex_lock(&e->chan_lock);
    struct chan *c = e->ch[idx];
    c->refs++;
    pthread_mutex_unlock(&e->chan_lock);
    return c;
}

static void chan_put(struct dhaf_etcd *e, struct chan *c)
{
    pthread_mutex_lock(&e->chan_lock);
    bool last = --c->refs == 0 && c->retired;
    pthread_mutex_unlock(&e->chan_lock);
    if (last) {
        dhaf_rpc_channel_free(c->ch);
        free(c);
    }
}

/* Records whether a call on c could connect; replaces a channel that keeps failing. */
static void chan_result(struct dhaf_etcd *e, size_t idx, struct chan *c, bool connect_failed)
{
    pthread_mutex_lock(&e->chan_lock);
    if (c != e->ch[idx]) {
        pthread_mutex_unlock(&e->chan_lock);
        return;
    }
    int64_t now = dhaf_mono_ms();
    if (!connect_failed) {
        e->failing_since[idx] = 0;
    } else if (!e->failing_since[idx]) {
        e->failing_since[idx] = now;
    } else if (now - e->failing_since[idx] >= RECYCLE_MS) {
        struct dhaf_err err;
        struct chan *fresh = chan_new(e, idx, &err);
        if (fresh) {
            c->retired = true; /* the caller's reference frees it */
            e->ch[idx] = fresh;
            e->failing_since[idx] = now;
            DHAF_LOG(DHAF_LOG_DEBUG, "event=etcd-channel-renewed endpoint=%s", e->endpoints[idx]);
        }
    }
    pthread_mutex_unlock(&e->chan_lock);
}

static bool connect_failure(int rc, const struct dhaf_err *err)
{
    return rc == DHAF_EUNAVAILABLE && strstr(err->msg, "failed to connect");
}

struct dhaf_etcd *dhaf_etcd_new(const struct dhaf_etcd_opts *o, struct dhaf_err *err)
{
    if (!o->n_endpoints)
        return dhaf_err_set(err, DHAF_EINVAL, "etcd: no endpoint given"), NULL;
    if (!!o->username != !!o->password)
        return dhaf_err_set(err, DHAF_EINVAL, "etcd: username and password go together"), NULL;
    struct dhaf_etcd *e = dhaf_xcalloc(1, sizeof(*e));
    e->n = o->n_endpoints;
    e->ch = dhaf_xcalloc(e->n, sizeof(*e->ch));
    e->failing_since = dhaf_xcalloc(e->n, sizeof(*e->failing_since));
    e->endpoints = dhaf_xcalloc(e->n, sizeof(*e->endpoints));
    e->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;
    atomic_init(&e->cur, 0);
    pthread_mutex_init(&e->lock, NULL);
    pthread_mutex_init(&e->chan_lock, NULL);
    e->ca_file = o->ca_file ? dhaf_xstrdup(o->ca_file) : NULL;
    e->cert_file = o->cert_file ? dhaf_xstrdup(o->cert_file) : NULL;
    e->key_file = o->key_file ? dhaf_xstrdup(o->key_file) : NULL;
    e->tls = (struct dhaf_rpc_tls){
        .tls = o->tls, .ca_file = e->ca_file, .cert_file = e->cert_file, .key_file = e->key_file};
    for (size_t i = 0; i < e->n; i++)
        e->endpoints[i] = dhaf_xstrdup(o->endpoints[i]);
    for (size_t i = 0; i < e->n; i++) {
        e->ch[i] = chan_new(e, i, err);
        if (!e->ch[i]) {
            dhaf_etcd_free(e);
            return NULL;
        }
    }
    if (o->username) {
        e->username = dhaf_xstrdup(o->username);
        e->password = dhaf_xstrdup(o->password);
    }
    return e;
}

void dhaf_etcd_free(struct dhaf_etcd *e)
{
    if (!e)
        return;
    for (size_t i = 0; i < e->n; i++) {
        if (e->ch[i]) {
            dhaf_rpc_channel_free(e->ch[i]->ch);
            free(e->ch[i]);
        }
        free(e->endpoints[i]);
    }
    free(e->ch);
    free(e->failing_since);
    free(e->ca_file);
    free(e->cert_file);
    free(e->key_file);
    pthread_mutex_destroy(&e->chan_lock);
    free(e->endpoints);
    free(e->username);
    if (e->password)
        explicit_bzero(e->password, strlen(e->password));
    free(e->password);
    free(e->token);
    pthread_mutex_destroy(&e->lock);
    free(e);
}

static atomic_uint_fast64_t n_errors; /* calls no endpoint answered */

uint64_t dhaf_etcd_error_count(void)
{
    return atomic_load(&n_errors);
}

const char *dhaf_etcd_endpoint(const struct dhaf_etcd *e)
{
    return e->endpoints[atomic_load(&e->cur) % e->n];
}

/* ------------------------------------------------------------------ auth */

/* Gets a token from endpoint idx. Called with no lock held. */
static int authenticate(struct dhaf_etcd *e, size_t idx, struct dhaf_err *err)
{
    Etcdserverpb__AuthenticateRequest req = ETCDSERVERPB__AUTHENTICATE_REQUEST__INIT;
    req.name = e->username;
    req.password = e->password;
    ProtobufCMessage *resp = NULL;
    struct chan *c = chan_get(e, idx);
    int rc =
        dhaf_rpc_call(c->ch, M_AUTH, &req.base, &etcdserverpb__authenticate_response__descriptor,
                      &resp, e->timeout_ms, NULL, 0, NULL, err);
    chan_result(e, idx, c, connect_failure(rc, err));
    chan_put(e, c);
    if (rc == DHAF_EINVAL || rc == DHAF_EAUTH) {
        /* etcd answers a wrong password with INVALID_ARGUMENT */
        return dhaf_err_set(err, DHAF_EAUTH, "etcd %s: authentication of user \"%s\" failed: %s",
                            e->endpoints[idx], e->username,
                            strstr(err->msg, "etcdserver:") ? strstr(err->msg, "etcdserver:")
                                                            : err->msg);
    }
    if (rc)
        return rc;
    Etcdserverpb__AuthenticateResponse *ar = (Etcdserverpb__AuthenticateResponse *)resp;
    pthread_mutex_lock(&e->lock);
    free(e->token);
    e->token = dhaf_xstrdup(ar->token ? ar->token : "");
    pthread_mutex_unlock(&e->lock);
    protobuf_c_message_free_unpacked(resp, NULL);
    DHAF_LOG(DHAF_LOG_DEBUG, "event=etcd-authenticated endpoint=%s user=%s", e->endpoints[idx],
             e->username);
    return 0;
}

/* Copies the current token into buf; returns false when there is none yet. */
static bool token_copy(struct dhaf_etcd *e, char *buf, size_t len)
{
    pthread_mutex_lock(&e->lock);
    bool have = e->token != NULL;
    if (have)
        snprintf(buf, len, "%s", e->token);
    pthread_mutex_unlock(&e->lock);
    return have;
}

static bool token_rejected(const struct dhaf_err *err)
{
    return strstr(err->msg, "invalid auth token") || strstr(err->msg, "user name is empty") ||
           (err->status == 16 /* UNAUTHENTICATED */);
}

/* Builds the metadata of a call: the auth token when authentication is on. Returns the count,
 * or a negative code when authentication failed. */
static int call_md(struct dhaf_etcd *e, size_t idx, struct dhaf_rpc_md *md, char *tok,
                   size_t toklen, struct dhaf_err *err)
{
    if (!e->username)
        return 0;
    if (!token_copy(e, tok, toklen)) {
        int rc = authenticate(e, idx, err);
        if (rc)
            return rc;
        token_copy(e, tok, toklen);
    }
    md->key = "token";
    md->value = tok;
    return 1;
}

/* ------------------------------------------------------------------ calls with failover */

static bool endpoint_failed(int rc)
{
    return rc == DHAF_EUNAVAILABLE || rc == DHAF_ETIMEOUT;
}

/*
 * Runs a unary call, moving to the next endpoint when one fails, following `retry`.
 * *maybe_applied (may be NULL) is set when an earlier attempt may have been applied.
 */
static int call_within(struct dhaf_etcd *e, const char *method, const ProtobufCMessage *req,
                       const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp,
                       enum retry retry, bool *maybe_applied, int64_t deadline,
                       struct dhaf_err *err)
{
    struct dhaf_err tmp;
    if (!err)
        err = &tmp;
    if (maybe_applied)
        *maybe_applied = false;
    size_t start = atomic_load(&e->cur);
    int rc = DHAF_EUNAVAILABLE;
    bool reauthed = false;
    char first[256] = "";
    for (size_t attempt = 0; attempt < e->n; attempt++) {
        size_t idx = (start + attempt) % e->n;
        struct dhaf_rpc_md md;
        char tok[512];
        int n_md = call_md(e, idx, &md, tok, sizeof(tok), err);
        if (n_md < 0) {
            rc = n_md;
            if (!endpoint_failed(rc))
                return rc; /* a wrong password is final */
            if (!first[0])
                snprintf(first, sizeof(first), "%.200s", err->msg);
            continue;
        }
        int timeout = e->timeout_ms;
        if (deadline > 0) {
            int64_t left = deadline - dhaf_mono_ms();
            if (left <= 0) {
                rc = dhaf_err_set(err, DHAF_ETIMEOUT, "%s: no time left", method);
                break;
            }
            if (left < timeout)
                timeout = (int)left;
        }
        enum dhaf_rpc_sent sent = DHAF_RPC_MAYBE_SENT;
        struct chan *c = chan_get(e, idx);
        rc = dhaf_rpc_call(c->ch, method, req, desc, resp, timeout, &md, (size_t)n_md, &sent, err);
        chan_result(e, idx, c, rc != 0 && sent == DHAF_RPC_NOT_SENT);
        chan_put(e, c);
        if (rc == 0) {
            if (idx != start % e->n) {
                atomic_store(&e->cur, idx);
                DHAF_LOG(DHAF_LOG_INFO, "event=etcd-endpoint-switch from=%s to=%s",
                         e->endpoints[start % e->n], e->endpoints[idx]);
            }
            return 0;
        }
        if (e->username && !reauthed && token_rejected(err)) {
            /* The token expired or the member restarted: log in again, once. */
            reauthed = true;
            pthread_mutex_lock(&e->lock);
            DHAF_FREE(e->token);
            pthread_mutex_unlock(&e->lock);
            attempt--;
            continue;
        }
        if (!endpoint_failed(rc))
            return rc; /* a definite answer from etcd */
        if (!first[0])
            snprintf(first, sizeof(first), "%.200s", err->msg);
        if (sent == DHAF_RPC_MAYBE_SENT) {
            if (retry == RETRY_ONCE)
                return dhaf_err_set(err, DHAF_EUNKNOWN_OUTCOME,
                                    "%s: %s; the write may or may not have been applied", method,
                                    err->msg);
            if (retry == RETRY_GUARDED && maybe_applied)
                *maybe_applied = true;
        }
    }
    atomic_fetch_add(&n_errors, 1);
    char last[256];
    snprintf(last, sizeof(last), "%.200s", err->msg);
    dhaf_err_set(err, rc, "no etcd endpoint answered (%zu tried): %s%s%s", e->n, first,
                 strcmp(first, last) ? "; last: " : "", strcmp(first, last) ? last : "");
    return rc;
}

static int call(struct dhaf_etcd *e, const char *method, const ProtobufCMessage *req,
                const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp, enum retry retry,
                bool *maybe_applied, struct dhaf_err *err)
{
    return call_within(e, method, req, desc, resp, retry, maybe_applied, 0, err);
}

/* ------------------------------------------------------------------ KV */

static void kv_copy(struct dhaf_kv *dst, const Mvccpb__KeyValue *src)
{
    dst->key = dhaf_xstrndup((const char *)src->key.data, src->key.len);
    dst->value = dhaf_xstrndup((const char *)src->value.data, src->value.len);
    dst->value_len = src->value.len;
    dst->create_rev = src->create_revision;
    dst->mod_rev = src->mod_revision;
    dst->version = src->version;
    dst->lease = src->lease;
}

static void kv_release(struct dhaf_kv *kv)
{
    DHAF_FREE(kv->key);
    DHAF_FREE(kv->value);
}

void dhaf_kvs_release(struct dhaf_kvs *kvs)
{
    for (size_t i = 0; i < kvs->n; i++)
        kv_release(&kvs->kvs[i]);
    free(kvs->kvs);
    memset(kvs, 0, sizeof(*kvs));
}

static void range_copy(struct dhaf_kvs *out, const Etcdserverpb__RangeResponse *r)
{
    memset(out, 0, sizeof(*out));
    out->revision = r->header ? r->header->revision : 0;
    out->count = r->count;
    out->more = r->more;
    out->n = r->n_kvs;
    out->kvs = dhaf_xcalloc(r->n_kvs ? r->n_kvs : 1, sizeof(*out->kvs));
    for (size_t i = 0; i < r->n_kvs; i++)
        kv_copy(&out->kvs[i], r->kvs[i]);
}

/* range_end for a prefix: the prefix with its last byte incremented (bytes 0xff dropped). */
static size_t prefix_end(const char *prefix, uint8_t *buf, size_t cap)
{
    size_t n = strlen(prefix);
    if (n > cap)
        n = cap;
    memcpy(buf, prefix, n);
    while (n > 0) {
        if (buf[n - 1] < 0xff) {
            buf[n - 1]++;
            return n;
        }
        n--;
    }
    buf[0] = 0; /* "\0": every key */
    return 1;
}

#define KEY_MAX 4096

/* Reads key, or with end_prefix every key from key to the end of end_prefix. */
static int range(struct dhaf_etcd *e, const char *key, const char *end_prefix, int64_t limit,
                 bool count_only, struct dhaf_kvs *out, struct dhaf_err *err)
{
    memset(out, 0, sizeof(*out));
    uint8_t end[KEY_MAX];
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key.data = (uint8_t *)key;
    req.key.len = strlen(key);
    if (end_prefix) {
        req.range_end.data = end;
        req.range_end.len = prefix_end(end_prefix, end, sizeof(end));
    }
    req.limit = limit;
    req.count_only = count_only;
    ProtobufCMessage *resp = NULL;
    int rc = call(e, M_RANGE, &req.base, &etcdserverpb__range_response__descriptor, &resp,
                  RETRY_SAFE, NULL, err);
    if (rc)
        return rc;
    range_copy(out, (Etcdserverpb__RangeResponse *)resp);
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

int dhaf_etcd_get(struct dhaf_etcd *e, const char *key, struct dhaf_kvs *out, struct dhaf_err *err)
{
    return range(e, key, NULL, 0, false, out, err);
}

int dhaf_etcd_get_prefix(struct dhaf_etcd *e, const char *prefix, int64_t limit,
                         struct dhaf_kvs *out, struct dhaf_err *err)
{
    return range(e, prefix, prefix, limit, false, out, err);
}

int dhaf_etcd_get_from(struct dhaf_etcd *e, const char *from, const char *prefix, int64_t limit,
                       struct dhaf_kvs *out, struct dhaf_err *err)
{
    if (strncmp(from, prefix, strlen(prefix)) != 0)
        return dhaf_err_set(err, DHAF_EINVAL, "etcd range: %s is not under %s", from, prefix);
    return range(e, from, prefix, limit, false, out, err);
}

int dhaf_etcd_latest_mod(struct dhaf_etcd *e, const char *prefix, int64_t *mod_rev,
                         struct dhaf_err *err)
{
    uint8_t end[KEY_MAX];
    Etcdserverpb__RangeRequest req = ETCDSERVERPB__RANGE_REQUEST__INIT;
    req.key.data = (uint8_t *)prefix;
    req.key.len = strlen(prefix);
    req.range_end.data = end;
    req.range_end.len = prefix_end(prefix, end, sizeof(end));
    req.limit = 1;
    req.keys_only = 1;
    req.sort_order = ETCDSERVERPB__RANGE_REQUEST__SORT_ORDER__DESCEND;
    req.sort_target = ETCDSERVERPB__RANGE_REQUEST__SORT_TARGET__MOD;
    ProtobufCMessage *resp = NULL;
    int rc = call(e, M_RANGE, &req.base, &etcdserverpb__range_response__descriptor, &resp,
                  RETRY_SAFE, NULL, err);
    if (rc)
        return rc;
    Etcdserverpb__RangeResponse *r = (Etcdserverpb__RangeResponse *)resp;
    *mod_rev = r->n_kvs ? r->kvs[0]->mod_revision : 0;
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

int dhaf_etcd_count_prefix(struct dhaf_etcd *e, const char *prefix, int64_t *count,
                           struct dhaf_err *err)
{
    struct dhaf_kvs kvs;
    int rc = range(e, prefix, prefix, 0, true, &kvs, err);
    if (rc == 0)
        *count = kvs.count;
    dhaf_kvs_release(&kvs);
    return rc;
}

int dhaf_etcd_put(struct dhaf_etcd *e, const char *key, const char *value, size_t len,
                  int64_t lease, int64_t *revision, struct dhaf_err *err)
{
    Etcdserverpb__PutRequest req = ETCDSERVERPB__PUT_REQUEST__INIT;
    req.key.data = (uint8_t *)key;
    req.key.len = strlen(key);
    req.value.data = (uint8_t *)value;
    req.value.len = len == SIZE_MAX ? strlen(value) : len;
    req.lease = lease;
    ProtobufCMessage *resp = NULL;
    int rc = call(e, M_PUT, &req.base, &etcdserverpb__put_response__descriptor, &resp, RETRY_ONCE,
                  NULL, err);
    if (rc)
        return rc;
    Etcdserverpb__PutResponse *pr = (Etcdserverpb__PutResponse *)resp;
    if (revision)
        *revision = pr->header ? pr->header->revision : 0;
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

int dhaf_etcd_delete(struct dhaf_etcd *e, const char *key, bool prefix, int64_t *deleted,
                     struct dhaf_err *err)
{
    uint8_t end[KEY_MAX];
    Etcdserverpb__DeleteRangeRequest req = ETCDSERVERPB__DELETE_RANGE_REQUEST__INIT;
    req.key.data = (uint8_t *)key;
    req.key.len = strlen(key);
    if (prefix) {
        req.range_end.data = end;
        req.range_end.len = prefix_end(key, end, sizeof(end));
    }
    ProtobufCMessage *resp = NULL;
    int rc = call(e, M_DELETE, &req.base, &etcdserverpb__delete_range_response__descriptor, &resp,
                  RETRY_ONCE, NULL, err);
    if (rc)
        return rc;
    if (deleted)
        *deleted = ((Etcdserverpb__DeleteRangeResponse *)resp)->deleted;
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

/* ------------------------------------------------------------------ txn */

/* Request ops live in one arena per branch so they can be freed together. */
struct op_arena {
    Etcdserverpb__RequestOp *ops;
    Etcdserverpb__RequestOp **ptrs;
    Etcdserverpb__RangeRequest *ranges;
    Etcdserverpb__PutRequest *puts;
    Etcdserverpb__DeleteRangeRequest *dels;
    uint8_t (*ends)[KEY_MAX];
};

static void arena_build(struct op_arena *a, const struct dhaf_etcd_op *ops, size_t n)
{
    size_t m = n ? n : 1;
    a->ops = dhaf_xcalloc(m, sizeof(*a->ops));
    a->ptrs = dhaf_xcalloc(m, sizeof(*a->ptrs));
    a->ranges = dhaf_xcalloc(m, sizeof(*a->ranges));
    a->puts = dhaf_xcalloc(m, sizeof(*a->puts));
    a->dels = dhaf_xcalloc(m, sizeof(*a->dels));
    a->ends = dhaf_xcalloc(m, sizeof(*a->ends));
    for (size_t i = 0; i < n; i++) {
        Etcdserverpb__RequestOp *op = &a->ops[i];
        etcdserverpb__request_op__init(op);
        a->ptrs[i] = op;
        const struct dhaf_etcd_op *o = &ops[i];
        switch (o->type) {
        case DHAF_ETCD_OP_GET: {
            Etcdserverpb__RangeRequest *r = &a->ranges[i];
            etcdserverpb__range_request__init(r);
            r->key.data = (uint8_t *)o->key;
            r->key.len = strlen(o->key);
            if (o->prefix) {
                r->range_end.data = a->ends[i];
                r->range_end.len = prefix_end(o->key, a->ends[i], KEY_MAX);
            }
            op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_RANGE;
            op->request_range = r;
            break;
        }
        case DHAF_ETCD_OP_PUT: {
            Etcdserverpb__PutRequest *p = &a->puts[i];
            etcdserverpb__put_request__init(p);
            p->key.data = (uint8_t *)o->key;
            p->key.len = strlen(o->key);
            p->value.data = (uint8_t *)(o->value ? o->value : "");
            p->value.len = o->value_len ? o->value_len : (o->value ? strlen(o->value) : 0);
            p->lease = o->lease;
            op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_PUT;
            op->request_put = p;
            break;
        }
        case DHAF_ETCD_OP_DELETE: {
            Etcdserverpb__DeleteRangeRequest *d = &a->dels[i];
            etcdserverpb__delete_range_request__init(d);
            d->key.data = (uint8_t *)o->key;
            d->key.len = strlen(o->key);
            if (o->prefix) {
                d->range_end.data = a->ends[i];
                d->range_end.len = prefix_end(o->key, a->ends[i], KEY_MAX);
            }
            op->request_case = ETCDSERVERPB__REQUEST_OP__REQUEST_REQUEST_DELETE_RANGE;
            op->request_delete_range = d;
            break;
        }
        }
    }
}

static void arena_free(struct op_arena *a)
{
    free(a->ops);
    free(a->ptrs);
    free(a->ranges);
    free(a->puts);
    free(a->dels);
    free(a->ends);
}

void dhaf_etcd_txn_result_release(struct dhaf_etcd_txn_result *r)
{
    for (size_t i = 0; i < r->n_gets; i++)
        dhaf_kvs_release(&r->gets[i]);
    free(r->gets);
    memset(r, 0, sizeof(*r));
}

int dhaf_etcd_txn(struct dhaf_etcd *e, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                  const struct dhaf_etcd_op *then, size_t n_then,
                  const struct dhaf_etcd_op *otherwise, size_t n_otherwise,
                  struct dhaf_etcd_txn_result *res, struct dhaf_err *err)
{
    memset(res, 0, sizeof(*res));
    Etcdserverpb__Compare *cv = dhaf_xcalloc(n_cmps ? n_cmps : 1, sizeof(*cv));
    Etcdserverpb__Compare **cp = dhaf_xcalloc(n_cmps ? n_cmps : 1, sizeof(*cp));
    for (size_t i = 0; i < n_cmps; i++) {
        const struct dhaf_etcd_cmp *c = &cmps[i];
        Etcdserverpb__Compare *x = &cv[i];
        etcdserverpb__compare__init(x);
        cp[i] = x;
        x->key.data = (uint8_t *)c->key;
        x->key.len = strlen(c->key);
        static const int results[] = {ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL,
                                      ETCDSERVERPB__COMPARE__COMPARE_RESULT__NOT_EQUAL,
                                      ETCDSERVERPB__COMPARE__COMPARE_RESULT__GREATER,
                                      ETCDSERVERPB__COMPARE__COMPARE_RESULT__LESS};
        x->result = results[c->result];
        /* The oneof member is set through its case so that a 0 is still sent. */
        switch (c->target) {
        case DHAF_ETCD_VALUE:
            x->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VALUE;
            x->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VALUE;
            x->value.data = (uint8_t *)(c->value ? c->value : "");
            x->value.len = c->value ? strlen(c->value) : 0;
            break;
        case DHAF_ETCD_CREATE_REV:
            x->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
            x->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
            x->create_revision = c->num;
            break;
        case DHAF_ETCD_MOD_REV:
            x->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__MOD;
            x->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_MOD_REVISION;
            x->mod_revision = c->num;
            break;
        case DHAF_ETCD_VERSION:
            x->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__VERSION;
            x->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_VERSION;
            x->version = c->num;
            break;
        case DHAF_ETCD_LEASE:
            x->target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__LEASE;
            x->target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_LEASE;
            x->lease = c->num;
            break;
        }
    }
    struct op_arena a_then, a_else;
    arena_build(&a_then, then, n_then);
    arena_build(&a_else, otherwise, n_otherwise);
    Etcdserverpb__TxnRequest req = ETCDSERVERPB__TXN_REQUEST__INIT;
    req.n_compare = n_cmps;
    req.compare = cp;
    req.n_success = n_then;
    req.success = a_then.ptrs;
    req.n_failure = n_otherwise;
    req.failure = a_else.ptrs;

    ProtobufCMessage *resp = NULL;
    bool maybe_applied = false;
    int rc = call(e, M_TXN, &req.base, &etcdserverpb__txn_response__descriptor, &resp,
                  n_cmps ? RETRY_GUARDED : RETRY_ONCE, &maybe_applied, err);
    if (rc == 0) {
        Etcdserverpb__TxnResponse *tr = (Etcdserverpb__TxnResponse *)resp;
        res->succeeded = tr->succeeded;
        res->revision = tr->header ? tr->header->revision : 0;
        res->gets = dhaf_xcalloc(tr->n_responses ? tr->n_responses : 1, sizeof(*res->gets));
        for (size_t i = 0; i < tr->n_responses; i++) {
            const Etcdserverpb__ResponseOp *ro = tr->responses[i];
            if (ro->response_case == ETCDSERVERPB__RESPONSE_OP__RESPONSE_RESPONSE_RANGE)
                range_copy(&res->gets[res->n_gets++], ro->response_range);
        }
        protobuf_c_message_free_unpacked(resp, NULL);
        if (maybe_applied && !res->succeeded) {
            /* Our own earlier attempt may be what made the compares fail now. */
            dhaf_etcd_txn_result_release(res);
            rc = dhaf_err_set(err, DHAF_EUNKNOWN_OUTCOME,
                              "etcd txn: an attempt timed out and the retry's compares failed; "
                              "the transaction may have been applied once: re-read to know");
        }
    }
    arena_free(&a_then);
    arena_free(&a_else);
    free(cv);
    free(cp);
    return rc;
}

/* ------------------------------------------------------------------ leases */

int dhaf_etcd_lease_grant(struct dhaf_etcd *e, int64_t ttl, int64_t *id, int64_t *granted,
                          struct dhaf_err *err)
{
    Etcdserverpb__LeaseGrantRequest req = ETCDSERVERPB__LEASE_GRANT_REQUEST__INIT;
    req.ttl = ttl;
    ProtobufCMessage *resp = NULL;
    /* An unknown outcome only leaks a lease that expires by itself: retry like a read. */
    int rc = call(e, M_GRANT, &req.base, &etcdserverpb__lease_grant_response__descriptor, &resp,
                  RETRY_SAFE, NULL, err);
    if (rc)
        return rc;
    Etcdserverpb__LeaseGrantResponse *r = (Etcdserverpb__LeaseGrantResponse *)resp;
    if (r->error && r->error[0]) {
        rc = dhaf_err_set(err, DHAF_EINVAL, "etcd lease grant: %s", r->error);
    } else {
        *id = r->id;
        if (granted)
            *granted = r->ttl;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int dhaf_etcd_lease_revoke_within(struct dhaf_etcd *e, int64_t id, int timeout_ms,
                                  struct dhaf_err *err)
{
    Etcdserverpb__LeaseRevokeRequest req = ETCDSERVERPB__LEASE_REVOKE_REQUEST__INIT;
    req.id = id;
    ProtobufCMessage *resp = NULL;
    int rc =
        call_within(e, M_REVOKE, &req.base, &etcdserverpb__lease_revoke_response__descriptor, &resp,
                    RETRY_SAFE, NULL, timeout_ms > 0 ? dhaf_mono_ms() + timeout_ms : 0, err);
    if (rc == 0)
        protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int dhaf_etcd_lease_revoke(struct dhaf_etcd *e, int64_t id, struct dhaf_err *err)
{
    return dhaf_etcd_lease_revoke_within(e, id, 0, err);
}

int dhaf_etcd_lease_ttl(struct dhaf_etcd *e, int64_t id, int64_t *remaining, struct dhaf_err *err)
{
    Etcdserverpb__LeaseTimeToLiveRequest req = ETCDSERVERPB__LEASE_TIME_TO_LIVE_REQUEST__INIT;
    req.id = id;
    ProtobufCMessage *resp = NULL;
    int rc = call(e, M_TTL, &req.base, &etcdserverpb__lease_time_to_live_response__descriptor,
                  &resp, RETRY_SAFE, NULL, err);
    if (rc)
        return rc;
    int64_t ttl = ((Etcdserverpb__LeaseTimeToLiveResponse *)resp)->ttl;
    protobuf_c_message_free_unpacked(resp, NULL);
    if (ttl < 0)
        return dhaf_err_set(err, DHAF_ENOTFOUND, "etcd lease %llx has expired",
                            (unsigned long long)id);
    *remaining = ttl;
    return 0;
}

/* ------------------------------------------------------------------ maintenance */

int dhaf_etcd_compact(struct dhaf_etcd *e, int64_t revision, struct dhaf_err *err)
{
    Etcdserverpb__CompactionRequest req = ETCDSERVERPB__COMPACTION_REQUEST__INIT;
    req.revision = revision;
    req.physical = 0;
    ProtobufCMessage *resp = NULL;
    int rc = call(e, M_COMPACT, &req.base, &etcdserverpb__compaction_response__descriptor, &resp,
                  RETRY_SAFE, NULL, err);
    if (rc == 0) {
        protobuf_c_message_free_unpacked(resp, NULL);
        return 0;
    }
    /* etcd answers both with OUT_OF_RANGE: tell "already done" from "not there yet" */
    if (err && strstr(err->msg, "required revision has been compacted"))
        return dhaf_err_set(err, DHAF_ECOMPACTED,
                            "etcd compact %lld: already compacted at or after that revision",
                            (long long)revision);
    return rc;
}

const char *dhaf_etcd_alarm_name(int type)
{
    switch (type) {
    case DHAF_ETCD_ALARM_NONE:
        return "NONE";
    case DHAF_ETCD_ALARM_NOSPACE:
        return "NOSPACE";
    case DHAF_ETCD_ALARM_CORRUPT:
        return "CORRUPT";
    default:
        return "UNKNOWN";
    }
}

/* One Maintenance/Alarm call; out (may be NULL) gets the alarms of the answer. */
static int alarm_call(struct dhaf_etcd *e, Etcdserverpb__AlarmRequest__AlarmAction action,
                      uint64_t member, int type, struct dhaf_etcd_alarms *out, struct dhaf_err *err)
{
    Etcdserverpb__AlarmRequest req = ETCDSERVERPB__ALARM_REQUEST__INIT;
    req.action = action;
    req.memberid = member;
    req.alarm = (Etcdserverpb__AlarmType)type;
    ProtobufCMessage *resp = NULL;
    /* a GET reads; raising or disarming twice is the same as once */
    int rc = call(e, M_ALARM, &req.base, &etcdserverpb__alarm_response__descriptor, &resp,
                  RETRY_SAFE, NULL, err);
    if (rc)
        return rc;
    const Etcdserverpb__AlarmResponse *r = (const Etcdserverpb__AlarmResponse *)resp;
    if (out) {
        memset(out, 0, sizeof(*out));
        for (size_t i = 0; i < r->n_alarms && out->n < DHAF_ETCD_MAX_ALARMS; i++) {
            if (!r->alarms[i] || r->alarms[i]->alarm == ETCDSERVERPB__ALARM_TYPE__NONE)
                continue;
            out->v[out->n++] =
                (struct dhaf_etcd_alarm){r->alarms[i]->memberid, (int)r->alarms[i]->alarm};
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

int dhaf_etcd_alarm_list(struct dhaf_etcd *e, struct dhaf_etcd_alarms *out, struct dhaf_err *err)
{
    return alarm_call(e, ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__GET, 0, DHAF_ETCD_ALARM_NONE,
                      out, err);
}

int dhaf_etcd_alarm_set(struct dhaf_etcd *e, uint64_t member, int type, bool active,
                        struct dhaf_err *err)
{
    return alarm_call(e,
                      active ? ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__ACTIVATE
                             : ETCDSERVERPB__ALARM_REQUEST__ALARM_ACTION__DEACTIVATE,
                      member, type, NULL, err);
}

int dhaf_etcd_status(struct dhaf_etcd *e, struct dhaf_etcd_status *out, struct dhaf_err *err)
{
    memset(out, 0, sizeof(*out));
    Etcdserverpb__StatusRequest req = ETCDSERVERPB__STATUS_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    int rc = call(e, M_STATUS, &req.base, &etcdserverpb__status_response__descriptor, &resp,
                  RETRY_SAFE, NULL, err);
    if (rc)
        return rc;
    const Etcdserverpb__StatusResponse *r = (const Etcdserverpb__StatusResponse *)resp;
    snprintf(out->version, sizeof(out->version), "%s", r->version ? r->version : "");
    out->member = r->header ? r->header->member_id : 0;
    out->revision = r->header ? r->header->revision : 0;
    out->leader = r->leader;
    out->db_size = r->dbsize;
    out->db_size_in_use = r->dbsizeinuse;
    out->raft_index = r->raftindex;
    out->raft_term = r->raftterm;
    size_t n = 0;
    for (size_t i = 0; i < r->n_errors && n < sizeof(out->errors); i++) {
        int w = snprintf(out->errors + n, sizeof(out->errors) - n, "%s%s", i ? "; " : "",
                         r->errors[i] ? r->errors[i] : "");
        n += w > 0 ? (size_t)w : 0;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

bool dhaf_etcd_err_nospace(const struct dhaf_err *err)
{
    return err && err->code == DHAF_ETOOBIG && strstr(err->msg, "database space exceeded");
}

/* Opens a stream on the current endpoint or the ones after it. With require_leader the
 * stream carries etcd's "hasleader: true" metadata: a member without a raft leader (cut off
 * from its peers) refuses it, or ends it once it has lost its leader, with UNAVAILABLE
 * "etcdserver: no leader", instead of serving it from its own stale store. */
static struct dhaf_rpc_stream *open_stream(struct dhaf_etcd *e, const char *method,
                                           bool require_leader, size_t *idx, struct chan **chp,
                                           struct dhaf_err *err)
{
    size_t start = atomic_load(&e->cur);
    for (size_t attempt = 0; attempt < e->n; attempt++) {
        size_t i = (start + attempt) % e->n;
        struct dhaf_rpc_md md[2];
        char tok[512];
        int n_md = call_md(e, i, &md[0], tok, sizeof(tok), err);
        if (n_md < 0) {
            if (!endpoint_failed(n_md))
                return NULL;
            continue;
        }
        if (require_leader)
            md[n_md++] = (struct dhaf_rpc_md){"hasleader", "true"};
        struct chan *c = chan_get(e, i);
        struct dhaf_rpc_stream *s = dhaf_rpc_stream_open(c->ch, method, md, (size_t)n_md, 0, err);
        if (s) {
            *idx = i;
            *chp = c;
            return s;
        }
        chan_put(e, c);
    }
    return NULL;
}

struct dhaf_etcd_keepalive {
    struct dhaf_etcd *e;
    int64_t lease;
    struct dhaf_rpc_stream *s;
    struct chan *c; /* the channel s runs on */
    size_t idx;
};

/* Closes a stream and lets go of its channel, noting whether it failed to connect. */
static void stream_drop(struct dhaf_etcd *e, struct dhaf_rpc_stream **s, struct chan **c,
                        size_t idx, bool connect_failed)
{
    dhaf_rpc_stream_close(*s);
    *s = NULL;
    if (*c) {
        chan_result(e, idx, *c, connect_failed);
        chan_put(e, *c);
        *c = NULL;
    }
}

struct dhaf_etcd_keepalive *dhaf_etcd_keepalive_new(struct dhaf_etcd *e, int64_t lease)
{
    struct dhaf_etcd_keepalive *ka = dhaf_xcalloc(1, sizeof(*ka));
    ka->e = e;
    ka->lease = lease;
    return ka;
}

void dhaf_etcd_keepalive_free(struct dhaf_etcd_keepalive *ka)
{
    if (!ka)
        return;
    if (ka->s)
        stream_drop(ka->e, &ka->s, &ka->c, ka->idx, false);
    free(ka);
}

int dhaf_etcd_keepalive_once(struct dhaf_etcd_keepalive *ka, int64_t *ttl, int timeout_ms,
                             struct dhaf_err *err)
{
    struct dhaf_etcd *e = ka->e;
    int64_t deadline = dhaf_mono_ms() + timeout_ms;
    int rc = DHAF_ETIMEOUT;
    dhaf_err_set(err, rc, "etcd keep-alive: no time left");
    for (size_t attempt = 0; attempt < e->n + 1; attempt++) {
        int left = (int)(deadline - dhaf_mono_ms());
        if (left <= 0)
            break;
        if (!ka->s) {
            ka->s = open_stream(e, M_KEEPALIVE, false, &ka->idx, &ka->c, err);
            if (!ka->s) {
                rc = err->code ? err->code : DHAF_EUNAVAILABLE;
                break;
            }
        }
        Etcdserverpb__LeaseKeepAliveRequest req = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
        req.id = ka->lease;
        rc = dhaf_rpc_stream_send(ka->s, &req.base, left, err);
        ProtobufCMessage *m = NULL;
        if (rc == 0) {
            left = (int)(deadline - dhaf_mono_ms());
            rc = dhaf_rpc_stream_recv(ka->s, &etcdserverpb__lease_keep_alive_response__descriptor,
                                      &m, left > 0 ? left : 1, err);
        }
        if (rc == 0) {
            Etcdserverpb__LeaseKeepAliveResponse *r = (Etcdserverpb__LeaseKeepAliveResponse *)m;
            int64_t t = r->ttl;
            protobuf_c_message_free_unpacked(m, NULL);
            if (t <= 0)
                return dhaf_err_set(err, DHAF_ENOTFOUND, "etcd lease %llx has expired",
                                    (unsigned long long)ka->lease);
            *ttl = t;
            atomic_store(&e->cur, ka->idx);
            chan_result(e, ka->idx, ka->c, false);
            return 0;
        }
        if (e->username && token_rejected(err)) {
            pthread_mutex_lock(&e->lock);
            DHAF_FREE(e->token);
            pthread_mutex_unlock(&e->lock);
        }
        /* The stream broke or the member is slow: try the next endpoint. A reply that is
         * merely late must not be matched to the next request, so the stream is dropped. */
        size_t failed = ka->idx;
        stream_drop(e, &ka->s, &ka->c, failed, connect_failure(rc, err));
        atomic_store(&e->cur, (failed + 1) % e->n);
    }
    return rc;
}

/* ------------------------------------------------------------------ watch */

struct dhaf_etcd_watch {
    struct dhaf_etcd *e;
    char *key;
    bool prefix;
    int64_t next_rev; /* 0 until the first creation tells the current revision */
    int64_t heard_ms; /* monotonic time of the last events or progress notice delivered */
    struct dhaf_rpc_stream *s;
    struct chan *c; /* the channel s runs on */
    size_t idx;
};

void dhaf_etcd_events_release(struct dhaf_etcd_events *ev)
{
    for (size_t i = 0; i < ev->n; i++)
        kv_release(&ev->v[i].kv);
    free(ev->v);
    memset(ev, 0, sizeof(*ev));
}

static void watch_drop(struct dhaf_etcd_watch *w, bool connect_failed)
{
    stream_drop(w->e, &w->s, &w->c, w->idx, connect_failed);
}

/* Turns a compaction or cancellation notice into an error; 0 when r is neither. */
static int watch_refused(struct dhaf_etcd_watch *w, const Etcdserverpb__WatchResponse *r,
                         struct dhaf_err *err)
{
    if (r->compact_revision > 0)
        return dhaf_err_set(err, DHAF_ECOMPACTED,
                            "etcd watch %s: revision %lld was compacted; the oldest left is %lld",
                            w->key, (long long)w->next_rev, (long long)r->compact_revision);
    if (r->canceled) {
        const char *why = r->cancel_reason ? r->cancel_reason : "";
        if (strstr(why, "auth") || strstr(why, "permission"))
            return dhaf_err_set(err, DHAF_EAUTH, "etcd watch %s refused: %s", w->key, why);
        return dhaf_err_set(err, DHAF_EUNAVAILABLE, "etcd watch %s cancelled: %s", w->key, why);
    }
    return 0;
}

/* Opens the stream and creates the watch, waiting for etcd to confirm it: from then on no
 * event after next_rev can be missed. */
static int watch_open(struct dhaf_etcd_watch *w, int timeout_ms, struct dhaf_err *err)
{
    struct dhaf_etcd *e = w->e;
    int64_t deadline = dhaf_mono_ms() + timeout_ms;
    w->s = open_stream(e, M_WATCH, true, &w->idx, &w->c, err);
    if (!w->s)
        return err->code ? err->code : DHAF_EUNAVAILABLE;
    uint8_t end[KEY_MAX];
    Etcdserverpb__WatchCreateRequest cr = ETCDSERVERPB__WATCH_CREATE_REQUEST__INIT;
    cr.key.data = (uint8_t *)w->key;
    cr.key.len = strlen(w->key);
    if (w->prefix) {
        cr.range_end.data = end;
        cr.range_end.len = prefix_end(w->key, end, sizeof(end));
    }
    cr.start_revision = w->next_rev;
    cr.progress_notify = 1;
    Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
    req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_CREATE_REQUEST;
    req.create_request = &cr;
    int rc = dhaf_rpc_stream_send(w->s, &req.base, timeout_ms > 0 ? timeout_ms : 1, err);
    ProtobufCMessage *m = NULL;
    if (rc == 0) {
        int left = (int)(deadline - dhaf_mono_ms());
        rc = dhaf_rpc_stream_recv(w->s, &etcdserverpb__watch_response__descriptor, &m,
                                  left > 0 ? left : 1, err);
    }
    if (rc) {
        /* This member cannot serve the watch (down, or refusing it because it has no
         * leader): the next attempt goes to the endpoint after it. */
        size_t failed = w->idx;
        watch_drop(w, connect_failure(rc, err));
        if (endpoint_failed(rc))
            atomic_compare_exchange_strong(&e->cur, &failed, (failed + 1) % e->n);
        return rc;
    }
    const Etcdserverpb__WatchResponse *r = (const Etcdserverpb__WatchResponse *)m;
    rc = watch_refused(w, r, err);
    if (rc == 0 && !r->created)
        rc = dhaf_err_set(err, DHAF_EPROTO, "etcd watch %s: no confirmation of the watch", w->key);
    if (rc == 0 && w->next_rev == 0)
        w->next_rev = (r->header ? r->header->revision : 0) + 1;
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc)
        watch_drop(w, false);
    else
        chan_result(e, w->idx, w->c, false);
    return rc;
}

struct dhaf_etcd_watch *dhaf_etcd_watch_new(struct dhaf_etcd *e, const char *key, bool prefix,
                                            int64_t start_rev, struct dhaf_err *err)
{
    if (strlen(key) >= KEY_MAX)
        return dhaf_err_set(err, DHAF_EINVAL, "etcd watch: key too long"), NULL;
    struct dhaf_etcd_watch *w = dhaf_xcalloc(1, sizeof(*w));
    w->e = e;
    w->key = dhaf_xstrdup(key);
    w->prefix = prefix;
    w->next_rev = start_rev > 0 ? start_rev : 0;
    /* Created now, so "from now" means the moment of this call. With a start revision, a
     * failure here is retried by watch_next (it resumes from that revision). */
    int rc = watch_open(w, e->timeout_ms * (int)e->n, err);
    if (rc != 0 && (w->next_rev == 0 || rc == DHAF_ECOMPACTED || rc == DHAF_EAUTH)) {
        dhaf_etcd_watch_free(w);
        return NULL;
    }
    return w;
}

int64_t dhaf_etcd_watch_next_revision(const struct dhaf_etcd_watch *w)
{
    return w->next_rev;
}

int64_t dhaf_etcd_watch_heard(const struct dhaf_etcd_watch *w)
{
    return w->heard_ms;
}

int dhaf_etcd_watch_request_progress(struct dhaf_etcd_watch *w, int timeout_ms,
                                     struct dhaf_err *err)
{
    if (!w->s)
        return dhaf_err_set(err, DHAF_EUNAVAILABLE, "etcd watch %s: not connected", w->key);
    Etcdserverpb__WatchProgressRequest pr = ETCDSERVERPB__WATCH_PROGRESS_REQUEST__INIT;
    Etcdserverpb__WatchRequest req = ETCDSERVERPB__WATCH_REQUEST__INIT;
    req.request_union_case = ETCDSERVERPB__WATCH_REQUEST__REQUEST_UNION_PROGRESS_REQUEST;
    req.progress_request = &pr;
    return dhaf_rpc_stream_send(w->s, &req.base, timeout_ms > 0 ? timeout_ms : 1, err);
}

void dhaf_etcd_watch_free(struct dhaf_etcd_watch *w)
{
    if (!w)
        return;
    if (w->s)
        watch_drop(w, false);
    free(w->key);
    free(w);
}

int dhaf_etcd_watch_next(struct dhaf_etcd_watch *w, struct dhaf_etcd_events *out, int timeout_ms,
                         struct dhaf_err *err)
{
    memset(out, 0, sizeof(*out));
    struct dhaf_etcd *e = w->e;
    int64_t deadline = dhaf_mono_ms() + timeout_ms;
    for (;;) {
        int left = (int)(deadline - dhaf_mono_ms());
        if (left <= 0)
            return dhaf_err_set(err, DHAF_ETIMEOUT, "etcd watch: no event within %d ms",
                                timeout_ms);
        if (!w->s) {
            int rc = watch_open(w, left, err);
            if (rc) {
                if (rc == DHAF_ECOMPACTED || rc == DHAF_EAUTH)
                    return rc;
                /* no endpoint answered yet: pause briefly (bounded by the deadline), retry */
                if (dhaf_mono_ms() + 50 < deadline) {
                    struct timespec ts = {0, 50 * 1000000L};
                    nanosleep(&ts, NULL);
                }
                continue;
            }
        }
        ProtobufCMessage *m = NULL;
        int rc =
            dhaf_rpc_stream_recv(w->s, &etcdserverpb__watch_response__descriptor, &m, left, err);
        if (rc == DHAF_ETIMEOUT)
            return rc;
        if (rc) {
            /* The stream broke (member died or restarted, or lost its raft leader: watches
             * require one, see open_stream): resume elsewhere from next_rev. */
            char q[300];
            DHAF_LOG(DHAF_LOG_INFO,
                     "event=etcd-watch-resume key=%s endpoint=%s next_rev=%lld reason=\"%s\"",
                     w->key, e->endpoints[w->idx], (long long)w->next_rev,
                     dhaf_log_quote(q, sizeof(q), err->msg));
            if (e->username && token_rejected(err)) {
                pthread_mutex_lock(&e->lock);
                DHAF_FREE(e->token);
                pthread_mutex_unlock(&e->lock);
            }
            size_t failed = w->idx;
            watch_drop(w, connect_failure(rc, err));
            atomic_store(&e->cur, (failed + 1) % e->n);
            continue;
        }
        Etcdserverpb__WatchResponse *r = (Etcdserverpb__WatchResponse *)m;
        int64_t hdr_rev = r->header ? r->header->revision : 0;
        rc = watch_refused(w, r, err);
        if (rc) {
            char q[300];
            DHAF_LOG(DHAF_LOG_WARN, "event=etcd-watch-cancelled key=%s reason=\"%s\"", w->key,
                     dhaf_log_quote(q, sizeof(q), err->msg));
            protobuf_c_message_free_unpacked(m, NULL);
            watch_drop(w, false);
            if (rc == DHAF_ECOMPACTED || rc == DHAF_EAUTH)
                return rc;
            /* cancelled for another reason: create it again, not in a tight loop */
            if (dhaf_mono_ms() + 50 < deadline) {
                struct timespec ts = {0, 50 * 1000000L};
                nanosleep(&ts, NULL);
            }
            continue;
        }
        /* etcd delivered something for this watch: it is alive and in step up to hdr_rev */
        w->heard_ms = dhaf_mono_ms();
        if (r->n_events) {
            out->v = dhaf_xcalloc(r->n_events, sizeof(*out->v));
            for (size_t i = 0; i < r->n_events; i++) {
                const Mvccpb__Event *ev = r->events[i];
                out->v[i].type = ev->type == MVCCPB__EVENT__EVENT_TYPE__DELETE ? DHAF_ETCD_EV_DELETE
                                                                               : DHAF_ETCD_EV_PUT;
                if (ev->kv)
                    kv_copy(&out->v[i].kv, ev->kv);
                else
                    out->v[i].kv.key = dhaf_xstrdup("");
                if (ev->kv && ev->kv->mod_revision >= w->next_rev)
                    w->next_rev = ev->kv->mod_revision + 1;
            }
            out->n = r->n_events;
            out->revision = hdr_rev;
            DHAF_LOG(DHAF_LOG_DEBUG, "event=etcd-watch-events key=%s n=%zu revision=%lld", w->key,
                     out->n, (long long)hdr_rev);
            protobuf_c_message_free_unpacked(m, NULL);
            return 0;
        }
        /* A progress notice (no events): everything up to hdr_rev has been seen. */
        DHAF_LOG(DHAF_LOG_DEBUG, "event=etcd-watch-progress key=%s revision=%lld created=%d",
                 w->key, (long long)hdr_rev, (int)r->created);
        if (!r->created && hdr_rev + 1 > w->next_rev)
            w->next_rev = hdr_rev + 1;
        protobuf_c_message_free_unpacked(m, NULL);
    }
}
