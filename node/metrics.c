/* SPDX-License-Identifier: MIT */
/* /metrics: process counters and the Prometheus text format (exposition format 0.0.4).
 * Per-entry-point series come from the ServiceStatus messages of the node's view (the same
 * on every node); the counters (switches, failed switch calls, notifier outcomes), the prober
 * report ages and the process series (/proc) are this process's own. */
#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/config.h"
#include "dhaf/hash.h"
#include "dhaf/valid.h"
#include "etcdmon.h"
#include "metrics.h"

/* ------------------------------------------------------------------ named series */

/* Tables of series keyed by one name - a service (switches by kind, failed switch calls), a
 * notifier (outcomes), a prober (when its last report was accepted) - grown on demand up to
 * a cap that bounds what a scrape can return: the names come from the config, so a valid one
 * never reaches it (1,000 services is the design's target). A hash index keeps a look-up
 * O(1): every scrape registers every configured service. */
#define MAX_NAMED_SERIES 4096
#define NAMED_SLOTS      8192 /* a power of two, twice the cap: probe chains stay short */

static const char *const switch_kinds[] = {"failover", "switchover", "switching"};
#define N_KINDS (sizeof(switch_kinds) / sizeof(switch_kinds[0]))

/* A service's counters: switches by kind (switch_kinds), then failed switch calls; a
 * notifier's: by enum metrics_notify_outcome. type: the switcher's or notifier's type. */
#define N_COUNTS  4
#define SW_FAILED N_KINDS
_Static_assert(N_KINDS + 1 <= N_COUNTS && METRICS_NOTIFY_INIT_FAILED < N_COUNTS,
               "struct named holds every count");
struct named {
    char name[DHAF_NAME_MAX + 1], type[DHAF_NAME_MAX + 1];
    uint64_t n[N_COUNTS];
    int64_t at_ms; /* probers: when the last report was accepted */
};

struct named_table {
    pthread_mutex_t lock;
    struct named *v;
    size_t n, cap;
    uint16_t slot[NAMED_SLOTS]; /* index in v + 1; 0: empty */
};

/* One mutex per table: switches, failures and reports are rare next to a lock's cost. */
static struct named_table services = {.lock = PTHREAD_MUTEX_INITIALIZER};
static struct named_table notifiers = {.lock = PTHREAD_MUTEX_INITIALIZER};
static struct named_table prober_reports = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The entry of name in t, added when missing; NULL when t is full or name too long (never
 * cut: a cut name would be another series). type (may be NULL) replaces the entry's type.
 * Called with t->lock held. */
static struct named *named_get(struct named_table *t, const char *name, const char *type)
{
    if (strlen(name) > DHAF_NAME_MAX || (type && strlen(type) > DHAF_NAME_MAX))
        return NULL;
    struct named *e = NULL;
    size_t i = dhaf_fnv1a_str(DHAF_FNV_OFFSET, name) & (NAMED_SLOTS - 1);
    for (; t->slot[i] && !e; i = (i + 1) & (NAMED_SLOTS - 1))
        if (strcmp(t->v[t->slot[i] - 1].name, name) == 0)
            e = &t->v[t->slot[i] - 1];
    if (!e) {
        if (t->n == MAX_NAMED_SERIES)
            return NULL;
        if (t->n == t->cap) {
            t->cap = t->cap ? t->cap * 2 : 16;
            t->v = dhaf_xreallocarray(t->v, t->cap, sizeof(*t->v));
        }
        t->slot[i] = (uint16_t)(t->n + 1);
        e = &t->v[t->n++];
        memset(e, 0, sizeof(*e));
        snprintf(e->name, sizeof(e->name), "%s", name);
    }
    if (type && strcmp(e->type, type) != 0)
        snprintf(e->type, sizeof(e->type), "%s", type);
    return e;
}

void metrics_switch(const char *service, const char *kind)
{
    size_t k = 0;
    while (kind && k < N_KINDS && strcmp(switch_kinds[k], kind) != 0)
        k++;
    if (!service || k == N_KINDS)
        return;
    pthread_mutex_lock(&services.lock);
    struct named *e = named_get(&services, service, NULL);
    if (e)
        e->n[k]++;
    pthread_mutex_unlock(&services.lock);
}

void metrics_switch_failed(const char *service, const char *type)
{
    if (!service || !type)
        return;
    pthread_mutex_lock(&services.lock);
    struct named *e = named_get(&services, service, type);
    if (e)
        e->n[SW_FAILED]++;
    pthread_mutex_unlock(&services.lock);
}

void metrics_notify(const char *name, const char *type, enum metrics_notify_outcome outcome)
{
    if (!name || !type || (int)outcome < 0 || (int)outcome >= N_COUNTS)
        return;
    pthread_mutex_lock(&notifiers.lock);
    struct named *e = named_get(&notifiers, name, type);
    if (e)
        e->n[outcome]++;
    pthread_mutex_unlock(&notifiers.lock);
}

void metrics_prober_report(const char *name)
{
    if (!name)
        return;
    int64_t now = dhaf_mono_ms();
    pthread_mutex_lock(&prober_reports.lock);
    struct named *e = named_get(&prober_reports, name, NULL);
    if (e)
        e->at_ms = now;
    pthread_mutex_unlock(&prober_reports.lock);
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

/* name{<la>="..",<lb>="..",outcome=".."} value: one line of a two-label series. */
static void named_line(FILE *f, const char *name, const char *la, const char *a, const char *lb,
                       const char *b, const char *outcome, unsigned long long value)
{
    fprintf(f, "%s{%s=\"", name, la);
    put_label(f, a);
    fprintf(f, "\",%s=\"", lb);
    put_label(f, b);
    if (outcome)
        fprintf(f, "\",outcome=\"%s", outcome);
    fprintf(f, "\"} %llu\n", value);
}

static void render_switches(FILE *f, const Dhaf__V1__ListServicesResponse *ls)
{
    help(f, "dhaf_switches_total", "counter",
         "Switches this node carried out as the leader, by service and kind.");
    pthread_mutex_lock(&services.lock);
    /* every configured service with every kind, so the series exist from the start; and what
     * was counted for services no longer listed (removed by a reload) */
    for (size_t i = 0; ls && i < ls->n_services; i++)
        named_get(&services, ls->services[i]->name, NULL);
    for (size_t i = 0; i < services.n; i++)
        for (size_t k = 0; k < N_KINDS; k++)
            named_line(f, "dhaf_switches_total", "service", services.v[i].name, "kind",
                       switch_kinds[k], NULL, (unsigned long long)services.v[i].n[k]);
    pthread_mutex_unlock(&services.lock);
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

/* Failed switch calls: a series for every configured service from the start (0), so that an
 * alert on increase() sees the first failure; one per service, its switcher type beside it. */
static void render_switch_failures(FILE *f, const struct dhaf_config *cfg)
{
    help(f, "dhaf_switch_failures_total", "counter",
         "Calls of the service's switcher that failed to move traffic (this node, as the "
         "leader; calls refused by fencing are not counted).");
    pthread_mutex_lock(&services.lock);
    for (size_t i = 0; cfg && i < cfg->n_services; i++)
        named_get(&services, cfg->services[i].name, cfg->services[i].switcher.type);
    for (size_t i = 0; i < services.n; i++)
        if (services.v[i].type[0]) /* configured, or failed before a reload removed it */
            named_line(f, "dhaf_switch_failures_total", "service", services.v[i].name, "switcher",
                       services.v[i].type, NULL, (unsigned long long)services.v[i].n[SW_FAILED]);
    pthread_mutex_unlock(&services.lock);
}

static void render_notifiers(FILE *f, const struct dhaf_config *cfg)
{
    static const struct {
        enum metrics_notify_outcome o;
        const char *name;
    } failures[] = {{METRICS_NOTIFY_RETRY, "retry"},
                    {METRICS_NOTIFY_GIVEN_UP, "given-up"},
                    {METRICS_NOTIFY_INIT_FAILED, "init-failed"}};
    pthread_mutex_lock(&notifiers.lock);
    for (size_t i = 0; cfg && i < cfg->n_notifiers; i++)
        named_get(&notifiers, cfg->notifiers[i].name, cfg->notifiers[i].type);
    help(f, "dhaf_notifications_total", "counter",
         "Events this node delivered to the notifier, as the leader.");
    for (size_t i = 0; i < notifiers.n; i++)
        named_line(f, "dhaf_notifications_total", "notifier", notifiers.v[i].name, "type",
                   notifiers.v[i].type, NULL,
                   (unsigned long long)notifiers.v[i].n[METRICS_NOTIFY_SENT]);
    help(f, "dhaf_notification_failures_total", "counter",
         "Failed notifier attempts on this node: a delivery tried again (retry), a delivery "
         "given up (given-up), a notifier that could not start (init-failed).");
    for (size_t i = 0; i < notifiers.n; i++)
        for (size_t k = 0; k < sizeof(failures) / sizeof(failures[0]); k++)
            named_line(f, "dhaf_notification_failures_total", "notifier", notifiers.v[i].name,
                       "type", notifiers.v[i].type, failures[k].name,
                       (unsigned long long)notifiers.v[i].n[failures[k].o]);
    pthread_mutex_unlock(&notifiers.lock);
}

static bool configured_prober(const struct dhaf_config *cfg, const char *name)
{
    for (size_t i = 0; cfg && i < cfg->n_probers; i++)
        if (strcmp(cfg->probers[i].name, name) == 0)
            return true;
    return !cfg;
}

/* Remote probers: whether their vote is fresh (the view: the same on every node) and how long
 * ago this node accepted their last report (only probers that reported here since it started:
 * the smallest age over the nodes is the prober's). */
static void render_probers(FILE *f, const struct metrics_view *v)
{
    if (v->cluster && v->cluster->n_probers) {
        help(f, "dhaf_prober_up", "gauge",
             "1 while the remote prober's vote is fresh (it reported to some node within its "
             "vote lease, 3 tacts).");
        for (size_t i = 0; i < v->cluster->n_probers; i++) {
            fputs("dhaf_prober_up{prober=\"", f);
            put_label(f, v->cluster->probers[i]->name);
            fprintf(f, "\"} %d\n", v->cluster->probers[i]->healthy ? 1 : 0);
        }
    }
    int64_t now = dhaf_mono_ms();
    pthread_mutex_lock(&prober_reports.lock);
    bool first = true;
    for (size_t i = 0; i < prober_reports.n; i++) {
        const struct named *e = &prober_reports.v[i];
        if (!configured_prober(v->cfg, e->name))
            continue;
        if (first)
            help(f, "dhaf_prober_report_age_seconds", "gauge",
                 "Seconds since this node last accepted a report of the remote prober (only "
                 "probers that reported to this node since it started).");
        first = false;
        fputs("dhaf_prober_report_age_seconds{prober=\"", f);
        put_label(f, e->name);
        fprintf(f, "\"} %.3f\n", (double)(now - e->at_ms) / 1000.0);
    }
    pthread_mutex_unlock(&prober_reports.lock);
}

/* The quorum over all services in one set of series (per-service series would be 1,000 more
 * at the design's scale): the fewest fresh voters any service has, the most any needs. */
static void render_quorum(FILE *f, const Dhaf__V1__ListServicesResponse *ls)
{
    if (!ls || !ls->n_services)
        return;
    uint32_t fresh = UINT32_MAX, needed = 0, expected = 0, impaired = 0;
    size_t without = 0;
    for (size_t i = 0; i < ls->n_services; i++) {
        const Dhaf__V1__ServiceStatus *ss = ls->services[i];
        fresh = ss->voters_fresh < fresh ? ss->voters_fresh : fresh;
        needed = ss->voters_needed > needed ? ss->voters_needed : needed;
        expected = ss->voters_expected > expected ? ss->voters_expected : expected;
        impaired = ss->voters_impaired > impaired ? ss->voters_impaired : impaired;
        without += ss->voters_fresh < ss->voters_needed ? 1 : 0;
    }
    help(f, "dhaf_voters_fresh", "gauge",
         "Fresh voters (not impaired) with a vote on a service: the fewest over the services.");
    fprintf(f, "dhaf_voters_fresh %u\n", fresh);
    help(f, "dhaf_voters_needed", "gauge",
         "Fresh voters a decision needs (dhaf.min-voters, else a strict majority of the "
         "expected): the most over the services.");
    fprintf(f, "dhaf_voters_needed %u\n", needed);
    help(f, "dhaf_voters_expected", "gauge",
         "Voters expected: configured probers and member nodes that probe.");
    fprintf(f, "dhaf_voters_expected %u\n", expected);
    help(f, "dhaf_voters_impaired", "gauge",
         "Fresh voters whose vantage is impaired (they count for nothing): the most over the "
         "services.");
    fprintf(f, "dhaf_voters_impaired %u\n", impaired);
    help(f, "dhaf_services_without_quorum", "gauge",
         "Services with fewer fresh voters than a decision needs: nothing is switched for them.");
    fprintf(f, "dhaf_services_without_quorum %zu\n", without);
}

/* The process's own resources, with the names Prometheus' client libraries use, read from
 * /proc (nothing is written when it cannot be read). */
static void render_process(FILE *f)
{
    char buf[1024];
    FILE *st = fopen("/proc/self/stat", "r");
    size_t n = st ? fread(buf, 1, sizeof(buf) - 1, st) : 0;
    if (st)
        fclose(st);
    buf[n] = '\0';
    /* the fields after the command name, which is in parentheses and may hold anything */
    const char *p = strrchr(buf, ')');
    unsigned long long utime, stime, start, vsize;
    long long rss, threads;
    if (p && sscanf(p + 1,
                    " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d "
                    "%lld %*d %llu %llu %lld",
                    &utime, &stime, &threads, &start, &vsize, &rss) == 6) {
        long tck = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
        tck = tck > 0 ? tck : 100;
        help(f, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
        fprintf(f, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)tck);
        help(f, "process_resident_memory_bytes", "gauge", "Resident memory size.");
        fprintf(f, "process_resident_memory_bytes %lld\n", rss * (page > 0 ? page : 4096));
        help(f, "process_virtual_memory_bytes", "gauge", "Virtual memory size.");
        fprintf(f, "process_virtual_memory_bytes %llu\n", vsize);
        help(f, "dhaf_threads", "gauge", "Threads of the node process.");
        fprintf(f, "dhaf_threads %lld\n", threads);
        /* the start, in seconds since the epoch: boot time (/proc/stat) + start after boot */
        FILE *ps = fopen("/proc/stat", "r");
        char line[256];
        unsigned long long btime = 0;
        while (ps && fgets(line, sizeof(line), ps))
            if (sscanf(line, "btime %llu", &btime) == 1)
                break;
        if (ps)
            fclose(ps);
        if (btime) {
            help(f, "process_start_time_seconds", "gauge",
                 "Start time of the process since the Unix epoch in seconds.");
            fprintf(f, "process_start_time_seconds %.2f\n",
                    (double)btime + (double)start / (double)tck);
        }
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long fds = -1; /* not the one opendir holds */
        for (struct dirent *e; (e = readdir(d));)
            fds += e->d_name[0] != '.';
        closedir(d);
        help(f, "process_open_fds", "gauge", "Number of open file descriptors.");
        fprintf(f, "process_open_fds %ld\n", fds);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
        help(f, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        fprintf(f, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}

/* Whether the alive nodes run the same config (docs/cluster.md): the gauge for alerts, and
 * one series per alive node that publishes a hash, 1 for those that differ. */
static void render_config_drift(FILE *f, const Dhaf__V1__ClusterStatus *cs)
{
    help(f, "dhaf_config_drift", "gauge",
         "1 while the alive nodes' config hashes differ (dhafctl status-dhaf says which).");
    fprintf(f, "dhaf_config_drift %d\n", cs->config && cs->config->drift ? 1 : 0);
    help(f, "dhaf_node_config_differs", "gauge",
         "1 for an alive node whose config hash is not the one most nodes have.");
    for (size_t i = 0; i < cs->n_nodes; i++) {
        const Dhaf__V1__NodeStatus *n = cs->nodes[i];
        if (!n->healthy || !n->config_hash || !n->config_hash[0])
            continue;
        fputs("dhaf_node_config_differs{node=\"", f);
        put_label(f, n->name);
        fputs("\",hash=\"", f);
        put_label(f, n->config_hash);
        fprintf(f, "\"} %d\n", n->config_differs ? 1 : 0);
    }
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
        render_config_drift(f, v->cluster);
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
    render_switch_failures(f, v->cfg);
    render_notifiers(f, v->cfg);
    render_probers(f, v);
    render_quorum(f, v->ls);
    render_process(f);
    fclose(f);
    return buf;
}
