/* SPDX-License-Identifier: MIT */
/* dhafctl: the operators' command-line client (gRPC to any node). A commands[] table maps
 * verbs to functions, as git does; every verb has --help. Exit codes: 0 ok, 1 the operation
 * failed (the server's message is printed), 2 usage. Under -o json every answer and every
 * error is one JSON object; the status verbs redraw with --watch. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dhaf/clock.h"
#include "dhaf/log.h"
#include "dhaf/valid.h"
#include "client.h"
#include "dhaf/pbjson.h"
#include "dhaf/v1/dhaf.pb-c.h"
#include "table.h"

struct command {
    const char *name;
    const char *args;    /* shown in usage */
    const char *summary; /* one line */
    bool needs_service;  /* -s SERVICE */
    int n_pos;           /* positional arguments required */
    bool watchable;      /* --watch redraws it */
    int (*run)(struct ctl *c, const char *service, char **pos, int limit);
};

static int cmd_status(struct ctl *, const char *, char **, int);
static int cmd_status_dhaf(struct ctl *, const char *, char **, int);
static int cmd_status_services(struct ctl *, const char *, char **, int);
static int cmd_status_service(struct ctl *, const char *, char **, int);
static int cmd_explain(struct ctl *, const char *, char **, int);
static int cmd_candidates(struct ctl *, const char *, char **, int);
static int cmd_switchover(struct ctl *, const char *, char **, int);
static int cmd_purge(struct ctl *, const char *, char **, int);
static int cmd_decommission(struct ctl *, const char *, char **, int);
static int cmd_events(struct ctl *, const char *, char **, int);
static int cmd_drain(struct ctl *, const char *, char **, int);
static int cmd_undrain(struct ctl *, const char *, char **, int);
static int cmd_pause(struct ctl *, const char *, char **, int);
static int cmd_resume(struct ctl *, const char *, char **, int);
static int cmd_probers(struct ctl *, const char *, char **, int);
static int cmd_version(struct ctl *, const char *, char **, int);

static const struct command commands[] = {
    {"status", "[--watch [--interval S]]",
     "show the cluster and every service (status-dhaf and "
     "status-services in one)",
     false, 0, true, cmd_status},
    {"status-dhaf", "[--watch [--interval S]]", "show the cluster: leader, epoch, nodes, etcd",
     false, 0, true, cmd_status_dhaf},
    {"status-services", "[--watch [--interval S]]", "show every service and its entry points",
     false, 0, true, cmd_status_services},
    {"status-service", "-s SERVICE [--watch [--interval S]]",
     "show one service and its entry points", true, 0, true, cmd_status_service},
    {"explain", "-s SERVICE",
     "why: each voter's vote on each entry point, the quorum, the rule that decides, what next",
     true, 0, false, cmd_explain},
    {"switchover-candidates", "-s SERVICE", "show the healthy entry points a switchover may use",
     true, 0, false, cmd_candidates},
    {"switchover-to", "EP -s SERVICE", "switch SERVICE to entry point EP and pin it there", true, 1,
     false, cmd_switchover},
    {"switchover-purge", "-s SERVICE", "remove the switchover requirement (pin) of SERVICE", true,
     0, false, cmd_purge},
    {"drain", "EP -s SERVICE",
     "never target entry point EP (traffic on it moves to the best other healthy one)", true, 1,
     false, cmd_drain},
    {"undrain", "EP -s SERVICE", "make a drained entry point a target again", true, 1, false,
     cmd_undrain},
    {"pause", "", "show decisions (would-switch events) without carrying them out", false, 0, false,
     cmd_pause},
    {"resume", "", "carry decisions out again after pause", false, 0, false, cmd_resume},
    {"node-decommission", "NODE", "forget a dhaf node that is gone for good (refused while alive)",
     false, 1, false, cmd_decommission},
    {"events", "[-s SERVICE] [-n N]", "show the event history, newest first", false, 0, false,
     cmd_events},
    {"probers", "", "show the remote probers and their last reports", false, 0, false, cmd_probers},
    {"version", "", "print the client's and the node's versions", false, 0, false, cmd_version},
    {"help", "[COMMAND]", "show help for dhafctl or one command", false, 0, false, NULL},
};

#define N_COMMANDS (sizeof(commands) / sizeof(commands[0]))

static void usage(FILE *out)
{
    fprintf(out, "usage: dhafctl COMMAND [ARGS] [--config FILE | --endpoint HOST:PORT] "
                 "[--token-file FILE] [--ca FILE | --tls] [-o table|json]\n\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        fprintf(out, "  %-22s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\noptions (every command):\n"
                 "  -c, --config FILE      a node's config: its gRPC API address and token\n"
                 "  -e, --endpoint H:P     the node's gRPC API (also DHAF_ENDPOINT; default\n"
                 "                         " CTL_DEFAULT_ENDPOINT ")\n"
                 "      --token-file FILE  read the API token from FILE\n"
                 "  -t, --token T          the API token (visible in ps: prefer --token-file\n"
                 "                         or DHAF_TOKEN)\n"
                 "      --ca FILE          CA of the node's TLS certificate (also DHAF_CA)\n"
                 "      --tls              TLS with the system's CA roots (no --ca needed)\n"
                 "  -o, --output FORMAT    table (default) or json (answers and errors as\n"
                 "                         one JSON object on stdout)\n"
                 "      --timeout S        seconds to wait for the node (default 5)\n"
                 "  -w, --watch            status verbs: redraw every --interval S (default 2)\n"
                 "                         until Ctrl-C; with -o json one object a line\n"
                 "  -h, --help             help\n"
                 "\nexit codes: 0 ok, 1 the operation failed, 2 usage\n");
}

static void command_usage(const struct command *cmd, FILE *out)
{
    fprintf(out,
            "usage: dhafctl %s %s [--config FILE | --endpoint HOST:PORT] [-o table|json]\n\n"
            "%s.\n",
            cmd->name, cmd->args, cmd->summary);
}

/* ------------------------------------------------------------------ output */

/* Prints j (taken): indented, or on one line under --watch. */
static void put_json(const struct ctl *c, json_t *j)
{
    char *s = json_dumps(j, (c->watch ? JSON_COMPACT : JSON_INDENT(2)) | JSON_PRESERVE_ORDER);
    printf("%s\n", s);
    free(s);
    json_decref(j);
}

static void print_json(const struct ctl *c, const ProtobufCMessage *m)
{
    put_json(c, dhaf_pb_to_json(m));
}

static void fmt_time(char *buf, size_t len, int64_t ms)
{
    if (ms <= 0) {
        snprintf(buf, len, "-");
        return;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, len, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static const char *ep_state(Dhaf__V1__EntryPointState s)
{
    switch (s) {
    case DHAF__V1__ENTRY_POINT_STATE__ENTRY_POINT_STATE_CURRENT:
        return "CURRENT";
    case DHAF__V1__ENTRY_POINT_STATE__ENTRY_POINT_STATE_READY:
        return "READY";
    case DHAF__V1__ENTRY_POINT_STATE__ENTRY_POINT_STATE_DISABLED:
        return "DISABLED";
    default:
        return "UNKNOWN";
    }
}

/* The two tables of the original CLI for one service. */
static void print_service(const struct ctl *c, const Dhaf__V1__ServiceStatus *s)
{
    char title[200], pin[100], votes[64], prio[16];
    struct table t;
    snprintf(title, sizeof(title), "Service \"%s\" -> Summary", s->name);
    table_init(&t, title, "Key", "Value", (const char *)NULL);
    table_row(&t, PAINT_NONE, "Service status", s->up ? PAINT_GREEN : PAINT_RED,
              s->panic ? "DOWN (panic: no healthy entry point)"
              : s->up  ? "UP"
                       : "DOWN");
    table_row(&t, PAINT_NONE, "Domain", PAINT_NONE, s->domain);
    table_row(&t, PAINT_NONE, "Current entry point", PAINT_BOLD,
              s->current_entry_point[0] ? s->current_entry_point : "(none yet)");
    snprintf(pin, sizeof(pin), "YES (to %s)", s->switchover_requirement);
    table_row(&t, PAINT_NONE, "Switchover is required", PAINT_NONE,
              s->switchover_requirement[0] ? pin : "NO");
    char voters[160];
    bool short_of = s->voters_fresh < s->voters_needed;
    char impaired[64] = "";
    if (s->voters_impaired)
        snprintf(impaired, sizeof(impaired), ", %u impaired (not counted)", s->voters_impaired);
    snprintf(voters, sizeof(voters), "%u fresh of %u expected (%u needed)%s%s", s->voters_fresh,
             s->voters_expected, s->voters_needed, impaired,
             short_of ? ": too few, decisions suspended" : "");
    table_row(&t, PAINT_NONE, "Voters", short_of || !s->quorum ? PAINT_YELLOW : PAINT_NONE, voters);
    if (s->switching_to[0])
        table_row(&t, PAINT_NONE, "Switching to", PAINT_YELLOW, s->switching_to);
    if (s->would_switch_to && s->would_switch_to[0]) {
        char would[160];
        snprintf(would, sizeof(would), "a %s to %s (paused: not carried out)", s->would_switch_kind,
                 s->would_switch_to);
        table_row(&t, PAINT_NONE, "Would switch", PAINT_YELLOW, would);
    }
    if (s->provider_error && s->provider_error[0]) {
        char pe[700], at[40];
        fmt_time(at, sizeof(at), s->provider_error_since_ms);
        snprintf(pe, sizeof(pe), "cannot read the switcher since %s (no decision until it can): %s",
                 at, s->provider_error);
        table_row(&t, PAINT_NONE, "Provider", PAINT_RED, pe);
    }
    if (s->last_switch && s->last_switch->kind[0]) {
        char ls[200], at[40];
        fmt_time(at, sizeof(at), s->last_switch->at_ms);
        snprintf(ls, sizeof(ls), "%s %s -> %s at %s", s->last_switch->kind,
                 s->last_switch->from[0] ? s->last_switch->from : "(none)", s->last_switch->to, at);
        table_row(&t, PAINT_NONE, "Last switch", PAINT_NONE, ls);
    }
    table_print(&t, stdout, c->color);
    printf("\n");
    snprintf(title, sizeof(title), "Service \"%s\" -> Entry points", s->name);
    table_init(&t, title, "Priority", "Name", "IP", "Healthy", "Votes (ok/bad/voters)", "Status",
               (const char *)NULL);
    for (size_t e = 0; e < s->n_entry_points; e++) {
        const Dhaf__V1__EntryPointStatus *ep = s->entry_points[e];
        snprintf(prio, sizeof(prio), "%u", ep->priority);
        snprintf(votes, sizeof(votes), "%u/%u/%u", ep->votes_healthy, ep->votes_unhealthy,
                 ep->voters);
        char stb[40];
        snprintf(stb, sizeof(stb), "%s%s", ep_state(ep->state), ep->drained ? " (drained)" : "");
        const char *st = stb;
        table_row(&t, PAINT_NONE, prio, PAINT_NONE, ep->name, PAINT_NONE, ep->ip,
                  ep->healthy ? PAINT_GREEN : PAINT_RED, ep->healthy ? "Yes" : "No", PAINT_NONE,
                  votes, !strncmp(st, "CURRENT", 7) ? PAINT_BOLD : PAINT_NONE, st);
    }
    table_print(&t, stdout, c->color);
    for (size_t e = 0; e < s->n_entry_points; e++)
        for (size_t r = 0; r < s->entry_points[e]->n_reasons; r++)
            printf("  %s: %s\n", s->entry_points[e]->name, s->entry_points[e]->reasons[r]);
}

/* Status answers come from the node's in-memory view of etcd: say so when it is stale. */
static void warn_stale(const struct ctl *c, const Dhaf__V1__ViewState *v)
{
    if (v && v->stale)
        ctl_warn(c, "the node cannot reach etcd; this answer is from its memory, %.1f s old",
                 (double)v->age_ms / 1000.0);
}

/* One line on etcd as the answering node sees it: writable, or what is wrong and what to do
 * (an alarm such as NOSPACE). Nothing from a node too old to say. */
static void print_etcd(const struct ctl *c, const Dhaf__V1__EtcdHealth *e)
{
    if (!e)
        return;
    const char *red = c->color ? "\033[31m" : "", *green = c->color ? "\033[32m" : "";
    const char *off = c->color ? "\033[0m" : "";
    if (!e->writable) {
        printf("etcd: %sNOT WRITABLE%s: %s\n", red, off, e->problem);
        return;
    }
    if (e->db_size > 0)
        printf("etcd: %swritable%s (database %.1f MB)\n", green, off,
               (double)e->db_size / (1024.0 * 1024.0));
    else
        printf("etcd: %swritable%s\n", green, off);
}

/* ------------------------------------------------------------------ commands */

#define CALL(c, method, req, Type, var)                                                            \
    ProtobufCMessage *var##_m = NULL;                                                              \
    if (ctl_call((c), method, &(req).base, &Type##__descriptor, &var##_m) != 0)                    \
        return 1;

/* The table of status-dhaf. */
static void print_cluster(const struct ctl *c, const Dhaf__V1__ClusterStatus *s)
{
    char title[200];
    snprintf(title, sizeof(title), "Dhaf cluster \"%s\" (leader %s, epoch %lld)%s", s->cluster,
             s->leader[0] ? s->leader : "none", (long long)s->epoch,
             s->paused ? " - PAUSED: decisions are shown, not carried out (dhafctl resume)" : "");
    struct table t;
    table_init(&t, title, "Node name", "Healthy", "Role", "Version", "gRPC API", "Config",
               (const char *)NULL);
    for (size_t i = 0; i < s->n_nodes; i++) {
        const Dhaf__V1__NodeStatus *n = s->nodes[i];
        bool lead = n->role == DHAF__V1__NODE_ROLE__NODE_ROLE_LEADER;
        /* the config hash, and where it differs from most nodes' */
        char conf[100];
        snprintf(conf, sizeof(conf), "%s%s%s", n->config_hash, n->config_differs ? " DIFFERS" : "",
                 n->config_differs && n->config_parts[0] ? " (" : "");
        if (n->config_differs && n->config_parts[0])
            snprintf(conf + strlen(conf), sizeof(conf) - strlen(conf), "%.40s)", n->config_parts);
        table_row(&t, PAINT_NONE, n->name, n->healthy ? PAINT_GREEN : PAINT_RED,
                  n->healthy ? "Yes" : "No", lead ? PAINT_BOLD : PAINT_NONE,
                  lead ? "Leader" : "Follower", PAINT_NONE, n->version, PAINT_NONE,
                  n->grpc_endpoint, n->config_differs ? PAINT_YELLOW : PAINT_NONE, conf);
    }
    table_print(&t, stdout, c->color);
    if (s->config && s->config->drift)
        printf("WARNING: config drift: the nodes run different configs: %s\n"
               "         (docs/runbook.md, \"config-drift\")\n",
               s->config->summary);
    print_etcd(c, s->etcd);
}

/* The tables of status-services. */
static void print_services(const struct ctl *c, const Dhaf__V1__ListServicesResponse *s)
{
    for (size_t i = 0; i < s->n_services; i++) {
        print_service(c, s->services[i]);
        printf("%s\n\n", "=============================================================="
                         "==================");
    }
}

static int cmd_status_dhaf(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)svc, (void)pos, (void)limit;
    Dhaf__V1__GetClusterStatusRequest req = DHAF__V1__GET_CLUSTER_STATUS_REQUEST__INIT;
    CALL(c, "GetClusterStatus", req, dhaf__v1__cluster_status, r);
    Dhaf__V1__ClusterStatus *s = (Dhaf__V1__ClusterStatus *)r_m;
    warn_stale(c, s->view);
    if (c->out == OUT_JSON)
        print_json(c, r_m);
    else
        print_cluster(c, s);
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

static int cmd_status_services(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)svc, (void)pos, (void)limit;
    Dhaf__V1__ListServicesRequest req = DHAF__V1__LIST_SERVICES_REQUEST__INIT;
    CALL(c, "ListServices", req, dhaf__v1__list_services_response, r);
    Dhaf__V1__ListServicesResponse *s = (Dhaf__V1__ListServicesResponse *)r_m;
    warn_stale(c, s->view);
    if (c->out == OUT_JSON)
        print_json(c, r_m);
    else
        print_services(c, s);
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

/* status-dhaf and status-services in one; as JSON {"cluster": ..., "services": [...]}, both
 * answers whole under "cluster" and "services" ({"services": [...], "view": ...}). */
static int cmd_status(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)svc, (void)pos, (void)limit;
    Dhaf__V1__GetClusterStatusRequest creq = DHAF__V1__GET_CLUSTER_STATUS_REQUEST__INIT;
    CALL(c, "GetClusterStatus", creq, dhaf__v1__cluster_status, cl);
    Dhaf__V1__ListServicesRequest sreq = DHAF__V1__LIST_SERVICES_REQUEST__INIT;
    ProtobufCMessage *sv_m = NULL;
    if (ctl_call(c, "ListServices", &sreq.base, &dhaf__v1__list_services_response__descriptor,
                 &sv_m) != 0) {
        protobuf_c_message_free_unpacked(cl_m, NULL);
        return 1;
    }
    Dhaf__V1__ClusterStatus *cs = (Dhaf__V1__ClusterStatus *)cl_m;
    Dhaf__V1__ListServicesResponse *ss = (Dhaf__V1__ListServicesResponse *)sv_m;
    warn_stale(c, cs->view);
    if (c->out == OUT_JSON) {
        json_t *j = json_object();
        json_object_set_new(j, "cluster", dhaf_pb_to_json(cl_m));
        json_object_set_new(j, "services", dhaf_pb_to_json(sv_m));
        put_json(c, j);
    } else {
        print_cluster(c, cs);
        printf("\n");
        print_services(c, ss);
    }
    protobuf_c_message_free_unpacked(sv_m, NULL);
    protobuf_c_message_free_unpacked(cl_m, NULL);
    return 0;
}

/* GetService, shown by print (or as JSON). */
static int show_service(struct ctl *c, const char *svc,
                        void (*print)(const struct ctl *, const Dhaf__V1__ServiceStatus *))
{
    Dhaf__V1__GetServiceRequest req = DHAF__V1__GET_SERVICE_REQUEST__INIT;
    req.service = (char *)svc;
    CALL(c, "GetService", req, dhaf__v1__service_status, r);
    warn_stale(c, ((Dhaf__V1__ServiceStatus *)r_m)->view);
    if (c->out == OUT_JSON)
        print_json(c, r_m);
    else
        print(c, (Dhaf__V1__ServiceStatus *)r_m);
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

static int cmd_status_service(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)pos, (void)limit;
    return show_service(c, svc, print_service);
}

/* The decision of one service taken apart: quorum, rule, next switch, then every vote. */
static void print_explain(const struct ctl *c, const Dhaf__V1__ServiceStatus *s)
{
    char title[200], line[400];
    struct table t;
    snprintf(title, sizeof(title), "Service \"%s\" -> Why", s->name);
    table_init(&t, title, "Key", "Value", (const char *)NULL);
    table_row(&t, PAINT_NONE, "Current entry point", PAINT_BOLD,
              s->current_entry_point[0] ? s->current_entry_point : "(none yet)");
    snprintf(line, sizeof(line), "%u fresh of %u expected, %u needed; %u impaired (not counted)",
             s->voters_fresh, s->voters_expected, s->voters_needed, s->voters_impaired);
    table_row(&t, PAINT_NONE, "Voters",
              s->voters_fresh < s->voters_needed ? PAINT_YELLOW : PAINT_NONE, line);
    table_row(&t, PAINT_NONE, "Rule", PAINT_NONE, s->decision_rule);
    if (strcmp(s->next_action, "none") != 0)
        snprintf(line, sizeof(line), "%s to %s", s->next_action, s->next_target);
    else
        snprintf(line, sizeof(line), "nothing to switch");
    table_row(&t, PAINT_NONE, "Next", PAINT_NONE, line);
    if (s->last_switch && s->last_switch->kind[0]) {
        char at[40];
        fmt_time(at, sizeof(at), s->last_switch->at_ms);
        snprintf(line, sizeof(line), "%s %s -> %s at %s", s->last_switch->kind,
                 s->last_switch->from[0] ? s->last_switch->from : "(none)", s->last_switch->to, at);
        table_row(&t, PAINT_NONE, "Last decision", PAINT_NONE, line);
    }
    table_print(&t, stdout, c->color);
    for (size_t e = 0; e < s->n_entry_points; e++) {
        const Dhaf__V1__EntryPointStatus *ep = s->entry_points[e];
        printf("\n");
        snprintf(title, sizeof(title), "%s (priority %u%s%s): %u of %u counted votes say healthy",
                 ep->name, ep->priority, ep->drained ? ", drained" : "",
                 ep->state == DHAF__V1__ENTRY_POINT_STATE__ENTRY_POINT_STATE_CURRENT ? ", current"
                                                                                     : "",
                 ep->votes_healthy, ep->voters);
        table_init(&t, title, "Voter", "Kind", "Opinion", "Reason", "Written", (const char *)NULL);
        for (size_t k = 0; k < ep->n_votes; k++) {
            const Dhaf__V1__VoteDetail *vd = ep->votes[k];
            char reason[300], age[32];
            snprintf(reason, sizeof(reason), "%s%s%s%s", vd->reason, vd->reason_text[0] ? " " : "",
                     vd->reason_text, vd->impaired ? " (impaired: not counted)" : "");
            int64_t now = dhaf_wall_ms(); /* the voter's clock against ours: roughly */
            if (vd->at_ms > 0 && vd->at_ms <= now)
                snprintf(age, sizeof(age), "%.1f s ago", (double)(now - vd->at_ms) / 1000.0);
            else
                snprintf(age, sizeof(age), "-");
            table_row(&t, PAINT_NONE, vd->voter, PAINT_NONE, vd->kind,
                      vd->healthy ? PAINT_GREEN : PAINT_RED, vd->healthy ? "healthy" : "DOWN",
                      PAINT_NONE, reason, PAINT_NONE, age);
        }
        table_print(&t, stdout, c->color);
    }
}

static int cmd_explain(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)pos, (void)limit;
    return show_service(c, svc, print_explain);
}

static int cmd_candidates(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)pos, (void)limit;
    Dhaf__V1__GetSwitchoverCandidatesRequest req =
        DHAF__V1__GET_SWITCHOVER_CANDIDATES_REQUEST__INIT;
    req.service = (char *)svc;
    CALL(c, "GetSwitchoverCandidates", req, dhaf__v1__switchover_candidates, r);
    Dhaf__V1__SwitchoverCandidates *s = (Dhaf__V1__SwitchoverCandidates *)r_m;
    if (c->out == OUT_JSON) {
        print_json(c, r_m);
    } else {
        struct table t;
        table_init(&t, "Switchover candidates", "Priority", "Name", (const char *)NULL);
        for (size_t i = 0; i < s->n_candidates; i++) {
            char prio[16];
            snprintf(prio, sizeof(prio), "%u", s->candidates[i]->priority);
            table_row(&t, PAINT_NONE, prio, PAINT_NONE, s->candidates[i]->name);
        }
        table_print(&t, stdout, c->color);
    }
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

/* What dhafctl says of its caller in a change's audit trail ("dhafctl alice@host"). */
static void caller_comment(char *by, size_t len)
{
    char host[64] = "?";
    gethostname(host, sizeof(host) - 1);
    const char *user = getenv("USER");
    snprintf(by, len, "dhafctl %.32s@%.63s", user ? user : "?", host);
}

static int drain_call(struct ctl *c, const char *svc, const char *ep, bool drain)
{
    char by[128];
    caller_comment(by, sizeof(by));
    Dhaf__V1__DrainRequest req = DHAF__V1__DRAIN_REQUEST__INIT;
    req.service = (char *)svc;
    req.entry_point = (char *)ep;
    req.comment = by;
    CALL(c, drain ? "DrainEntryPoint" : "UndrainEntryPoint", req, dhaf__v1__drain_response, r);
    if (c->out == OUT_JSON)
        print_json(c, r_m);
    else
        printf("OK. %s\n", ((Dhaf__V1__DrainResponse *)r_m)->message);
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

static int cmd_drain(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)limit;
    return drain_call(c, svc, pos[0], true);
}

static int cmd_undrain(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)limit;
    return drain_call(c, svc, pos[0], false);
}

static int pause_call(struct ctl *c, bool pause)
{
    char by[128];
    caller_comment(by, sizeof(by));
    Dhaf__V1__PauseRequest req = DHAF__V1__PAUSE_REQUEST__INIT;
    req.comment = by;
    CALL(c, pause ? "Pause" : "Resume", req, dhaf__v1__pause_response, r);
    if (c->out == OUT_JSON)
        print_json(c, r_m);
    else
        printf("OK. %s\n", ((Dhaf__V1__PauseResponse *)r_m)->message);
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

static int cmd_pause(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)svc, (void)pos, (void)limit;
    return pause_call(c, true);
}

static int cmd_resume(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)svc, (void)pos, (void)limit;
    return pause_call(c, false);
}

static int cmd_switchover(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)limit;
    char by[128];
    caller_comment(by, sizeof(by));
    Dhaf__V1__SwitchoverRequest req = DHAF__V1__SWITCHOVER_REQUEST__INIT;
    req.service = (char *)svc;
    req.entry_point = pos[0];
    req.requested_by = by;
    CALL(c, "Switchover", req, dhaf__v1__switchover_response, r);
    if (c->out == OUT_JSON)
        print_json(c, r_m);
    else
        printf("OK. A request for a switchover to %s has been sent.\n", pos[0]);
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

static int cmd_purge(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)pos, (void)limit;
    Dhaf__V1__PurgeSwitchoverRequest req = DHAF__V1__PURGE_SWITCHOVER_REQUEST__INIT;
    req.service = (char *)svc;
    CALL(c, "PurgeSwitchover", req, dhaf__v1__purge_switchover_response, r);
    if (c->out == OUT_JSON)
        print_json(c, r_m);
    else
        printf("OK. The switchover requirement has been purged.\n");
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

static int cmd_decommission(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)svc, (void)limit;
    Dhaf__V1__DecommissionNodeRequest req = DHAF__V1__DECOMMISSION_NODE_REQUEST__INIT;
    req.name = pos[0];
    CALL(c, "DecommissionNode", req, dhaf__v1__decommission_node_response, r);
    if (c->out == OUT_JSON)
        print_json(c, r_m);
    else
        printf("OK. The dhaf node has been successfully decommissioned.\n");
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

static int cmd_events(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)pos;
    Dhaf__V1__ListEventsRequest req = DHAF__V1__LIST_EVENTS_REQUEST__INIT;
    req.service = (char *)(svc ? svc : "");
    req.limit = (uint32_t)(limit > 0 ? limit : 20);
    CALL(c, "ListEvents", req, dhaf__v1__list_events_response, r);
    Dhaf__V1__ListEventsResponse *s = (Dhaf__V1__ListEventsResponse *)r_m;
    warn_stale(c, s->view);
    if (c->out == OUT_JSON) {
        print_json(c, r_m);
    } else {
        struct table t;
        table_init(&t, svc ? "Events (newest first)" : "Cluster events (newest first)", "Time",
                   "Event", "Level", "Message", (const char *)NULL);
        for (size_t i = 0; i < s->n_events; i++) {
            const Dhaf__V1__Event *e = s->events[i];
            char at[40];
            fmt_time(at, sizeof(at), e->at_ms);
            enum paint p = e->level == DHAF__V1__EVENT_LEVEL__EVENT_LEVEL_CRITICAL  ? PAINT_RED
                           : e->level == DHAF__V1__EVENT_LEVEL__EVENT_LEVEL_WARNING ? PAINT_YELLOW
                                                                                    : PAINT_NONE;
            const char *lv = p == PAINT_RED ? "critical" : p == PAINT_YELLOW ? "warning" : "info";
            table_row(&t, PAINT_NONE, at, PAINT_BOLD, e->kind, p, lv, PAINT_NONE, e->message);
        }
        table_print(&t, stdout, c->color);
    }
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

static int cmd_probers(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)svc, (void)pos, (void)limit;
    Dhaf__V1__GetClusterStatusRequest req = DHAF__V1__GET_CLUSTER_STATUS_REQUEST__INIT;
    CALL(c, "GetClusterStatus", req, dhaf__v1__cluster_status, r);
    Dhaf__V1__ClusterStatus *s = (Dhaf__V1__ClusterStatus *)r_m;
    warn_stale(c, s->view);
    if (c->out == OUT_JSON) { /* an object as every verb's: {"probers": [...], "view": ...} */
        json_t *a = json_array();
        for (size_t i = 0; i < s->n_probers; i++)
            json_array_append_new(a, dhaf_pb_to_json(&s->probers[i]->base));
        json_t *j = json_pack("{s:o}", "probers", a);
        if (s->view)
            json_object_set_new(j, "view", dhaf_pb_to_json(&s->view->base));
        put_json(c, j);
    } else {
        struct table t;
        table_init(&t, "Remote probers", "Name", "Location", "Reporting", "Last report",
                   "Relayed by", "Version", (const char *)NULL);
        for (size_t i = 0; i < s->n_probers; i++) {
            const Dhaf__V1__ProberStatus *p = s->probers[i];
            char at[40];
            fmt_time(at, sizeof(at), p->last_report_ms);
            table_row(&t, PAINT_NONE, p->name, PAINT_NONE, p->location,
                      p->healthy ? PAINT_GREEN : PAINT_RED, p->healthy ? "Yes" : "No", PAINT_NONE,
                      at, PAINT_NONE, p->relayed_by, PAINT_NONE, p->version);
        }
        table_print(&t, stdout, c->color);
    }
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

/* As JSON: {"client": {"version", "git_commit"}, "node": the node's VersionInfo}; a node that
 * does not answer is an error (exit 1) in both formats, after the client's line in text. */
static int cmd_version(struct ctl *c, const char *svc, char **pos, int limit)
{
    (void)svc, (void)pos, (void)limit;
    if (c->out != OUT_JSON) {
        printf("dhafctl %s (%s)\n", DHAF_VERSION, DHAF_GIT_COMMIT);
        fflush(stdout);
    }
    Dhaf__V1__GetVersionRequest req = DHAF__V1__GET_VERSION_REQUEST__INIT;
    CALL(c, "GetVersion", req, dhaf__v1__version_info, r);
    Dhaf__V1__VersionInfo *v = (Dhaf__V1__VersionInfo *)r_m;
    if (c->out == OUT_JSON)
        put_json(c, json_pack("{s:{s:s, s:s}, s:o}", "client", "version", DHAF_VERSION,
                              "git_commit", DHAF_GIT_COMMIT, "node", dhaf_pb_to_json(r_m)));
    else
        printf("dhaf-node %s (%s) on node %s of cluster %s\n", v->version, v->git_commit, v->node,
               v->cluster);
    protobuf_c_message_free_unpacked(r_m, NULL);
    return 0;
}

/* ------------------------------------------------------------------ watch */

/* Ctrl-C (or SIGTERM) ends a --watch at once, whatever call is under way: nothing is left to
 * clean up (the terminal's modes are untouched, every frame is flushed whole). */
static void on_stop(int sig)
{
    (void)sig;
    _exit(0);
}

/* Runs cmd every interval_s seconds until a signal ends it: on a terminal the screen is
 * cleared and redrawn; otherwise the frames follow each other (tables under a header line, or
 * one JSON object a line). An error is shown in the frame and the next round tries again, on a
 * new channel (a restarted node is found again without gRPC's reconnect back-off). Returns 0
 * (stopped, or the reader of stdout went away) or 1 (the channel cannot be opened again). */
static int watch(struct ctl *c, const struct command *cmd, const char *service, char **pos,
                 int limit, int interval_s)
{
    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN); /* a closed pipe is a failed write, seen below: exit 0 */
    bool tty = c->out == OUT_TABLE && isatty(STDOUT_FILENO);
    static char frame[1 << 20]; /* one write per frame: no flicker on redraw */
    setvbuf(stdout, frame, _IOFBF, sizeof(frame));
    c->watch = true;
    c->errors_on_stdout = true; /* in the frame, in order */
    for (bool first = true;; first = false) {
        if (c->out == OUT_TABLE) {
            char at[40];
            fmt_time(at, sizeof(at), dhaf_wall_ms());
            printf("%s%sEvery %d s: dhafctl %s (%s) at %s; Ctrl-C to stop\n\n",
                   tty ? "\033[H\033[2J" : "", tty || first ? "" : "\n", interval_s, cmd->name,
                   c->target, at);
        }
        int rc = cmd->run(c, service, pos, limit);
        if (fflush(stdout) != 0 || ferror(stdout))
            return 0;
        if (rc != 0 && ctl_reconnect(c) != 0) {
            fflush(stdout);
            return 1;
        }
        struct timespec ts = {.tv_sec = interval_s};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
            ;
    }
}

/* ------------------------------------------------------------------ main */

static const struct command *find(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    /* the seed's README wrote "status-service --config" for all services */
    return NULL;
}

/* Whether -o json is asked anywhere on the line: errors found before getopt reaches it (an
 * unknown command, a bad option before -o) are told as JSON too. */
static bool wants_json(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--output=json") || !strcmp(a, "-ojson"))
            return true;
        if ((!strcmp(a, "-o") || !strcmp(a, "--output")) && i + 1 < argc &&
            !strcmp(argv[i + 1], "json"))
            return true;
    }
    return false;
}

/* A usage error (exit 2): the message, then (as text) the usage of cmd or of dhafctl. */
static int usage_error(const struct ctl *c, const struct command *cmd, bool show_usage,
                       const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int usage_error(const struct ctl *c, const struct command *cmd, bool show_usage,
                       const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ctl_fail(c, 2, "USAGE", "%s", msg);
    if (show_usage && c->out != OUT_JSON) {
        fprintf(stderr, "\n");
        if (cmd)
            command_usage(cmd, stderr);
        else
            usage(stderr);
    }
    return 2;
}

int main(int argc, char **argv)
{
    struct ctl c = {.timeout_ms = 5000, .out = OUT_TABLE};
    if (wants_json(argc, argv))
        c.out = OUT_JSON;
    if (argc < 2) {
        if (c.out == OUT_JSON)
            return usage_error(&c, NULL, false, "give a command (dhafctl help lists them)");
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "-V")) { /* no node asked */
        if (c.out == OUT_JSON)
            put_json(&c, json_pack("{s:{s:s, s:s}}", "client", "version", DHAF_VERSION,
                                   "git_commit", DHAF_GIT_COMMIT));
        else
            printf("dhafctl %s (%s)\n", DHAF_VERSION, DHAF_GIT_COMMIT);
        return 0;
    }
    const struct command *cmd = find(argv[1]);
    if (!cmd)
        return usage_error(&c, NULL, true, "unknown command \"%s\"", argv[1]);
    if (!cmd->run) { /* help [COMMAND] */
        const struct command *about = argc > 2 ? find(argv[2]) : NULL;
        if (argc > 2 && !about)
            return usage_error(&c, NULL, false, "unknown command \"%s\"", argv[2]);
        if (about)
            command_usage(about, stdout);
        else
            usage(stdout);
        return 0;
    }
    enum { OPT_TLS = 256, OPT_INTERVAL };
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"endpoint", required_argument, NULL, 'e'},
        {"token", required_argument, NULL, 't'},
        {"ca", required_argument, NULL, 'A'},
        {"tls", no_argument, NULL, OPT_TLS},
        {"token-file", required_argument, NULL, 'F'},
        {"output", required_argument, NULL, 'o'},
        {"timeout", required_argument, NULL, 'T'},
        {"service", required_argument, NULL, 's'},
        {"limit", required_argument, NULL, 'n'},
        {"watch", no_argument, NULL, 'w'},
        {"interval", required_argument, NULL, OPT_INTERVAL},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    c.color = isatty(STDOUT_FILENO) && !getenv("NO_COLOR");
    const char *service = NULL;
    char *token = NULL; /* --token's value, copied before the argument is wiped */
    int limit = 0, opt, interval_s = 0;
    bool watching = false;
    int rc = 0;
    optind = 2;
    opterr = 0;
    while (rc == 0 && (opt = getopt_long(argc, argv, ":c:e:t:o:s:n:wh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            c.config = optarg;
            break;
        case 'e':
            c.endpoint = optarg;
            break;
        case 't':
            /* Every user of the machine sees a process's arguments (ps, /proc/PID/cmdline):
             * keep a copy, wipe the argument, and say how to avoid it. */
            if (token)
                explicit_bzero(token, strlen(token));
            free(token);
            c.token = token = strdup(optarg);
            if (!token) {
                rc = ctl_fail(&c, 1, "RESOURCE_EXHAUSTED", "out of memory");
                break;
            }
            memset(optarg, 'x', strlen(optarg));
            ctl_warn(&c, "--token puts the token where every user of this machine can read it "
                         "(ps, /proc); use --token-file FILE or DHAF_TOKEN instead");
            break;
        case 'F':
            c.token_file = optarg;
            break;
        case 'A':
            c.ca_file = optarg;
            break;
        case OPT_TLS:
            c.use_tls = true;
            break;
        case 'o':
            if (!strcmp(optarg, "json"))
                c.out = OUT_JSON;
            else if (strcmp(optarg, "table") != 0)
                rc = usage_error(&c, NULL, false, "-o takes table or json, not \"%s\"", optarg);
            break;
        case 'T': {
            long s;
            if (!dhaf_parse_long(optarg, 1, 600, &s))
                rc = usage_error(&c, NULL, false, "--timeout takes seconds from 1 to 600");
            else
                c.timeout_ms = (int)s * 1000;
            break;
        }
        case 's':
            service = optarg;
            break;
        case 'n': {
            long n;
            if (!dhaf_parse_long(optarg, 1, 1000, &n))
                rc = usage_error(&c, NULL, false, "-n takes a number from 1 to 1000");
            else
                limit = (int)n;
            break;
        }
        case 'w':
            watching = true;
            break;
        case OPT_INTERVAL: {
            long s;
            if (!dhaf_parse_long(optarg, 1, 3600, &s))
                rc = usage_error(&c, NULL, false, "--interval takes seconds from 1 to 3600");
            else
                interval_s = (int)s;
            break;
        }
        case 'h':
            command_usage(cmd, stdout);
            rc = -1;
            break;
        case ':':
            rc = usage_error(&c, NULL, false, "%s needs a value", argv[optind - 1]);
            break;
        default:
            rc = usage_error(&c, cmd, true, "unknown option %s", argv[optind - 1]);
            break;
        }
    }
    char **pos = argv + optind;
    int n_pos = argc - optind;
    if (rc != 0)
        ; /* told */
    else if (c.token && c.token_file)
        rc = usage_error(&c, NULL, false, "give --token or --token-file, not both");
    else if (n_pos != cmd->n_pos)
        rc = usage_error(&c, cmd, true, "%s: %s", cmd->name,
                         n_pos < cmd->n_pos ? "missing argument" : "too many arguments");
    else if (cmd->needs_service && !service)
        rc = usage_error(&c, cmd, true, "%s: -s SERVICE is required", cmd->name);
    else if (watching && !cmd->watchable)
        rc = usage_error(&c, cmd, false,
                         "%s: --watch is for status, status-dhaf, status-services and "
                         "status-service",
                         cmd->name);
    else if (interval_s && !watching)
        rc = usage_error(&c, cmd, false, "%s: --interval goes with --watch", cmd->name);
    /* gRPC's own warnings (a failed handshake) say less than the error dhafctl prints */
    dhaf_log_setup(DHAF_LOG_ERROR, c.out == OUT_JSON ? DHAF_LOG_JSON : DHAF_LOG_TEXT);
    if (rc == 0)
        rc = ctl_connect(&c);
    if (rc == 0)
        rc = watching ? watch(&c, cmd, service, pos, limit, interval_s ? interval_s : 2)
                      : cmd->run(&c, service, pos, limit);
    ctl_close(&c);
    if (token)
        explicit_bzero(token, strlen(token));
    free(token);
    return rc < 0 ? 0 : rc;
}
