/* SPDX-License-Identifier: MIT */
/* An in-memory etcd behind node/store.h's interface, for unit tests in virtual time. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "memstore.h"

#define MAX_LEASE_TTL 9000000000LL /* etcd's MaxLeaseTTL, in seconds */

struct ms_lease {
    int64_t id;
    int64_t ttl;       /* seconds */
    int64_t expiry_ms; /* clock mono time at which it expires */
};

struct ms_fail {
    int count; /* calls left to fail */
    int code;
    bool applied;
};

struct ms_watch;

struct memstore {
    pthread_mutex_t lock; /* guards everything below; never held across anything that waits */
    const struct dhaf_clock *clock;
    int64_t rev;
    int64_t compact_rev; /* no watch starts or resumes below it */
    struct dhaf_kv *kvs; /* the live keys, sorted by key (byte order) */
    size_t n_kvs, cap_kvs;
    /* every event from compact_rev on, and older ones that a connected watch has not had yet
     * (etcd keeps sending to a watch that is connected when it compacts), in revision order */
    struct dhaf_etcd_event *hist;
    size_t n_hist, cap_hist;
    struct ms_watch **watches; /* the watches not freed yet */
    size_t n_watches, cap_watches;
    struct ms_lease *leases;
    size_t n_leases, cap_leases;
    int64_t next_lease;
    bool down;
    bool mute; /* watches deliver nothing (progress still answered): a stuck watch */
    struct dhaf_etcd_alarm alarms[DHAF_ETCD_MAX_ALARMS]; /* raised by the test */
    size_t n_alarms;
    struct ms_fail fail[MS_N_OPS];
    uint64_t calls[MS_N_OPS];
};

/* Handed out as struct store_watch / struct store_keepalive (as node/store.c does for lib/etcd's
 * types); fields are guarded by the store's lock. */
struct ms_watch {
    struct memstore *m;
    char *key;
    bool prefix;
    int64_t next_rev; /* the first revision not delivered yet */
    int64_t heard_ms;
    bool broken; /* its stream broke (the store was down): it resumes from next_rev */
};

struct ms_keepalive {
    struct memstore *m;
    int64_t lease;
};

static const char injected[] = "memstore: injected failure";
static const char is_down[] = "memstore: etcd is down";
/* etcd's own words (lib/etcd prefixes them with the endpoint and the gRPC status) */
static const char no_space[] = "etcdserver: mvcc: database space exceeded";
static const char corrupt[] = "etcdserver: corrupt cluster";

static bool alarm_raised(const struct memstore *m, int type)
{
    for (size_t i = 0; i < m->n_alarms; i++)
        if (m->alarms[i].type == type)
            return true;
    return false;
}

/* What a raised alarm does to a call (lock held): CORRUPT refuses reads and writes, NOSPACE
 * refuses what would grow the database. */
static int alarm_refuses(const struct memstore *m, bool reads, bool grows, struct dhaf_err *err)
{
    if ((reads || grows) && alarm_raised(m, DHAF_ETCD_ALARM_CORRUPT))
        return dhaf_err_set(err, DHAF_EPROTO, "%s", corrupt);
    if (grows && alarm_raised(m, DHAF_ETCD_ALARM_NOSPACE))
        return dhaf_err_set(err, DHAF_ETOOBIG, "%s", no_space);
    return 0;
}

/* ------------------------------------------------------------------ keys */

static bool has_prefix(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Index of the first key >= key. */
static size_t kv_lower(const struct memstore *m, const char *key)
{
    size_t lo = 0, hi = m->n_kvs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(m->kvs[mid].key, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static struct dhaf_kv *kv_find(struct memstore *m, const char *key)
{
    size_t i = kv_lower(m, key);
    return i < m->n_kvs && strcmp(m->kvs[i].key, key) == 0 ? &m->kvs[i] : NULL;
}

/* The index range [*lo, return) of the key `from`, or with prefix of the keys from `from` to the
 * end of prefix (from starts with prefix, so they are contiguous). */
static size_t range_bounds(const struct memstore *m, const char *from, const char *prefix,
                           size_t *lo)
{
    size_t i = kv_lower(m, from);
    *lo = i;
    if (!prefix)
        return i < m->n_kvs && strcmp(m->kvs[i].key, from) == 0 ? i + 1 : i;
    while (i < m->n_kvs && has_prefix(m->kvs[i].key, prefix))
        i++;
    return i;
}

static void kv_copy(struct dhaf_kv *dst, const struct dhaf_kv *src)
{
    *dst = *src;
    dst->key = dhaf_xstrdup(src->key);
    dst->value = dhaf_xstrndup(src->value, src->value_len);
}

/* Fills out (zeroed by the caller) with the range, as read at revision rev. */
static void read_range(const struct memstore *m, const char *from, const char *prefix,
                       int64_t limit, int64_t rev, struct dhaf_kvs *out)
{
    size_t lo, hi = range_bounds(m, from, prefix, &lo);
    size_t count = hi - lo;
    size_t n = limit > 0 && (uint64_t)limit < count ? (size_t)limit : count;
    out->kvs = dhaf_xcalloc(n ? n : 1, sizeof(*out->kvs));
    for (size_t i = 0; i < n; i++)
        kv_copy(&out->kvs[i], &m->kvs[lo + i]);
    out->n = n;
    out->count = (int64_t)count;
    out->more = n < count;
    out->revision = rev;
}

/* ------------------------------------------------------------------ writes and history */

static struct dhaf_etcd_event *hist_add(struct memstore *m, enum dhaf_etcd_evtype type)
{
    DHAF_GROW(m->hist, m->n_hist + 1, m->cap_hist);
    struct dhaf_etcd_event *ev = &m->hist[m->n_hist++];
    memset(ev, 0, sizeof(*ev));
    ev->type = type;
    return ev;
}

/* Writes key at revision rev (the caller makes rev the store's revision). */
static void kv_put(struct memstore *m, const char *key, const char *value, size_t len,
                   int64_t lease, int64_t rev)
{
    size_t i = kv_lower(m, key);
    struct dhaf_kv *kv;
    if (i < m->n_kvs && strcmp(m->kvs[i].key, key) == 0) {
        kv = &m->kvs[i];
        free(kv->value);
        kv->version++;
    } else {
        DHAF_GROW(m->kvs, m->n_kvs + 1, m->cap_kvs);
        memmove(&m->kvs[i + 1], &m->kvs[i], (m->n_kvs - i) * sizeof(*m->kvs));
        m->n_kvs++;
        kv = &m->kvs[i];
        memset(kv, 0, sizeof(*kv));
        kv->key = dhaf_xstrdup(key);
        kv->create_rev = rev;
        kv->version = 1;
    }
    kv->value = dhaf_xstrndup(value, len);
    kv->value_len = len;
    kv->mod_rev = rev;
    kv->lease = lease;
    kv_copy(&hist_add(m, DHAF_ETCD_EV_PUT)->kv, kv);
}

/* Records the deletion of kv at revision rev, taking its key, and frees its value. As in etcd,
 * the event's kv holds only the key and the deletion's revision. */
static void kv_retire(struct memstore *m, struct dhaf_kv *kv, int64_t rev)
{
    struct dhaf_etcd_event *ev = hist_add(m, DHAF_ETCD_EV_DELETE);
    ev->kv.key = kv->key;
    ev->kv.value = dhaf_xstrdup("");
    ev->kv.mod_rev = rev;
    free(kv->value);
    memset(kv, 0, sizeof(*kv));
}

/* Deletes key, or every key under it with prefix, at revision rev, in key order. Returns how
 * many keys were deleted. */
static size_t delete_range(struct memstore *m, const char *key, bool prefix, int64_t rev)
{
    size_t lo, hi = range_bounds(m, key, prefix ? key : NULL, &lo);
    for (size_t i = lo; i < hi; i++)
        kv_retire(m, &m->kvs[i], rev);
    memmove(&m->kvs[lo], &m->kvs[hi], (m->n_kvs - hi) * sizeof(*m->kvs));
    m->n_kvs -= hi - lo;
    return hi - lo;
}

/* ------------------------------------------------------------------ leases */

static struct ms_lease *lease_find(struct memstore *m, int64_t id)
{
    for (size_t i = 0; i < m->n_leases; i++)
        if (m->leases[i].id == id)
            return &m->leases[i];
    return NULL;
}

/* Removes the lease and deletes its keys in key order, in one new revision if it had any. */
static void lease_revoke_at(struct memstore *m, struct ms_lease *l)
{
    int64_t id = l->id;
    *l = m->leases[--m->n_leases];
    int64_t rev = m->rev + 1;
    size_t kept = 0;
    for (size_t i = 0; i < m->n_kvs; i++) {
        if (m->kvs[i].lease == id)
            kv_retire(m, &m->kvs[i], rev);
        else
            m->kvs[kept++] = m->kvs[i];
    }
    if (kept < m->n_kvs)
        m->rev = rev;
    m->n_kvs = kept;
}

/* Revokes every lease whose time is up, the earliest first, like etcd's lessor. */
static void expire_leases(struct memstore *m)
{
    int64_t now = dhaf_clock_mono(m->clock);
    for (;;) {
        struct ms_lease *first = NULL;
        for (size_t i = 0; i < m->n_leases; i++) {
            struct ms_lease *l = &m->leases[i];
            if (l->expiry_ms <= now && (!first || l->expiry_ms < first->expiry_ms ||
                                        (l->expiry_ms == first->expiry_ms && l->id < first->id)))
                first = l;
        }
        if (!first)
            return;
        lease_revoke_at(m, first);
    }
}

/* ------------------------------------------------------------------ calls */

/*
 * Starts a call of kind op, with the lock held and the call counted: revokes expired leases,
 * then says whether the call must fail now (the code, with err set). *late gets the code to
 * return after the call took effect (memstore_fail with applied), else 0.
 */
static int call_begin(struct memstore *m, enum memstore_op op, int *late, struct dhaf_err *err)
{
    *late = 0;
    expire_leases(m);
    if (m->down)
        return dhaf_err_set(err, DHAF_EUNAVAILABLE, "%s", is_down);
    struct ms_fail *f = &m->fail[op];
    if (f->count <= 0)
        return 0;
    f->count--;
    if (!f->applied)
        return dhaf_err_set(err, f->code, "%s", injected);
    *late = f->code;
    return 0;
}

static int range_call(struct memstore *m, const char *from, const char *prefix, int64_t limit,
                      struct dhaf_kvs *out, struct dhaf_err *err)
{
    memset(out, 0, sizeof(*out));
    int late = 0, rc;
    pthread_mutex_lock(&m->lock);
    m->calls[MS_GET]++;
    if (prefix && !has_prefix(from, prefix))
        rc = dhaf_err_set(err, DHAF_EINVAL, "memstore: range: %s is not under %s", from, prefix);
    else
        rc = call_begin(m, MS_GET, &late, err);
    if (rc == 0)
        rc = alarm_refuses(m, true, false, err);
    if (rc == 0 && !from[0])
        rc = dhaf_err_set(err, DHAF_EINVAL, "etcdserver: key is not provided");
    if (rc == 0)
        read_range(m, from, prefix, limit, m->rev, out);
    pthread_mutex_unlock(&m->lock);
    if (rc == 0 && late) {
        dhaf_kvs_release(out);
        rc = dhaf_err_set(err, late, "%s", injected);
    }
    return rc;
}

static int ms_get(void *ud, const char *key, bool prefix, int64_t limit, struct dhaf_kvs *out,
                  struct dhaf_err *err)
{
    return range_call(ud, key, prefix ? key : NULL, limit, out, err);
}

static int ms_get_from(void *ud, const char *from, const char *prefix, int64_t limit,
                       struct dhaf_kvs *out, struct dhaf_err *err)
{
    return range_call(ud, from, prefix, limit, out, err);
}

static int ms_latest_mod(void *ud, const char *prefix, int64_t *mod_rev, struct dhaf_err *err)
{
    /* a range read (it counts, fails and goes down as one), then its highest mod revision */
    struct dhaf_kvs kvs;
    int rc = range_call(ud, prefix, prefix, 0, &kvs, err);
    if (rc)
        return rc;
    *mod_rev = 0;
    for (size_t i = 0; i < kvs.n; i++)
        if (kvs.kvs[i].mod_rev > *mod_rev)
            *mod_rev = kvs.kvs[i].mod_rev;
    dhaf_kvs_release(&kvs);
    return 0;
}

static int cmp_int(int64_t a, int64_t b)
{
    return a < b ? -1 : a > b;
}

static bool cmp_holds(struct memstore *m, const struct dhaf_etcd_cmp *c)
{
    const struct dhaf_kv *kv = kv_find(m, c->key);
    if (!kv && c->target == DHAF_ETCD_VALUE)
        return false; /* etcd: a value compare on a missing key is false, whatever the result */
    int r = 0;
    switch (c->target) {
    case DHAF_ETCD_VALUE: {
        size_t len = c->value ? strlen(c->value) : 0;
        size_t n = kv->value_len < len ? kv->value_len : len;
        r = n ? memcmp(kv->value, c->value, n) : 0;
        if (r == 0)
            r = cmp_int((int64_t)kv->value_len, (int64_t)len);
        break;
    }
    case DHAF_ETCD_CREATE_REV:
        r = cmp_int(kv ? kv->create_rev : 0, c->num);
        break;
    case DHAF_ETCD_MOD_REV:
        r = cmp_int(kv ? kv->mod_rev : 0, c->num);
        break;
    case DHAF_ETCD_VERSION:
        r = cmp_int(kv ? kv->version : 0, c->num);
        break;
    case DHAF_ETCD_LEASE:
        r = cmp_int(kv ? kv->lease : 0, c->num);
        break;
    }
    switch (c->result) {
    case DHAF_ETCD_EQ:
        return r == 0;
    case DHAF_ETCD_NE:
        return r != 0;
    case DHAF_ETCD_GT:
        return r > 0;
    case DHAF_ETCD_LT:
        return r < 0;
    }
    return false;
}

/* What etcd refuses before looking at the data: empty keys, and a branch that writes one key
 * twice (two puts, or a put of a key the branch deletes). */
static int ops_valid(const struct dhaf_etcd_op *ops, size_t n, struct dhaf_err *err)
{
    for (size_t i = 0; i < n; i++) {
        if (!ops[i].key[0])
            return dhaf_err_set(err, DHAF_EINVAL, "etcdserver: key is not provided");
        if (ops[i].type != DHAF_ETCD_OP_PUT)
            continue;
        for (size_t j = 0; j < n; j++) {
            const struct dhaf_etcd_op *o = &ops[j];
            bool clash = false;
            if (o->type == DHAF_ETCD_OP_PUT && j < i)
                clash = strcmp(o->key, ops[i].key) == 0;
            else if (o->type == DHAF_ETCD_OP_DELETE)
                clash = o->prefix ? has_prefix(ops[i].key, o->key) : !strcmp(o->key, ops[i].key);
            if (clash)
                return dhaf_err_set(err, DHAF_EINVAL,
                                    "etcdserver: duplicate key given in txn request");
        }
    }
    return 0;
}

/* Runs the ops of the chosen branch in order; reads see the branch's earlier writes. */
static void txn_apply(struct memstore *m, const struct dhaf_etcd_op *ops, size_t n,
                      struct dhaf_etcd_txn_result *res)
{
    int64_t rev = m->rev + 1;
    bool changed = false;
    size_t n_gets = 0;
    for (size_t i = 0; i < n; i++)
        n_gets += ops[i].type == DHAF_ETCD_OP_GET;
    res->gets = dhaf_xcalloc(n_gets ? n_gets : 1, sizeof(*res->gets));
    for (size_t i = 0; i < n; i++) {
        const struct dhaf_etcd_op *o = &ops[i];
        switch (o->type) {
        case DHAF_ETCD_OP_GET:
            /* etcd reads inside a writing txn at the revision it is making */
            read_range(m, o->key, o->prefix ? o->key : NULL, 0, changed ? rev : m->rev,
                       &res->gets[res->n_gets++]);
            break;
        case DHAF_ETCD_OP_PUT: {
            const char *v = o->value ? o->value : "";
            kv_put(m, o->key, v, o->value_len ? o->value_len : strlen(v), o->lease, rev);
            changed = true;
            break;
        }
        case DHAF_ETCD_OP_DELETE:
            if (delete_range(m, o->key, o->prefix, rev) > 0)
                changed = true;
            break;
        }
    }
    if (changed)
        m->rev = rev;
    res->revision = m->rev;
}

static int ms_txn(void *ud, const struct dhaf_etcd_cmp *cmps, size_t n_cmps,
                  const struct dhaf_etcd_op *then, size_t n_then,
                  const struct dhaf_etcd_op *otherwise, size_t n_otherwise,
                  struct dhaf_etcd_txn_result *res, struct dhaf_err *err)
{
    struct memstore *m = ud;
    memset(res, 0, sizeof(*res));
    int late = 0;
    pthread_mutex_lock(&m->lock);
    m->calls[MS_TXN]++;
    int rc = call_begin(m, MS_TXN, &late, err);
    bool grows = false;
    for (size_t i = 0; i < n_then; i++)
        grows = grows || then[i].type == DHAF_ETCD_OP_PUT;
    for (size_t i = 0; i < n_otherwise; i++)
        grows = grows || otherwise[i].type == DHAF_ETCD_OP_PUT;
    if (rc == 0)
        rc = alarm_refuses(m, true, grows, err);
    for (size_t i = 0; rc == 0 && i < n_cmps; i++)
        if (!cmps[i].key[0])
            rc = dhaf_err_set(err, DHAF_EINVAL, "etcdserver: key is not provided");
    if (rc == 0)
        rc = ops_valid(then, n_then, err);
    if (rc == 0)
        rc = ops_valid(otherwise, n_otherwise, err);
    bool ok = true;
    for (size_t i = 0; rc == 0 && ok && i < n_cmps; i++)
        ok = cmp_holds(m, &cmps[i]);
    const struct dhaf_etcd_op *ops = ok ? then : otherwise;
    size_t n = ok ? n_then : n_otherwise;
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (ops[i].type == DHAF_ETCD_OP_PUT && ops[i].lease && !lease_find(m, ops[i].lease))
            rc = dhaf_err_set(err, DHAF_ENOTFOUND, "etcdserver: requested lease not found");
    if (rc == 0) {
        res->succeeded = ok;
        txn_apply(m, ops, n, res);
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0 && late) {
        dhaf_etcd_txn_result_release(res);
        rc = dhaf_err_set(err, late, "%s", injected);
    }
    return rc;
}

static int ms_grant(void *ud, int64_t ttl, int64_t *id, struct dhaf_err *err)
{
    struct memstore *m = ud;
    int late = 0;
    pthread_mutex_lock(&m->lock);
    m->calls[MS_GRANT]++;
    int rc = call_begin(m, MS_GRANT, &late, err);
    if (rc == 0)
        rc = alarm_refuses(m, false, true, err);
    if (rc == 0 && ttl > MAX_LEASE_TTL)
        rc = dhaf_err_set(err, DHAF_EINVAL, "etcdserver: too large lease TTL");
    if (rc == 0) {
        DHAF_GROW(m->leases, m->n_leases + 1, m->cap_leases);
        struct ms_lease *l = &m->leases[m->n_leases++];
        l->id = m->next_lease++;
        l->ttl = ttl < 1 ? 1 : ttl; /* etcd raises a TTL below its minimum */
        l->expiry_ms = dhaf_clock_mono(m->clock) + l->ttl * 1000;
        if (!late)
            *id = l->id;
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0 && late)
        rc = dhaf_err_set(err, late, "%s", injected);
    return rc;
}

static int ms_revoke(void *ud, int64_t id, int timeout_ms, struct dhaf_err *err)
{
    (void)timeout_ms; /* nothing here waits */
    struct memstore *m = ud;
    int late = 0;
    pthread_mutex_lock(&m->lock);
    m->calls[MS_REVOKE]++;
    int rc = call_begin(m, MS_REVOKE, &late, err);
    struct ms_lease *l = rc == 0 ? lease_find(m, id) : NULL;
    if (rc == 0 && !l)
        rc = dhaf_err_set(err, DHAF_ENOTFOUND, "etcdserver: requested lease not found");
    if (rc == 0)
        lease_revoke_at(m, l);
    pthread_mutex_unlock(&m->lock);
    if (rc == 0 && late)
        rc = dhaf_err_set(err, late, "%s", injected);
    return rc;
}

static struct store_keepalive *ms_ka_new(void *ud, int64_t lease)
{
    struct ms_keepalive *ka = dhaf_xcalloc(1, sizeof(*ka));
    ka->m = ud;
    ka->lease = lease;
    return (struct store_keepalive *)ka;
}

static int ms_ka_once(struct store_keepalive *handle, int64_t *ttl, int timeout_ms,
                      struct dhaf_err *err)
{
    (void)timeout_ms;
    struct ms_keepalive *ka = (struct ms_keepalive *)handle;
    struct memstore *m = ka->m;
    int late = 0;
    pthread_mutex_lock(&m->lock);
    m->calls[MS_KEEPALIVE]++;
    int rc = call_begin(m, MS_KEEPALIVE, &late, err);
    struct ms_lease *l = rc == 0 ? lease_find(m, ka->lease) : NULL;
    if (rc == 0 && !l)
        rc = dhaf_err_set(err, DHAF_ENOTFOUND, "memstore: lease %llx has expired",
                          (unsigned long long)ka->lease);
    if (rc == 0) {
        l->expiry_ms = dhaf_clock_mono(m->clock) + l->ttl * 1000;
        if (!late)
            *ttl = l->ttl;
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0 && late)
        rc = dhaf_err_set(err, late, "%s", injected);
    return rc;
}

static void ms_ka_free(struct store_keepalive *ka)
{
    free(ka);
}

/* ------------------------------------------------------------------ watches */

static void ms_watch_free(struct store_watch *handle)
{
    struct ms_watch *w = (struct ms_watch *)handle;
    if (!w)
        return;
    struct memstore *m = w->m;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_watches; i++) {
        if (m->watches[i] == w) {
            m->watches[i] = m->watches[--m->n_watches];
            break;
        }
    }
    pthread_mutex_unlock(&m->lock);
    free(w->key);
    free(w);
}

static struct store_watch *ms_watch_new(void *ud, const char *key, bool prefix, int64_t start_rev,
                                        struct dhaf_err *err)
{
    struct memstore *m = ud;
    struct ms_watch *w = NULL;
    int late = 0;
    pthread_mutex_lock(&m->lock);
    m->calls[MS_WATCH_NEW]++;
    int rc = call_begin(m, MS_WATCH_NEW, &late, err);
    if (rc == 0 && start_rev > 0 && start_rev < m->compact_rev)
        rc = dhaf_err_set(err, DHAF_ECOMPACTED,
                          "memstore: watch %s: revision %lld was compacted; the oldest left is "
                          "%lld",
                          key, (long long)start_rev, (long long)m->compact_rev);
    if (rc == 0) {
        w = dhaf_xcalloc(1, sizeof(*w));
        w->m = m;
        w->key = dhaf_xstrdup(key);
        w->prefix = prefix;
        w->next_rev = start_rev > 0 ? start_rev : m->rev + 1;
        w->heard_ms = 0; /* as lib/etcd: only deliveries and progress notices count */
        DHAF_GROW(m->watches, m->n_watches + 1, m->cap_watches);
        m->watches[m->n_watches++] = w;
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0 && late) {
        ms_watch_free((struct store_watch *)w);
        w = NULL;
        dhaf_err_set(err, late, "%s", injected);
    }
    return (struct store_watch *)w;
}

static bool watch_matches(const struct ms_watch *w, const char *key)
{
    return w->prefix ? has_prefix(key, w->key) : strcmp(key, w->key) == 0;
}

static int ms_watch_next(struct store_watch *handle, struct dhaf_etcd_events *out, int timeout_ms,
                         struct dhaf_err *err)
{
    struct ms_watch *w = (struct ms_watch *)handle;
    struct memstore *m = w->m;
    memset(out, 0, sizeof(*out));
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    expire_leases(m);
    if (m->down || m->mute) {
        rc = dhaf_err_set(err, DHAF_ETIMEOUT, "%s: no event within %d ms",
                          m->down ? is_down : "memstore: muted", timeout_ms);
        goto out;
    }
    if (w->broken && w->next_rev < m->compact_rev) {
        /* resuming after the outage needs a revision that is gone */
        rc = dhaf_err_set(err, DHAF_ECOMPACTED,
                          "memstore: watch %s: revision %lld was compacted; the oldest left is "
                          "%lld",
                          w->key, (long long)w->next_rev, (long long)m->compact_rev);
        goto out;
    }
    w->broken = false;
    /* the history is in revision order: find the first event not delivered yet */
    size_t lo = 0, hi = m->n_hist;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (m->hist[mid].kv.mod_rev < w->next_rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t n = 0;
    for (size_t i = lo; i < m->n_hist; i++)
        n += watch_matches(w, m->hist[i].kv.key);
    if (n == 0) {
        rc = dhaf_err_set(err, DHAF_ETIMEOUT, "memstore: watch %s: no event within %d ms", w->key,
                          timeout_ms);
        goto out;
    }
    out->v = dhaf_xcalloc(n, sizeof(*out->v));
    for (size_t i = lo; i < m->n_hist; i++) {
        const struct dhaf_etcd_event *ev = &m->hist[i];
        if (!watch_matches(w, ev->kv.key))
            continue;
        out->v[out->n].type = ev->type;
        kv_copy(&out->v[out->n++].kv, &ev->kv);
        w->next_rev = ev->kv.mod_rev + 1;
    }
    out->revision = m->rev;
    w->heard_ms = dhaf_clock_mono(m->clock);
out:
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static int64_t ms_watch_heard(struct store_watch *handle)
{
    struct ms_watch *w = (struct ms_watch *)handle;
    pthread_mutex_lock(&w->m->lock);
    int64_t heard = w->heard_ms;
    pthread_mutex_unlock(&w->m->lock);
    return heard;
}

static int ms_watch_progress(struct store_watch *handle, struct dhaf_err *err)
{
    struct ms_watch *w = (struct ms_watch *)handle;
    struct memstore *m = w->m;
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    expire_leases(m);
    if (m->down)
        rc = dhaf_err_set(err, DHAF_EUNAVAILABLE, "%s", is_down);
    else
        w->heard_ms = dhaf_clock_mono(m->clock);
    pthread_mutex_unlock(&m->lock);
    return rc;
}

/* ------------------------------------------------------------------ maintenance */

/* etcd's compaction at rev (lock held; rev <= the current revision). */
static void compact_at(struct memstore *m, int64_t rev)
{
    if (rev <= m->compact_rev)
        return;
    /* what a connected watch has not had yet stays: etcd still sends it */
    int64_t keep = rev;
    for (size_t i = 0; i < m->n_watches; i++)
        if (!m->watches[i]->broken && m->watches[i]->next_rev < keep)
            keep = m->watches[i]->next_rev;
    size_t drop = 0;
    while (drop < m->n_hist && m->hist[drop].kv.mod_rev < keep) {
        free(m->hist[drop].kv.key);
        free(m->hist[drop].kv.value);
        drop++;
    }
    memmove(m->hist, &m->hist[drop], (m->n_hist - drop) * sizeof(*m->hist));
    m->n_hist -= drop;
    m->compact_rev = rev;
}

static int ms_compact(void *ud, int64_t rev, struct dhaf_err *err)
{
    struct memstore *m = ud;
    int late = 0;
    pthread_mutex_lock(&m->lock);
    m->calls[MS_COMPACT]++;
    int rc = call_begin(m, MS_COMPACT, &late, err);
    if (rc == 0 && alarm_raised(m, DHAF_ETCD_ALARM_CORRUPT))
        rc = dhaf_err_set(err, DHAF_EPROTO, "%s", corrupt);
    if (rc == 0 && rev <= m->compact_rev)
        rc = dhaf_err_set(err, DHAF_ECOMPACTED,
                          "memstore: compact %lld: already compacted at or after that revision",
                          (long long)rev);
    if (rc == 0 && rev > m->rev)
        rc = dhaf_err_set(err, DHAF_EINVAL,
                          "etcdserver: mvcc: required revision is a future "
                          "revision");
    if (rc == 0)
        compact_at(m, rev);
    pthread_mutex_unlock(&m->lock);
    if (rc == 0 && late)
        rc = dhaf_err_set(err, late, "%s", injected);
    return rc;
}

static int ms_alarms(void *ud, struct dhaf_etcd_alarms *out, struct dhaf_err *err)
{
    struct memstore *m = ud;
    memset(out, 0, sizeof(*out));
    int late = 0;
    pthread_mutex_lock(&m->lock);
    m->calls[MS_ALARMS]++;
    int rc = call_begin(m, MS_ALARMS, &late, err);
    if (rc == 0) {
        memcpy(out->v, m->alarms, m->n_alarms * sizeof(*m->alarms));
        out->n = m->n_alarms;
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0 && late) {
        memset(out, 0, sizeof(*out));
        rc = dhaf_err_set(err, late, "%s", injected);
    }
    return rc;
}

static int ms_status(void *ud, struct dhaf_etcd_status *out, struct dhaf_err *err)
{
    struct memstore *m = ud;
    memset(out, 0, sizeof(*out));
    int late = 0;
    pthread_mutex_lock(&m->lock);
    m->calls[MS_STATUS]++;
    int rc = call_begin(m, MS_STATUS, &late, err);
    if (rc == 0) {
        snprintf(out->version, sizeof(out->version), "memstore");
        out->member = out->leader = 1;
        out->revision = m->rev;
        int64_t bytes = 0;
        for (size_t i = 0; i < m->n_kvs; i++)
            bytes += (int64_t)(strlen(m->kvs[i].key) + m->kvs[i].value_len);
        for (size_t i = 0; i < m->n_hist; i++)
            bytes += (int64_t)(strlen(m->hist[i].kv.key) + m->hist[i].kv.value_len);
        out->db_size = out->db_size_in_use = bytes;
        /* as etcd's Status lists the raised alarms */
        size_t n = 0;
        for (size_t i = 0; i < m->n_alarms && n < sizeof(out->errors); i++) {
            int w = snprintf(out->errors + n, sizeof(out->errors) - n, "%smemberID:%llu alarm:%s ",
                             i ? "; " : "", (unsigned long long)m->alarms[i].member,
                             dhaf_etcd_alarm_name(m->alarms[i].type));
            n += w > 0 ? (size_t)w : 0;
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (rc == 0 && late)
        rc = dhaf_err_set(err, late, "%s", injected);
    return rc;
}

static const struct store_ops memstore_ops = {
    .get = ms_get,
    .get_from = ms_get_from,
    .latest_mod = ms_latest_mod,
    .txn = ms_txn,
    .lease_grant = ms_grant,
    .lease_revoke = ms_revoke,
    .keepalive_new = ms_ka_new,
    .keepalive_once = ms_ka_once,
    .keepalive_free = ms_ka_free,
    .watch_new = ms_watch_new,
    .watch_next = ms_watch_next,
    .watch_heard = ms_watch_heard,
    .watch_progress = ms_watch_progress,
    .watch_free = ms_watch_free,
    .compact = ms_compact,
    .alarms = ms_alarms,
    .status = ms_status,
};

/* ------------------------------------------------------------------ public */

struct memstore *memstore_new(const struct dhaf_clock *clock)
{
    struct memstore *m = dhaf_xcalloc(1, sizeof(*m));
    pthread_mutex_init(&m->lock, NULL);
    m->clock = clock;
    m->rev = 1;
    m->next_lease = 0x1000;
    return m;
}

void memstore_free(struct memstore *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_kvs; i++) {
        free(m->kvs[i].key);
        free(m->kvs[i].value);
    }
    for (size_t i = 0; i < m->n_hist; i++) {
        free(m->hist[i].kv.key);
        free(m->hist[i].kv.value);
    }
    free(m->kvs);
    free(m->hist);
    free(m->watches);
    free(m->leases);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

struct store memstore_store(struct memstore *m)
{
    return (struct store){&memstore_ops, m};
}

void memstore_fail(struct memstore *m, enum memstore_op op, int count, int code, bool applied)
{
    if ((unsigned)op >= MS_N_OPS)
        return;
    pthread_mutex_lock(&m->lock);
    m->fail[op] = (struct ms_fail){count, code, applied};
    pthread_mutex_unlock(&m->lock);
}

void memstore_mute_watches(struct memstore *m, bool mute)
{
    pthread_mutex_lock(&m->lock);
    m->mute = mute;
    pthread_mutex_unlock(&m->lock);
}

void memstore_set_down(struct memstore *m, bool down)
{
    pthread_mutex_lock(&m->lock);
    m->down = down;
    /* the watches' streams break; they resume from where they were when it is back */
    for (size_t i = 0; down && i < m->n_watches; i++)
        m->watches[i]->broken = true;
    pthread_mutex_unlock(&m->lock);
}

uint64_t memstore_calls(struct memstore *m, enum memstore_op op)
{
    if ((unsigned)op >= MS_N_OPS)
        return 0;
    pthread_mutex_lock(&m->lock);
    uint64_t n = m->calls[op];
    pthread_mutex_unlock(&m->lock);
    return n;
}

int64_t memstore_revision(struct memstore *m)
{
    pthread_mutex_lock(&m->lock);
    expire_leases(m);
    int64_t rev = m->rev;
    pthread_mutex_unlock(&m->lock);
    return rev;
}

void memstore_compact(struct memstore *m, int64_t rev)
{
    pthread_mutex_lock(&m->lock);
    expire_leases(m);
    compact_at(m, rev > m->rev ? m->rev : rev);
    pthread_mutex_unlock(&m->lock);
}

int64_t memstore_compact_revision(struct memstore *m)
{
    pthread_mutex_lock(&m->lock);
    int64_t rev = m->compact_rev;
    pthread_mutex_unlock(&m->lock);
    return rev;
}

void memstore_set_alarm(struct memstore *m, uint64_t member, int type, bool active)
{
    pthread_mutex_lock(&m->lock);
    size_t i = 0;
    while (i < m->n_alarms && !(m->alarms[i].member == member && m->alarms[i].type == type))
        i++;
    if (active && i == m->n_alarms && m->n_alarms < DHAF_ETCD_MAX_ALARMS)
        m->alarms[m->n_alarms++] = (struct dhaf_etcd_alarm){member, type};
    else if (!active && i < m->n_alarms)
        m->alarms[i] = m->alarms[--m->n_alarms];
    pthread_mutex_unlock(&m->lock);
}

int memstore_put(struct memstore *m, const char *key, const char *value, int64_t lease)
{
    int rc = 0;
    pthread_mutex_lock(&m->lock);
    expire_leases(m);
    if (lease && !lease_find(m, lease)) {
        rc = DHAF_ENOTFOUND;
    } else {
        kv_put(m, key, value, strlen(value), lease, m->rev + 1);
        m->rev++;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

void memstore_delete(struct memstore *m, const char *key)
{
    pthread_mutex_lock(&m->lock);
    expire_leases(m);
    if (delete_range(m, key, false, m->rev + 1) > 0)
        m->rev++;
    pthread_mutex_unlock(&m->lock);
}

char *memstore_value(struct memstore *m, const char *key)
{
    pthread_mutex_lock(&m->lock);
    expire_leases(m);
    const struct dhaf_kv *kv = kv_find(m, key);
    char *v = kv ? dhaf_xstrndup(kv->value, kv->value_len) : NULL;
    pthread_mutex_unlock(&m->lock);
    return v;
}

size_t memstore_count_prefix(struct memstore *m, const char *prefix)
{
    pthread_mutex_lock(&m->lock);
    expire_leases(m);
    size_t lo, hi = range_bounds(m, prefix, prefix, &lo);
    pthread_mutex_unlock(&m->lock);
    return hi - lo;
}
