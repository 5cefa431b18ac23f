/* SPDX-License-Identifier: MIT */
/* Refcounted config snapshots; the holder's lock guards only the pointer swap. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "snap.h"

struct snap_box {
    struct snap s; /* first: a struct snap * is a struct snap_box * */
    atomic_int refs;
};

struct snap_holder {
    pthread_mutex_t lock;
    struct snap_box *cur;
    uint64_t generation;
};

static struct snap_box *box_new(struct dhaf_config *cfg, uint64_t gen)
{
    struct snap_box *b = dhaf_xcalloc(1, sizeof(*b));
    b->s.cfg = *cfg;
    memset(cfg, 0, sizeof(*cfg));
    b->s.generation = gen;
    atomic_init(&b->refs, 1);
    return b;
}

struct snap_holder *snap_holder_new(struct dhaf_config *cfg)
{
    struct snap_holder *h = dhaf_xcalloc(1, sizeof(*h));
    pthread_mutex_init(&h->lock, NULL);
    h->generation = 1;
    h->cur = box_new(cfg, h->generation);
    return h;
}

void snap_holder_free(struct snap_holder *h)
{
    if (!h)
        return;
    snap_put(&h->cur->s);
    pthread_mutex_destroy(&h->lock);
    free(h);
}

struct snap *snap_get(struct snap_holder *h)
{
    pthread_mutex_lock(&h->lock);
    struct snap_box *b = h->cur;
    atomic_fetch_add(&b->refs, 1);
    pthread_mutex_unlock(&h->lock);
    return &b->s;
}

struct snap *snap_hold(struct snap *s)
{
    atomic_fetch_add(&((struct snap_box *)s)->refs, 1);
    return s;
}

void snap_put(struct snap *s)
{
    if (!s)
        return;
    struct snap_box *b = (struct snap_box *)s;
    if (atomic_fetch_sub(&b->refs, 1) == 1) {
        dhaf_config_release(&b->s.cfg);
        free(b);
    }
}

uint64_t snap_publish(struct snap_holder *h, struct dhaf_config *cfg)
{
    pthread_mutex_lock(&h->lock);
    struct snap_box *old = h->cur;
    h->cur = box_new(cfg, ++h->generation);
    uint64_t gen = h->generation;
    pthread_mutex_unlock(&h->lock);
    snap_put(&old->s);
    return gen;
}
