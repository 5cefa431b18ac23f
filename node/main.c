/* SPDX-License-Identifier: MIT */
/* dhaf-node: the cluster node (membership, election, and the leader's duties). */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api.h"
#include "cluster.h"
#include "leader.h"
#include "notify.h"
#include "probing.h"
#include "rest.h"
#include "dhaf/alloc.h"
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
    int rc = dhaf_config_load(path, dhaf_registry_catalog(), cfg, &rep);
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

static struct dhaf_etcd *etcd_from(const struct dhaf_config *cfg, struct dhaf_err *err)
{
    struct dhaf_etcd_opts o = {
        .endpoints = (const char *const *)cfg->etcd.hosts,
        .n_endpoints = cfg->etcd.n_hosts,
        .tls = cfg->etcd.tls,
        .ca_file = cfg->etcd.client_tls.ca_file,
        .cert_file = cfg->etcd.client_tls.cert_file,
        .key_file = cfg->etcd.client_tls.key_file,
        .username = cfg->etcd.username,
        .password = cfg->etcd.password,
    };
    return dhaf_etcd_new(&o, err);
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
    struct cluster *c;
    struct probing *probing;
    struct api *api;
    struct leader *leader;
    struct rest *rest;
    struct notify *notify;
};

/* SIGHUP: validate the file, then switch every part to it. The parts keep pointers into the
 * config, so the new one lives on the heap and the old one is freed only after the switch. */
static void reload(const char *path, struct dhaf_config **cur, struct parts *pt,
                   const struct log_override *lo)
{
    struct dhaf_config *fresh = dhaf_xcalloc(1, sizeof(*fresh));
    if (load_config(path, fresh, true) != 0) {
        DHAF_LOG(DHAF_LOG_ERROR,
                 "event=reload-rejected file=%s reason=\"invalid configuration; "
                 "the running one is kept (config-error lines above)\"",
                 path);
        free(fresh);
        return;
    }
    const char *why = NULL;
    struct dhaf_err err;
    char q[400];
    if (!same_identity(*cur, fresh))
        why = "cluster-name, node-name and etcd.hosts change only with a restart; the running "
              "configuration is kept";
    else if (probing_reload(pt->probing, fresh, &err) != 0)
        why = dhaf_log_quote(q, sizeof(q), err.msg);
    if (why) {
        DHAF_LOG(DHAF_LOG_ERROR, "event=reload-rejected file=%s reason=\"%s\"", path, why);
        dhaf_config_release(fresh);
        free(fresh);
        return;
    }
    apply_log(fresh, lo);
    cluster_reload(pt->c, fresh);
    api_reload(pt->api, fresh);
    rest_reload(pt->rest, fresh);
    leader_reload(pt->leader, fresh);
    notify_reload(pt->notify, fresh);
    dhaf_config_release(*cur);
    free(*cur);
    *cur = fresh;
    DHAF_LOG(DHAF_LOG_INFO, "event=reloaded file=%s", path);
}

/* --decommission, --switchover, --purge-switchover: one library call against the cluster's
 * etcd (what dhafctl will do through the API). Exit 0 done, 1 refused or failed. */
static int one_shot(const struct dhaf_config *cfg, const char *decommission, const char *switchover,
                    const char *purge, const struct log_override *lo)
{
    apply_log(cfg, lo);
    struct dhaf_err err;
    struct dhaf_etcd *etcd = etcd_from(cfg, &err);
    if (!etcd) {
        fprintf(stderr, "dhaf-node: %s\n", err.msg);
        return 1;
    }
    struct cluster *c = cluster_new(cfg, etcd);
    int rc;
    if (decommission) {
        rc = cluster_decommission(c, decommission, &err);
        if (rc == 0)
            printf("OK. The dhaf node %s has been decommissioned.\n", decommission);
    } else if (switchover) {
        char svc[128];
        const char *colon = strchr(switchover, ':');
        snprintf(svc, sizeof(svc), "%.*s", colon ? (int)(colon - switchover) : 0, switchover);
        if (!colon)
            rc = dhaf_err_set(&err, DHAF_EINVAL, "--switchover takes SERVICE:ENTRY-POINT");
        else
            rc = leader_request_switchover(c, cfg, svc, colon + 1, cfg->node_name, &err);
        if (rc == 0)
            printf("OK. A switchover of %s to %s has been requested.\n", svc, colon + 1);
    } else {
        char was[80];
        rc = leader_purge_switchover(c, cfg, purge, was, sizeof(was), &err);
        if (rc == 0)
            printf("OK. The switchover requirement of %s has been purged%s%s.\n", purge,
                   was[0] ? " (it was " : "", was[0] ? was : "");
        if (rc == 0 && was[0])
            printf(")\n");
    }
    if (rc != 0)
        fprintf(stderr, "dhaf-node: refused: %s\n", err.msg);
    cluster_free(c);
    dhaf_etcd_free(etcd);
    return rc == 0 ? 0 : 1;
}

/* Runs the node until SIGTERM/SIGINT. Returns the exit code. */
static int run(const char *path, struct dhaf_config *initial, const struct log_override *lo)
{
    /* The running config lives on the heap: reload() replaces it. The caller's struct is
     * emptied (its release is then a no-op). */
    struct dhaf_config *cfg = dhaf_xcalloc(1, sizeof(*cfg));
    *cfg = *initial;
    memset(initial, 0, sizeof(*initial));
    apply_log(cfg, lo);
    /* Signals are taken synchronously by this thread; every other thread blocks them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);

    struct dhaf_err err;
    struct dhaf_etcd *etcd = etcd_from(cfg, &err);
    if (!etcd) {
        char q[400];
        DHAF_LOG(DHAF_LOG_ERROR, "event=start-failed reason=\"%s\"",
                 dhaf_log_quote(q, sizeof(q), err.msg));
        dhaf_config_release(cfg);
        free(cfg);
        return 1;
    }
    DHAF_LOG(DHAF_LOG_INFO, "event=node-start node=%s cluster=%s version=%s etcd=%s pid=%d",
             cfg->node_name, cfg->cluster_name, DHAF_VERSION, cfg->etcd.hosts[0], (int)getpid());
    struct parts pt = {cluster_new(cfg, etcd), NULL, NULL, NULL, NULL, NULL};
    struct cluster *c = pt.c;
    char q[400];
    if (!(pt.api = api_start(c, cfg, &err))) {
        DHAF_LOG(DHAF_LOG_ERROR, "event=start-failed reason=\"gRPC API: %s\"",
                 dhaf_log_quote(q, sizeof(q), err.msg));
        cluster_free(c);
        dhaf_etcd_free(etcd);
        dhaf_config_release(cfg);
        free(cfg);
        return 1;
    }
    if (!(pt.rest = rest_start(c, cfg, &err))) {
        DHAF_LOG(DHAF_LOG_ERROR, "event=start-failed reason=\"REST API: %s\"",
                 dhaf_log_quote(q, sizeof(q), err.msg));
        api_stop(pt.api);
        cluster_free(c);
        dhaf_etcd_free(etcd);
        dhaf_config_release(cfg);
        free(cfg);
        return 1;
    }
    if (cluster_start(c, &err) != 0 || !(pt.probing = probing_start(c, cfg, &err)) ||
        !(pt.leader = leader_start(c, pt.probing, cfg, &err)) ||
        !(pt.notify = notify_start(c, cfg, &err))) {
        DHAF_LOG(DHAF_LOG_ERROR, "event=start-failed reason=\"%s\"",
                 dhaf_log_quote(q, sizeof(q), err.msg));
        cluster_stop(c, 1000);
        return 1;
    }
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            reload(path, &cfg, &pt, lo);
            continue;
        }
        DHAF_LOG(DHAF_LOG_INFO, "event=node-stopping node=%s signal=%s", cfg->node_name,
                 sig == SIGTERM ? "TERM" : "INT");
        break;
    }
    /* A thread stuck on an unreachable etcd may still use the client: then it is left to
     * the process exit rather than freed under it. */
    bool clean = cluster_stop(c, 1200);
    api_stop(pt.api);
    rest_stop(pt.rest);
    clean = leader_stop(pt.leader, 300) && clean;
    clean = notify_stop(pt.notify, 300) && clean;
    clean = probing_stop(pt.probing, 300) && clean;
    if (clean) {
        cluster_free(c);
        dhaf_etcd_free(etcd);
    }
    DHAF_LOG(DHAF_LOG_INFO, "event=node-stopped node=%s", cfg->node_name);
    if (clean) {
        dhaf_config_release(cfg);
        free(cfg);
    }
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
        OPT_PURGE
    };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"check-config", no_argument, NULL, OPT_CHECK},
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
    bool check_only = false;
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
