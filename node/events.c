/* SPDX-License-Identifier: MIT */
/* The event kinds table, message templates, records and their log line. */
#include <stdio.h>
#include <string.h>

#include "dhaf/json.h"
#include "dhaf/log.h"
#include "events.h"

static const struct event_kind_info kinds[EVK_N + 1] = {
#define EVENT_ROW(id, name, level, tmpl) [EVK_##id] = {name, level, tmpl},
    EVENT_KINDS(EVENT_ROW)
#undef EVENT_ROW
        [EVK_UNKNOWN] = {"event", EV_INFO, "{detail}"},
};

const struct event_kind_info *event_kind_info(enum event_kind kind)
{
    return &kinds[kind <= EVK_UNKNOWN ? kind : EVK_UNKNOWN];
}

const char *event_kind_name_at(size_t i)
{
    return i < EVK_N ? kinds[i].name : NULL;
}

enum event_kind event_kind_named(const char *name)
{
    for (int k = 0; name && k < EVK_N; k++)
        if (strcmp(kinds[k].name, name) == 0)
            return (enum event_kind)k;
    return EVK_UNKNOWN;
}

static const char *const level_names[] = {
    [EV_INFO] = "info", [EV_WARNING] = "warning", [EV_CRITICAL] = "critical"};

const char *event_level_name(enum event_level l)
{
    return l >= EV_INFO && l <= EV_CRITICAL ? level_names[l] : "info";
}

enum event_level event_level_named(const char *name)
{
    for (int l = EV_INFO; name && l <= EV_CRITICAL; l++)
        if (strcmp(level_names[l], name) == 0)
            return (enum event_level)l;
    return EV_INFO;
}

/* The value of template field name (len bytes), NULL for an unknown field. */
static const char *field(const struct event *ev, const char *cluster, const char *name, size_t len)
{
#define IS(s) (len == sizeof(s) - 1 && memcmp(name, s, len) == 0)
    if (IS("service"))
        return ev->service ? ev->service : "";
    if (IS("node"))
        return ev->node ? ev->node : "";
    if (IS("from"))
        return ev->from && *ev->from ? ev->from : "(none)";
    if (IS("to"))
        return ev->to && *ev->to ? ev->to : "(none)";
    if (IS("detail"))
        return ev->detail ? ev->detail : "";
    if (IS("cluster"))
        return cluster ? cluster : "";
#undef IS
    return NULL;
}

void event_render(const struct event *ev, const char *cluster, char *buf, size_t len)
{
    const char *t = event_kind_info(ev->kind)->tmpl;
    size_t n = 0;
    buf[0] = '\0';
    while (*t && n + 1 < len) {
        const char *close = *t == '{' ? strchr(t, '}') : NULL;
        const char *v = close ? field(ev, cluster, t + 1, (size_t)(close - t - 1)) : NULL;
        if (v) {
            int w = snprintf(buf + n, len - n, "%s", v);
            n += w > 0 ? (size_t)w : 0;
            if (n >= len)
                n = len - 1;
            t = close + 1;
        } else {
            buf[n++] = *t++;
            buf[n] = '\0';
        }
    }
}

static void set_str(json_t *j, const char *key, const char *v)
{
    if (v && *v)
        json_object_set_new(j, key, json_string(v));
}

json_t *event_record(const struct event *ev, uint64_t seq, const char *cluster, const char *by,
                     int64_t epoch, int64_t at_ms)
{
    const struct event_kind_info *k = event_kind_info(ev->kind);
    char msg[1024];
    event_render(ev, cluster, msg, sizeof(msg));
    json_t *j = json_object();
    json_object_set_new(j, "seq", json_integer((json_int_t)seq));
    json_object_set_new(j, "kind", json_string(k->name));
    json_object_set_new(j, "level", json_string(event_level_name(k->level)));
    set_str(j, "service", ev->service);
    set_str(j, "node", ev->node);
    set_str(j, "from", ev->from);
    set_str(j, "to", ev->to);
    if (ev->n_reasons) {
        json_t *r = json_array();
        for (size_t i = 0; i < ev->n_reasons && i < EVENT_MAX_REASONS; i++)
            json_array_append_new(r, json_string(ev->reasons[i] ? ev->reasons[i] : ""));
        json_object_set_new(j, "reasons", r);
    }
    json_object_set_new(j, "message", json_string(msg));
    json_object_set_new(j, "at", json_integer(at_ms));
    set_str(j, "by", by);
    if (epoch)
        json_object_set_new(j, "epoch", json_integer(epoch));
    if (ev->actor) {
        set_str(j, "actor", ev->actor->name);
        set_str(j, "role", ev->actor->role);
        set_str(j, "peer", ev->actor->peer);
        if (ev->actor->comment && *ev->actor->comment)
            set_str(j, "comment", ev->actor->comment);
    }
    return j;
}

void event_actor_text(const struct event_actor *a, char *buf, size_t len)
{
    snprintf(buf, len, " by %.96s from %.64s", a->name ? a->name : "?", a->peer ? a->peer : "?");
    if (a->comment && *a->comment) {
        size_t at = strlen(buf);
        snprintf(buf + at, len - at, " (comment: \"%.128s\")", a->comment);
    }
}

/* Appends " key=value" when the record has key (names: no spaces to quote). */
static void add_field(char *buf, size_t len, const json_t *rec, const char *key)
{
    const char *value = dhaf_json_str(rec, key);
    if (!value)
        return;
    size_t at = strlen(buf);
    char q[512];
    snprintf(buf + at, len - at, " %s=%s", key, dhaf_log_quote(q, sizeof(q), value));
}

void event_log_record(const json_t *rec)
{
    char line[1536] = "", reasons[512] = "";
    const json_t *ra = json_object_get(rec, "reasons");
    for (size_t i = 0; json_is_array(ra) && i < json_array_size(ra); i++) {
        const char *r = json_string_value(json_array_get(ra, i));
        snprintf(reasons + strlen(reasons), sizeof(reasons) - strlen(reasons), "%s%s",
                 i ? "; " : "", r ? r : "");
    }
    add_field(line, sizeof(line), rec, "service");
    add_field(line, sizeof(line), rec, "node");
    add_field(line, sizeof(line), rec, "from");
    add_field(line, sizeof(line), rec, "to");
    if (reasons[0]) {
        char q[600];
        size_t at = strlen(line);
        snprintf(line + at, sizeof(line) - at, " reasons=\"%s\"",
                 dhaf_log_quote(q, sizeof(q), reasons));
    }
    static const char *const quoted[] = {"actor", "role", "peer", "comment"};
    for (size_t i = 0; i < sizeof(quoted) / sizeof(quoted[0]); i++) {
        const char *v = dhaf_json_str(rec, quoted[i]);
        char q[300];
        size_t at = strlen(line);
        if (v)
            snprintf(line + at, sizeof(line) - at, " %s=\"%s\"", quoted[i],
                     dhaf_log_quote(q, sizeof(q), v));
    }
    int64_t seq = 0;
    dhaf_json_int(rec, "seq", &seq);
    if (seq > 0)
        snprintf(line + strlen(line), sizeof(line) - strlen(line), " seq=%lld", (long long)seq);
    const char *msg = dhaf_json_str(rec, "message");
    if (msg) {
        char q[600];
        size_t at = strlen(line);
        snprintf(line + at, sizeof(line) - at, " msg=\"%s\"", dhaf_log_quote(q, sizeof(q), msg));
    }
    const char *kind = dhaf_json_str(rec, "kind");
    const char *level = dhaf_json_str(rec, "level");
    bool info = !level || strcmp(level, "info") == 0;
    DHAF_LOG(info ? DHAF_LOG_INFO : DHAF_LOG_WARN, "event=%s severity=%s%s", kind ? kind : "event",
             level ? level : "info", line);
}
