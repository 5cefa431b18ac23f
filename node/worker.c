/* SPDX-License-Identifier: MIT */
/* Worker threads with bounded stops and shared ownership of their state. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cluster.h"
#include "dhaf/alloc.h"
#include "dhaf/log.h"
#include "worker.h"

struct worker {
    char *name;
    worker_body_fn *body;
    worker_release_fn *release;
    void *ud;
    struct dhaf_waker wake;
    atomic_bool quit;
    atomic_int refs; /* the thread's and the owner's */
    pthread_t t;
    /* a term's worker: what it subscribed to */
    struct term *term;
    unsigned view_topics;
    bool on_reload;
};

/* Undoes the subscriptions of a term's worker. */
static void unsubscribe(struct worker *w)
{
    struct cluster *c = term_cluster(w->term);
    if (w->view_topics)
        view_unsubscribe(cluster_view(c), &w->wake);
    if (w->on_reload)
        cluster_unwatch_reload(c, &w->wake);
    term_unwatch(w->term, &w->wake);
}

static void unref(struct worker *w)
{
    if (atomic_fetch_sub(&w->refs, 1) != 1)
        return;
    if (w->release)
        w->release(w->ud);
    if (w->term) {
        unsubscribe(w);
        term_put(w->term);
    }
    dhaf_waker_release(&w->wake);
    free(w->name);
    free(w);
}

static void *run(void *arg)
{
    struct worker *w = arg;
    w->body(w);
    unref(w);
    return NULL;
}

static struct worker *worker_new(const char *name, worker_body_fn *body, worker_release_fn *release,
                                 void *ud)
{
    struct worker *w = dhaf_xcalloc(1, sizeof(*w));
    w->name = dhaf_xstrdup(name);
    w->body = body;
    w->release = release;
    w->ud = ud;
    dhaf_waker_init(&w->wake);
    atomic_init(&w->quit, false);
    atomic_init(&w->refs, 2);
    return w;
}

/* Starts w's thread; when it cannot start, frees w (its state released) and says why. */
static struct worker *worker_run(struct worker *w, struct dhaf_err *err)
{
    if (dhaf_thread_start(&w->t, false, run, w) == 0)
        return w;
    dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the %s thread", w->name);
    atomic_store(&w->refs, 1);
    unref(w);
    return NULL;
}

struct worker *worker_start(const char *name, worker_body_fn *body, worker_release_fn *release,
                            void *ud, struct dhaf_err *err)
{
    return worker_run(worker_new(name, body, release, ud), err);
}

void *worker_ud(struct worker *w)
{
    return w->ud;
}

struct dhaf_waker *worker_waker(struct worker *w)
{
    return &w->wake;
}

bool worker_quit(struct worker *w)
{
    return atomic_load(&w->quit);
}

unsigned worker_wait(struct worker *w, int64_t deadline_ms)
{
    if (atomic_load(&w->quit))
        return 0;
    unsigned bits = dhaf_waker_wait(&w->wake, deadline_ms);
    return atomic_load(&w->quit) ? 0 : bits;
}

struct worker *term_worker_start(struct term *t, const char *name, worker_body_fn *body,
                                 worker_release_fn *release, void *ud, unsigned view_topics,
                                 bool on_reload, struct dhaf_err *err)
{
    struct worker *w = worker_new(name, body, release, ud);
    struct cluster *c = term_cluster(t);
    term_hold(t);
    w->term = t;
    w->view_topics = view_topics;
    w->on_reload = on_reload;
    /* subscribed before the thread runs, so no change between its first look and the
     * subscription goes unnoticed */
    if (view_topics)
        view_subscribe(cluster_view(c), &w->wake, view_topics, 1);
    if (on_reload)
        cluster_watch_reload(c, &w->wake, 1);
    term_watch(t, &w->wake, 1);
    /* a waker that is never waited on is harmless; it is unsubscribed when w is freed */
    return worker_run(w, err);
}

bool term_worker_stop(struct worker *w, int deadline_ms)
{
    if (!w)
        return true;
    unsubscribe(w);
    return worker_stop(w, deadline_ms);
}

bool worker_stop(struct worker *w, int deadline_ms)
{
    if (!w)
        return true;
    atomic_store(&w->quit, true);
    dhaf_waker_kick(&w->wake, 1);
    bool joined = dhaf_join_within(w->t, deadline_ms);
    if (!joined) {
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=worker-slow worker=%s note=\"still in a call after %d ms; it ends alone "
                 "and can no longer act (its term is closed)\"",
                 w->name, deadline_ms);
        pthread_detach(w->t);
    }
    unref(w);
    return joined;
}
