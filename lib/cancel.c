/* SPDX-License-Identifier: MIT */
/* Cancel tokens with wake-up hooks. */
#include "dhaf/cancel.h"

void dhaf_cancel_init(struct dhaf_cancel *c)
{
    pthread_mutex_init(&c->lock, NULL);
    c->fired = false;
    c->n_hooks = 0;
}

void dhaf_cancel_destroy(struct dhaf_cancel *c)
{
    pthread_mutex_destroy(&c->lock);
}

void dhaf_cancel_fire(struct dhaf_cancel *c)
{
    pthread_mutex_lock(&c->lock);
    if (!c->fired) {
        c->fired = true;
        for (size_t i = 0; i < c->n_hooks; i++)
            c->hooks[i].fn(c->hooks[i].arg);
    }
    pthread_mutex_unlock(&c->lock);
}

bool dhaf_cancel_fired(struct dhaf_cancel *c)
{
    if (!c)
        return false;
    pthread_mutex_lock(&c->lock);
    bool f = c->fired;
    pthread_mutex_unlock(&c->lock);
    return f;
}

bool dhaf_cancel_hook(struct dhaf_cancel *c, void (*fn)(void *arg), void *arg)
{
    if (!c)
        return false;
    pthread_mutex_lock(&c->lock);
    bool ok = !c->fired && c->n_hooks < DHAF_CANCEL_HOOKS;
    if (ok) {
        c->hooks[c->n_hooks].fn = fn;
        c->hooks[c->n_hooks].arg = arg;
        c->n_hooks++;
    }
    pthread_mutex_unlock(&c->lock);
    return ok;
}

void dhaf_cancel_unhook(struct dhaf_cancel *c, void (*fn)(void *arg), void *arg)
{
    if (!c)
        return;
    pthread_mutex_lock(&c->lock);
    for (size_t i = 0; i < c->n_hooks; i++) {
        if (c->hooks[i].fn == fn && c->hooks[i].arg == arg) {
            c->hooks[i] = c->hooks[--c->n_hooks];
            break;
        }
    }
    pthread_mutex_unlock(&c->lock);
}
