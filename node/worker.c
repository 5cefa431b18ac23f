/* SPDX-License-Identifier: MIT */
/* Worker threads with bounded stops and shared ownership of their state. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

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
};

static void unref(struct worker *w)
{
    if (atomic_fetch_sub(&w->refs, 1) != 1)
        return;
    if (w->release)
        w->release(w->ud);
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

struct worker *worker_start(const char *name, worker_body_fn *body, worker_release_fn *release,
                            void *ud, struct dhaf_err *err)
{
    struct worker *w = dhaf_xcalloc(1, sizeof(*w));
    w->name = dhaf_xstrdup(name);
    w->body = body;
    w->release = release;
    w->ud = ud;
    dhaf_waker_init(&w->wake);
    atomic_init(&w->quit, false);
    atomic_init(&w->refs, 2);
    if (pthread_create(&w->t, NULL, run, w) != 0) {
        atomic_store(&w->refs, 1);
        unref(w);
        dhaf_err_set(err, DHAF_EINTERNAL, "cannot start the %s thread", name);
        return NULL;
    }
    return w;
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
