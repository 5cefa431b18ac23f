/* SPDX-License-Identifier: MIT */
/* The etcd monitor: alarms listed on a timer (or at once on a refused write), the outcome of
 * every write, the judgement "etcd accepts writes", and the leader's duty that records each
 * episode once as etcd-alarm / etcd-alarm-cleared events. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "etcdmon.h"
#include "outbox.h"
#include "view.h"
#include "worker.h"

#define MAX_SUBSCRIBERS 8
#define KICK_GAP_MS     1000   /* a refused write asks for a listing at most this often */
#define DONE_KEEP_MS    600000 /* an ended episode no leader recorded is dropped after this */

/* One time etcd refused writes, from its start until it accepted them again. */
struct episode {
    uint64_t id;         /* 0: none */
    int64_t since_wall;  /* Unix ms it began */
    int64_t since_mono;  /* monotonic ms it began */
    int64_t until_wall;  /* Unix ms it ended (0: still on) */
    int64_t until_mono;  /* monotonic ms it ended */
    uint64_t seq;        /* the event counter when it began: its events come after */
    char detail[300];    /* what it was (the first thing seen, or the alarms listed) */
    bool start_recorded; /* its etcd-alarm event is in etcd */
    bool start_tried;    /* recording it was tried while etcd refused writes */
};

struct etcdmon {
    struct store_observer obs; /* obs.inner: the store asked */
    char probe_key[200];       /* a key a write probe compares and never writes */
    const struct dhaf_clock *clock;
    struct view *view;
    int check_ms, unwritable_ms;
    struct dhaf_waker wake; /* the thread's: kicked for an early listing and at stop */
    pthread_t thread;
    bool started;
    atomic_bool quit, running;

    pthread_mutex_t lock; /* guards everything below; memory work only */
    /* writes, as observed */
    int64_t fail_since; /* monotonic ms of the first refused write since one was accepted */
    uint64_t failed;    /* refused writes since */
    bool fail_nospace;  /* the last refusal was NOSPACE */
    char last_error[240];
    int64_t last_kick;
    bool asked; /* a listing is wanted now */
    /* the listings */
    struct dhaf_etcd_alarms alarms;
    int64_t checked_ms, next_check;
    struct dhaf_etcd_status status;
    /* the judgement */
    bool bad;
    bool was_unwritable;
    struct episode cur;  /* while bad */
    struct episode done; /* the last one that ended, while its events are not all recorded */
    uint64_t next_id;
    struct {
        struct dhaf_waker *w;
        unsigned bits;
    } subs[MAX_SUBSCRIBERS];
    size_t n_subs;
};

/* ------------------------------------------------------------------ writes */

/* Errors that say etcd did not take a write (full, corrupt, unreachable, refusing us), as
 * opposed to definite answers about the write itself (a compare failed, no such lease). */
static bool refusal(int rc)
{
    return rc == DHAF_ETOOBIG || rc == DHAF_EPROTO || rc == DHAF_EUNAVAILABLE ||
           rc == DHAF_ETIMEOUT || rc == DHAF_EUNKNOWN_OUTCOME || rc == DHAF_EAUTH ||
           rc == DHAF_EINTERNAL;
}

static void on_write(void *ud, int rc, const struct dhaf_err *err)
{
    struct etcdmon *m = ud;
    int64_t now = dhaf_clock_mono(m->clock);
    bool kick = false;
    pthread_mutex_lock(&m->lock);
    if (!refusal(rc)) {
        m->fail_since = 0;
        m->failed = 0;
        m->fail_nospace = false;
        /* accepted while judged unwritable: judge again now (the alarm may be disarmed) */
        if (m->bad && (!m->last_kick || now - m->last_kick >= KICK_GAP_MS)) {
            m->last_kick = now;
            m->asked = true;
            kick = true;
        }
    } else {
        if (!m->fail_since)
            m->fail_since = now;
        m->failed++;
        m->fail_nospace = dhaf_etcd_err_nospace(err);
        snprintf(m->last_error, sizeof(m->last_error), "%.230s", err ? err->msg : "");
        /* the alarm says more than the error: list it now, not at the next round */
        if (m->fail_nospace && (!m->last_kick || now - m->last_kick >= KICK_GAP_MS)) {
            m->last_kick = now;
            m->asked = true;
            kick = true;
        }
    }
    pthread_mutex_unlock(&m->lock);
    if (kick)
        dhaf_waker_kick(&m->wake, 1);
}

/* ------------------------------------------------------------------ lifecycle */

struct etcdmon *etcdmon_new(const struct etcdmon_opts *o)
{
    struct etcdmon *m = dhaf_xcalloc(1, sizeof(*m));
    m->obs = (struct store_observer){.inner = o->store, .on_write = on_write, .ud = m};
    m->clock = o->clock;
    m->view = o->view;
    m->check_ms = o->check_ms > 0 ? o->check_ms : ETCDMON_CHECK_MS;
    m->unwritable_ms = o->unwritable_ms > 0 ? o->unwritable_ms : ETCDMON_UNWRITABLE_MS;
    dhaf_waker_init(&m->wake);
    pthread_mutex_init(&m->lock, NULL);
    atomic_init(&m->quit, false);
    atomic_init(&m->running, false);
    m->next_id = 1;
    snprintf(m->probe_key, sizeof(m->probe_key), "%.180setcdmon-probe",
             o->prefix ? o->prefix : "/dhaf/");
    return m;
}

void etcdmon_free(struct etcdmon *m)
{
    if (!m || atomic_load(&m->running))
        return; /* a thread still in a call: the process is about to exit anyway */
    dhaf_waker_release(&m->wake);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

struct store etcdmon_store(struct etcdmon *m)
{
    return store_observed(&m->obs);
}

static void *monitor_thread(void *arg)
{
    struct etcdmon *m = arg;
    while (!atomic_load(&m->quit)) {
        int64_t next = etcdmon_step(m);
        /* the clock of the steps is the daemon's system clock: wait on the same */
        dhaf_waker_wait(&m->wake, next);
    }
    atomic_store(&m->running, false);
    return NULL;
}

int etcdmon_start(struct etcdmon *m, struct dhaf_err *err)
{
    atomic_store(&m->running, true);
    if (dhaf_thread_start(&m->thread, false, monitor_thread, m) != 0) {
        atomic_store(&m->running, false);
        return dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the etcd monitor's thread");
    }
    m->started = true;
    return 0;
}

bool etcdmon_stop(struct etcdmon *m, int deadline_ms)
{
    if (!m || !m->started)
        return true;
    atomic_store(&m->quit, true);
    dhaf_waker_kick(&m->wake, 1);
    if (!dhaf_join_within(m->thread, deadline_ms)) {
        pthread_detach(m->thread);
        return false;
    }
    m->started = false;
    return true;
}

void etcdmon_subscribe(struct etcdmon *m, struct dhaf_waker *w, unsigned bits)
{
    pthread_mutex_lock(&m->lock);
    if (m->n_subs < MAX_SUBSCRIBERS)
        m->subs[m->n_subs++] = (typeof(m->subs[0])){w, bits};
    pthread_mutex_unlock(&m->lock);
}

void etcdmon_unsubscribe(struct etcdmon *m, struct dhaf_waker *w)
{
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->n_subs;)
        if (m->subs[i].w == w)
            m->subs[i] = m->subs[--m->n_subs];
        else
            i++;
    pthread_mutex_unlock(&m->lock);
}

/* ------------------------------------------------------------------ judging */

/* "NOSPACE on member 8e9e05c52164694d, CORRUPT on member ..." into buf. */
static void alarms_text(const struct dhaf_etcd_alarms *a, char *buf, size_t len)
{
    size_t n = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < a->n && n < len; i++) {
        int w = snprintf(buf + n, len - n, "%s%s on member %" PRIx64, i ? ", " : "",
                         dhaf_etcd_alarm_name(a->v[i].type), a->v[i].member);
        n += w > 0 ? (size_t)w : 0;
    }
}

static bool alarms_have(const struct dhaf_etcd_alarms *a, int type)
{
    for (size_t i = 0; i < a->n; i++)
        if (a->v[i].type == type)
            return true;
    return false;
}

bool etcdmon_alarm_raised(const struct etcdmon_state *s, int type)
{
    return alarms_have(&s->alarms, type);
}

/* What to do about the alarms raised: the worst first. */
static const char *advice(const struct dhaf_etcd_alarms *a)
{
    if (alarms_have(a, DHAF_ETCD_ALARM_CORRUPT))
        return "a member's data diverged from the others and etcd refuses reads and writes; "
               "replace that member (remove it, add it back with an empty data dir), then "
               "`etcdctl alarm disarm`";
    return "etcd refuses writes: its database reached its quota (--quota-backend-bytes); "
           "compact and defragment etcd (`etcdctl compact`, `etcdctl defrag`), then `etcdctl "
           "alarm disarm`; dhaf resumes by itself";
}

/* The description of the problem now, for people (lock held). */
static void problem_text(const struct etcdmon *m, int64_t now, char *buf, size_t len)
{
    if (m->alarms.n) {
        char a[200];
        alarms_text(&m->alarms, a, sizeof(a));
        snprintf(buf, len, "etcd alarm %s: %s (docs/runbook.md)", a, advice(&m->alarms));
    } else if (m->bad && m->fail_since) {
        snprintf(buf, len,
                 "etcd has accepted none of this node's writes for %lld s (%" PRIu64
                 " refused): %s",
                 (long long)((now - m->fail_since) / 1000), m->failed, m->last_error);
    } else if (m->bad) {
        snprintf(buf, len, "etcd refused this node's writes until just now: %s", m->last_error);
    } else {
        buf[0] = '\0';
    }
}

/* The event text of the problem as first seen (lock held). */
static void episode_detail(const struct etcdmon *m, char *buf, size_t len)
{
    if (m->alarms.n) {
        char a[200];
        alarms_text(&m->alarms, a, sizeof(a));
        snprintf(buf, len, "alarm %s%s", a,
                 alarms_have(&m->alarms, DHAF_ETCD_ALARM_CORRUPT)
                     ? " (a member's data diverged)"
                     : " (the database reached its quota)");
    } else {
        char q[160];
        snprintf(buf, len, "no write accepted for %d s: %s", m->unwritable_ms / 1000,
                 dhaf_log_quote(q, sizeof(q), m->last_error));
    }
}

static void kick_subscribers(struct etcdmon *m)
{
    for (size_t i = 0; i < m->n_subs; i++)
        dhaf_waker_kick(m->subs[i].w, m->subs[i].bits);
}

/* Whether the view holds an event of kind with a seq after `after`. */
static bool recorded_after(struct view *v, const char *kind, uint64_t after)
{
    bool found = false;
    view_rdlock(v);
    for (size_t i = view_event_after(v, after); i < view_events(v) && !found; i++) {
        found = strcmp(view_event_at(v, i)->kind, kind) == 0;
    }
    view_unlock(v);
    return found;
}

/* Marks what was recorded, if the episode is still the one recorded. */
static void mark(struct etcdmon *m, uint64_t id, bool start, bool end, bool tried)
{
    pthread_mutex_lock(&m->lock);
    struct episode *e = m->cur.id == id ? &m->cur : m->done.id == id ? &m->done : NULL;
    if (e) {
        e->start_recorded = e->start_recorded || start;
        e->start_tried = e->start_tried || tried;
        if (end && e == &m->done)
            memset(&m->done, 0, sizeof(m->done));
    }
    pthread_mutex_unlock(&m->lock);
}

/* Every node notes what a leader recorded, so that one that leads later does not record an
 * episode again. */
static void note_recorded(struct etcdmon *m)
{
    if (!m->view)
        return;
    pthread_mutex_lock(&m->lock);
    struct episode cur = m->cur, done = m->done;
    pthread_mutex_unlock(&m->lock);
    if (cur.id && !cur.start_recorded && recorded_after(m->view, "etcd-alarm", cur.seq))
        mark(m, cur.id, true, false, false);
    if (done.id && recorded_after(m->view, "etcd-alarm-cleared", done.seq))
        mark(m, done.id, true, true, false);
}

/*
 * After a refused write, and until one is accepted, a write that changes nothing: a txn whose
 * compare never holds (a version below 0) and whose other branch would put. etcd takes it
 * through raft and its quota like any write, without a new revision; its outcome reaches
 * on_write like every write's. So an etcd that is back says so even when nothing else writes
 * (a quiet cluster after an outage), and one that still refuses writes keeps saying that.
 * Not while an alarm is raised: the alarm says it, and its disarm ends it.
 */
static void probe(struct etcdmon *m)
{
    pthread_mutex_lock(&m->lock);
    bool want = m->fail_since && !m->alarms.n;
    pthread_mutex_unlock(&m->lock);
    if (!want)
        return;
    struct dhaf_etcd_cmp never = {
        .key = m->probe_key, .target = DHAF_ETCD_VERSION, .result = DHAF_ETCD_LT, .num = 0};
    struct dhaf_etcd_op put = {.type = DHAF_ETCD_OP_PUT, .key = m->probe_key, .value = ""};
    struct store st = etcdmon_store(m);
    struct dhaf_etcd_txn_result res;
    struct dhaf_err err;
    if (store_txn(&st, &never, 1, &put, 1, NULL, 0, &res, &err) == 0)
        dhaf_etcd_txn_result_release(&res);
}

/* The judgement after a listing (lock held): bad or not, and on a change the line to log. */
static bool judge(struct etcdmon *m, int64_t now, uint64_t seq, bool alarms_changed, char *line,
                  size_t len, enum dhaf_log_level *level)
{
    /* with an alarm raised, the refused writes are its doing: it alone is the problem */
    bool unwritable = !m->alarms.n && m->fail_since && now - m->fail_since >= m->unwritable_ms;
    bool bad = m->alarms.n > 0 || unwritable;
    bool changed = bad != m->bad || (bad && (alarms_changed || unwritable != m->was_unwritable));
    m->was_unwritable = unwritable;
    char problem[512], q[600];
    line[0] = '\0';
    if (bad && !m->bad) {
        if (m->done.id) {
            /* the last episode again, before its end was recorded: one episode */
            m->cur = m->done;
            m->cur.until_wall = 0;
        } else {
            memset(&m->cur, 0, sizeof(m->cur));
            m->cur.id = m->next_id++;
            /* an outage began with the first refused write, an alarm when it was listed */
            int64_t began = unwritable ? m->fail_since : now;
            m->cur.since_wall = dhaf_clock_wall(m->clock) - (now - began);
            m->cur.since_mono = began;
            m->cur.seq = seq;
            episode_detail(m, m->cur.detail, sizeof(m->cur.detail));
        }
        memset(&m->done, 0, sizeof(m->done));
        m->bad = true;
        problem_text(m, now, problem, sizeof(problem));
        snprintf(line, len, "event=etcd-unwritable problem=\"%s\"",
                 dhaf_log_quote(q, sizeof(q), problem));
        *level = DHAF_LOG_ERROR;
    } else if (!bad && m->bad) {
        m->bad = false;
        m->done = m->cur;
        m->done.until_wall = dhaf_clock_wall(m->clock);
        m->done.until_mono = now;
        memset(&m->cur, 0, sizeof(m->cur));
        snprintf(line, len, "event=etcd-writable after_s=%lld",
                 (long long)((now - m->done.since_mono) / 1000));
        *level = DHAF_LOG_INFO;
    } else if (changed) {
        if (!m->cur.start_recorded)
            episode_detail(m, m->cur.detail, sizeof(m->cur.detail));
        problem_text(m, now, problem, sizeof(problem));
        snprintf(line, len, "event=etcd-unwritable-changed problem=\"%s\"",
                 dhaf_log_quote(q, sizeof(q), problem));
        *level = DHAF_LOG_WARN;
    }
    return changed;
}

int64_t etcdmon_step(struct etcdmon *m)
{
    int64_t now = dhaf_clock_mono(m->clock);
    pthread_mutex_lock(&m->lock);
    bool asked = m->asked;
    bool due = asked || now >= m->next_check;
    m->asked = false;
    pthread_mutex_unlock(&m->lock);

    struct dhaf_etcd_alarms alarms;
    struct dhaf_etcd_status st;
    struct dhaf_err err;
    int rc_alarms = -1, rc_status = -1;
    if (due) {
        const struct store *in = &m->obs.inner;
        probe(m);
        /* Status is the member's own (no raft round) and names raised alarms in its errors;
         * the alarm list is a raft request: asked for only when there is one, or was, or a
         * write was refused, or the status did not come */
        rc_status = in->ops->status(in->ud, &st, &err);
        pthread_mutex_lock(&m->lock);
        asked = asked || m->asked; /* the probe's outcome may ask for it too */
        m->asked = false;
        bool list = asked || m->alarms.n || rc_status != 0 || strstr(st.errors, "alarm:");
        pthread_mutex_unlock(&m->lock);
        if (list) {
            rc_alarms = in->ops->alarms(in->ud, &alarms, &err);
            if (rc_alarms != 0) {
                char q[300];
                DHAF_LOG_LIMITED("etcd-alarms-unread", DHAF_LOG_DEBUG,
                                 "event=etcd-alarms-unread reason=\"%s\"",
                                 dhaf_log_quote(q, sizeof(q), err.msg));
            }
        } else {
            memset(&alarms, 0, sizeof(alarms));
            rc_alarms = 0;
        }
        now = dhaf_clock_mono(m->clock);
    }
    note_recorded(m);
    /* the event counter now (outside the monitor's lock): a new episode's events follow it */
    uint64_t seq = 0;
    if (m->view) {
        int64_t rev;
        view_rdlock(m->view);
        view_event_counter(m->view, &seq, &rev);
        view_unlock(m->view);
    }

    char line[700];
    enum dhaf_log_level level = DHAF_LOG_INFO;
    pthread_mutex_lock(&m->lock);
    if (due)
        m->next_check = now + m->check_ms;
    bool alarms_changed = false;
    if (rc_alarms == 0) {
        alarms_changed = alarms.n != m->alarms.n ||
                         memcmp(alarms.v, m->alarms.v, alarms.n * sizeof(alarms.v[0])) != 0;
        m->alarms = alarms;
        m->checked_ms = now;
        /* a refusal for lack of space ends with the alarm: the next write will tell */
        if (!alarms.n && m->fail_nospace) {
            m->fail_since = 0;
            m->failed = 0;
            m->fail_nospace = false;
        }
    }
    if (rc_status == 0)
        m->status = st;
    if (m->done.id && !m->bad && now - m->done.until_mono >= DONE_KEEP_MS)
        memset(&m->done, 0, sizeof(m->done)); /* no leader took it up: too old to tell */
    if (judge(m, now, seq, alarms_changed, line, sizeof(line), &level))
        kick_subscribers(m);
    int64_t next = m->next_check;
    if (m->fail_since && !m->bad && m->fail_since + m->unwritable_ms > now &&
        m->fail_since + m->unwritable_ms < next)
        next = m->fail_since + m->unwritable_ms;
    pthread_mutex_unlock(&m->lock);
    if (line[0])
        DHAF_LOG(level, "%s", line);
    return next;
}

void etcdmon_state(struct etcdmon *m, struct etcdmon_state *out)
{
    memset(out, 0, sizeof(*out));
    int64_t now = dhaf_clock_mono(m->clock);
    pthread_mutex_lock(&m->lock);
    out->writable = !m->bad;
    out->alarms = m->alarms;
    out->unwritable = m->bad && !m->alarms.n;
    problem_text(m, now, out->problem, sizeof(out->problem));
    out->since_wall_ms = m->bad ? m->cur.since_wall : 0;
    out->checked_ms = m->checked_ms;
    out->db_size = m->status.db_size;
    out->db_size_in_use = m->status.db_size_in_use;
    out->revision = m->status.revision;
    pthread_mutex_unlock(&m->lock);
}

/* ------------------------------------------------------------------ recording (leader) */

static void seconds(char *buf, size_t len, int64_t ms)
{
    snprintf(buf, len, "%lld s", (long long)(ms / 1000));
}

int etcdmon_record(struct etcdmon *m, struct term *t, struct dhaf_err *err)
{
    struct view *v = cluster_view(term_cluster(t));
    pthread_mutex_lock(&m->lock);
    bool bad = m->bad;
    struct episode e = bad ? m->cur : m->done;
    pthread_mutex_unlock(&m->lock);
    if (!e.id)
        return 0;
    bool start = e.start_recorded || recorded_after(v, "etcd-alarm", e.seq);
    if (bad) {
        if (start || e.start_tried) {
            mark(m, e.id, start, false, false);
            return 0; /* its end is what comes next */
        }
        /* once: while etcd refuses writes, trying again would only fail again */
        struct event ev = {.kind = EVK_ETCD_ALARM, .detail = e.detail};
        int rc = outbox_commit(t, NULL, 0, NULL, 0, &ev, 1, err);
        mark(m, e.id, rc == 0, false, true);
        return rc == 0 || rc == DHAF_EFENCED ? 0 : rc;
    }
    if (recorded_after(v, "etcd-alarm-cleared", e.seq)) {
        mark(m, e.id, true, true, false); /* another leader did */
        return 0;
    }
    char late[420], after[80], took[40];
    seconds(took, sizeof(took), e.until_wall - e.since_wall);
    snprintf(late, sizeof(late), "%s (seen %s before this record: etcd refused writes meanwhile)",
             e.detail, took);
    snprintf(after, sizeof(after), " after %s", took);
    struct event evs[2];
    size_t n = 0;
    if (!start)
        evs[n++] = (struct event){.kind = EVK_ETCD_ALARM, .detail = late};
    evs[n++] = (struct event){.kind = EVK_ETCD_ALARM_CLEARED, .detail = after};
    int rc = outbox_commit(t, NULL, 0, NULL, 0, evs, n, err);
    if (rc == 0) {
        mark(m, e.id, true, true, false);
        return 0;
    }
    return rc == DHAF_EFENCED ? 0 : 1;
}

/* ------------------------------------------------------------------ the duty */

struct recorder {
    struct etcdmon *m;
    struct term *t;
    int retry_ms;
};

struct recorder_handle {
    struct worker *w;
    struct etcdmon *m;
};

static void recorder_body(struct worker *w)
{
    struct recorder *r = worker_ud(w);
    while (!worker_quit(w) && term_valid(r->t)) {
        struct dhaf_err err;
        int rc = etcdmon_record(r->m, r->t, &err);
        /* kicked by the monitor and by new events; a failed record is tried again later */
        worker_wait(w, rc != 0 ? dhaf_mono_ms() + r->retry_ms : 0);
    }
}

static void recorder_release(void *ud)
{
    struct recorder *r = ud;
    term_put(r->t);
    free(r);
}

static void *recorder_start(struct term *t, void *ud)
{
    struct etcdmon *m = ud;
    struct recorder *r = dhaf_xcalloc(1, sizeof(*r));
    r->m = m;
    r->t = t;
    r->retry_ms = m->check_ms;
    term_hold(t);
    struct dhaf_err err;
    struct worker *w = term_worker_start(t, "etcd-alarm-events", recorder_body, recorder_release, r,
                                         VIEW_EVENTS, false, &err);
    if (!w)
        return NULL;
    etcdmon_subscribe(m, worker_waker(w), 1);
    dhaf_waker_kick(worker_waker(w), 1); /* look once at the start of the term */
    struct recorder_handle *h = dhaf_xcalloc(1, sizeof(*h));
    h->w = w;
    h->m = m;
    return h;
}

static bool recorder_stop(void *handle, int deadline_ms)
{
    struct recorder_handle *h = handle;
    etcdmon_unsubscribe(h->m, worker_waker(h->w));
    bool ok = term_worker_stop(h->w, deadline_ms);
    free(h);
    return ok;
}

struct duty etcdmon_duty(struct etcdmon *m)
{
    return (struct duty){"etcd-alarm-events", recorder_start, recorder_stop, m};
}
