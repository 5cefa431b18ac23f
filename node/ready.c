/* SPDX-License-Identifier: MIT */
/* Readiness of the node, from memory only (the etcd monitor, the session, the view). */
#include <stdlib.h>

#include "dhaf/alloc.h"
#include "dhaf/json.h"
#include "etcdmon.h"
#include "ready.h"
#include "view.h"

/* The first service whose switcher the leader cannot initialise or read (its state's
 * provider_error): what to say, or NULL when there is none. */
static char *provider_trouble(struct view *v)
{
    char *why = NULL;
    view_rdlock(v);
    for (size_t i = 0; i < view_count(v, VS_STATE) && !why; i++) {
        const struct view_rec *rec = view_at(v, VS_STATE, i);
        json_t *pe = rec->j ? json_object_get(rec->j, "provider_error") : NULL;
        if (json_is_object(pe))
            why = dhaf_xasprintf("provider: this node leads and cannot initialise or read the "
                                 "switcher of %s: %s",
                                 rec->name,
                                 dhaf_json_str(pe, "error") ? dhaf_json_str(pe, "error") : "?");
    }
    view_unlock(v);
    return why;
}

static bool not_ready(const char **word, const char *w, char **detail, char *d)
{
    *word = w;
    if (detail)
        *detail = d;
    else
        free(d);
    return false;
}

/* An etcd that refuses writes (an alarm) comes first: it is also why a node has no session
 * then. */
bool node_ready(struct cluster *c, const char **word, char **detail)
{
    if (detail)
        *detail = NULL;
    *word = "";
    if (cluster_etcdmon(c)) {
        struct etcdmon_state es;
        etcdmon_state(cluster_etcdmon(c), &es);
        if (!es.writable)
            return not_ready(word, "etcd", detail, dhaf_xstrdup(es.problem));
    }
    if (cluster_session_lease(c) == 0)
        return not_ready(word, "session", detail, dhaf_xstrdup("no session with etcd yet"));
    struct view *v = cluster_view(c);
    view_rdlock(v);
    struct view_sync vs = view_sync(v);
    view_unlock(v);
    if (!vs.synced)
        return not_ready(word, "etcd", detail,
                         dhaf_xasprintf("etcd: not heard from for %.1f s (status is served from "
                                        "memory, marked stale)",
                                        (double)vs.age_ms / 1000.0));
    char *why = cluster_role(c) == ROLE_LEADER ? provider_trouble(v) : NULL;
    if (why)
        return not_ready(word, "provider", detail, why);
    return true;
}
