/* SPDX-License-Identifier: MIT */
/* The REST gateway's connection guard: request deadlines and eviction of idle connections
 * (see rest_guard.h). One mutex over a list of at most a few hundred entries; the reaper
 * thread sleeps until the earliest deadline (or until a connection is added or goes idle). */
#include "rest_guard.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/log.h"

struct rest_conn {
    struct rest_conn *prev, *next;
    int fd;
    bool busy;
    bool cut;         /* shut down by us; still open until the server closes it */
    int64_t since_ms; /* opened, or last reply done */
    char peer[64];
};

struct rest_guard {
    pthread_mutex_t lock;
    pthread_cond_t cond; /* the reaper's: a deadline may have moved, or stop */
    pthread_t reaper;
    struct rest_conn *head, *tail; /* oldest since_ms first: the list is kept in that order */
    size_t live;                   /* entries not cut */
    size_t soft_limit;
    int deadline_ms;
    bool stop;
    unsigned long n_deadline, n_evicted;
};

static void unlink_conn(struct rest_guard *g, struct rest_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        g->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        g->tail = c->prev;
    c->prev = c->next = NULL;
}

static void append(struct rest_guard *g, struct rest_conn *c)
{
    c->prev = g->tail;
    c->next = NULL;
    if (g->tail)
        g->tail->next = c;
    else
        g->head = c;
    g->tail = c;
}

/* Lock held. The server's thread sees the end of the stream and closes the connection; its
 * fd stays ours until rest_guard_remove, which the server calls before close(). */
static void cut(struct rest_guard *g, struct rest_conn *c, const char *why)
{
    c->cut = true;
    g->live--;
    shutdown(c->fd, SHUT_RDWR);
    DHAF_LOG(DHAF_LOG_DEBUG, "event=rest-cut peer=%s reason=%s", c->peer, why);
}

static void *reaper(void *arg)
{
    struct rest_guard *g = arg;
    pthread_mutex_lock(&g->lock);
    while (!g->stop) {
        int64_t now = dhaf_mono_ms(), next = 0;
        /* since_ms only grows along the list, but busy and cut entries are skipped */
        for (struct rest_conn *c = g->head; c; c = c->next) {
            if (c->busy || c->cut)
                continue;
            int64_t due = c->since_ms + g->deadline_ms;
            if (due <= now) {
                cut(g, c, "deadline");
                g->n_deadline++;
            } else if (!next || due < next) {
                next = due;
            }
        }
        dhaf_cond_wait_until(&g->cond, &g->lock, next);
    }
    pthread_mutex_unlock(&g->lock);
    return NULL;
}

struct rest_guard *rest_guard_new(size_t soft_limit, int deadline_ms)
{
    struct rest_guard *g = dhaf_xcalloc(1, sizeof(*g));
    pthread_mutex_init(&g->lock, NULL);
    dhaf_cond_init_mono(&g->cond);
    g->soft_limit = soft_limit;
    g->deadline_ms = deadline_ms;
    if (dhaf_thread_start(&g->reaper, false, reaper, g) != 0) {
        pthread_cond_destroy(&g->cond);
        pthread_mutex_destroy(&g->lock);
        free(g);
        return NULL;
    }
    return g;
}

void rest_guard_free(struct rest_guard *g)
{
    if (!g)
        return;
    pthread_mutex_lock(&g->lock);
    g->stop = true;
    pthread_cond_signal(&g->cond);
    pthread_mutex_unlock(&g->lock);
    pthread_join(g->reaper, NULL);
    for (struct rest_conn *c = g->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
    free(g);
}

struct rest_conn *rest_guard_add(struct rest_guard *g, int fd, const char *peer)
{
    struct rest_conn *c = dhaf_xcalloc(1, sizeof(*c));
    c->fd = fd;
    c->since_ms = dhaf_mono_ms();
    snprintf(c->peer, sizeof(c->peer), "%s", peer ? peer : "?");
    pthread_mutex_lock(&g->lock);
    if (g->live >= g->soft_limit) {
        /* the oldest connection that is not being answered makes room */
        for (struct rest_conn *o = g->head; o; o = o->next)
            if (!o->busy && !o->cut) {
                cut(g, o, "evicted");
                g->n_evicted++;
                break;
            }
    }
    append(g, c);
    g->live++;
    pthread_cond_signal(&g->cond);
    pthread_mutex_unlock(&g->lock);
    return c;
}

void rest_guard_busy(struct rest_guard *g, struct rest_conn *c, bool busy)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->lock);
    if (c->busy != busy) {
        c->busy = busy;
        if (!busy) { /* to the end of the list: its deadline is now the latest */
            c->since_ms = dhaf_mono_ms();
            unlink_conn(g, c);
            append(g, c);
            pthread_cond_signal(&g->cond);
        }
    }
    pthread_mutex_unlock(&g->lock);
}

void rest_guard_remove(struct rest_guard *g, struct rest_conn *c)
{
    if (!c)
        return;
    pthread_mutex_lock(&g->lock);
    unlink_conn(g, c);
    if (!c->cut)
        g->live--;
    pthread_mutex_unlock(&g->lock);
    free(c);
}

void rest_guard_counts(struct rest_guard *g, unsigned long *deadline, unsigned long *evicted)
{
    pthread_mutex_lock(&g->lock);
    *deadline = g->n_deadline;
    *evicted = g->n_evicted;
    pthread_mutex_unlock(&g->lock);
}
