/* SPDX-License-Identifier: MIT */
/* dhaf-node: wires the parts (view, cluster with its duties, prober, APIs) around one config
 * snapshot holder, reloads on SIGHUP and stops within a bounded time on SIGTERM. */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cfgdrift.h"
#include "cluster.h"
#include "compactor.h"
#include "etcdmon.h"
#include "healthcheck.h"
#include "leader.h"
#include "members.h"
#include "notify.h"
#include "outbox.h"
#include "probing.h"
#include "rest.h"
#include "snap.h"
#include "store.h"
#include "view.h"
#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/config.h"
#include "dhaf/etcd.h"
#include "dhaf/log.h"
#include "dhaf/plugins.h"
#include "dhaf/registry.h"

static void usage(FILE *out)
{
    fprintf(out, "usage: dhaf-node --config FILE [--check-config] [--log-level LEVEL]\n"
                 "                 [--log-format text|json]\n"
                 "\n"
                 "  -c, --config FILE      the cluster config (YAML, the original dhaf format)\n"
                 "      --check-config     validate FILE, print OK or every error, and exit\n"
                 "                         (exit 0 valid, 2 invalid)\n"
                 "      --healthcheck      ask the running node of FILE for /healthz on its REST\n"
                 "                         port, on loopback (container HEALTHCHECK, exec probes;\n"
                 "                         exit 0 healthy, 1 not)\n"
                 "      --log-level LEVEL  debug, info, warn or error (overrides log.level)\n"
                 "      --log-format FMT   text or json (overrides log.format)\n"
                 "      --config-reference print every config parameter as Markdown and exit\n"
                 "      --decommission NODE  remove NODE (which must be down) from the cluster in\n"
                 "                         etcd, then exit (0 done, 1 refused or failed)\n"
                 "      --switchover SERVICE:ENTRY-POINT  pin SERVICE to ENTRY-POINT (as\n"
                 "                         `dhafctl switchover`), then exit\n"
                 "      --purge-switchover SERVICE  remove SERVICE's pin, then exit\n"
                 "  -h, --help             this help\n"
                 "  -V, --version          print the version\n");
}

struct log_override {
    bool level_set;
    enum dhaf_log_level level;
    bool format_set;
    enum dhaf_log_format format;
};

static void apply_log(const struct dhaf_config *cfg, const struct log_override *lo)
{
    dhaf_log_setup(lo->level_set ? lo->level : (enum dhaf_log_level)cfg->log_level,
                   lo->format_set ? lo->format : (enum dhaf_log_format)cfg->log_format);
}

/* Loads and validates path. Problems go to stderr as compiler-style lines, or, once the node
 * runs (as_log), as log records. Returns 0 or DHAF_ECONFIG. */
static int load_config(const char *path, struct dhaf_config *cfg, bool as_log)
{
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, path);
    int rc = dhaf_config_load(path, notify_catalog(), cfg, &rep);
    if (!as_log) {
        dhaf_cfg_report_print(&rep, stderr);
        if (rc != 0)
            fprintf(stderr, "%s: invalid configuration (%zu error%s)\n", path,
                    rep.n_errs + rep.dropped, rep.n_errs + rep.dropped == 1 ? "" : "s");
    } else {
        char q[600];
        for (size_t i = 0; i < rep.n_warns; i++)
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=config-warning file=%s line=%d col=%d path=%s msg=\"%s\"", path,
                     rep.warns[i].line, rep.warns[i].col, rep.warns[i].path,
                     dhaf_log_quote(q, sizeof(q), rep.warns[i].msg));
        for (size_t i = 0; i < rep.n_errs; i++)
            DHAF_LOG(DHAF_LOG_ERROR, "event=config-error file=%s line=%d col=%d path=%s msg=\"%s\"",
                     path, rep.errs[i].line, rep.errs[i].col, rep.errs[i].path,
                     dhaf_log_quote(q, sizeof(q), rep.errs[i].msg));
    }
    dhaf_cfg_report_release(&rep);
    return rc;
}

/* Loads the plugins of path's dhaf.extensions-dir (default: extensions/ next to the file)
 * before the config itself, so that the config may use their types. A file that cannot be
 * read loads nothing here: load_config then reports why. Returns 0, or the exit code 2 (the
 * setup is invalid, like a bad config) after printing the refusal to stderr. */
static int load_plugins(const char *path)
{
    /* The very row of the config's key table, so default and path resolution are the same. */
    struct dhaf_cfgkey keys[2] = {DHAF_KEY_END, DHAF_KEY_END};
    for (const struct dhaf_cfgkey *k = dhaf_config_keys; k->key; k++)
        if (strcmp(k->key, "dhaf.extensions-dir") == 0)
            keys[0] = *k;
    struct dhaf_config peek;
    memset(&peek, 0, sizeof(peek));
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, path);
    int rc = dhaf_config_peek_keys(path, keys, &peek, &rep);
    dhaf_cfg_report_release(&rep);
    if (rc != 0 || !peek.extensions_dir)
        return 0;
    struct dhaf_err err;
    rc = dhaf_plugins_load(peek.extensions_dir, &err);
    if (rc != 0)
        fprintf(stderr,
                "dhaf-node: %s\n"
                "dhaf-node: %s: a plugin of dhaf.extensions-dir %s was refused; fix or remove "
                "it (exit code 2)\n",
                err.msg, path, peek.extensions_dir);
    dhaf_cfgkeys_release(keys, &peek);
    return rc != 0 ? 2 : 0;
}

/* What SIGHUP may change without a restart; the rest is kept, with a warning. */
static bool same_identity(const struct dhaf_config *a, const struct dhaf_config *b)
{
    if (strcmp(a->cluster_name, b->cluster_name) || strcmp(a->node_name, b->node_name) ||
        a->etcd.n_hosts != b->etcd.n_hosts)
        return false;
    for (size_t i = 0; i < a->etcd.n_hosts; i++)
        if (strcmp(a->etcd.hosts[i], b->etcd.hosts[i]))
            return false;
    return true;
}

struct parts {
    struct snap_holder *snaps;
    struct dhaf_etcd *etcd;
    struct store store;
    struct view *view;
    struct etcdmon *etcdmon;
    struct cluster *c;
    struct probing *probing;
    struct api *api;
    struct rest *rest;
};

/* SIGHUP: validate the file, prepare what can fail (the checkers), then publish the new
 * snapshot and tell the parts. Nothing waits for work in progress: it finishes with the
 * snapshot it started with. Leadership is not touched: the term goes on. */
static void reload(const char *path, struct parts *pt, const struct log_override *lo)
{
    struct dhaf_config fresh;
    if (load_config(path, &fresh, true) != 0) {
        DHAF_LOG(DHAF_LOG_ERROR,
                 "event=reload-rejected file=%s reason=\"invalid configuration; "
                 "the running one is kept (config-error lines above)\"",
                 path);
        return;
    }
    const char *why = NULL;
    struct dhaf_err err;
    char q[400];
    struct dhaf_probe *engine = NULL;
    struct snap *cur = snap_get(pt->snaps);
    if (!same_identity(&cur->cfg, &fresh))
        why = "cluster-name, node-name and etcd.hosts change only with a restart; the running "
              "configuration is kept";
    else if (probing_prepare(&fresh, &engine, &err) != 0)
        why = dhaf_log_quote(q, sizeof(q), err.msg);
    snap_put(cur);
    if (why) {
        DHAF_LOG(DHAF_LOG_ERROR, "event=reload-rejected file=%s reason=\"%s\"", path, why);
        dhaf_config_release(&fresh);
        return;
    }
    apply_log(&fresh, lo);
    uint64_t gen = snap_publish(pt->snaps, &fresh); /* engine points into its heap parts */
    probing_switch(pt->probing, engine, snap_get(pt->snaps));
    cluster_reload(pt->c);
    api_reload(pt->api);
    rest_reload(pt->rest);
    DHAF_LOG(DHAF_LOG_INFO, "event=reloaded file=%s generation=%llu", path,
             (unsigned long long)gen);
}

/* The view: etcd heard from at least every second; stale after three silent seconds. */
static struct view *view_for(const struct dhaf_config *cfg, struct store st)
{
    char prefix[160];
    snprintf(prefix, sizeof(prefix), "/dhaf/%s/", cfg->cluster_name);
    struct view_opts vo = {.store = st,
                           .clock = &dhaf_clock_system,
                           .prefix = prefix,
                           .progress_ms = 1000,
                           .stale_ms = 3000};
    return view_new(&vo);
}

/* --decommission, --switchover, --purge-switchover: one library call against the cluster's
 * etcd (what dhafctl does through the API). Exit 0 done, 1 refused or failed. */
static int one_shot(struct dhaf_config *cfg, const char *decommission, const char *switchover,
                    const char *purge, const struct log_override *lo)
{
    apply_log(cfg, lo);
    struct dhaf_err err;
    struct dhaf_etcd *etcd = store_etcd_client(cfg, &err);
    if (!etcd) {
        fprintf(stderr, "dhaf-node: %s\n", err.msg);
        return 1;
    }
    struct snap_holder *snaps = snap_holder_new(cfg);
    struct snap *s = snap_get(snaps);
    struct cluster_opts co = {
        .store = store_etcd(etcd), .clock = &dhaf_clock_system, .snaps = snaps};
    struct cluster *c = cluster_new(&co);
    /* the audit trail's caller: someone on this host with the node's config and etcd access */
    char who[64];
    snprintf(who, sizeof(who), "cli:uid-%u", (unsigned)getuid());
    struct event_actor actor = {.name = who, .role = "admin", .peer = "local"};
    int rc;
    if (decommission) {
        rc = cluster_decommission(c, decommission, &actor, &err);
        if (rc == 0)
            printf("OK. The dhaf node %s has been decommissioned.\n", decommission);
    } else if (switchover) {
        char svc[128];
        const char *colon = strchr(switchover, ':');
        snprintf(svc, sizeof(svc), "%.*s", colon ? (int)(colon - switchover) : 0, switchover);
        if (!colon)
            rc = dhaf_err_set(&err, DHAF_EINVAL, "--switchover takes SERVICE:ENTRY-POINT");
        else
            rc = leader_request_switchover(c, &s->cfg, svc, colon + 1, &actor, &err);
        if (rc == 0)
            printf("OK. A switchover of %s to %s has been requested.\n", svc, colon + 1);
    } else {
        char was[80];
        rc = leader_purge_switchover(c, &s->cfg, purge, &actor, was, sizeof(was), &err);
        if (rc == 0)
            printf("OK. The switchover requirement of %s has been purged%s%s.\n", purge,
                   was[0] ? " (it was " : "", was[0] ? was : "");
        if (rc == 0 && was[0])
            printf(")\n");
    }
    if (rc != 0)
        fprintf(stderr, "dhaf-node: refused: %s\n", err.msg);
    cluster_free(c);
    snap_put(s);
    snap_holder_free(snaps);
    dhaf_etcd_free(etcd);
    return rc == 0 ? 0 : 1;
}

/* Stops everything within STOP_BUDGET_MS whatever etcd does: every part is bounded, and a part
 * still stuck in a call is left to the process exit instead of being freed under it. */
#define STOP_BUDGET_MS 1500

static bool stop_all(struct parts *pt)
{
    int64_t t0 = dhaf_mono_ms(), end = t0 + STOP_BUDGET_MS;
    int64_t at[5];
#define LEFT() ((int)(end - dhaf_mono_ms() > 50 ? end - dhaf_mono_ms() : 50))
    view_quit(pt->view); /* its thread ends with its current wait, alongside the rest */
    bool clean = cluster_stop(pt->c, LEFT() * 2 / 3);
    at[0] = dhaf_mono_ms();
    clean = probing_stop(pt->probing, 400) && clean;
    at[1] = dhaf_mono_ms();
    clean = api_stop(pt->api, LEFT() / 2) && clean;
    at[2] = dhaf_mono_ms();
    clean = rest_stop(pt->rest, LEFT() / 2) && clean;
    at[3] = dhaf_mono_ms();
    clean = view_stop(pt->view, LEFT()) && clean;
    clean = etcdmon_stop(pt->etcdmon, LEFT()) && clean;
    at[4] = dhaf_mono_ms();
#undef LEFT
    DHAF_LOG(DHAF_LOG_DEBUG,
             "event=stop-times cluster_ms=%lld prober_ms=%lld grpc_ms=%lld rest_ms=%lld "
             "view_ms=%lld",
             (long long)(at[0] - t0), (long long)(at[1] - at[0]), (long long)(at[2] - at[1]),
             (long long)(at[3] - at[2]), (long long)(at[4] - at[3]));
    return clean;
}

/* Frees what stop_all stopped (only when it stopped everything: a part still in a call may use
 * the rest until the process exits). */
static void free_all(struct parts *pt)
{
    cluster_free(pt->c);
    etcdmon_free(pt->etcdmon);
    view_free(pt->view);
    snap_holder_free(pt->snaps);
    dhaf_etcd_free(pt->etcd);
}

/* Ends the process when a part is still in a call: what it uses stays allocated until the
 * process is gone, so the exit skips the atexit work (the leak report of a sanitizer build would
 * list every part as lost) after the logs are flushed. */
static _Noreturn void exit_leaving_parts(int code)
{
    fflush(NULL);
    _exit(code);
}

/* Runs the node until SIGTERM/SIGINT. Returns the exit code. */
static int run(const char *path, struct dhaf_config *initial, const struct log_override *lo)
{
    dhaf_malloc_setup();
    apply_log(initial, lo);
    /* Signals are taken synchronously by this thread; every other thread blocks them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct dhaf_err err;
    char q[400];
    struct parts pt = {0};
    pt.etcd = store_etcd_client(initial, &err);
    if (!pt.etcd) {
        DHAF_LOG(DHAF_LOG_ERROR, "event=start-failed reason=\"%s\"",
                 dhaf_log_quote(q, sizeof(q), err.msg));
        return 1;
    }
    DHAF_LOG(DHAF_LOG_INFO, "event=node-start node=%s cluster=%s version=%s etcd=%s pid=%d",
             initial->node_name, initial->cluster_name, DHAF_VERSION, initial->etcd.hosts[0],
             (int)getpid());
    pt.store = store_etcd(pt.etcd);
    pt.view = view_for(initial, pt.store);
    char prefix[160];
    snprintf(prefix, sizeof(prefix), "/dhaf/%s/", initial->cluster_name);
    struct etcdmon_opts mo = {
        .store = pt.store, .clock = &dhaf_clock_system, .view = pt.view, .prefix = prefix};
    pt.etcdmon = etcdmon_new(&mo);
    pt.store = etcdmon_store(pt.etcdmon); /* every write from here on is observed */
    pt.snaps = snap_holder_new(initial);  /* takes the config */
    struct cluster_opts co = {.store = pt.store,
                              .clock = &dhaf_clock_system,
                              .view = pt.view,
                              .snaps = pt.snaps,
                              .etcdmon = pt.etcdmon};
    pt.c = cluster_new(&co);
    struct duty duties[] = {members_duty(pt.c),     leader_duty(pt.c),    notify_duty(pt.c),
                            outbox_trim_duty(pt.c), compactor_duty(pt.c), etcdmon_duty(pt.etcdmon),
                            cfgdrift_duty(pt.c)};
    for (size_t i = 0; i < sizeof(duties) / sizeof(duties[0]); i++)
        cluster_add_duty(pt.c, &duties[i]);
    const char *failed = NULL;
    if (!(pt.api = api_start(pt.c, &err)))
        failed = "gRPC API: ";
    else if (!(pt.rest = rest_start(pt.c, &err)))
        failed = "REST API: ";
    else if (view_start(pt.view, &err) != 0 || etcdmon_start(pt.etcdmon, &err) != 0 ||
             cluster_start(pt.c, &err) != 0 || !(pt.probing = probing_start(pt.c, &err)))
        failed = "";
    if (failed) {
        DHAF_LOG(DHAF_LOG_ERROR, "event=start-failed reason=\"%s%s\"", failed,
                 dhaf_log_quote(q, sizeof(q), err.msg));
        if (!stop_all(&pt))
            exit_leaving_parts(1);
        free_all(&pt);
        return 1;
    }
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            reload(path, &pt, lo);
            continue;
        }
        DHAF_LOG(DHAF_LOG_INFO, "event=node-stopping node=%s signal=%s", cluster_node(pt.c),
                 sig == SIGTERM ? "TERM" : "INT");
        break;
    }
    int64_t t0 = dhaf_mono_ms();
    bool clean = stop_all(&pt);
    DHAF_LOG(DHAF_LOG_INFO, "event=node-stopped node=%s took_ms=%lld%s", cluster_node(pt.c),
             (long long)(dhaf_mono_ms() - t0),
             clean ? "" : " note=\"a part was still in a call; left to the process exit\"");
    if (!clean)
        exit_leaving_parts(0);
    free_all(&pt);
    return 0;
}

/* The generated part of docs/config.md (a test fails when the two drift apart). */
static void write_reference(FILE *out)
{
    dhaf_config_write_reference(out);
    static const char *const kinds[] = {"Switcher", "Health checker", "Notifier"};
    static const char *const prefixes[] = {"services[].switcher.", "services[].health-checker.",
                                           "notifiers[]."};
    for (size_t i = 0; dhaf_registry_at(i); i++) {
        const struct dhaf_provider *p = dhaf_registry_at(i);
        fprintf(out, "\n### %s `%s`\n\n%s\n\n", kinds[p->kind], p->type, p->summary);
        dhaf_cfgkeys_write_reference(out, prefixes[p->kind], p->keys);
    }
}

int main(int argc, char **argv)
{
    enum {
        OPT_CHECK = 256,
        OPT_LEVEL,
        OPT_FORMAT,
        OPT_REFERENCE,
        OPT_DECOMMISSION,
        OPT_SWITCHOVER,
        OPT_PURGE,
        OPT_HEALTHCHECK
    };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK},
        {"healthcheck", no_argument, NULL, OPT_HEALTHCHECK},
        {"log-level", required_argument, NULL, OPT_LEVEL},
        {"log-format", required_argument, NULL, OPT_FORMAT},
        {"config-reference", no_argument, NULL, OPT_REFERENCE},
        {"decommission", required_argument, NULL, OPT_DECOMMISSION},
        {"switchover", required_argument, NULL, OPT_SWITCHOVER},
        {"purge-switchover", required_argument, NULL, OPT_PURGE},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    const char *decommission = NULL, *switchover = NULL, *purge = NULL;
    bool check_only = false, healthcheck = false;
    enum dhaf_log_level level = DHAF_LOG_INFO;
    enum dhaf_log_format format = DHAF_LOG_TEXT;
    bool level_set = false, format_set = false;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case OPT_CHECK:
            check_only = true;
            break;
        case OPT_HEALTHCHECK:
            healthcheck = true;
            break;
        case OPT_LEVEL:
            if (dhaf_log_level_parse(optarg, &level) != 0) {
                fprintf(stderr,
                        "dhaf-node: --log-level: \"%s\" is not debug, info, warn or error\n",
                        optarg);
                return 2;
            }
            level_set = true;
            break;
        case OPT_FORMAT:
            if (dhaf_log_format_parse(optarg, &format) != 0) {
                fprintf(stderr, "dhaf-node: --log-format: \"%s\" is not text or json\n", optarg);
                return 2;
            }
            format_set = true;
            break;
        case OPT_DECOMMISSION:
            decommission = optarg;
            break;
        case OPT_SWITCHOVER:
            switchover = optarg;
            break;
        case OPT_PURGE:
            purge = optarg;
            break;
        case OPT_REFERENCE:
            write_reference(stdout);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("dhaf-node %s (%s)\n", DHAF_VERSION, DHAF_GIT_COMMIT);
            return 0;
        case ':':
            fprintf(stderr, "dhaf-node: %s needs a value\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "dhaf-node: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dhaf-node: unexpected argument \"%s\"\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (!config) {
        fprintf(stderr, "dhaf-node: --config FILE is required\n");
        usage(stderr);
        return 2;
    }

    /* Plugins first: the config may name their types (--check-config too). They stay
     * loaded until exit once the node runs: a thread stuck in a call may still use them. */
    if (load_plugins(config) != 0)
        return 2;
    struct dhaf_config cfg;
    int rc = load_config(config, &cfg, false);
    if (rc != 0) {
        dhaf_plugins_unload();
        return 2;
    }
    if (healthcheck) {
        rc = node_healthcheck(&cfg, 3000, stdout);
        dhaf_config_release(&cfg);
        dhaf_plugins_unload();
        return rc;
    }
    if (check_only) {
        printf("OK\n");
        dhaf_config_release(&cfg);
        dhaf_plugins_unload();
        return 0;
    }
    struct log_override lo = {level_set, level, format_set, format};
    if (decommission || switchover || purge)
        rc = one_shot(&cfg, decommission, switchover, purge, &lo);
    else
        rc = run(config, &cfg, &lo);
    dhaf_config_release(&cfg);
    return rc;
}
