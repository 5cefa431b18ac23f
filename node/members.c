/* SPDX-License-Identifier: MIT */
/* node-up / node-down from the view: members/ against alive/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "members.h"
#include "outbox.h"
#include "worker.h"

struct tracker {
    struct cluster *c;
    struct term *t;
};

/* One member whose announced state differs from what alive/ says. */
struct change {
    char name[80];
    char *text; /* members/<name> with the new state */
    int64_t mod_rev;
    bool up;
};

/* Compares alive/ with the state announced in members/ (from the view) and commits each
 * difference with its event. Returns false when something could not be written (retry). */
static bool reconcile(struct tracker *tr)
{
    struct view *v = cluster_view(tr->c);
    int64_t wall = dhaf_clock_wall(cluster_clock(tr->c));
    view_rdlock(v);
    size_t n = view_count(v, VS_MEMBERS);
    struct change *ch = dhaf_xcalloc(n + 1, sizeof(*ch));
    size_t n_ch = 0;
    for (size_t i = 0; i < n; i++) {
        const struct view_rec *m = view_at(v, VS_MEMBERS, i);
        bool up = view_find(v, VS_ALIVE, m->name) != NULL;
        const char *state = m->j ? dhaf_json_str(m->j, "state") : NULL;
        if (state && strcmp(state, up ? "up" : "down") == 0)
            continue;
        if (!state && !up)
            continue; /* never seen up: no news (it registers members/ and alive/ at once) */
        json_t *j = m->j ? json_deep_copy(m->j) : json_object();
        json_object_set_new(j, "state", json_string(up ? "up" : "down"));
        json_object_set_new(j, "state_since", json_integer(wall));
        struct change *c = &ch[n_ch++];
        snprintf(c->name, sizeof(c->name), "%s", m->name);
        c->text = dhaf_json_dump(j);
        json_decref(j);
        c->mod_rev = m->mod_rev;
        c->up = up;
    }
    view_unlock(v);
    bool ok = true;
    for (size_t i = 0; i < n_ch && term_valid(tr->t); i++) {
        char path[128], key[300];
        snprintf(path, sizeof(path), "members/%s", ch[i].name);
        cluster_key(tr->c, key, sizeof(key), path);
        struct dhaf_etcd_cmp cmp = {
            .key = key, .target = DHAF_ETCD_MOD_REV, .result = DHAF_ETCD_EQ, .num = ch[i].mod_rev};
        struct dhaf_etcd_op put = {.type = DHAF_ETCD_OP_PUT, .key = key, .value = ch[i].text};
        struct event ev = {.kind = ch[i].up ? EVK_NODE_UP : EVK_NODE_DOWN, .node = ch[i].name};
        struct dhaf_err err;
        int rc = outbox_commit(tr->t, &cmp, 1, &put, 1, &ev, 1, &err);
        if (rc != 0 && rc != DHAF_ECONFLICT && rc != DHAF_EFENCED) {
            char q[300];
            /* tried again every second while etcd refuses writes: one line per 10 s */
            DHAF_LOG_LIMITED("node-state-not-written", DHAF_LOG_WARN,
                             "event=node-state-not-written node=%s reason=\"%s\"", ch[i].name,
                             dhaf_log_quote(q, sizeof(q), err.msg));
            ok = false;
        }
        /* a conflict: the record changed meanwhile; the view brings the change and a kick */
    }
    for (size_t i = 0; i < n_ch; i++)
        free(ch[i].text);
    free(ch);
    return ok;
}

static void track(struct worker *w)
{
    struct tracker *tr = worker_ud(w);
    while (!worker_quit(w) && term_valid(tr->t)) {
        bool ok = reconcile(tr);
        /* kicked by changes of members/ and alive/; a failed write is tried again soon */
        worker_wait(w, ok ? 0 : dhaf_mono_ms() + 1000);
    }
}

static void tracker_release(void *ud)
{
    struct tracker *tr = ud;
    term_put(tr->t);
    free(tr);
}

static void *members_start(struct term *t, void *ud)
{
    struct tracker *tr = dhaf_xcalloc(1, sizeof(*tr));
    tr->c = ud;
    tr->t = t;
    term_hold(t);
    struct dhaf_err err;
    return term_worker_start(t, "members", track, tracker_release, tr, VIEW_MEMBERS | VIEW_SYNC,
                             false, &err);
}

static bool members_stop(void *handle, int deadline_ms)
{
    return term_worker_stop(handle, deadline_ms);
}

struct duty members_duty(struct cluster *c)
{
    return (struct duty){"members", members_start, members_stop, c};
}
