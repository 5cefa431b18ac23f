/* SPDX-License-Identifier: MIT */
/* dhaf-prober: a remote vantage point. It fetches its probe plan from any reachable node
 * (Prober.GetPlan), runs the same checks as the nodes' built-in prober, and reports every
 * round to any reachable node (Prober.Report), which writes its vote. It talks to a
 * non-loopback node only over TLS that verifies the node (unless prober.insecure), and runs
 * a plan's exec checkers only for the programs its own prober.exec-allow names. */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "dhaf/alloc.h"
#include "dhaf/cancel.h"
#include "dhaf/clock.h"
#include "dhaf/config.h"
#include "dhaf/log.h"
#include "dhaf/plugins.h"
#include "dhaf/probe.h"
#include "dhaf/registry.h"
#include "dhaf/rpc.h"
#include "dhaf/v1/prober.pb-c.h"
#include "dhaf/valid.h"
#include "alive.h"
#include "plan.h"

struct prober_cfg {
    char *name;
    char *location;
    char *token;
    struct dhaf_strlist nodes;
    char *ca_file, *cert_file, *key_file, *server_name;
    int timeout;
    char *extensions_dir;
    bool insecure;                  /* plaintext to non-loopback nodes allowed */
    struct dhaf_strlist exec_allow; /* programs a plan's exec checker may run */
    int log_level, log_format;
};

static int check_endpoint(const char *v, char *why, size_t wl)
{
    char *host = NULL;
    int port;
    bool tls;
    if (dhaf_parse_endpoint(v, &host, &port, &tls, why, wl) != 0)
        return -1;
    free(host);
    return 0;
}

static const char *const levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const formats[] = {"text", "json", NULL};

#define PC(f) offsetof(struct prober_cfg, f)
/* clang-format off */
static const struct dhaf_cfgkey prober_keys[] = {
    {"prober.name", DHAF_CFG_NAME, PC(name), true, NULL, 0, 0, NULL, NULL, NULL,
     "This prober's name, as listed under probers: in the nodes' config."},
    {"prober.location", DHAF_CFG_STR, PC(location), false, NULL, 0, 0, NULL, NULL, NULL,
     "Free-text label of the vantage point."},
    {"prober.token", DHAF_CFG_SECRET, PC(token), false, NULL, 0, 0, NULL, NULL, NULL,
     "Token the nodes know this prober by (also token-file or ${ENV})."},
    {"prober.nodes", DHAF_CFG_STRLIST, PC(nodes), true, NULL, 0, 0, NULL, check_endpoint, NULL,
     "gRPC endpoints of the nodes (host:port), tried in turn."},
    {"prober.timeout", DHAF_CFG_INT, PC(timeout), false, "3", 1, 60, NULL, NULL, NULL,
     "Seconds a call to a node may take before the next node is tried."},
    {"prober.tls.ca-file", DHAF_CFG_PATH, PC(ca_file), false, NULL, 0, 0, NULL, NULL, NULL,
     "CA that the nodes' certificates chain to (default: the system CA store); TLS is on for "
     "every node when set."},
    {"prober.tls.cert-file", DHAF_CFG_PATH, PC(cert_file), false, NULL, 0, 0, NULL, NULL, NULL,
     "Client certificate (CN = prober name) for mTLS."},
    {"prober.tls.key-file", DHAF_CFG_PATH, PC(key_file), false, NULL, 0, 0, NULL, NULL, NULL,
     "Key of the client certificate."},
    {"prober.tls.server-name", DHAF_CFG_HOST, PC(server_name), false, NULL, 0, 0, NULL, NULL,
     NULL, "Name expected in the nodes' certificate, when it differs from the address."},
    {"prober.extensions-dir", DHAF_CFG_PATH, PC(extensions_dir), false, "extensions", 0, 0, NULL,
     NULL, NULL, "Directory of plugin .so files (plugin health checkers the plan may name)."},
    {"prober.insecure", DHAF_CFG_BOOL, PC(insecure), false, "false", 0, 0, NULL, NULL, NULL,
     "Allow plaintext to non-loopback nodes (no TLS, the node is not verified); warned at "
     "every start."},
    {"prober.exec-allow", DHAF_CFG_STRLIST, PC(exec_allow), false, NULL, 0, 0, NULL,
     plan_check_allow_entry, NULL,
     "Programs a plan's exec checker may run: absolute paths, a directory when it ends in /."},
    {"log.level", DHAF_CFG_ENUM, PC(log_level), false, "info", 0, 0, levels, NULL, NULL,
     "debug, info, warn or error."},
    {"log.format", DHAF_CFG_ENUM, PC(log_format), false, "text", 0, 0, formats, NULL, NULL,
     "text or json."},
    {NULL, 0, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL},
};
/* clang-format on */

/* How the prober reaches one node of prober.nodes. */
struct node_link {
    char *target;      /* gRPC target, host:port or [v6]:port */
    bool tls;          /* TLS, verifying the node's certificate */
    bool plain_public; /* plaintext to a non-loopback node (prober.insecure) */
};

/* Decides how node v is reached. TLS when asked for (https://, tls.ca-file, tls.cert-file)
 * and for every non-loopback node; plaintext to a non-loopback node only with
 * prober.insecure: an explicit http:// to one without it is refused. Returns 0, or -1 with
 * the rule explained in why. out->target is the caller's to free. */
static int node_link(const struct prober_cfg *cfg, const char *v, struct node_link *out, char *why,
                     size_t wl)
{
    char *host = NULL;
    int port;
    bool https;
    memset(out, 0, sizeof(*out));
    if (dhaf_parse_endpoint(v, &host, &port, &https, why, wl) != 0)
        return -1;
    bool loopback = dhaf_is_loopback_host(host);
    bool plain = strncasecmp(v, "http://", 7) == 0;
    if (plain)
        out->tls = false;
    else if (https || cfg->ca_file || cfg->cert_file)
        out->tls = true;
    else
        out->tls = !loopback && !cfg->insecure;
    if (!out->tls && !loopback && !cfg->insecure) {
        snprintf(why, wl,
                 "%s asks for plaintext to a non-loopback node, which would show the prober's "
                 "token and trust any plan to whoever answers; a prober reaches non-loopback "
                 "nodes over TLS that verifies the node's certificate (prober.tls.ca-file, or "
                 "the system CA store): write %s:%d or https://%s:%d, or set prober.insecure: "
                 "true to allow plaintext",
                 v, host, port, host, port);
        free(host);
        return -1;
    }
    out->plain_public = !out->tls && !loopback;
    out->target = strchr(host, ':') ? dhaf_xasprintf("[%s]:%d", host, port)
                                    : dhaf_xasprintf("%s:%d", host, port);
    free(host);
    return 0;
}

/* Checks every node's link (errors and warnings go to rep). Returns 0 or DHAF_ECONFIG. */
static int check_links(const struct prober_cfg *cfg, struct dhaf_cfg_report *rep)
{
    int rc = 0;
    for (size_t i = 0; i < cfg->nodes.n; i++) {
        char why[700], path[48];
        struct node_link l;
        snprintf(path, sizeof(path), "prober.nodes[%zu]", i);
        if (node_link(cfg, cfg->nodes.v[i], &l, why, sizeof(why)) != 0) {
            dhaf_cfg_report_error(rep, 0, 0, path, "%s", why);
            rc = DHAF_ECONFIG;
            continue;
        }
        if (l.plain_public)
            dhaf_cfg_report_warn(rep, 0, 0, path,
                                 "%s is not loopback and is reached in plaintext "
                                 "(prober.insecure: true): the token is readable on the way "
                                 "and the node is not verified",
                                 cfg->nodes.v[i]);
        free(l.target);
    }
    return rc;
}

static atomic_int stop_flag; /* set by the signal thread */

/* Sleeps ms in small steps so a signal ends it quickly. */
static void nap(int64_t ms)
{
    while (ms > 0 && !stop_flag) {
        int64_t step = ms > 50 ? 50 : ms;
        struct timespec ts = {0, step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* Builds the plan a node sent (msg, taken) under the prober's own rules, logs every service
 * it refuses (the others are still probed), and starts the probe engine on the rest. */
static int plan_load(struct plan *p, struct dhaf_probe **engine, Dhaf__V1__ProbePlan *msg,
                     const struct prober_cfg *cfg, struct dhaf_err *err)
{
    struct plan_policy pol = {.exec_allow = &cfg->exec_allow};
    int rc = plan_build(p, msg, &pol, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < p->n_refused; i++) {
        char q[500];
        DHAF_LOG(DHAF_LOG_ERROR,
                 "event=plan-service-refused service=%s reason=\"%s\" effect=\"not probed, no "
                 "vote on it\"",
                 p->refused[i].service, dhaf_log_quote(q, sizeof(q), p->refused[i].why));
    }
    struct dhaf_probe_opts o = {.voter = cfg->name, .max_inflight = 0};
    *engine = dhaf_probe_new(p->svcs, p->n, &o, err);
    return *engine ? 0 : err->code;
}

/* Stops the engine (it uses the plan's services), then frees the plan. */
static void plan_drop(struct plan *p, struct dhaf_probe **engine)
{
    dhaf_probe_free(*engine);
    *engine = NULL;
    plan_free(p);
}

struct client {
    const struct prober_cfg *cfg;
    struct dhaf_rpc_channel **ch;
    size_t cur;
    struct dhaf_rpc_md md[3];
    size_t n_md;
    char auth[600];
};

/* A call to the current node, then to the next ones, until one answers. Returns 0 or the
 * last error; a definite refusal (auth, old generation, bad input) is not retried. */
static int call_any(struct client *cl, const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp,
                    struct dhaf_err *err)
{
    int rc = DHAF_EUNAVAILABLE;
    for (size_t k = 0; k < cl->cfg->nodes.n; k++) {
        size_t i = (cl->cur + k) % cl->cfg->nodes.n;
        rc = dhaf_rpc_call(cl->ch[i], method, req, desc, resp, cl->cfg->timeout * 1000, cl->md,
                           cl->n_md, NULL, err);
        if (rc == 0) {
            if (i != cl->cur)
                DHAF_LOG(DHAF_LOG_INFO, "event=node-switch from=%s to=%s",
                         cl->cfg->nodes.v[cl->cur], cl->cfg->nodes.v[i]);
            cl->cur = i;
            return 0;
        }
        if (rc != DHAF_EUNAVAILABLE && rc != DHAF_ETIMEOUT && rc != DHAF_EINTERNAL)
            return rc;
        char q[300];
        DHAF_LOG(DHAF_LOG_WARN, "event=node-unreachable node=%s reason=\"%s\"", cl->cfg->nodes.v[i],
                 dhaf_log_quote(q, sizeof(q), err->msg));
    }
    return rc;
}

/* What the prober last told the nodes, for reports sent as soon as an opinion changes. */
struct reporter {
    struct client *cl;
    struct plan *plan;
    uint64_t *seq;
    uint64_t sent;       /* digest of the opinions last accepted by a node */
    bool sent_ok;        /* sent is valid */
    bool refetch;        /* a node said the plan is old */
    unsigned rounds;     /* of the current plan */
    int64_t sent_ms;     /* when a report was last sent, accepted or not (monotonic) */
    int64_t interval_ms; /* the plan's tact */
};

/* Reports the opinions of every entry point checked so far to any node. */
static void report(struct reporter *rp, const struct dhaf_probe_result *r, size_t n)
{
    const struct prober_cfg *cfg = rp->cl->cfg;
    Dhaf__V1__ReportRequest rep = DHAF__V1__REPORT_REQUEST__INIT;
    rep.prober = cfg->name;
    rep.generation = rp->plan->msg->generation;
    rep.seq = ++*rp->seq;
    rep.results = dhaf_xcalloc(n + 1, sizeof(*rep.results));
    Dhaf__V1__CheckResult *cr = dhaf_xcalloc(n + 1, sizeof(*cr));
    for (size_t i = 0; i < n; i++) {
        if (!r[i].known)
            continue; /* not checked yet: no opinion */
        Dhaf__V1__CheckResult *c = &cr[rep.n_results];
        dhaf__v1__check_result__init(c);
        c->service = (char *)r[i].service;
        c->entry_point = (char *)r[i].ep;
        c->healthy = r[i].healthy;
        c->held = r[i].held;
        c->suspect = r[i].suspect;
        c->reason = (char *)r[i].reason;
        c->reason_text = (char *)r[i].text;
        c->latency_ms = r[i].latency_ms;
        rep.results[rep.n_results++] = c;
    }
    struct dhaf_err err;
    ProtobufCMessage *resp = NULL;
    rp->sent_ms = dhaf_mono_ms(); /* refused or failed reports are not retried every batch */
    int rc = call_any(rp->cl, "/dhaf.v1.Prober/Report", &rep.base,
                      &dhaf__v1__report_response__descriptor, &resp, &err);
    size_t sent = rep.n_results;
    free(cr);
    free(rep.results);
    if (resp)
        protobuf_c_message_free_unpacked(resp, NULL);
    unsigned long long seq = (unsigned long long)*rp->seq;
    if (rc == DHAF_ECONFLICT && strstr(err.msg, "stale report")) {
        /* A newer report of ours is already written (this one was retried on another
         * node after a timeout, or a clock was set back): dropping it is harmless. */
        char q[400];
        DHAF_LOG(DHAF_LOG_INFO, "event=report-stale seq=%llu reason=\"%s\"", seq,
                 dhaf_log_quote(q, sizeof(q), err.msg));
    } else if (rc == DHAF_ECONFLICT) {
        DHAF_LOG(DHAF_LOG_INFO, "event=plan-outdated node=%s", cfg->nodes.v[rp->cl->cur]);
        rp->refetch = true;
    } else if (rc) {
        char q[400];
        DHAF_LOG(rc == DHAF_EAUTH ? DHAF_LOG_ERROR : DHAF_LOG_WARN,
                 "event=report-failed seq=%llu reason=\"%s\"", seq,
                 dhaf_log_quote(q, sizeof(q), err.msg));
        rp->sent_ok = false;
    } else {
        rp->sent = dhaf_probe_digest(r, n);
        rp->sent_ok = true;
        DHAF_LOG(DHAF_LOG_DEBUG, "event=report-sent seq=%llu node=%s results=%zu", seq,
                 cfg->nodes.v[rp->cl->cur], sent);
    }
}

/* Waits after failed plan fetches or suspicion streams: 0.5 s, doubled each time, at most 10 s. */
#define BACKOFF_FIRST_MS 500
#define BACKOFF_MAX_MS   10000

/* Burst confirmation: a thread keeps a stream of suspicions (Prober.WatchSuspects) open to one
 * node and asks the engine to check each suspected entry point at once. */
#define WATCH_STREAM_MS 60000 /* a stream's deadline: then another is opened */

struct watch {
    const struct client *cl; /* channels and metadata: read only here */
    pthread_mutex_t lock;    /* guards engine: the main loop replaces it under this lock */
    struct dhaf_probe *engine;
    pthread_t t;
    bool running;
};

static void watch_engine(struct watch *w, struct dhaf_probe *engine)
{
    pthread_mutex_lock(&w->lock);
    w->engine = engine;
    pthread_mutex_unlock(&w->lock);
}

/* One stream from node i, until it ends: 0 when it ended at its deadline (or the prober
 * stops), else the error. */
static int watch_once(struct watch *w, size_t i, struct dhaf_err *err)
{
    const struct prober_cfg *cfg = w->cl->cfg;
    struct dhaf_rpc_stream *st = dhaf_rpc_stream_open(w->cl->ch[i], "/dhaf.v1.Prober/WatchSuspects",
                                                      w->cl->md, w->cl->n_md, WATCH_STREAM_MS, err);
    if (!st)
        return err->code ? err->code : DHAF_EUNAVAILABLE;
    Dhaf__V1__WatchSuspectsRequest req = DHAF__V1__WATCH_SUSPECTS_REQUEST__INIT;
    req.prober = (char *)cfg->name;
    int rc = dhaf_rpc_stream_send(st, &req.base, cfg->timeout * 1000, err);
    if (rc == 0)
        rc = dhaf_rpc_stream_close_send(st, cfg->timeout * 1000, err);
    while (rc == 0 && !stop_flag) {
        ProtobufCMessage *m = NULL;
        rc = dhaf_rpc_stream_recv(st, &dhaf__v1__suspicion__descriptor, &m, 500, err);
        if (rc == DHAF_ETIMEOUT) {
            rc = 0; /* (a look at stop_flag) */
            continue;
        }
        if (rc)
            break;
        const Dhaf__V1__Suspicion *x = (const Dhaf__V1__Suspicion *)m;
        pthread_mutex_lock(&w->lock);
        bool known = w->engine && dhaf_probe_suspect(w->engine, x->service, x->entry_point);
        pthread_mutex_unlock(&w->lock);
        char qs[80], qe[80], qv[80];
        DHAF_LOG(DHAF_LOG_DEBUG, "event=suspect-heard service=%s ep=%s voter=%s checked=%s",
                 dhaf_log_quote(qs, sizeof(qs), x->service),
                 dhaf_log_quote(qe, sizeof(qe), x->entry_point),
                 dhaf_log_quote(qv, sizeof(qv), x->voter), known ? "yes" : "no");
        protobuf_c_message_free_unpacked(m, NULL);
    }
    dhaf_rpc_stream_close(st);
    if (rc == DHAF_ECANCELLED && err->status == 0)
        rc = 0; /* the node ended it (its deadline came) */
    return stop_flag ? 0 : rc;
}

static void *watch_thread(void *arg)
{
    struct watch *w = arg;
    const struct prober_cfg *cfg = w->cl->cfg;
    size_t node = 0;
    int fails = 0;
    bool warned = false;
    while (!stop_flag) {
        struct dhaf_err err = {0};
        int64_t t0 = dhaf_mono_ms();
        int rc = watch_once(w, node, &err);
        if (stop_flag)
            break;
        if (rc == 0 && dhaf_mono_ms() - t0 >= 1000) {
            fails = 0;
            warned = false;
            continue; /* a stream that lasted: open the next at once */
        }
        if (rc && !warned) { /* once per failure streak; each attempt at debug level */
            char q[300];
            DHAF_LOG(DHAF_LOG_WARN,
                     "event=suspects-watch-failed node=%s reason=\"%s\" effect=\"this prober "
                     "checks suspected entry points at its own pace until a stream opens\"",
                     cfg->nodes.v[node], dhaf_log_quote(q, sizeof(q), err.msg));
            warned = true;
        }
        node = (node + 1) % cfg->nodes.n; /* another node next time */
        nap(dhaf_backoff_ms(++fails, BACKOFF_FIRST_MS, BACKOFF_MAX_MS));
    }
    return NULL;
}

/* A batch of checks ended: report at once when an opinion changed, or when a tact has passed
 * since the last report (a round that checks hang in keeps the vote's lease renewed while it
 * makes progress) - once every entry point has been checked: the first round of a plan
 * reports at its end. */
static void on_results(void *ud, const struct dhaf_probe_result *r, size_t n)
{
    struct reporter *rp = ud;
    bool suspect = false; /* (to be relayed at once, even when no opinion changed) */
    for (size_t i = 0; i < n; i++) {
        if (!r[i].known)
            return;
        suspect |= r[i].suspect;
    }
    if (!rp->refetch && (!rp->sent_ok || suspect || dhaf_probe_digest(r, n) != rp->sent ||
                         dhaf_mono_ms() - rp->sent_ms >= rp->interval_ms))
        report(rp, r, n);
}

/* SIGTERM and SIGINT are taken by this thread (blocked everywhere else): it sets stop_flag
 * and fires the stop token, which ends a probe round in progress. */
static struct dhaf_cancel stop_tok;

static void *signal_thread(void *arg)
{
    sigset_t *set = arg;
    int sig = 0;
    sigwait(set, &sig);
    stop_flag = 1;
    dhaf_cancel_fire(&stop_tok);
    return NULL;
}

/* Rewrites the liveness file (alive.h): stale_ms from now, the loop must have come by again.
 * A failure is logged once: liveness is for the orchestrator, the probing goes on. */
static void alive(const char *path, int64_t stale_ms, bool reported)
{
    static bool warned;
    int rc = alive_touch(path, dhaf_wall_ms() / 1000, stale_ms / 1000 + 1, reported);
    if (rc && !warned) {
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=alive-file-failed path=%s reason=\"%s\" effect=\"dhaf-prober "
                 "--healthcheck reports this prober unhealthy\"",
                 path, strerror(-rc));
        warned = true;
    } else if (rc == 0) {
        warned = false;
    }
}

static int run(const struct prober_cfg *cfg)
{
    dhaf_malloc_setup();
    signal(SIGPIPE, SIG_IGN);
    static sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    dhaf_cancel_init(&stop_tok);
    pthread_t sig_t;
    if (dhaf_thread_start(&sig_t, false, signal_thread, &sigs) != 0) {
        fprintf(stderr, "dhaf-prober: cannot start the signal thread\n");
        return 1;
    }

    struct dhaf_err err;
    struct client cl = {.cfg = cfg};
    cl.ch = dhaf_xcalloc(cfg->nodes.n, sizeof(*cl.ch));
    int exit_code = 0;
    char alive_file[4096];
    if (alive_path(alive_file, sizeof(alive_file), cfg->name) != 0)
        snprintf(alive_file, sizeof(alive_file), "/tmp/dhaf-prober.alive");
    size_t n_plain = 0;
    char plain[512] = "";
    for (size_t i = 0; i < cfg->nodes.n; i++) {
        struct node_link l;
        char why[700];
        if (node_link(cfg, cfg->nodes.v[i], &l, why, sizeof(why)) != 0) {
            fprintf(stderr, "dhaf-prober: prober.nodes[%zu]: %s\n", i, why);
            exit_code = 2;
            goto out;
        }
        struct dhaf_rpc_tls tls = {.tls = l.tls,
                                   .ca_file = cfg->ca_file,
                                   .cert_file = cfg->cert_file,
                                   .key_file = cfg->key_file,
                                   .server_name = cfg->server_name};
        /* the largest reply a node sends is the plan: a bigger one is refused as it arrives,
         * before it takes memory (plan.c checks the rest) */
        cl.ch[i] = dhaf_rpc_channel_new_max(l.target, &tls, PLAN_MAX_BYTES + 1024, &err);
        if (l.plain_public) {
            size_t o = strlen(plain);
            snprintf(plain + o, sizeof(plain) - o, "%s%s", n_plain++ ? "," : "", l.target);
        }
        free(l.target);
        if (!cl.ch[i]) {
            fprintf(stderr, "dhaf-prober: %s\n", err.msg);
            exit_code = 1;
            goto out;
        }
    }
    if (cfg->insecure)
        DHAF_LOG(DHAF_LOG_WARN,
                 "event=insecure-nodes prober=%s plaintext=%zu nodes=\"%s\" msg=\"prober.insecure "
                 "is true: non-loopback nodes are reached without TLS; the token can be read and "
                 "a node can be impersonated on the way\"",
                 cfg->name, n_plain, plain);
    if (cfg->token) {
        snprintf(cl.auth, sizeof(cl.auth), "Bearer %s", cfg->token);
        cl.md[cl.n_md++] = (struct dhaf_rpc_md){"authorization", cl.auth};
    }
    cl.md[cl.n_md++] = (struct dhaf_rpc_md){"x-dhaf-version", DHAF_VERSION};
    cl.md[cl.n_md++] = (struct dhaf_rpc_md){"x-dhaf-prober", cfg->name}; /* who it claims to be */
    char qloc[300];
    DHAF_LOG(DHAF_LOG_INFO, "event=prober-start prober=%s location=\"%s\" nodes=%zu version=%s",
             cfg->name, dhaf_log_quote(qloc, sizeof(qloc), cfg->location ? cfg->location : ""),
             cfg->nodes.n, DHAF_VERSION);

    struct plan plan = {0};
    struct dhaf_probe *engine = NULL;
    /* Each report carries seq + 1. seq starts at this process's start time in wall-clock ms,
     * so it keeps increasing across restarts of the prober: there is one report per round
     * plus one per batch of checks that changed an opinion (a few dozen at most), rounds are
     * >= 1 s apart, so the count never catches up with the wall clock. The nodes refuse a report
     * whose seq is not newer than the last one written (a stale report delayed in another node), so
     * a new process must not start lower; only a wall clock set back by more than the downtime
     * delays its reports, until the clock has caught up. */
    uint64_t seq = (uint64_t)dhaf_wall_ms();
    int fails = 0; /* plan fetches failed in a row */
    struct reporter rp = {.cl = &cl, .plan = &plan, .seq = &seq};
    int64_t start = dhaf_mono_ms();
    int64_t next_trim = start + 30000; /* memory back to the OS, once a minute */
    struct watch w = {.cl = &cl};
    pthread_mutex_init(&w.lock, NULL);
    w.running = dhaf_thread_start(&w.t, false, watch_thread, &w) == 0;
    if (!w.running)
        DHAF_LOG(DHAF_LOG_WARN, "event=suspects-watch-failed reason=\"no thread\" "
                                "effect=\"suspected entry points are checked at this prober's "
                                "own pace\"");
    while (!stop_flag) {
        if (!plan.msg) {
            Dhaf__V1__GetPlanRequest req = DHAF__V1__GET_PLAN_REQUEST__INIT;
            req.prober = cfg->name;
            req.location = cfg->location ? cfg->location : "";
            req.version = DHAF_VERSION;
            ProtobufCMessage *resp = NULL;
            int rc = call_any(&cl, "/dhaf.v1.Prober/GetPlan", &req.base,
                              &dhaf__v1__probe_plan__descriptor, &resp, &err);
            if (rc == DHAF_ETOOBIG) { /* the channel refused it as it came (RESOURCE_EXHAUSTED) */
                char was[DHAF_ERR_MSG_MAX];
                snprintf(was, sizeof(was), "%s", err.msg);
                dhaf_err_set(&err, DHAF_ETOOBIG,
                             "plan: the reply is larger than a prober takes (%d bytes): %.300s",
                             PLAN_MAX_BYTES, was);
            }
            if (rc == 0)
                rc = plan_load(&plan, &engine, (Dhaf__V1__ProbePlan *)resp, cfg, &err);
            if (rc == 0)
                watch_engine(&w, engine);
            if (rc) {
                char q[400];
                DHAF_LOG(DHAF_LOG_ERROR, "event=plan-failed reason=\"%s\"",
                         dhaf_log_quote(q, sizeof(q), err.msg));
                plan_drop(&plan, &engine); /* (not given to the watch) */
                alive(alive_file, BACKOFF_MAX_MS + 30000, false);
                nap(dhaf_backoff_ms(++fails, BACKOFF_FIRST_MS, BACKOFF_MAX_MS));
                continue;
            }
            fails = 0;
            rp.refetch = false;
            rp.sent_ok = false;
            rp.rounds = 0;
            start = dhaf_mono_ms();
            DHAF_LOG(DHAF_LOG_INFO,
                     "event=plan-received node=%s generation=%llx services=%zu refused=%zu "
                     "interval=%us",
                     cfg->nodes.v[cl.cur], (unsigned long long)plan.msg->generation, plan.n,
                     plan.n_refused, plan.msg->interval_s);
        }
        int64_t interval = (int64_t)(plan.msg->interval_s ? plan.msg->interval_s : 10) * 1000;
        rp.interval_ms = interval;
        const struct dhaf_probe_result *r;
        size_t n;
        /* a plan's first round checks everything at once (bounded): a vote soon */
        dhaf_probe_round(engine, rp.rounds++ ? (int)(interval * 4 / 5) : 0, &stop_tok, on_results,
                         &rp, &r, &n);
        if (stop_flag)
            break;
        dhaf_malloc_trim_every(&next_trim, dhaf_mono_ms(), 60000);
        /* Once a round, changed or not: it renews the vote's lease at the node. */
        report(&rp, r, n);
        /* alive while rounds come: one may overrun its interval (checks that hang until
         * their timeouts), three in a row do not */
        alive(alive_file, 3 * interval + 30000, rp.sent_ok);
        if (rp.refetch) {
            watch_engine(&w, NULL);
            plan_drop(&plan, &engine);
            continue;
        }
        /* Rounds start every interval; after one that overran, the next starts at once. */
        start += interval;
        int64_t now = dhaf_mono_ms();
        if (start < now)
            start = now;
        /* Burst checks of entry points other voters suspect run meanwhile. */
        dhaf_probe_idle(engine, start, &stop_tok, on_results, &rp);
    }
    if (w.running)
        pthread_join(w.t, NULL); /* (stop_flag is set: it ends within half a second) */
    pthread_mutex_destroy(&w.lock);
    plan_drop(&plan, &engine);
    unlink(alive_file); /* a stopped prober is not alive (and leaves no file behind) */
    DHAF_LOG(DHAF_LOG_INFO, "event=prober-stopped prober=%s", cfg->name);
out:
    if (!stop_flag)
        pthread_kill(sig_t, SIGTERM); /* ends its wait */
    pthread_join(sig_t, NULL);
    dhaf_cancel_destroy(&stop_tok);
    for (size_t i = 0; i < cfg->nodes.n; i++)
        dhaf_rpc_channel_free(cl.ch[i]);
    free(cl.ch);
    explicit_bzero(cl.auth, sizeof(cl.auth));
    return exit_code;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: dhaf-prober --config FILE [--check-config | --healthcheck]\n"
                 "\n"
                 "A remote vantage point: fetches its probe plan from any dhaf node, checks every\n"
                 "entry point each tact, and reports to any reachable node.\n"
                 "\n"
                 "  -c, --config FILE  the prober's config:\n"
                 "                       prober: {name, location, token | token-file,\n"
                 "                                nodes: [host:port, ...], tls: {ca-file, ...},\n"
                 "                                insecure (plaintext to non-loopback nodes;\n"
                 "                                default false: TLS verifying the node),\n"
                 "                                exec-allow: [programs or dirs/ a plan's exec\n"
                 "                                checker may run; default none],\n"
                 "                                extensions-dir (plugins; default extensions)}\n"
                 "      --check-config validate FILE, print OK or every error (exit 0 / 2)\n"
                 "      --healthcheck  whether the running prober of FILE is alive: its main\n"
                 "                     loop rewrites $TMPDIR/dhaf-prober-NAME.alive every round\n"
                 "                     (exit 0 alive, 1 not; container HEALTHCHECK, exec probe)\n"
                 "  -h, --help         this help\n"
                 "  -V, --version      print the version\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'}, {"check-config", no_argument, NULL, 'k'},
        {"healthcheck", no_argument, NULL, 'H'},  {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},      {NULL, 0, NULL, 0},
    };
    const char *config = NULL;
    bool check = false, healthcheck = false;
    int c;
    opterr = 0;
    while ((c = getopt_long(argc, argv, ":c:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config = optarg;
            break;
        case 'k':
            check = true;
            break;
        case 'H':
            healthcheck = true;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("dhaf-prober %s (%s)\n", DHAF_VERSION, DHAF_GIT_COMMIT);
            return 0;
        case ':':
            fprintf(stderr, "dhaf-prober: %s needs a value\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "dhaf-prober: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (!config || optind < argc) {
        fprintf(stderr, "dhaf-prober: --config FILE is required\n");
        usage(stderr);
        return 2;
    }
    struct prober_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, config);
    int rc = dhaf_config_load_keys(config, prober_keys, &cfg, &rep);
    if (rc == 0 && !cfg.token && !cfg.cert_file) {
        dhaf_cfg_report_error(&rep, 0, 0, "prober.token",
                              "missing; a prober needs a token or a client certificate");
        dhaf_cfgkeys_release(prober_keys, &cfg);
        rc = DHAF_ECONFIG;
    }
    if (rc == 0 && check_links(&cfg, &rep) != 0) {
        dhaf_cfgkeys_release(prober_keys, &cfg);
        rc = DHAF_ECONFIG;
    }
    dhaf_cfg_report_print(&rep, stderr);
    dhaf_cfg_report_release(&rep);
    if (rc) {
        fprintf(stderr, "%s: invalid configuration\n", config);
        return 2;
    }
    if (healthcheck) {
        char path[4096];
        rc = alive_path(path, sizeof(path), cfg.name) == 0
                 ? alive_check(path, dhaf_wall_ms() / 1000, stdout)
                 : 1;
        dhaf_cfgkeys_release(prober_keys, &cfg);
        return rc;
    }
    /* The plan may name a plugin's checker: load them now, and refuse a broken one at once. */
    struct dhaf_err err;
    if (dhaf_plugins_load(cfg.extensions_dir, &err) != 0) {
        fprintf(stderr,
                "dhaf-prober: %s\n"
                "dhaf-prober: %s: a plugin of prober.extensions-dir %s was refused; fix or "
                "remove it (exit code 2)\n",
                err.msg, config, cfg.extensions_dir);
        dhaf_cfgkeys_release(prober_keys, &cfg);
        return 2;
    }
    if (check) {
        printf("OK\n");
        dhaf_cfgkeys_release(prober_keys, &cfg);
        return 0;
    }
    dhaf_log_setup((enum dhaf_log_level)cfg.log_level, (enum dhaf_log_format)cfg.log_format);
    rc = run(&cfg);
    dhaf_cfgkeys_release(prober_keys, &cfg);
    return rc;
}
