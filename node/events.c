/* SPDX-License-Identifier: MIT */
/* The event path: log line + etcd history record for every transition. */
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "events.h"

static pthread_mutex_t seq_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long seq_counter;

const char *event_level_name(enum event_level l)
{
    switch (l) {
    case EV_INFO:
        return "info";
    case EV_WARNING:
        return "warning";
    case EV_CRITICAL:
        return "critical";
    }
    return "info";
}

/* Appends " key=value" (value quoted when it may hold spaces) when value is set. */
static void add_field(char *buf, size_t len, const char *key, const char *value, bool quote)
{
    if (!value)
        return;
    size_t at = strlen(buf);
    char q[512];
    if (quote)
        snprintf(buf + at, len - at, " %s=\"%s\"", key, dhaf_log_quote(q, sizeof(q), value));
    else
        snprintf(buf + at, len - at, " %s=%s", key, value);
}

static void log_event(const struct event *ev)
{
    char line[1536] = "", reasons[512] = "";
    for (size_t i = 0; i < ev->n_reasons; i++)
        snprintf(reasons + strlen(reasons), sizeof(reasons) - strlen(reasons), "%s%s",
                 i ? "; " : "", ev->reasons[i]);
    add_field(line, sizeof(line), "service", ev->service, false);
    add_field(line, sizeof(line), "node", ev->node, false);
    add_field(line, sizeof(line), "from", ev->from, false);
    add_field(line, sizeof(line), "to", ev->to, false);
    add_field(line, sizeof(line), "reasons", ev->n_reasons ? reasons : NULL, true);
    add_field(line, sizeof(line), "msg", ev->message, true);
    DHAF_LOG(ev->level == EV_INFO ? DHAF_LOG_INFO : DHAF_LOG_WARN, "event=%s severity=%s%s",
             ev->kind, event_level_name(ev->level), line);
}

/* Drops the oldest records beyond the cap. */
static void trim(struct cluster *c, const char *dir)
{
    struct dhaf_err err;
    int64_t count = 0;
    if (dhaf_etcd_count_prefix(cluster_etcd(c), dir, &count, &err) != 0 ||
        count <= EVENT_HISTORY_MAX)
        return;
    struct dhaf_kvs old;
    if (dhaf_etcd_get_prefix(cluster_etcd(c), dir, count - EVENT_HISTORY_MAX, &old, &err) != 0)
        return;
    for (size_t i = 0; i < old.n; i++)
        dhaf_etcd_delete(cluster_etcd(c), old.kvs[i].key, false, NULL, &err);
    dhaf_kvs_release(&old);
}

void event_emit(struct cluster *c, const struct event *ev)
{
    log_event(ev);

    long long at = dhaf_wall_ms();
    pthread_mutex_lock(&seq_lock);
    unsigned long long n = ++seq_counter;
    pthread_mutex_unlock(&seq_lock);

    json_t *j = json_object();
    json_object_set_new(j, "kind", json_string(ev->kind));
    json_object_set_new(j, "level", json_string(event_level_name(ev->level)));
    if (ev->service)
        json_object_set_new(j, "service", json_string(ev->service));
    if (ev->node)
        json_object_set_new(j, "node", json_string(ev->node));
    if (ev->from)
        json_object_set_new(j, "from", json_string(ev->from));
    if (ev->to)
        json_object_set_new(j, "to", json_string(ev->to));
    if (ev->n_reasons) {
        json_t *r = json_array();
        for (size_t i = 0; i < ev->n_reasons; i++)
            json_array_append_new(r, json_string(ev->reasons[i]));
        json_object_set_new(j, "reasons", r);
    }
    json_object_set_new(j, "at", json_integer(at));
    json_object_set_new(j, "by", json_string(cluster_node(c)));
    if (ev->message)
        json_object_set_new(j, "message", json_string(ev->message));
    char *text = dhaf_json_dump(j);
    json_decref(j);

    char path[256], dir[300], key[400];
    snprintf(path, sizeof(path), "events/%s/", ev->service ? ev->service : EVENT_CLUSTER);
    cluster_key(c, dir, sizeof(dir), path);
    /* Time first so keys sort by time; node and counter keep them unique. */
    snprintf(key, sizeof(key), "%s%013lld-%s-%06llu", dir, at, cluster_node(c), n % 1000000);

    struct dhaf_err err;
    struct dhaf_etcd_op put = {.type = DHAF_ETCD_OP_PUT, .key = key, .value = text};
    int rc;
    if (cluster_is_leader(c, NULL)) {
        struct dhaf_etcd_txn_result res;
        rc = cluster_txn_as_leader(c, NULL, 0, &put, 1, &res, &err);
        if (rc == 0)
            dhaf_etcd_txn_result_release(&res);
    } else {
        rc = dhaf_etcd_put(cluster_etcd(c), key, text, SIZE_MAX, 0, NULL, &err);
    }
    if (rc != 0) {
        char q[300];
        DHAF_LOG(DHAF_LOG_WARN, "event=event-not-recorded kind=%s reason=\"%s\"", ev->kind,
                 dhaf_log_quote(q, sizeof(q), err.msg));
    } else if (n % 32 == 0) {
        trim(c, dir);
    }
    free(text);
}
