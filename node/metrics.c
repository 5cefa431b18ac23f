/* SPDX-License-Identifier: MIT */
/* /metrics: process counters and the Prometheus text format (exposition format 0.0.4).
 * Per-entry-point series come from the ServiceStatus messages of the node's view (the same
 * on every node); the counters are this process's own. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "etcdmon.h"
#include "metrics.h"

/* ------------------------------------------------------------------ switches */

#define MAX_SWITCH_SERIES 512

struct switch_series {
    char service[65];
    char kind[16];
    uint64_t n;
};

/* Switches are rare: one mutex is simpler than a lock-free table and costs nothing. */
static pthread_mutex_t switch_lock = PTHREAD_MUTEX_INITIALIZER;
static struct switch_series switches[MAX_SWITCH_SERIES];
static size_t n_switches;

void metrics_switch(const char *service, const char *kind)
{
    if (!service || !kind)
        return;
    pthread_mutex_lock(&switch_lock);
    struct switch_series *s = NULL;
    for (size_t i = 0; i < n_switches && !s; i++)
        if (strcmp(switches[i].service, service) == 0 && strcmp(switches[i].kind, kind) == 0)
            s = &switches[i];
    if (!s && n_switches < MAX_SWITCH_SERIES) {
        s = &switches[n_switches++];
        snprintf(s->service, sizeof(s->service), "%s", service);
        snprintf(s->kind, sizeof(s->kind), "%s", kind);
    }
    if (s)
        s->n++;
    pthread_mutex_unlock(&switch_lock);
}

static uint64_t switch_count(const char *service, const char *kind)
{
    uint64_t n = 0;
    for (size_t i = 0; i < n_switches; i++)
        if (strcmp(switches[i].service, service) == 0 && strcmp(switches[i].kind, kind) == 0)
            n = switches[i].n;
    return n;
}

/* ------------------------------------------------------------------ check latency */

/* Upper bounds in ms (Prometheus' default buckets, 5 ms .. 10 s); the last slot is +Inf. */
static const uint32_t bucket_ms[] = {5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000};
#define N_BUCKETS (sizeof(bucket_ms) / sizeof(bucket_ms[0]))

static atomic_uint_fast64_t lat_bucket[N_BUCKETS + 1]; /* not cumulative */
static atomic_uint_fast64_t lat_sum_ms;
static atomic_uint_fast64_t lat_count;

void metrics_check_latency(uint32_t latency_ms)
{
    size_t b = 0;
    while (b < N_BUCKETS && latency_ms > bucket_ms[b])
        b++;
    atomic_fetch_add(&lat_bucket[b], 1);
    atomic_fetch_add(&lat_sum_ms, latency_ms);
    atomic_fetch_add(&lat_count, 1);
}

static atomic_uint_fast64_t rounds, rounds_overran, rounds_ms;

void metrics_probe_round(int64_t took_ms, bool overran)
{
    atomic_fetch_add(&rounds, 1);
    atomic_fetch_add(&rounds_overran, overran ? 1 : 0);
    atomic_fetch_add(&rounds_ms, took_ms > 0 ? (uint64_t)took_ms : 0);
}

/* ------------------------------------------------------------------ etcd */

static atomic_uint_fast64_t compactions;
static _Atomic int64_t compacted_at;

void metrics_compaction(int64_t revision)
{
    atomic_fetch_add(&compactions, 1);
    atomic_store(&compacted_at, revision);
}

/* ------------------------------------------------------------------ rendering */

/* A label value with \ " and newline escaped, as the text format wants. */
static void put_label(FILE *f, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '\\' || *s == '"')
            fprintf(f, "\\%c", *s);
        else if (*s == '\n')
            fputs("\\n", f);
        else
            fputc(*s, f);
    }
}

static void help(FILE *f, const char *name, const char *type, const char *text)
{
    fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, text, name, type);
}

/* name{service="..",entry_point=".."[,opinion=".."]} value */
static void ep_line(FILE *f, const char *name, const char *svc, const char *ep, const char *opinion,
                    unsigned long long value)
{
    fprintf(f, "%s{service=\"", name);
    put_label(f, svc);
    fputs("\",entry_point=\"", f);
    put_label(f, ep);
    if (opinion)
        fprintf(f, "\",opinion=\"%s", opinion);
    fprintf(f, "\"} %llu\n", value);
}

static const char *const switch_kinds[] = {"failover", "switchover", "switching"};

static void render_switches(FILE *f, const Dhaf__V1__ListServicesResponse *ls)
{
    help(f, "dhaf_switches_total", "counter",
         "Switches this node carried out as the leader, by service and kind.");
    pthread_mutex_lock(&switch_lock);
    /* every configured service with every kind, so the series exist from the start */
    for (size_t i = 0; ls && i < ls->n_services; i++)
        for (size_t k = 0; k < sizeof(switch_kinds) / sizeof(switch_kinds[0]); k++) {
            fputs("dhaf_switches_total{service=\"", f);
            put_label(f, ls->services[i]->name);
            fprintf(f, "\",kind=\"%s\"} %llu\n", switch_kinds[k],
                    (unsigned long long)switch_count(ls->services[i]->name, switch_kinds[k]));
        }
    /* and what was counted for services or kinds not listed above (removed by a reload) */
    for (size_t j = 0; j < n_switches; j++) {
        bool listed = false;
        for (size_t i = 0; ls && i < ls->n_services && !listed; i++)
            listed = strcmp(ls->services[i]->name, switches[j].service) == 0;
        bool known_kind = false;
        for (size_t k = 0; k < sizeof(switch_kinds) / sizeof(switch_kinds[0]); k++)
            known_kind = known_kind || strcmp(switch_kinds[k], switches[j].kind) == 0;
        if (listed && known_kind)
            continue;
        fputs("dhaf_switches_total{service=\"", f);
        put_label(f, switches[j].service);
        fputs("\",kind=\"", f);
        put_label(f, switches[j].kind);
        fprintf(f, "\"} %llu\n", (unsigned long long)switches[j].n);
    }
    pthread_mutex_unlock(&switch_lock);
}

static void render_latency(FILE *f)
{
    help(f, "dhaf_check_latency_seconds", "histogram",
         "Latency of the built-in prober's health checks.");
    uint64_t cum = 0;
    for (size_t b = 0; b < N_BUCKETS; b++) {
        cum += atomic_load(&lat_bucket[b]);
        fprintf(f, "dhaf_check_latency_seconds_bucket{le=\"%g\"} %llu\n", bucket_ms[b] / 1000.0,
                (unsigned long long)cum);
    }
    cum += atomic_load(&lat_bucket[N_BUCKETS]);
    /* count is read separately; +Inf uses the buckets so the histogram stays monotonic */
    fprintf(f, "dhaf_check_latency_seconds_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
    fprintf(f, "dhaf_check_latency_seconds_sum %.3f\n", atomic_load(&lat_sum_ms) / 1000.0);
    fprintf(f, "dhaf_check_latency_seconds_count %llu\n", (unsigned long long)cum);
}

static void render_rounds(FILE *f)
{
    help(f, "dhaf_probe_rounds_total", "counter", "Rounds of the built-in prober.");
    fprintf(f, "dhaf_probe_rounds_total %llu\n", (unsigned long long)atomic_load(&rounds));
    help(f, "dhaf_probe_rounds_overran_total", "counter",
         "Rounds of the built-in prober that took a tact or more: the next one started late, "
         "not at this node's phase (the prober is behind: too many checks for the machine).");
    fprintf(f, "dhaf_probe_rounds_overran_total %llu\n",
            (unsigned long long)atomic_load(&rounds_overran));
    help(f, "dhaf_probe_round_seconds_total", "counter",
         "Time the built-in prober's rounds took, summed.");
    fprintf(f, "dhaf_probe_round_seconds_total %.3f\n", atomic_load(&rounds_ms) / 1000.0);
}

static void render_eps(FILE *f, const Dhaf__V1__ListServicesResponse *ls)
{
    static const struct {
        const char *name, *help;
    } series[] = {
        {"dhaf_ep_healthy", "1 when the entry point is healthy by the leader's tally."},
        {"dhaf_ep_votes", "Fresh votes about the entry point, by opinion."},
        {"dhaf_ep_voters", "Fresh voters that checked the entry point."},
        {"dhaf_ep_current", "1 for the entry point traffic goes to."},
    };
    for (size_t s = 0; s < sizeof(series) / sizeof(series[0]); s++) {
        help(f, series[s].name, "gauge", series[s].help);
        for (size_t i = 0; ls && i < ls->n_services; i++) {
            const Dhaf__V1__ServiceStatus *ss = ls->services[i];
            for (size_t e = 0; e < ss->n_entry_points; e++) {
                const Dhaf__V1__EntryPointStatus *ep = ss->entry_points[e];
                if (s == 0) {
                    ep_line(f, series[s].name, ss->name, ep->name, NULL, ep->healthy ? 1 : 0);
                } else if (s == 1) {
                    ep_line(f, series[s].name, ss->name, ep->name, "healthy", ep->votes_healthy);
                    ep_line(f, series[s].name, ss->name, ep->name, "unhealthy",
                            ep->votes_unhealthy);
                } else if (s == 2) {
                    ep_line(f, series[s].name, ss->name, ep->name, NULL, ep->voters);
                } else {
                    ep_line(f, series[s].name, ss->name, ep->name, NULL,
                            strcmp(ss->current_entry_point, ep->name) == 0 ? 1 : 0);
                }
            }
        }
    }
    help(f, "dhaf_service_up", "gauge",
         "1 when at least one entry point of the service is healthy.");
    for (size_t i = 0; ls && i < ls->n_services; i++) {
        fputs("dhaf_service_up{service=\"", f);
        put_label(f, ls->services[i]->name);
        fprintf(f, "\"} %d\n", ls->services[i]->up ? 1 : 0);
    }
}

/* The etcd monitor's state: every alarm type with a series from the start (0 or 1), so that an
 * alert on dhaf_etcd_alarm == 1 needs no absent() clause. */
static void render_etcd(FILE *f, const struct etcdmon_state *e)
{
    static const int types[] = {DHAF_ETCD_ALARM_NOSPACE, DHAF_ETCD_ALARM_CORRUPT};
    if (e) {
        help(f, "dhaf_etcd_alarm", "gauge",
             "1 while etcd has the alarm raised (on any member), as this node last listed them.");
        for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
            fprintf(f, "dhaf_etcd_alarm{alarm=\"%s\"} %d\n", dhaf_etcd_alarm_name(types[i]),
                    etcdmon_alarm_raised(e, types[i]) ? 1 : 0);
        for (size_t i = 0; i < e->alarms.n; i++)
            if (e->alarms.v[i].type != DHAF_ETCD_ALARM_NOSPACE &&
                e->alarms.v[i].type != DHAF_ETCD_ALARM_CORRUPT)
                fprintf(f, "dhaf_etcd_alarm{alarm=\"%s\"} 1\n",
                        dhaf_etcd_alarm_name(e->alarms.v[i].type));
        help(f, "dhaf_etcd_writable", "gauge",
             "1 while etcd accepts this node's writes (no alarm, no run of refused writes).");
        fprintf(f, "dhaf_etcd_writable %d\n", e->writable ? 1 : 0);
        if (e->db_size > 0) {
            help(f, "dhaf_etcd_db_size_bytes", "gauge",
                 "Size of etcd's database file (what --quota-backend-bytes limits), as the "
                 "member last asked reported it.");
            fprintf(f, "dhaf_etcd_db_size_bytes %lld\n", (long long)e->db_size);
            help(f, "dhaf_etcd_db_size_in_use_bytes", "gauge",
                 "Bytes in use in etcd's database file (a defragmentation frees the rest).");
            fprintf(f, "dhaf_etcd_db_size_in_use_bytes %lld\n", (long long)e->db_size_in_use);
        }
    }
    help(f, "dhaf_etcd_compactions_total", "counter",
         "Compactions of etcd's history this node made as the leader.");
    fprintf(f, "dhaf_etcd_compactions_total %llu\n", (unsigned long long)atomic_load(&compactions));
    help(f, "dhaf_etcd_compacted_revision", "gauge",
         "The revision this node last compacted etcd at (0: none yet).");
    fprintf(f, "dhaf_etcd_compacted_revision %lld\n", (long long)atomic_load(&compacted_at));
}

char *metrics_render(const struct metrics_view *v)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) {
        fprintf(stderr, "dhaf: out of memory (metrics)\n");
        abort();
    }
    help(f, "dhaf_up", "gauge", "1 while the node process runs.");
    fputs("dhaf_up 1\n", f);
    help(f, "dhaf_build_info", "gauge", "Version of this node.");
    fputs("dhaf_build_info{version=\"", f);
    put_label(f, DHAF_VERSION);
    fputs("\",commit=\"", f);
    put_label(f, DHAF_GIT_COMMIT);
    fputs("\"} 1\n", f);
    help(f, "dhaf_leader", "gauge", "1 while this node is the leader.");
    fprintf(f, "dhaf_leader %d\n", v->leader ? 1 : 0);
    help(f, "dhaf_etcd_reachable", "gauge",
         "1 while the node's view of etcd is in sync (etcd heard from recently).");
    fprintf(f, "dhaf_etcd_reachable %d\n", v->view_synced ? 1 : 0);
    help(f, "dhaf_view_age_seconds", "gauge", "Time since etcd was last heard from.");
    fprintf(f, "dhaf_view_age_seconds %.3f\n", (double)v->view_age_ms / 1000.0);
    if (v->cluster) {
        help(f, "dhaf_epoch", "gauge", "Fencing epoch: create revision of the leader key.");
        fprintf(f, "dhaf_epoch %lld\n", (long long)v->cluster->epoch);
        help(f, "dhaf_nodes", "gauge", "Nodes of the cluster, by health.");
        size_t up = 0;
        for (size_t i = 0; i < v->cluster->n_nodes; i++)
            up += v->cluster->nodes[i]->healthy ? 1 : 0;
        fprintf(f, "dhaf_nodes{healthy=\"true\"} %zu\n", up);
        fprintf(f, "dhaf_nodes{healthy=\"false\"} %zu\n", v->cluster->n_nodes - up);
    }
    if (v->ls)
        render_eps(f, v->ls);
    render_switches(f, v->ls);
    render_latency(f);
    render_rounds(f);
    help(f, "dhaf_etcd_errors_total", "counter",
         "etcd calls that failed on every endpoint (this process).");
    fprintf(f, "dhaf_etcd_errors_total %llu\n", (unsigned long long)v->etcd_errors);
    render_etcd(f, v->etcd);
    fclose(f);
    return buf;
}
