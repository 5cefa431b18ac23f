/* SPDX-License-Identifier: MIT */
/* dhaf-sim: replays a timeline of backend and voter trouble against a dhaf config in virtual
 * time and prints what dhaf's decision code does, beside the original dhaf's rule and a single
 * local checker (docs/simulate.md). Exit codes: 0 ok, 1 the timeline or config is invalid,
 * 2 usage. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/config.h"
#include "dhaf/etcd.h"
#include "dhaf/json.h"
#include "dhaf/registry.h"
#include "sim.h"
#include "store.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: dhaf-sim --config FILE [options] TIMELINE\n"
            "       dhaf-sim record --config FILE [--duration S] [--output FILE]\n"
            "\n"
            "Replays TIMELINE (a file, or - for standard input) in virtual time: backends\n"
            "going down, slow or flaky, voters frozen, cut off from etcd, overloaded or with a\n"
            "broken network. Prints each rule's events and switches, then a summary line per\n"
            "rule:\n"
            "  dhaf      dhaf's own tally and decision code, voters as dhaf's probe engine\n"
            "  original  the original dhaf's rule (a tie is down, stale opinions count)\n"
            "  local     one HAProxy-like checker at the first voter (fall 1, rise 2)\n"
            "\n"
            "options:\n"
            "  -c, --config FILE     the dhaf config: tact, damping, flap and quorum settings,\n"
            "                        the service's entry points and checker timeout/retries\n"
            "  -s, --service NAME    the service to simulate (default: the config's first)\n"
            "  -n, --voters N        voters node-1 .. node-N (default: the timeline's voters\n"
            "                        line, else 3)\n"
            "      --voter NAME      a voter by name (repeat; instead of --voters)\n"
            "      --timeout MS      one check attempt's timeout (default: the checker's)\n"
            "      --retries N       attempts after a failed first (default: the checker's)\n"
            "      --seed N          the random draws' seed (default: the timeline's, else 1)\n"
            "  -q, --quiet           the summary lines only\n"
            "      --votes           also every vote dhaf's leader hears (modelled voters)\n"
            "  -h, --help            this text\n"
            "      --version         dhaf-sim's version\n"
            "\n"
            "timeline lines (times as 1500, 1500ms or 1.5s; # starts a comment):\n"
            "  10s ep ep-1 refused | hung | up | slow MEAN SPREAD | flaky ODDS\n"
            "  12s voter node-2 frozen | thawed | cut | joined | overloaded [GAP LONGEST] | calm\n"
            "  12s voter node-2 net ep-1|all refused | hung | up | slow ... | flaky ...\n"
            "  12s vote node-2 {...vote JSON...} | -   (recorded: replayed, not modelled)\n"
            "  90s end\n"
            "  seed 42\n"
            "  voters node-1 node-2 prober-1   (the voters, unless --voters/--voter)\n"
            "\n"
            "dhaf-sim record watches the cluster's votes in etcd (the config's etcd section)\n"
            "and writes them as a timeline, to replay under another config: run it with\n"
            "--help for its options.\n");
}

/* The checker's timeout (ms) and retries, from its section (keys "timeout" in s, "retries"). */
static void checker_limits(const struct dhaf_service *svc, int *timeout_ms, int *retries)
{
    char *text = dhaf_section_to_json(&svc->checker);
    json_t *j = text ? json_loads(text, 0, NULL) : NULL;
    free(text);
    json_t *t = j ? json_object_get(j, "timeout") : NULL;
    json_t *r = j ? json_object_get(j, "retries") : NULL;
    if (*timeout_ms <= 0)
        *timeout_ms = json_is_integer(t) ? (int)json_integer_value(t) * 1000 : 5000;
    if (*retries < 0)
        *retries = json_is_integer(r) ? (int)json_integer_value(r) : 0;
    if (j)
        json_decref(j);
}

/* Loads and validates path, its report on stderr. */
static int load_config(const char *path, struct dhaf_config *cfg)
{
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, path);
    int rc = dhaf_config_load(path, dhaf_registry_catalog(), cfg, &rep);
    dhaf_cfg_report_print(&rep, stderr);
    dhaf_cfg_report_release(&rep);
    if (rc != 0)
        fprintf(stderr, "dhaf-sim: %s: invalid configuration\n", path);
    return rc;
}

/* ------------------------------------------------------------------ record */

static volatile sig_atomic_t stop_asked;

static void on_stop(int sig)
{
    (void)sig;
    stop_asked = 1;
}

static void record_usage(FILE *out)
{
    fprintf(out,
            "usage: dhaf-sim record --config FILE [--duration S] [--output FILE]\n"
            "\n"
            "Writes the cluster's votes as a timeline for dhaf-sim: a voters line (the member\n"
            "nodes that probe and the configured probers), every vote in etcd now at time 0,\n"
            "then each vote written or gone (its key's lease ended) at its time from the\n"
            "start, and an end line when it stops - after --duration seconds, or on SIGINT or\n"
            "SIGTERM. It only reads etcd.\n"
            "\n"
            "options:\n"
            "  -c, --config FILE     a dhaf config of the cluster (its etcd section and name)\n"
            "  -d, --duration S      stop after S seconds (default: until a signal)\n"
            "  -o, --output FILE     write there (default: standard output)\n"
            "  -h, --help            this text\n");
}

/* "<t> vote <voter> <json>" for one stored vote (re-dumped compact, on one line). */
static void put_vote(FILE *out, int64_t t, const char *voter, const char *value, size_t len)
{
    json_t *j = NULL;
    struct dhaf_err err;
    if (dhaf_json_parse_object(value, len, voter, &j, &err) != 0) {
        fprintf(stderr, "dhaf-sim: record: the vote of %s is not JSON, left out: %s\n", voter,
                err.msg);
        return;
    }
    char *text = dhaf_json_dump(j);
    fprintf(out, "%lld.%03llds vote %s %s\n", (long long)(t / 1000), (long long)(t % 1000), voter,
            text);
    free(text);
    json_decref(j);
}

static int record_main(int argc, char **argv)
{
    static const struct option longs[] = {{"config", required_argument, NULL, 'c'},
                                          {"duration", required_argument, NULL, 'd'},
                                          {"output", required_argument, NULL, 'o'},
                                          {"help", no_argument, NULL, 'h'},
                                          {NULL, 0, NULL, 0}};
    const char *config = NULL, *output = NULL;
    long duration = 0;
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "c:d:o:h", longs, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'd':
            if (sim_option_long("dhaf-sim", "--duration", optarg, 1, 31 * 86400, &duration))
                return 2;
            break;
        case 'o':
            output = optarg;
            break;
        case 'h':
            record_usage(stdout);
            return 0;
        default:
            record_usage(stderr);
            return 2;
        }
    }
    if (!config || optind != argc) {
        fprintf(stderr, "dhaf-sim: record: %s\n",
                !config ? "--config FILE is required" : "no arguments besides the options");
        record_usage(stderr);
        return 2;
    }
    struct dhaf_config cfg;
    if (load_config(config, &cfg) != 0)
        return 1;
    FILE *out = output ? fopen(output, "w") : stdout;
    if (!out) {
        fprintf(stderr, "dhaf-sim: record: %s: %s\n", output, strerror(errno));
        dhaf_config_release(&cfg);
        return 1;
    }
    struct dhaf_err err;
    struct dhaf_etcd *e = store_etcd_client(&cfg, &err);
    struct dhaf_etcd_watch *w = NULL;
    int rc = e ? 0 : 1;
    char members[300], votes[300];
    snprintf(members, sizeof(members), "/dhaf/%s/members/", cfg.cluster_name);
    snprintf(votes, sizeof(votes), "/dhaf/%s/votes/", cfg.cluster_name);
    size_t vlen = strlen(votes);
    struct dhaf_kvs kvs = {0};
    if (rc == 0 && dhaf_etcd_get_prefix(e, members, 0, &kvs, &err) != 0)
        rc = 1;
    if (rc == 0) {
        fprintf(out, "# dhaf-sim record: cluster %s, from etcd %s\nvoters", cfg.cluster_name,
                cfg.etcd.hosts[0]);
        for (size_t i = 0; i < kvs.n; i++) {
            json_t *j = NULL;
            struct dhaf_err e2;
            bool probes = true;
            if (dhaf_json_parse_object(kvs.kvs[i].value, kvs.kvs[i].value_len, "member", &j, &e2) ==
                0) {
                probes = !json_is_false(json_object_get(j, "probe"));
                json_decref(j);
            }
            if (probes)
                fprintf(out, " %s", kvs.kvs[i].key + strlen(members));
        }
        for (size_t i = 0; i < cfg.n_probers; i++)
            fprintf(out, " %s", cfg.probers[i].name);
        fprintf(out, "\n");
        dhaf_kvs_release(&kvs);
        if (dhaf_etcd_get_prefix(e, votes, 0, &kvs, &err) != 0)
            rc = 1;
    }
    int64_t start = dhaf_mono_ms();
    if (rc == 0) {
        for (size_t i = 0; i < kvs.n; i++)
            put_vote(out, 0, kvs.kvs[i].key + vlen, kvs.kvs[i].value, kvs.kvs[i].value_len);
        fflush(out);
        w = dhaf_etcd_watch_new(e, votes, true, kvs.revision + 1, &err);
        rc = w ? 0 : 1;
        dhaf_kvs_release(&kvs);
    }
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    size_t heard = 0;
    while (rc == 0 && !stop_asked && (!duration || dhaf_mono_ms() - start < duration * 1000)) {
        struct dhaf_etcd_events ev;
        int r = dhaf_etcd_watch_next(w, &ev, 200, &err);
        if (r == DHAF_ETIMEOUT)
            continue;
        if (r != 0) {
            rc = 1;
            break;
        }
        int64_t t = dhaf_mono_ms() - start;
        for (size_t i = 0; i < ev.n; i++) {
            const struct dhaf_kv *kv = &ev.v[i].kv;
            if (strncmp(kv->key, votes, vlen) != 0 || !kv->key[vlen])
                continue;
            if (ev.v[i].type == DHAF_ETCD_EV_DELETE)
                fprintf(out, "%lld.%03llds vote %s -\n", (long long)(t / 1000),
                        (long long)(t % 1000), kv->key + vlen);
            else
                put_vote(out, t, kv->key + vlen, kv->value, kv->value_len);
            heard++;
        }
        fflush(out);
        dhaf_etcd_events_release(&ev);
    }
    int64_t t = dhaf_mono_ms() - start;
    if (w) /* (a timeline was begun: it ends, also after an error) */
        fprintf(out, "%lld.%03llds end\n", (long long)(t / 1000), (long long)(t % 1000));
    if (rc)
        fprintf(stderr, "dhaf-sim: record: %s\n", err.msg);
    else
        fprintf(stderr, "dhaf-sim: record: %zu vote changes in %lld s\n", heard,
                (long long)(t / 1000));
    if (out != stdout && fclose(out) != 0 && rc == 0) {
        fprintf(stderr, "dhaf-sim: record: %s: %s\n", output, strerror(errno));
        rc = 1;
    }
    dhaf_etcd_watch_free(w);
    dhaf_etcd_free(e);
    dhaf_config_release(&cfg);
    return rc;
}

/* ------------------------------------------------------------------ simulate */

static char *read_all(const char *path, struct dhaf_err *err)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
    if (!f) {
        dhaf_err_set(err, DHAF_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = dhaf_xmalloc(cap);
    size_t got;
    while ((got = fread(buf + n, 1, cap - n - 1, f)) > 0) {
        n += got;
        if (n > (16u << 20)) {
            dhaf_err_set(err, DHAF_ETOOBIG, "%s: a timeline is at most 16 MiB", path);
            free(buf);
            buf = NULL;
            break;
        }
        if (cap - n - 1 == 0)
            buf = dhaf_xreallocarray(buf, cap *= 2, 1);
    }
    if (buf && ferror(f)) {
        dhaf_err_set(err, DHAF_EIO, "%s: %s", path, strerror(errno));
        free(buf);
        buf = NULL;
    }
    if (f != stdin)
        fclose(f);
    if (buf)
        buf[n] = '\0';
    return buf;
}

int main(int argc, char **argv)
{
    enum { OPT_VOTER = 256, OPT_TIMEOUT, OPT_RETRIES, OPT_SEED, OPT_VERSION, OPT_VOTES };
    static const struct option longs[] = {{"config", required_argument, NULL, 'c'},
                                          {"service", required_argument, NULL, 's'},
                                          {"voters", required_argument, NULL, 'n'},
                                          {"voter", required_argument, NULL, OPT_VOTER},
                                          {"timeout", required_argument, NULL, OPT_TIMEOUT},
                                          {"retries", required_argument, NULL, OPT_RETRIES},
                                          {"seed", required_argument, NULL, OPT_SEED},
                                          {"quiet", no_argument, NULL, 'q'},
                                          {"votes", no_argument, NULL, OPT_VOTES},
                                          {"help", no_argument, NULL, 'h'},
                                          {"version", no_argument, NULL, OPT_VERSION},
                                          {NULL, 0, NULL, 0}};
    if (argc > 1 && strcmp(argv[1], "record") == 0)
        return record_main(argc - 1, argv + 1);
    const char *config = NULL, *service = NULL;
    const char *names[SIM_MAX_VOTERS];
    size_t n_names = 0;
    long n_voters = 0, timeout = 0, retries = -1, seed = -1;
    bool quiet = false, votes = false;
    int c;
    while ((c = getopt_long(argc, argv, "c:s:n:qh", longs, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 's':
            service = optarg;
            break;
        case 'n':
            if (sim_option_long("dhaf-sim", "--voters", optarg, 1, SIM_MAX_VOTERS, &n_voters))
                return 2;
            break;
        case OPT_VOTER:
            if (n_names == SIM_MAX_VOTERS) {
                fprintf(stderr, "dhaf-sim: at most %d voters\n", SIM_MAX_VOTERS);
                return 2;
            }
            names[n_names++] = optarg;
            break;
        case OPT_TIMEOUT:
            if (sim_option_long("dhaf-sim", "--timeout", optarg, 1, 3600000, &timeout))
                return 2;
            break;
        case OPT_RETRIES:
            if (sim_option_long("dhaf-sim", "--retries", optarg, 0, 100, &retries))
                return 2;
            break;
        case OPT_SEED:
            if (sim_option_long("dhaf-sim", "--seed", optarg, 0, 2147483647, &seed))
                return 2;
            break;
        case 'q':
            quiet = true;
            break;
        case OPT_VOTES:
            votes = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("dhaf-sim %s\n", DHAF_VERSION);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (!config || optind != argc - 1) {
        fprintf(stderr, "dhaf-sim: %s\n",
                !config ? "--config FILE is required" : "one TIMELINE file (or -) is required");
        usage(stderr);
        return 2;
    }
    if (n_names && n_voters) {
        fprintf(stderr, "dhaf-sim: --voters and --voter exclude each other\n");
        return 2;
    }
    for (size_t i = 0; i < n_names; i++)
        for (size_t k = 0; k < i; k++)
            if (strcmp(names[i], names[k]) == 0) {
                fprintf(stderr, "dhaf-sim: voter %s is named twice\n", names[i]);
                return 2;
            }
    struct dhaf_err err;
    char *text = read_all(argv[optind], &err);
    if (!text) {
        fprintf(stderr, "dhaf-sim: %s\n", err.msg);
        return 1;
    }
    char gen[SIM_MAX_VOTERS][32], declared[4096];
    if (!n_names && !n_voters)
        n_names = sim_timeline_voters(text, declared, sizeof(declared), names, SIM_MAX_VOTERS);
    if (!n_names) {
        n_names = n_voters ? (size_t)n_voters : 3;
        for (size_t i = 0; i < n_names; i++) {
            snprintf(gen[i], sizeof(gen[i]), "node-%zu", i + 1);
            names[i] = gen[i];
        }
    }

    struct dhaf_config cfg;
    if (load_config(config, &cfg) != 0) {
        free(text);
        return 1;
    }
    int rc;
    const struct dhaf_service *svc =
        service ? dhaf_config_service(&cfg, service) : (cfg.n_services ? cfg.services : NULL);
    if (!svc) {
        fprintf(stderr, "dhaf-sim: %s: no service %s\n", config, service ? service : "at all");
        dhaf_config_release(&cfg);
        free(text);
        return 1;
    }
    struct sim_world w;
    rc = sim_timeline_parse(text, argv[optind], svc, names, n_names, &w, &err);
    free(text);
    if (rc != 0) {
        fprintf(stderr, "dhaf-sim: %s\n", err.msg);
        dhaf_config_release(&cfg);
        return 1;
    }
    if (seed >= 0)
        w.seed = (uint64_t)seed;
    else if (!w.seed)
        w.seed = 1;
    int timeout_ms = (int)timeout, n_retries = (int)retries;
    checker_limits(svc, &timeout_ms, &n_retries);
    struct sim_opts o = {.cfg = &cfg,
                         .svc = svc,
                         .timeout_ms = timeout_ms,
                         .retries = n_retries,
                         .n_voters = n_names,
                         .voter_names = names,
                         .trace = quiet ? NULL : stdout,
                         .trace_votes = votes};
    struct sim_outcome *out = dhaf_xcalloc(SIM_N_RULES, sizeof(*out));
    rc = sim_run(&o, &w, out, &err);
    if (rc != 0) {
        fprintf(stderr, "dhaf-sim: %s\n", err.msg);
    } else {
        for (int r = 0; r < SIM_N_RULES; r++) {
            const struct sim_outcome *x = &out[r];
            printf("summary rule=%s switches=%zu", sim_rule_name((enum sim_rule)r), x->n_sw);
            if (x->n_sw)
                printf(" first=%lld.%03llds", (long long)(x->sw[0].at_ms / 1000),
                       (long long)(x->sw[0].at_ms % 1000));
            printf(" current=%s service=%s voters=%zu tact=%ds timeout=%dms retries=%d\n",
                   x->current >= 0 ? svc->eps[x->current].name : "(none)", svc->name, n_names,
                   cfg.tact_interval, timeout_ms, n_retries);
        }
    }
    free(out);
    sim_world_release(&w);
    dhaf_config_release(&cfg);
    return rc ? 1 : 0;
}
