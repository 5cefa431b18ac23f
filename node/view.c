/* SPDX-License-Identifier: MIT */
/* The node-wide view: one read of the cluster prefix, then one watch from the revision after
 * it; every response is applied under the write lock and the subscribers of the topics it
 * touched are kicked after the lock is released. */
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/valid.h"
#include "decide.h"
#include "view.h"

struct recset {
    struct view_rec *v;
    size_t n, cap;
};

struct sub {
    struct dhaf_waker *w;
    unsigned topics, bits;
};

struct view {
    struct store store;
    const struct dhaf_clock *clock;
    char *prefix;
    size_t plen;
    int progress_ms, stale_ms, check_ms;

    pthread_rwlock_t lock; /* guards everything below it, down to the events */
    bool loaded, synced;
    int64_t heard_ms; /* etcd last heard from (monotonic) */
    int64_t since_ms; /* the current synced period began */
    int64_t revision;
    struct view_rec leader; /* name NULL: no leader key */
    struct recset sets[VS_N];
    struct view_vote *votes;
    size_t n_votes, cap_votes;
    struct view_event *events;
    size_t n_events, cap_events;
    uint64_t counter;
    int64_t counter_rev;

    /* the watch belongs to the thread that steps the view */
    struct store_watch *w;
    int64_t asked_ms;   /* last progress request */
    int64_t next_check; /* next check that the watch keeps up */
    int64_t behind_rev; /* a revision under the prefix the view had not reached at the last
                           check: it must have it by the next one */

    pthread_mutex_t sub_lock; /* guards the subscribers and the suspect hook */
    struct sub *subs;
    size_t n_subs, cap_subs;
    struct {
        view_suspect_fn fn;
        void *ud;
    } hooks[VIEW_SUSPECT_HOOKS];

    pthread_t t;
    struct dhaf_waker nap; /* the thread's pause between failed loads; kicked by view_stop */
    bool started;
    atomic_bool stop;
    atomic_bool running;
};

/* ------------------------------------------------------------------ records */

static void rec_clear(struct view_rec *r)
{
    free(r->name);
    if (r->j)
        json_decref(r->j);
    memset(r, 0, sizeof(*r));
}

/* Where name is (or would go) in n name-ordered elements of stride bytes whose name pointer
 * sits at name_at bytes into each: records and votes both keep their names in order. */
static size_t name_pos(const void *base, size_t n, size_t stride, size_t name_at, const char *name,
                       bool *found)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const char *at = *(const char *const *)((const char *)base + mid * stride + name_at);
        int c = strcmp(at, name);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

static size_t set_pos(const struct recset *s, const char *name, bool *found)
{
    return name_pos(s->v, s->n, sizeof(*s->v), offsetof(struct view_rec, name), name, found);
}

static json_t *parse(const struct dhaf_kv *kv)
{
    json_t *j = NULL;
    struct dhaf_err err;
    if (dhaf_json_parse_object(kv->value, kv->value_len, kv->key, &j, &err) != 0) {
        char q[300];
        DHAF_LOG(DHAF_LOG_WARN, "event=record-unreadable key=%s reason=\"%s\"", kv->key,
                 dhaf_log_quote(q, sizeof(q), err.msg));
        return NULL;
    }
    return j;
}

static void set_put(struct recset *s, const char *name, const struct dhaf_kv *kv)
{
    bool found;
    size_t at = set_pos(s, name, &found);
    if (!found) {
        DHAF_GROW(s->v, s->n + 1, s->cap);
        memmove(&s->v[at + 1], &s->v[at], (s->n - at) * sizeof(*s->v));
        memset(&s->v[at], 0, sizeof(*s->v));
        s->n++;
        s->v[at].name = dhaf_xstrdup(name);
    } else if (s->v[at].j) {
        json_decref(s->v[at].j);
    }
    struct view_rec *r = &s->v[at];
    r->j = parse(kv);
    r->create_rev = kv->create_rev;
    r->mod_rev = kv->mod_rev;
    r->lease = kv->lease;
}

static void set_del(struct recset *s, const char *name)
{
    bool found;
    size_t at = set_pos(s, name, &found);
    if (!found)
        return;
    rec_clear(&s->v[at]);
    memmove(&s->v[at], &s->v[at + 1], (s->n - at - 1) * sizeof(*s->v));
    s->n--;
}

static void set_clear(struct recset *s)
{
    for (size_t i = 0; i < s->n; i++)
        rec_clear(&s->v[i]);
    free(s->v);
    memset(s, 0, sizeof(*s));
}

/* ------------------------------------------------------------------ votes */

/* Votes are kept in voter name order, so that every node lists voters (and their reasons)
 * in the same order. */
static size_t vote_pos(const struct view *v, const char *name, bool *found)
{
    return name_pos(v->votes, v->n_votes, sizeof(*v->votes), offsetof(struct view_vote, name), name,
                    found);
}

static struct view_vote *vote_slot(struct view *v, const char *name, bool create)
{
    bool found;
    size_t at = vote_pos(v, name, &found);
    if (found)
        return &v->votes[at];
    if (!create)
        return NULL;
    DHAF_GROW(v->votes, v->n_votes + 1, v->cap_votes);
    memmove(&v->votes[at + 1], &v->votes[at], (v->n_votes - at) * sizeof(*v->votes));
    v->n_votes++;
    struct view_vote *vv = &v->votes[at];
    memset(vv, 0, sizeof(*vv));
    vv->name = dhaf_xstrdup(name);
    return vv;
}

static void vote_clear(struct view_vote *vv)
{
    if (vv->ok)
        vote_release(&vv->vote);
    vv->ok = false;
}

/* seen_ms: when the vote was written as far as this node knows (0: unknown, as for what a
 * load finds); shown only - a vote counts while its key exists. */
static void vote_put(struct view *v, const char *name, const struct dhaf_kv *kv, int64_t seen_ms)
{
    struct view_vote *vv = vote_slot(v, name, true);
    vote_clear(vv);
    struct dhaf_err err;
    if (vote_decode(kv->value, kv->value_len, kv->key, NULL, &vv->vote, &err) != 0) {
        char q[300];
        DHAF_LOG(DHAF_LOG_WARN, "event=vote-refused key=%s reason=\"%s\"", kv->key,
                 dhaf_log_quote(q, sizeof(q), err.msg));
    } else if (strcmp(vv->vote.voter, name) != 0) {
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=vote-refused key=%s reason=\"voter %.64s does not match the key\"", kv->key,
                 vv->vote.voter);
        vote_release(&vv->vote);
    } else {
        vv->ok = true;
    }
    vv->seen_ms = seen_ms;
    vv->mod_rev = kv->mod_rev;
    vv->lease = kv->lease;
}

static void vote_del(struct view *v, const char *name)
{
    bool found;
    size_t at = vote_pos(v, name, &found);
    if (!found)
        return;
    vote_clear(&v->votes[at]);
    free(v->votes[at].name);
    memmove(&v->votes[at], &v->votes[at + 1], (v->n_votes - at - 1) * sizeof(*v->votes));
    v->n_votes--;
}

static void votes_clear(struct view *v)
{
    for (size_t i = 0; i < v->n_votes; i++) {
        vote_clear(&v->votes[i]);
        free(v->votes[i].name);
    }
    free(v->votes);
    v->votes = NULL;
    v->n_votes = v->cap_votes = 0;
}

/* ------------------------------------------------------------------ events */

static bool parse_seq(const char *s, uint64_t *seq)
{
    size_t n = strlen(s);
    if (n == 0 || n > 19 || strspn(s, "0123456789") != n)
        return false;
    *seq = strtoull(s, NULL, 10);
    return true;
}

size_t view_event_after(const struct view *v, uint64_t seq)
{
    size_t lo = 0, hi = v->n_events;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v->events[mid].seq <= seq)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* An event kept as text: one block holding the text, then its kind and service. Returns false
 * (logged) when the record is not a JSON object. */
static bool event_make(struct view_event *e, uint64_t seq, const struct dhaf_kv *kv)
{
    json_t *j = parse(kv);
    if (!j)
        return false;
    const char *kind = dhaf_json_str(j, "kind"), *svc = dhaf_json_str(j, "service");
    size_t kl = kind ? strlen(kind) : 0, sl = svc ? strlen(svc) : 0;
    char *b = dhaf_xmalloc(kv->value_len + 1 + kl + 1 + (svc ? sl + 1 : 0));
    memcpy(b, kv->value, kv->value_len);
    b[kv->value_len] = '\0';
    char *k = b + kv->value_len + 1;
    memcpy(k, kind ? kind : "", kl + 1);
    char *sv = NULL;
    if (svc) {
        sv = k + kl + 1;
        memcpy(sv, svc, sl + 1);
    }
    json_decref(j);
    *e = (struct view_event){.seq = seq, .kind = k, .service = sv, .text = b, .len = kv->value_len};
    return true;
}

json_t *view_event_json(const struct view_event *e)
{
    return json_loadb(e->text, e->len, 0, NULL);
}

static void event_put(struct view *v, uint64_t seq, const struct dhaf_kv *kv)
{
    struct view_event e;
    if (!event_make(&e, seq, kv))
        return;
    size_t at = view_event_after(v, seq);
    if (at > 0 && v->events[at - 1].seq == seq) {
        free(v->events[at - 1].text);
        v->events[at - 1] = e;
        return;
    }
    if (v->n_events == VIEW_EVENTS_MAX) {
        if (at == 0) {
            free(e.text); /* older than everything kept */
            return;
        }
        free(v->events[0].text);
        memmove(&v->events[0], &v->events[1], (v->n_events - 1) * sizeof(*v->events));
        v->n_events--;
        at--;
    }
    DHAF_GROW(v->events, v->n_events + 1, v->cap_events);
    memmove(&v->events[at + 1], &v->events[at], (v->n_events - at) * sizeof(*v->events));
    v->events[at] = e;
    v->n_events++;
}

static void event_del(struct view *v, uint64_t seq)
{
    size_t at = view_event_after(v, seq);
    if (at == 0 || v->events[at - 1].seq != seq)
        return;
    at--;
    free(v->events[at].text);
    memmove(&v->events[at], &v->events[at + 1], (v->n_events - at - 1) * sizeof(*v->events));
    v->n_events--;
}

static void events_clear(struct view *v)
{
    for (size_t i = 0; i < v->n_events; i++)
        free(v->events[i].text);
    free(v->events);
    v->events = NULL;
    v->n_events = v->cap_events = 0;
}

/* ------------------------------------------------------------------ applying changes */

/* Applies one key's new value (kv NULL: deleted); returns the topic it touched (0: none). */
static unsigned apply(struct view *v, const char *key, const struct dhaf_kv *kv, int64_t seen_ms)
{
    if (strncmp(key, v->prefix, v->plen) != 0)
        return 0;
    const char *k = key + v->plen;
    static const struct {
        const char *dir;
        enum view_set set;
        unsigned topic;
    } dirs[] = {{"members/", VS_MEMBERS, VIEW_MEMBERS},
                {"alive/", VS_ALIVE, VIEW_MEMBERS},
                {"config/", VS_CONFIG, VIEW_MEMBERS},
                {"probers/", VS_PROBERS, VIEW_PROBERS},
                {"control/", VS_CONTROL, VIEW_SERVICES}};
    if (strcmp(k, "leader") == 0) {
        rec_clear(&v->leader);
        if (kv) {
            v->leader.name = dhaf_xstrdup("leader");
            v->leader.j = parse(kv);
            v->leader.create_rev = kv->create_rev;
            v->leader.mod_rev = kv->mod_rev;
            v->leader.lease = kv->lease;
        }
        return VIEW_LEADER;
    }
    if (strcmp(k, "config-drift") == 0) {
        if (kv)
            set_put(&v->sets[VS_DRIFT], k, kv);
        else
            set_del(&v->sets[VS_DRIFT], k);
        return VIEW_MEMBERS;
    }
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        size_t dl = strlen(dirs[i].dir);
        if (strncmp(k, dirs[i].dir, dl) == 0 && k[dl] && !strchr(k + dl, '/')) {
            if (kv)
                set_put(&v->sets[dirs[i].set], k + dl, kv);
            else
                set_del(&v->sets[dirs[i].set], k + dl);
            return dirs[i].topic;
        }
    }
    if (strncmp(k, "votes/", 6) == 0 && k[6] && !strchr(k + 6, '/')) {
        if (kv)
            vote_put(v, k + 6, kv, seen_ms);
        else
            vote_del(v, k + 6);
        return VIEW_VOTES;
    }
    if (strncmp(k, "services/", 9) == 0) {
        const char *slash = strchr(k + 9, '/');
        if (!slash || slash == k + 9)
            return 0;
        enum view_set set;
        if (strcmp(slash, "/state") == 0)
            set = VS_STATE;
        else if (strcmp(slash, "/switchover") == 0)
            set = VS_REQUEST;
        else if (strncmp(slash, "/drained/", 9) == 0 && slash[9] && !strchr(slash + 9, '/')) {
            char name[DHAF_NAME_MAX * 3]; /* "<svc>/<ep>" */
            snprintf(name, sizeof(name), "%.*s/%s", (int)(slash - (k + 9)), k + 9, slash + 9);
            if (kv)
                set_put(&v->sets[VS_DRAINED], name, kv);
            else
                set_del(&v->sets[VS_DRAINED], name);
            return VIEW_SERVICES;
        } else
            return 0;
        char svc[DHAF_NAME_MAX * 2];
        snprintf(svc, sizeof(svc), "%.*s", (int)(slash - (k + 9)), k + 9);
        if (kv)
            set_put(&v->sets[set], svc, kv);
        else
            set_del(&v->sets[set], svc);
        return VIEW_SERVICES;
    }
    uint64_t seq;
    if (strncmp(k, "events/", 7) == 0 && parse_seq(k + 7, &seq)) {
        if (kv)
            event_put(v, seq, kv);
        else
            event_del(v, seq);
        return VIEW_EVENTS;
    }
    if (strcmp(k, "event-seq") == 0) {
        v->counter = kv ? strtoull(kv->value, NULL, 10) : 0;
        v->counter_rev = kv ? kv->mod_rev : 0;
        return 0;
    }
    return 0;
}

static void clear_all(struct view *v)
{
    rec_clear(&v->leader);
    for (int s = 0; s < VS_N; s++)
        set_clear(&v->sets[s]);
    votes_clear(v);
    events_clear(v);
    v->counter = 0;
    v->counter_rev = 0;
}

static void kick(struct view *v, unsigned topics)
{
    if (!topics)
        return;
    pthread_mutex_lock(&v->sub_lock);
    for (size_t i = 0; i < v->n_subs; i++)
        if (v->subs[i].topics & topics)
            dhaf_waker_kick(v->subs[i].w, v->subs[i].bits);
    pthread_mutex_unlock(&v->sub_lock);
}

/* Reads everything and starts the watch after it. Returns the topics touched. */
static unsigned load(struct view *v)
{
    struct dhaf_kvs kvs;
    struct dhaf_err err;
    if (store_get_prefix(&v->store, v->prefix, 0, &kvs, &err) != 0) {
        DHAF_LOG(DHAF_LOG_DEBUG, "event=view-load-failed reason=\"%s\"", err.msg);
        return 0;
    }
    struct store_watch *w =
        v->store.ops->watch_new(v->store.ud, v->prefix, true, kvs.revision + 1, &err);
    if (!w) {
        dhaf_kvs_release(&kvs);
        return 0;
    }
    int64_t now = dhaf_clock_mono(v->clock);
    pthread_rwlock_wrlock(&v->lock);
    /* Votes keep what this node knew of when they were written, if they did not change. */
    struct view_vote *keep = v->votes;
    size_t n_old = v->n_votes;
    v->votes = NULL;
    v->n_votes = v->cap_votes = 0;
    clear_all(v);
    for (size_t i = 0; i < kvs.n; i++)
        apply(v, kvs.kvs[i].key, &kvs.kvs[i], 0);
    for (size_t i = 0; i < v->n_votes; i++)
        for (size_t k = 0; k < n_old; k++)
            if (strcmp(keep[k].name, v->votes[i].name) == 0 &&
                keep[k].mod_rev == v->votes[i].mod_rev)
                v->votes[i].seen_ms = keep[k].seen_ms;
    for (size_t k = 0; k < n_old; k++) {
        vote_clear(&keep[k]);
        free(keep[k].name);
    }
    free(keep);
    v->revision = kvs.revision;
    v->loaded = true;
    v->synced = true;
    v->heard_ms = now;
    v->since_ms = now;
    pthread_rwlock_unlock(&v->lock);
    dhaf_kvs_release(&kvs);
    v->w = w;
    v->asked_ms = now;
    v->next_check = now + v->check_ms;
    v->behind_rev = 0;
    DHAF_LOG(DHAF_LOG_INFO, "event=view-loaded revision=%lld", (long long)v->revision);
    return VIEW_ALL;
}

/* Every check_ms, one cheap read: has anything under the prefix been written at a revision
 * the view has not reached? Missing it once is the normal lag of a watch; still missing it at
 * the next check means the watch does not deliver (it may answer progress requests all the
 * same): everything is read again. */
static void check_in_step(struct view *v)
{
    int64_t now = dhaf_clock_mono(v->clock);
    if (!v->w || now < v->next_check)
        return;
    v->next_check = now + v->check_ms;
    int64_t latest = 0;
    struct dhaf_err err;
    if (v->store.ops->latest_mod(v->store.ud, v->prefix, &latest, &err) != 0)
        return;                 /* etcd away: the staleness rules cover it */
    int64_t have = v->revision; /* written by this thread only */
    if (v->behind_rev && have < v->behind_rev) {
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=view-reload reason=\"the watch fell behind: etcd has a change at revision "
                 "%lld, the view is at %lld after %d ms\"",
                 (long long)v->behind_rev, (long long)have, v->check_ms);
        v->store.ops->watch_free(v->w);
        v->w = NULL;
        return;
    }
    v->behind_rev = latest > have ? latest : 0;
}

/* A suspect/<svc>/<ep> written: the hook hears of it. */
static void suspect_seen(struct view *v, const struct dhaf_kv *kv)
{
    if (strncmp(kv->key, v->prefix, v->plen) != 0 || strncmp(kv->key + v->plen, "suspect/", 8) != 0)
        return;
    const char *svc = kv->key + v->plen + 8, *slash = strchr(svc, '/');
    if (!slash || slash == svc || !slash[1] || strchr(slash + 1, '/') ||
        slash - svc >= DHAF_NAME_MAX * 2)
        return;
    char name[DHAF_NAME_MAX * 2];
    snprintf(name, sizeof(name), "%.*s", (int)(slash - svc), svc);
    json_t *j = parse(kv);
    const char *voter = j ? dhaf_json_str(j, "voter") : NULL;
    pthread_mutex_lock(&v->sub_lock);
    for (size_t i = 0; i < VIEW_SUSPECT_HOOKS; i++)
        if (v->hooks[i].fn)
            v->hooks[i].fn(v->hooks[i].ud, name, slash + 1, voter ? voter : "");
    pthread_mutex_unlock(&v->sub_lock);
    json_decref(j);
}

bool view_on_suspect(struct view *v, view_suspect_fn fn, void *ud)
{
    bool added = false;
    pthread_mutex_lock(&v->sub_lock);
    for (size_t i = 0; i < VIEW_SUSPECT_HOOKS && !added; i++)
        if (!v->hooks[i].fn) {
            v->hooks[i].fn = fn;
            v->hooks[i].ud = ud;
            added = true;
        }
    pthread_mutex_unlock(&v->sub_lock);
    return added;
}

void view_off_suspect(struct view *v, view_suspect_fn fn, void *ud)
{
    pthread_mutex_lock(&v->sub_lock);
    for (size_t i = 0; i < VIEW_SUSPECT_HOOKS; i++)
        if (v->hooks[i].fn == fn && v->hooks[i].ud == ud)
            v->hooks[i].fn = NULL;
    pthread_mutex_unlock(&v->sub_lock);
}

void view_step(struct view *v, int timeout_ms)
{
    unsigned topics = 0;
    if (!v->w) {
        topics = load(v);
    } else {
        struct dhaf_etcd_events ev;
        struct dhaf_err err;
        int rc = v->store.ops->watch_next(v->w, &ev, timeout_ms, &err);
        int64_t now = dhaf_clock_mono(v->clock);
        if (rc == 0) {
            pthread_rwlock_wrlock(&v->lock);
            for (size_t i = 0; i < ev.n; i++)
                topics |= apply(v, ev.v[i].kv.key,
                                ev.v[i].type == DHAF_ETCD_EV_PUT ? &ev.v[i].kv : NULL, now);
            if (ev.revision > v->revision)
                v->revision = ev.revision;
            pthread_rwlock_unlock(&v->lock);
            for (size_t i = 0; i < ev.n; i++)
                if (ev.v[i].type == DHAF_ETCD_EV_PUT)
                    suspect_seen(v, &ev.v[i].kv);
            dhaf_etcd_events_release(&ev);
        } else if (rc == DHAF_ECOMPACTED || rc == DHAF_EAUTH) {
            char q[300];
            DHAF_LOG(DHAF_LOG_WARN, "event=view-reload reason=\"%s\"",
                     dhaf_log_quote(q, sizeof(q), err.msg));
            v->store.ops->watch_free(v->w);
            v->w = NULL;
        } else if (v->loaded && now - v->heard_ms >= 2 * (int64_t)v->stale_ms) {
            /* a watch that has delivered nothing, not even a progress notice, for this long
             * may be stuck in a way it cannot tell (cancelled again and again): start over */
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=view-reload reason=\"the watch delivered nothing for %lld ms\"",
                     (long long)(now - v->heard_ms));
            v->store.ops->watch_free(v->w);
            v->w = NULL;
        } else if (now - v->store.ops->watch_heard(v->w) >= v->progress_ms &&
                   now - v->asked_ms >= v->progress_ms) {
            /* quiet: ask etcd whether it is still there (its answer moves "heard") */
            v->asked_ms = now;
            v->store.ops->watch_progress(v->w, &err);
        }
    }
    check_in_step(v);
    /* synced <-> stale */
    int64_t now = dhaf_clock_mono(v->clock);
    int64_t heard = v->w ? v->store.ops->watch_heard(v->w) : 0;
    pthread_rwlock_wrlock(&v->lock);
    if (heard > v->heard_ms)
        v->heard_ms = heard;
    bool synced = v->loaded && now - v->heard_ms < v->stale_ms;
    bool changed = synced != v->synced;
    if (changed && synced)
        v->since_ms = now;
    v->synced = synced;
    int64_t age = now - v->heard_ms;
    pthread_rwlock_unlock(&v->lock);
    if (changed) {
        topics |= VIEW_SYNC;
        if (synced)
            DHAF_LOG(DHAF_LOG_INFO, "event=view-synced note=\"etcd answers again\"");
        else
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=view-stale age_ms=%lld note=\"etcd has not answered; status is "
                     "served from memory, marked stale\"",
                     (long long)age);
    }
    kick(v, topics);
}

/* ------------------------------------------------------------------ lifecycle */

struct view *view_new(const struct view_opts *o)
{
    struct view *v = dhaf_xcalloc(1, sizeof(*v));
    v->store = o->store;
    v->clock = o->clock;
    v->prefix = dhaf_xstrdup(o->prefix);
    v->plen = strlen(v->prefix);
    v->progress_ms = o->progress_ms > 0 ? o->progress_ms : 1000;
    v->check_ms = o->check_ms > 0 ? o->check_ms : 5000;
    v->stale_ms = o->stale_ms > 0 ? o->stale_ms : 3 * v->progress_ms;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* a steady stream of status readers must not starve the watch */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&v->lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&v->sub_lock, NULL);
    dhaf_waker_init(&v->nap);
    atomic_init(&v->stop, false);
    atomic_init(&v->running, false);
    return v;
}

static void *view_thread(void *arg)
{
    struct view *v = arg;
    int64_t next_trim = dhaf_mono_ms() + 30000;
    while (!atomic_load(&v->stop)) {
        /* the node's memory returns to the OS after a load, a reload or a burst of votes */
        dhaf_malloc_trim_every(&next_trim, dhaf_mono_ms(), 60000);
        bool had_watch = v->w != NULL;
        view_step(v, 200);
        if (!v->w && !had_watch && !atomic_load(&v->stop))
            dhaf_waker_wait(&v->nap, dhaf_mono_ms() + 200); /* etcd out of reach: retry */
    }
    atomic_store(&v->running, false);
    return NULL;
}

int view_start(struct view *v, struct dhaf_err *err)
{
    atomic_store(&v->running, true);
    if (dhaf_thread_start(&v->t, false, view_thread, v) != 0) {
        atomic_store(&v->running, false);
        return dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the view thread");
    }
    v->started = true;
    return 0;
}

void view_quit(struct view *v)
{
    if (!v)
        return;
    atomic_store(&v->stop, true);
    dhaf_waker_kick(&v->nap, 1);
}

bool view_stop(struct view *v, int deadline_ms)
{
    if (!v || !v->started)
        return true;
    view_quit(v);
    if (!dhaf_join_within(v->t, deadline_ms)) {
        pthread_detach(v->t);
        return false;
    }
    v->started = false;
    return true;
}

void view_free(struct view *v)
{
    if (!v || v->started)
        return;
    if (v->w)
        v->store.ops->watch_free(v->w);
    clear_all(v);
    free(v->subs);
    free(v->prefix);
    pthread_rwlock_destroy(&v->lock);
    pthread_mutex_destroy(&v->sub_lock);
    dhaf_waker_release(&v->nap);
    free(v);
}

void view_subscribe(struct view *v, struct dhaf_waker *w, unsigned topics, unsigned bits)
{
    pthread_mutex_lock(&v->sub_lock);
    DHAF_GROW(v->subs, v->n_subs + 1, v->cap_subs);
    v->subs[v->n_subs++] = (struct sub){w, topics, bits};
    pthread_mutex_unlock(&v->sub_lock);
}

void view_unsubscribe(struct view *v, struct dhaf_waker *w)
{
    pthread_mutex_lock(&v->sub_lock);
    for (size_t i = 0; i < v->n_subs;)
        if (v->subs[i].w == w)
            v->subs[i] = v->subs[--v->n_subs];
        else
            i++;
    pthread_mutex_unlock(&v->sub_lock);
}

/* ------------------------------------------------------------------ reading */

void view_rdlock(struct view *v)
{
    pthread_rwlock_rdlock(&v->lock);
}

void view_unlock(struct view *v)
{
    pthread_rwlock_unlock(&v->lock);
}

struct view_sync view_sync(const struct view *v)
{
    int64_t now = dhaf_clock_mono(v->clock);
    return (struct view_sync){.loaded = v->loaded,
                              .synced = v->synced && now - v->heard_ms < v->stale_ms,
                              .age_ms = v->loaded ? now - v->heard_ms : 0,
                              .revision = v->revision,
                              .since_ms = v->since_ms};
}

size_t view_count(const struct view *v, enum view_set set)
{
    return v->sets[set].n;
}

const struct view_rec *view_at(const struct view *v, enum view_set set, size_t i)
{
    return i < v->sets[set].n ? &v->sets[set].v[i] : NULL;
}

const struct view_rec *view_find(const struct view *v, enum view_set set, const char *name)
{
    bool found;
    size_t at = set_pos(&v->sets[set], name, &found);
    return found ? &v->sets[set].v[at] : NULL;
}

const struct view_rec *view_leader(const struct view *v)
{
    return v->leader.name ? &v->leader : NULL;
}

size_t view_voters(const struct view *v)
{
    return v->n_votes;
}

const struct view_vote *view_vote_of(const struct view *v, const char *voter)
{
    bool found;
    size_t at = vote_pos(v, voter, &found);
    return found ? &v->votes[at] : NULL;
}

const struct view_vote *view_voter_at(const struct view *v, size_t i)
{
    return i < v->n_votes ? &v->votes[i] : NULL;
}

void view_request(const struct view *v, const struct dhaf_service *svc, struct decide_request *req,
                  int64_t *mod_rev)
{
    memset(req, 0, sizeof(*req));
    req->kind = REQ_NONE;
    req->ep = -1;
    for (size_t e = 0; e < svc->n_eps && e < DECIDE_MAX_EPS; e++)
        req->drained[e] = view_drained(v, svc->name, svc->eps[e].name) != NULL;
    *mod_rev = 0;
    const struct view_rec *rec = view_find(v, VS_REQUEST, svc->name);
    if (!rec)
        return;
    *mod_rev = rec->mod_rev;
    const char *ep = rec->j ? dhaf_json_str(rec->j, "ep") : NULL;
    req->ep = ep ? dhaf_service_ep_index(svc, ep) : -1;
    req->kind = req->ep >= 0 ? REQ_EP : REQ_UNKNOWN_EP;
}

const struct view_rec *view_drained(const struct view *v, const char *svc, const char *ep)
{
    char name[DHAF_NAME_MAX * 3];
    snprintf(name, sizeof(name), "%s/%s", svc, ep);
    return view_find(v, VS_DRAINED, name);
}

void view_tally(const struct view *v, const struct dhaf_config *cfg, const struct dhaf_service *svc,
                struct ep_tally *out, struct quorum *q)
{
    const struct vote *sv[64] = {NULL};
    const struct vote **all = v->n_votes <= 64 ? sv : dhaf_xcalloc(v->n_votes, sizeof(*all));
    size_t n = 0;
    for (size_t i = 0; i < v->n_votes; i++)
        if (v->votes[i].ok)
            all[n++] = &v->votes[i].vote;
    unsigned expected = (unsigned)cfg->n_probers;
    const struct recset *m = &v->sets[VS_MEMBERS];
    for (size_t i = 0; i < m->n; i++) { /* a record without "probe" is from a node that does */
        const json_t *p = m->v[i].j ? json_object_get(m->v[i].j, "probe") : NULL;
        expected += !json_is_false(p);
    }
    tally_votes(cfg, svc, all, n, expected, out, q);
    if (all != sv)
        free(all);
}

bool view_tally_complete(const struct view *v, int64_t window_ms, int64_t since_ms)
{
    struct view_sync s = view_sync(v);
    if (!s.loaded || !s.synced)
        return false;
    int64_t floor = s.since_ms > since_ms ? s.since_ms : since_ms;
    if (dhaf_clock_mono(v->clock) - floor >= window_ms)
        return true;
    /* every voter that should vote has a vote: the alive nodes that probe, the probers that
     * report (a node or prober that just started votes within a tact) */
    const struct recset *alive = &v->sets[VS_ALIVE], *probers = &v->sets[VS_PROBERS];
    for (size_t i = 0; i < alive->n; i++) {
        const json_t *p = alive->v[i].j ? json_object_get(alive->v[i].j, "probe") : NULL;
        if (!json_is_false(p) && !view_vote_of(v, alive->v[i].name))
            return false;
    }
    for (size_t i = 0; i < probers->n; i++)
        if (!view_vote_of(v, probers->v[i].name))
            return false;
    return true;
}

size_t view_events(const struct view *v)
{
    return v->n_events;
}

const struct view_event *view_event_at(const struct view *v, size_t i)
{
    return i < v->n_events ? &v->events[i] : NULL;
}

void view_event_counter(const struct view *v, uint64_t *seq, int64_t *mod_rev)
{
    *seq = v->counter;
    *mod_rev = v->counter_rev;
}
