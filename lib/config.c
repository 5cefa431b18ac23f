/* SPDX-License-Identifier: MIT */
/* The node configuration: top-level key table, lists (services, entry points, notifiers,
 * probers), provider sections through the catalog, and the rules that span several keys. */
#include <arpa/inet.h>
#include <libgen.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include "cfg_internal.h"
#include "dhaf/alloc.h"
#include "dhaf/config.h"
#include "dhaf/err.h"
#include "dhaf/json.h"
#include "dhaf/log.h"
#include "dhaf/valid.h"

#define OFF(field) offsetof(struct dhaf_config, field)

static const char *const log_levels[] = {"debug", "info", "warn", "error", NULL};
static const char *const log_formats[] = {"text", "json", NULL};

/* A certificate common name as dhaf.admin-cns/read-cns list it: what an X.509 CN holds (at
 * most 64 characters), without control characters (the list's items come trimmed). */
static int check_cn(const char *v, char *why, size_t wl)
{
    size_t n = strlen(v);
    if (n == 0 || n > 64) {
        snprintf(why, wl, "a certificate common name has 1 to 64 characters");
        return -1;
    }
    for (const unsigned char *c = (const unsigned char *)v; *c; c++)
        if (*c < 0x20 || *c == 0x7f) {
            snprintf(why, wl, "a control character is no part of a common name");
            return -1;
        }
    return 0;
}

/* A host name a browser may put in Host for this node: a DNS name or an IP address. */
static int check_site_name(const char *v, char *why, size_t wl)
{
    if (!dhaf_valid_hostname(v) && !dhaf_valid_ip(v, NULL)) {
        snprintf(why, wl, "\"%.80s\" is neither a DNS name nor an IP address (no port, no scheme)",
                 v);
        return -1;
    }
    return 0;
}

/* clang-format off */
#define API_KEYS(sect, field, defport)                                                             \
    {"dhaf." sect ".host", DHAF_CFG_HOST, OFF(field.host), false, "localhost", 0, 0, NULL, NULL,   \
     NULL, "Address the API binds to (loopback by default)."},                                     \
    {"dhaf." sect ".port", DHAF_CFG_INT, OFF(field.port), false, defport, 1, 65535, NULL, NULL,    \
     NULL, "Port of the API."},                                                                    \
    {"dhaf." sect ".tls.cert-file", DHAF_CFG_PATH, OFF(field.tls.cert_file), false, NULL, 0, 0,    \
     NULL, NULL, NULL, "PEM certificate chain; TLS is on when set."},                              \
    {"dhaf." sect ".tls.key-file", DHAF_CFG_PATH, OFF(field.tls.key_file), false, NULL, 0, 0,      \
     NULL, NULL, NULL, "PEM private key of the certificate."},                                     \
    {"dhaf." sect ".tls.client-ca-file", DHAF_CFG_PATH, OFF(field.tls.ca_file), false, NULL, 0,    \
     0, NULL, NULL, NULL, "CA bundle that client certificates must chain to (mTLS)."}

const struct dhaf_cfgkey dhaf_config_keys[] = {
    {"dhaf.cluster-name", DHAF_CFG_NAME, OFF(cluster_name), true, NULL, 0, 0, NULL, NULL, NULL,
     "Name of the dhaf cluster (etcd prefix /dhaf/CLUSTER/)."},
    {"dhaf.node-name", DHAF_CFG_NAME, OFF(node_name), true, NULL, 0, 0, NULL, NULL, NULL,
     "Name of this node, unique in the cluster."},
    {"dhaf.healthy-node-status-ttl", DHAF_CFG_INT, OFF(healthy_node_status_ttl), false, "30", 2,
     3600, NULL, NULL, NULL, "Seconds a node stays healthy after its last heartbeat (TTL of its alive key)."},
    {"dhaf.heartbeat-interval", DHAF_CFG_INT, OFF(heartbeat_interval), false, "5", 1, 3600, NULL,
     NULL, NULL, "Seconds between heartbeats (keep-alives of the node's session lease)."},
    {"dhaf.tact-interval", DHAF_CFG_INT, OFF(tact_interval), false, "10", 1, 3600, NULL, NULL,
     NULL, "Seconds between health-check rounds."},
    {"dhaf.switch-back-delay", DHAF_CFG_INT, OFF(switch_back_delay), false, "3", 0, 1000, NULL,
     NULL, NULL, "Tacts a higher-priority entry point must be healthy by a strict majority "
     "before traffic switches back to it (a failover never waits)."},
    {"dhaf.auto-switch-back", DHAF_CFG_BOOL, OFF(auto_switch_back), false, "true", 0, 0, NULL,
     NULL, NULL, "Switch back to a higher-priority entry point once it is healthy again; false: "
     "only a switchover moves traffic back."},
    {"dhaf.flap-threshold", DHAF_CFG_INT, OFF(flap_threshold), false, "3", 0, 1000, NULL, NULL,
     NULL, "Flap damping: each time an entry point goes down adds 1 to its penalty, which halves "
     "every dhaf.flap-half-life; at this penalty it is held down (no failover or switch back "
     "goes to it while another is healthy) until the penalty falls below half of it. 0: off."},
    {"dhaf.flap-half-life", DHAF_CFG_INT, OFF(flap_half_life), false, "300", 1, 86400, NULL,
     NULL, NULL, "Seconds in which an entry point's flap penalty halves (dhaf.flap-threshold)."},
    {"dhaf.provider-check-interval", DHAF_CFG_INT, OFF(provider_check_interval), false, "60", 0,
     86400, NULL, NULL, NULL,
     "Seconds between the leader's reads of where each service's switcher really sends traffic "
     "(at most 2 reads a second in all, for the providers' rate limits): a target changed by "
     "hand is reported (provider-drift) and set back to the decided entry point - or, paused, "
     "only reported. 0: off."},
    {"dhaf.config-drift-grace", DHAF_CFG_INT, OFF(config_drift_grace), false, "30", 0, 3600, NULL,
     NULL, NULL,
     "Seconds the alive nodes' config hashes may differ (a rolling change of the config) before "
     "the leader records a config-drift event; status, /readyz and /metrics show a drift at "
     "once."},
    {"dhaf.dry-run", DHAF_CFG_BOOL, OFF(dry_run), false, "false", 0, 0, NULL, NULL, NULL,
     "Observe only: while this node leads, decisions are shown (would-switch events) and none "
     "is carried out - for a node's first days. dhafctl pause does it for the whole cluster."},
    {"dhaf.min-voters", DHAF_CFG_INT, OFF(min_voters), false, "0", 0, 256, NULL, NULL, NULL,
     "Fresh voters a decision needs; 0: a strict majority of the expected voters (the "
     "configured probers and the member nodes that probe)."},
    {"dhaf.tact-post-switch-delay", DHAF_CFG_INT, OFF(tact_post_switch_delay), false, "0", 0,
     3600, NULL, NULL, NULL, "Seconds to wait after a switch before the next decision."},
    API_KEYS("web-api", web_api, "8128"),
    {"dhaf.web-api.names", DHAF_CFG_STRLIST, OFF(web_api.names), false, NULL, 0, 0, NULL,
     check_site_name, NULL, "More host names the REST API is reached by (a DNS name, a reverse "
     "proxy's public name): changes sent with such a Host pass the cross-site check without a "
     "token. localhost, the bind address and the machine's name always do."},
    API_KEYS("grpc-api", grpc_api, "8129"),
    {"dhaf.api-token", DHAF_CFG_SECRET, OFF(api_token), false, NULL, 0, 0, NULL, NULL, NULL,
     "Bearer token both APIs require (also api-token-file or ${ENV}); at least 16 bytes when "
     "an API is not on loopback."},
    {"dhaf.read-token", DHAF_CFG_SECRET, OFF(read_token), false, NULL, 0, 0, NULL, NULL, NULL,
     "Bearer token that may only read (status, services, candidates, events, version, "
     "metrics); optional, needs dhaf.api-token or a client CA."},
    {"dhaf.admin-cns", DHAF_CFG_STRLIST, OFF(admin_cns), false, NULL, 0, 0, NULL, check_cn, NULL,
     "Client-certificate common names (mTLS) that may change state. Unset, with neither "
     "read-cns nor api-token: every certificate of the client CA whose CN is not a prober's."},
    {"dhaf.read-cns", DHAF_CFG_STRLIST, OFF(read_cns), false, NULL, 0, 0, NULL, check_cn, NULL,
     "Client-certificate common names that may only read."},
    {"dhaf.insecure-api", DHAF_CFG_BOOL, OFF(insecure_api), false, "false", 0, 0, NULL, NULL,
     NULL, "Allow a non-loopback API without authentication (api-token or a client CA) or "
     "with weak secrets."},
    {"dhaf.probe", DHAF_CFG_BOOL, OFF(probe), false, "true", 0, 0, NULL, NULL, NULL,
     "Run the built-in prober on this node (it votes as the node)."},
    {"dhaf.extensions-dir", DHAF_CFG_PATH, OFF(extensions_dir), false, "extensions", 0, 0, NULL,
     NULL, NULL, "Directory of plugin .so files; it and every .so must belong to root or "
     "dhaf's user and be writable by nobody else."},
    {"etcd.hosts", DHAF_CFG_EXTERNAL, 0, true, NULL, 0, 0, NULL, NULL, NULL,
     "etcd endpoints: http(s)://host:port or host:port, comma-separated or a list."},
    {"etcd.username", DHAF_CFG_STR, OFF(etcd.username), false, NULL, 0, 0, NULL, NULL, NULL,
     "etcd user (with password)."},
    {"etcd.password", DHAF_CFG_SECRET, OFF(etcd.password), false, NULL, 0, 0, NULL, NULL, NULL,
     "etcd password (also password-file or ${ENV})."},
    {"etcd.leader-key-ttl", DHAF_CFG_INT, OFF(etcd.leader_key_ttl), false, "15", 2, 3600, NULL,
     NULL, NULL, "Seconds the leader key outlives a leader that stopped renewing it."},
    {"etcd.compaction-interval", DHAF_CFG_INT, OFF(etcd.compaction_interval), false, "300", 0,
     86400, NULL, NULL, NULL,
     "Seconds between compactions of etcd's history by the leader, as kube-apiserver does; 0 "
     "turns them off (for an etcd shared with software that compacts it)."},
    {"etcd.compaction-retention", DHAF_CFG_INT, OFF(etcd.compaction_retention), false, "1000", 1,
     1000000000, NULL, NULL, NULL,
     "Revisions of history a compaction keeps (every key keeps its latest version): a watch "
     "that reconnects within them resumes, an older one reloads."},
    {"etcd.tls.ca-file", DHAF_CFG_PATH, OFF(etcd.client_tls.ca_file), false, NULL, 0, 0, NULL,
     NULL, NULL, "CA bundle to verify etcd's certificate (https:// hosts)."},
    {"etcd.tls.cert-file", DHAF_CFG_PATH, OFF(etcd.client_tls.cert_file), false, NULL, 0, 0, NULL,
     NULL, NULL, "Client certificate for etcd."},
    {"etcd.tls.key-file", DHAF_CFG_PATH, OFF(etcd.client_tls.key_file), false, NULL, 0, 0, NULL,
     NULL, NULL, "Client key for etcd."},
    {"log.level", DHAF_CFG_ENUM, OFF(log_level), false, "info", 0, 0, log_levels, NULL, NULL,
     "Lowest level logged: debug, info, warn or error."},
    {"log.format", DHAF_CFG_ENUM, OFF(log_format), false, "text", 0, 0, log_formats, NULL, NULL,
     "text (key=value lines) or json."},
    {"services", DHAF_CFG_EXTERNAL, 0, true, NULL, 0, 0, NULL, NULL, NULL,
     "The services dhaf keeps available."},
    {"notifiers", DHAF_CFG_EXTERNAL, 0, false, NULL, 0, 0, NULL, NULL, NULL,
     "Notifier instances."},
    {"probers", DHAF_CFG_EXTERNAL, 0, false, NULL, 0, 0, NULL, NULL, NULL,
     "Remote probers allowed to vote."},
    {NULL, 0, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL},
};

static int check_ip(const char *v, char *why, size_t wl)
{
    if (dhaf_valid_ip(v, NULL))
        return 0;
    snprintf(why, wl, "\"%.60s\" is not an IPv4 or IPv6 address", v);
    return -1;
}

#define SVC(field) offsetof(struct dhaf_service, field)
static const struct dhaf_cfgkey service_keys[] = {
    {"name", DHAF_CFG_NAME, SVC(name), true, NULL, 0, 0, NULL, NULL, NULL, "Name of the service."},
    {"domain", DHAF_CFG_HOST, SVC(domain), true, NULL, 0, 0, NULL, NULL, NULL,
     "Domain name of the service, e.g. site.com."},
    {"entry-points", DHAF_CFG_EXTERNAL, 0, true, NULL, 0, 0, NULL, NULL, NULL,
     "Entry points in order of priority."},
    {"switcher", DHAF_CFG_EXTERNAL, 0, true, NULL, 0, 0, NULL, NULL, NULL, "The service's switcher."},
    {"health-checker", DHAF_CFG_EXTERNAL, 0, true, NULL, 0, 0, NULL, NULL, NULL,
     "The service's health checker."},
    {NULL, 0, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL},
};

#define EPF(field) offsetof(struct dhaf_ep, field)
static const struct dhaf_cfgkey ep_keys[] = {
    {"name", DHAF_CFG_NAME, EPF(name), true, NULL, 0, 0, NULL, NULL, NULL, "Name of the entry point."},
    {"ip", DHAF_CFG_STR, EPF(ip), true, NULL, 0, 0, NULL, check_ip, NULL,
     "IPv4 or IPv6 address of the entry point."},
    {NULL, 0, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL},
};

#define SEC(field) offsetof(struct dhaf_section, field)
static const struct dhaf_cfgkey checker_keys[] = {
    {"rise", DHAF_CFG_INT, SEC(rise), false, "1", 1, 100, NULL, NULL, NULL,
     "Healthy results in a row before an unhealthy entry point counts as healthy again."},
    {"fall", DHAF_CFG_INT, SEC(fall), false, "1", 1, 100, NULL, NULL, NULL,
     "Unhealthy results in a row before a healthy entry point counts as unhealthy."},
    {NULL, 0, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL},
};

/* Event kinds are lower-case words joined by '-' ("ep-down"); which ones exist, the catalog
 * says (load_section). */
static int check_kind_form(const char *v, char *why, size_t wl)
{
    bool ok = *v && *v != '-';
    for (const char *p = v; ok && *p; p++)
        ok = (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-';
    if (!ok)
        snprintf(why, wl, "\"%.60s\" is not an event kind (lower-case words joined by '-', "
                 "like ep-down)", v);
    return ok ? 0 : -1;
}

static const char *const severities[] = {"info", "warning", "critical", NULL};

static const struct dhaf_cfgkey notifier_keys[] = {
    {"min-severity", DHAF_CFG_ENUM, SEC(min_severity), false, "info", 0, 0, severities, NULL,
     NULL, "Lowest severity sent: info (every event), warning or critical."},
    {"events", DHAF_CFG_STRLIST, SEC(events), false, NULL, 0, 0, NULL, check_kind_form, NULL,
     "Event kinds sent (a list, or \"a,b\"); absent: every kind. An unknown kind is an error."},
    {"repeat-window", DHAF_CFG_INT, SEC(repeat_window), false, "0", 0, 86400, NULL, NULL, NULL,
     "Seconds in which repeats of an event (same kind, service, node and entry points) are "
     "held after the first and then sent as one message with a count; 0: off."},
    {NULL, 0, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL},
};

#define PRB(field) offsetof(struct dhaf_prober_cfg, field)
static const struct dhaf_cfgkey prober_keys[] = {
    {"name", DHAF_CFG_NAME, PRB(name), true, NULL, 0, 0, NULL, NULL, NULL, "Name of the prober."},
    {"token", DHAF_CFG_SECRET, PRB(token), false, NULL, 0, 0, NULL, NULL, NULL,
     "Token the prober presents (also token-file or ${ENV})."},
    {"location", DHAF_CFG_STR, PRB(location), false, NULL, 0, 0, NULL, NULL, NULL,
     "Free-text label of the vantage point."},
    {NULL, 0, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL},
};
/* clang-format on */

const char *dhaf_pkind_name(enum dhaf_pkind kind)
{
    switch (kind) {
    case DHAF_PKIND_SWITCHER:
        return "switcher";
    case DHAF_PKIND_CHECKER:
        return "health-checker";
    case DHAF_PKIND_NOTIFIER:
        return "notifier";
    }
    return "provider";
}

/* ------------------------------------------------------------------ loading state */

struct loadctx {
    struct dhaf_cfg_report *rep;
    const struct dhaf_cfg_catalog *cat;
    const char *dir;
    const struct ynode *root;
    struct dhaf_config *cfg;
};

static struct dhaf_cfg_ctx section(struct loadctx *lc, const struct ynode *map, const char *path,
                                   const struct dhaf_cfgkey *keys, const struct ynode *parent)
{
    struct dhaf_cfg_ctx c = {
        .rep = lc->rep,
        .map = map,
        .line = parent ? parent->line : 1,
        .col = parent ? parent->col : 1,
        .path = path,
        .dir = lc->dir,
        .keys = keys,
        .extra = NULL,
    };
    return c;
}

/* Reports a missing or empty list; returns true when the list has items. */
static bool want_list(struct loadctx *lc, const struct ynode *v, const struct ynode *parent,
                      const char *path, const char *what, bool required)
{
    char show[96];
    if (!v || ynode_is_null(v)) {
        if (required)
            cfg_error_at(lc->rep, parent, path, "missing; at least one %s is required", what);
        return false;
    }
    if (v->kind != YNODE_SEQ) {
        cfg_error_at(lc->rep, v, path, "expected a list of %ss, found %s", what,
                     cfg_show(v, show, sizeof(show)));
        return false;
    }
    if (v->n == 0) {
        if (required)
            cfg_error_at(lc->rep, v, path, "the list is empty; at least one %s is required", what);
        return false;
    }
    return true;
}

/* Reports the second use of a name in a list. */
static void unique_name(struct loadctx *lc, const struct ynode *list, size_t i,
                        const char *const *names, const char *path, const char *what)
{
    if (!names[i])
        return;
    for (size_t j = 0; j < i; j++) {
        if (names[j] && strcmp(names[i], names[j]) == 0) {
            const struct ynode *nv = ynode_get(list->items[i], "name", NULL);
            char *p = cfg_join(path, "name");
            cfg_error_at(lc->rep, nv ? nv : list->items[i], p,
                         "%s \"%s\" is already defined at line %d", what, names[i],
                         list->items[j]->line);
            free(p);
            return;
        }
    }
}

/* ------------------------------------------------------------------ providers */

/* Every kind in a notifier's events: names one the catalog knows. Returns the errors found. */
static size_t check_event_kinds(struct loadctx *lc, const struct ynode *v, const char *path,
                                const struct dhaf_section *out)
{
    if (!lc->cat || !lc->cat->event_kind_at || !out->events.n)
        return 0;
    const char *names[256];
    size_t n = 0;
    while (n < 256 && (names[n] = lc->cat->event_kind_at(lc->cat, n)) != NULL)
        n++;
    const struct ynode *ev = ynode_get(v, "events", NULL);
    char *epath = cfg_join(path, "events");
    size_t errs = 0;
    for (size_t i = 0; i < out->events.n; i++) {
        const char *kind = out->events.v[i];
        size_t k = 0;
        while (k < n && strcmp(names[k], kind) != 0)
            k++;
        if (k < n)
            continue;
        const struct ynode *at = ev && ev->kind == YNODE_SEQ && i < ev->n ? ev->items[i] : ev;
        char *ipath = ev && ev->kind == YNODE_SEQ ? cfg_index(epath, i) : dhaf_xstrdup(epath);
        const char *s = dhaf_cfg_suggest(kind, names, n);
        cfg_error_at(lc->rep, at ? at : v, ipath,
                     "unknown event kind \"%.60s\"%s%s%s; see docs/config.md for the kinds", kind,
                     s ? " (did you mean \"" : "", s ? s : "", s ? "\"?)" : "");
        free(ipath);
        errs++;
    }
    free(epath);
    return errs;
}

static void load_section(struct loadctx *lc, const struct ynode *v, const struct ynode *parent,
                         const char *path, enum dhaf_pkind kind, struct dhaf_section *out)
{
    char show[96];
    out->line = v ? v->line : parent->line;
    out->col = v ? v->col : parent->col;
    if (!v || ynode_is_null(v)) {
        cfg_error_at(lc->rep, parent, path, "missing; a %s section with a type is required",
                     dhaf_pkind_name(kind));
        return;
    }
    if (v->kind != YNODE_MAP) {
        cfg_error_at(lc->rep, v, path, "expected a mapping with a type, found %s",
                     cfg_show(v, show, sizeof(show)));
        return;
    }
    const struct ynode *tv = ynode_get(v, "type", NULL);
    char *tpath = cfg_join(path, "type");
    if (!tv || ynode_is_null(tv)) {
        cfg_error_at(lc->rep, v, tpath, "missing; the %s type is required", dhaf_pkind_name(kind));
        free(tpath);
        return;
    }
    if (tv->kind != YNODE_SCALAR) {
        cfg_error_at(lc->rep, tv, tpath, "expected a type name, found %s", ynode_kind_name(tv));
        free(tpath);
        return;
    }
    struct dhaf_cfg_schema schema;
    if (!lc->cat || lc->cat->find(lc->cat, kind, tv->str, &schema) != 0) {
        const char *names[64];
        size_t n = 0;
        char list[512] = "";
        while (lc->cat && n < 64 && (names[n] = lc->cat->type_at(lc->cat, kind, n)) != NULL) {
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", n ? ", " : "",
                     names[n]);
            n++;
        }
        const char *s = dhaf_cfg_suggest(tv->str, names, n);
        cfg_error_at(lc->rep, tv, tpath, "unknown %s type %s%s%s%s; known types: %s",
                     dhaf_pkind_name(kind), cfg_show(tv, show, sizeof(show)),
                     s ? " (did you mean \"" : "", s ? s : "", s ? "\"?)" : "", n ? list : "none");
        free(tpath);
        return;
    }
    free(tpath);
    out->type = dhaf_xstrdup(tv->str);
    out->keys = schema.keys;
    out->max_call_ms = schema.max_call_ms;
    out->conf = dhaf_xcalloc(1, schema.conf_size ? schema.conf_size : 1);

    static const char *const extra_sw[] = {"type", NULL};
    static const char *const extra_hc[] = {"type", "rise", "fall", NULL};
    static const char *const extra_ntf[] = {"type",   "name",          "min-severity",
                                            "events", "repeat-window", NULL};
    struct dhaf_cfg_ctx c = section(lc, v, path, schema.keys, parent);
    c.extra = kind == DHAF_PKIND_NOTIFIER  ? extra_ntf
              : kind == DHAF_PKIND_CHECKER ? extra_hc
                                           : extra_sw;
    size_t errs = cfg_apply(&c, out->conf);
    if (kind == DHAF_PKIND_CHECKER) {
        /* rise/fall belong to every checker; the framework keeps them in the section. */
        struct dhaf_cfg_ctx cc = section(lc, v, path, checker_keys, parent);
        cc.skip_unknown = true;
        errs += cfg_apply(&cc, out);
    }
    if (kind == DHAF_PKIND_NOTIFIER) {
        /* the filters and repeat collapsing belong to every notifier: node/notify.c runs them */
        struct dhaf_cfg_ctx nc = section(lc, v, path, notifier_keys, parent);
        nc.skip_unknown = true;
        size_t nerrs = cfg_apply(&nc, out);
        if (nerrs == 0)
            nerrs = check_event_kinds(lc, v, path, out);
        errs += nerrs;
    }
    if (errs == 0 && schema.finish)
        schema.finish(out->conf, &c);
}

/* ------------------------------------------------------------------ services */

static void load_eps(struct loadctx *lc, const struct ynode *list, const char *path,
                     struct dhaf_service *svc)
{
    svc->eps = dhaf_xcalloc(list->n, sizeof(*svc->eps));
    svc->n_eps = list->n;
    const char **names = dhaf_xcalloc(list->n, sizeof(char *));
    for (size_t i = 0; i < list->n; i++) {
        const struct ynode *item = list->items[i];
        char *ipath = cfg_index(path, i);
        struct dhaf_ep *ep = &svc->eps[i];
        ep->line = item->line;
        struct dhaf_cfg_ctx c = section(lc, item, ipath, ep_keys, list);
        if (item->kind != YNODE_MAP) {
            char show[96];
            cfg_error_at(lc->rep, item, ipath, "expected an entry point (name, ip), found %s",
                         cfg_show(item, show, sizeof(show)));
            free(ipath);
            continue;
        }
        cfg_apply(&c, ep);
        if (ep->ip)
            dhaf_valid_ip(ep->ip, &ep->family);
        names[i] = ep->name;
        unique_name(lc, list, i, names, ipath, "entry point");
        for (size_t j = 0; j < i && ep->ip; j++) {
            int a = 0, b = 0;
            unsigned char x[16], y[16];
            if (!svc->eps[j].ip)
                continue;
            a = inet_pton(ep->family, ep->ip, x);
            b = inet_pton(ep->family, svc->eps[j].ip, y);
            if (a == 1 && b == 1 && ep->family == svc->eps[j].family &&
                memcmp(x, y, ep->family == AF_INET ? 4 : 16) == 0) {
                char *p = cfg_join(ipath, "ip");
                cfg_error_at(lc->rep, ynode_get(item, "ip", NULL), p,
                             "%s is already the address of entry point \"%s\"", ep->ip,
                             svc->eps[j].name ? svc->eps[j].name : "?");
                free(p);
                break;
            }
        }
        free(ipath);
    }
    free(names);
}

static void load_services(struct loadctx *lc)
{
    const struct ynode *list = ynode_get(lc->root, "services", NULL);
    if (!want_list(lc, list, lc->root, "services", "service", true))
        return;
    struct dhaf_config *cfg = lc->cfg;
    cfg->services = dhaf_xcalloc(list->n, sizeof(*cfg->services));
    cfg->n_services = list->n;
    const char **names = dhaf_xcalloc(list->n, sizeof(char *));
    for (size_t i = 0; i < list->n; i++) {
        const struct ynode *item = list->items[i];
        struct dhaf_service *svc = &cfg->services[i];
        char *path = cfg_index("services", i);
        if (item->kind != YNODE_MAP) {
            char show[96];
            cfg_error_at(lc->rep, item, path, "expected a service (a mapping), found %s",
                         cfg_show(item, show, sizeof(show)));
            free(path);
            continue;
        }
        struct dhaf_cfg_ctx c = section(lc, item, path, service_keys, list);
        cfg_apply(&c, svc);
        names[i] = svc->name;
        unique_name(lc, list, i, names, path, "service");

        char *epath = cfg_join(path, "entry-points");
        const struct ynode *eps = ynode_get(item, "entry-points", NULL);
        if (want_list(lc, eps, item, epath, "entry point", true))
            load_eps(lc, eps, epath, svc);
        free(epath);

        char *sp = cfg_join(path, "switcher");
        load_section(lc, ynode_get(item, "switcher", NULL), item, sp, DHAF_PKIND_SWITCHER,
                     &svc->switcher);
        free(sp);
        char *hp = cfg_join(path, "health-checker");
        load_section(lc, ynode_get(item, "health-checker", NULL), item, hp, DHAF_PKIND_CHECKER,
                     &svc->checker);
        free(hp);
        free(path);
    }
    free(names);
}

static void load_notifiers(struct loadctx *lc)
{
    const struct ynode *list = ynode_get(lc->root, "notifiers", NULL);
    if (!want_list(lc, list, lc->root, "notifiers", "notifier", false))
        return;
    struct dhaf_config *cfg = lc->cfg;
    cfg->notifiers = dhaf_xcalloc(list->n, sizeof(*cfg->notifiers));
    cfg->n_notifiers = list->n;
    const char **names = dhaf_xcalloc(list->n, sizeof(char *));
    for (size_t i = 0; i < list->n; i++) {
        const struct ynode *item = list->items[i];
        struct dhaf_section *ns = &cfg->notifiers[i];
        char *path = cfg_index("notifiers", i);
        load_section(lc, item, list, path, DHAF_PKIND_NOTIFIER, ns);
        if (ns->type) {
            const struct ynode *nv = ynode_get(item, "name", NULL);
            char *np = cfg_join(path, "name");
            char show[96];
            if (!nv || ynode_is_null(nv)) {
                ns->name = dhaf_xasprintf("%s-anon", ns->type); /* the seed's default */
            } else if (nv->kind != YNODE_SCALAR || !dhaf_valid_name(nv->str)) {
                cfg_error_at(lc->rep, nv, np,
                             "%s is not a valid name; use 1-64 letters, digits, '-' or '_'",
                             cfg_show(nv, show, sizeof(show)));
            } else {
                ns->name = dhaf_xstrdup(nv->str);
            }
            free(np);
        }
        names[i] = ns->name;
        unique_name(lc, list, i, names, path, "notifier");
        free(path);
    }
    free(names);
}

static void load_probers(struct loadctx *lc)
{
    const struct ynode *list = ynode_get(lc->root, "probers", NULL);
    if (!want_list(lc, list, lc->root, "probers", "prober", false))
        return;
    struct dhaf_config *cfg = lc->cfg;
    cfg->probers = dhaf_xcalloc(list->n, sizeof(*cfg->probers));
    cfg->n_probers = list->n;
    const char **names = dhaf_xcalloc(list->n, sizeof(char *));
    for (size_t i = 0; i < list->n; i++) {
        const struct ynode *item = list->items[i];
        char *path = cfg_index("probers", i);
        struct dhaf_cfg_ctx c = section(lc, item, path, prober_keys, list);
        if (item->kind != YNODE_MAP) {
            char show[96];
            cfg_error_at(lc->rep, item, path, "expected a prober (name, token), found %s",
                         cfg_show(item, show, sizeof(show)));
            free(path);
            continue;
        }
        if (cfg_apply(&c, &cfg->probers[i]) == 0 && !cfg->probers[i].token &&
            !cfg->grpc_api.tls.ca_file)
            dhaf_cfg_fail(&c, "token",
                          "missing; a prober needs a token unless dhaf.grpc-api.tls.client-ca-file "
                          "is set (client certificates)");
        names[i] = cfg->probers[i].name;
        unique_name(lc, list, i, names, path, "prober");
        free(path);
    }
    free(names);
}

static void load_etcd_hosts(struct loadctx *lc)
{
    const struct ynode *etcd = ynode_get(lc->root, "etcd", NULL);
    const struct ynode *v = etcd && etcd->kind == YNODE_MAP ? ynode_get(etcd, "hosts", NULL) : NULL;
    struct dhaf_etcd_cfg *e = &lc->cfg->etcd;
    char show[96], why[160];
    if (!v || ynode_is_null(v)) {
        cfg_error_at(lc->rep, etcd && etcd->kind == YNODE_MAP ? etcd : lc->root, "etcd.hosts",
                     "missing; list the etcd endpoints, e.g. http://127.0.0.1:2379");
        return;
    }
    /* Either "a:1,b:2" (the seed's form) or a YAML list. */
    size_t n = 0;
    char **items = NULL;
    const struct ynode **where = NULL;
    if (v->kind == YNODE_SCALAR) {
        char *copy = dhaf_xstrdup(v->str), *save = NULL;
        for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
            while (*t == ' ')
                t++;
            size_t l = strlen(t);
            while (l && t[l - 1] == ' ')
                t[--l] = '\0';
            items = dhaf_xreallocarray(items, n + 1, sizeof(char *));
            where = dhaf_xreallocarray(where, n + 1, sizeof(*where));
            items[n] = dhaf_xstrdup(t);
            where[n++] = v;
        }
        free(copy);
    } else if (v->kind == YNODE_SEQ) {
        for (size_t i = 0; i < v->n; i++) {
            if (v->items[i]->kind != YNODE_SCALAR) {
                char *p = cfg_index("etcd.hosts", i);
                cfg_error_at(lc->rep, v->items[i], p, "expected host:port, found %s",
                             ynode_kind_name(v->items[i]));
                free(p);
                continue;
            }
            items = dhaf_xreallocarray(items, n + 1, sizeof(char *));
            where = dhaf_xreallocarray(where, n + 1, sizeof(*where));
            items[n] = dhaf_xstrdup(v->items[i]->str);
            where[n++] = v->items[i];
        }
    } else {
        cfg_error_at(lc->rep, v, "etcd.hosts", "expected endpoints, found %s",
                     cfg_show(v, show, sizeof(show)));
        return;
    }
    if (n == 0)
        cfg_error_at(lc->rep, v, "etcd.hosts", "no endpoint given; expected e.g. 127.0.0.1:2379");
    e->hosts = dhaf_xcalloc(n ? n : 1, sizeof(char *));
    int tls_seen = -1;
    for (size_t i = 0; i < n; i++) {
        char *host = NULL;
        int port = 0;
        bool tls = false;
        if (dhaf_parse_endpoint(items[i], &host, &port, &tls, why, sizeof(why)) != 0) {
            cfg_error_at(lc->rep, where[i], "etcd.hosts", "\"%.80s\": %s", items[i], why);
        } else if (tls_seen >= 0 && tls_seen != (int)tls) {
            cfg_error_at(lc->rep, where[i], "etcd.hosts",
                         "\"%.80s\": mixes http:// and https:// endpoints", items[i]);
            free(host);
        } else {
            tls_seen = tls;
            e->hosts[e->n_hosts++] = strchr(host, ':') ? dhaf_xasprintf("[%s]:%d", host, port)
                                                       : dhaf_xasprintf("%s:%d", host, port);
            free(host);
        }
        free(items[i]);
    }
    e->tls = tls_seen == 1;
    free(items);
    free(where);
}

/* ------------------------------------------------------------------ cross-key rules */

static const struct ynode *at_key(const struct loadctx *lc, const char *dotted)
{
    const struct ynode *v = cfg_lookup(lc->root, dotted);
    return v ? v : lc->root;
}

static void check_tls(struct loadctx *lc, const struct dhaf_tls *t, const char *prefix,
                      const char *ca_name)
{
    char *cert = cfg_join(prefix, "cert-file"), *key = cfg_join(prefix, "key-file");
    char *ca = cfg_join(prefix, ca_name);
    if (!!t->cert_file != !!t->key_file)
        cfg_error_at(lc->rep, at_key(lc, t->cert_file ? cert : key), t->cert_file ? key : cert,
                     "missing; cert-file and key-file go together");
    free(cert);
    free(key);
    free(ca);
}

static void check_api(struct loadctx *lc, const struct dhaf_api *api, const char *name)
{
    char *prefix = dhaf_xasprintf("dhaf.%s.tls", name);
    check_tls(lc, &api->tls, prefix, "client-ca-file");
    if (api->tls.ca_file && !api->tls.cert_file) {
        char *p = cfg_join(prefix, "client-ca-file");
        cfg_error_at(lc->rep, at_key(lc, p), p, "client certificates need TLS: set cert-file too");
        free(p);
    }
    free(prefix);
    struct dhaf_config *cfg = lc->cfg;
    /* TLS without client certificates encrypts but lets anyone in: only a token or a client
     * CA authenticates the caller. */
    if (api->host && !dhaf_is_loopback_host(api->host) && !cfg->api_token && !api->tls.ca_file &&
        !cfg->insecure_api) {
        char *p = dhaf_xasprintf("dhaf.%s.host", name);
        cfg_error_at(lc->rep, at_key(lc, p), p,
                     "%s is not a loopback address, and the API has no authentication (neither "
                     "dhaf.api-token nor dhaf.%s.tls.client-ca-file; TLS alone encrypts but lets "
                     "anyone in): set dhaf.api-token (16 bytes or more) or a client CA, or "
                     "dhaf.insecure-api: true if you mean it",
                     api->host, name);
        free(p);
    }
}

static bool in_list(const struct dhaf_strlist *l, const char *v)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], v) == 0)
            return true;
    return false;
}

/* The roles (DESIGN "Secure by default"): tokens tell the admin, the read-only caller and each
 * prober apart, so no two may be equal; a CN has one role; a read token on an API where anyone
 * is admin would restrict nothing; CN lists need a client CA. */
static void check_roles(struct loadctx *lc)
{
    const struct dhaf_config *cfg = lc->cfg;
    if (cfg->read_token && cfg->api_token && strcmp(cfg->read_token, cfg->api_token) == 0)
        cfg_error_at(lc->rep, at_key(lc, "dhaf.read-token"), "dhaf.read-token",
                     "is the same as dhaf.api-token; the read-only token must differ from the "
                     "admin token");
    for (size_t i = 0; i < cfg->n_probers; i++) {
        const char *t = cfg->probers[i].token;
        const char *same = !t                                               ? NULL
                           : cfg->api_token && !strcmp(t, cfg->api_token)   ? "dhaf.api-token"
                           : cfg->read_token && !strcmp(t, cfg->read_token) ? "dhaf.read-token"
                                                                            : NULL;
        if (same) {
            char *p = cfg_index("probers", i);
            char *k = cfg_join(p, "token");
            const struct ynode *pl = ynode_get(lc->root, "probers", NULL);
            const struct ynode *at =
                pl && pl->kind == YNODE_SEQ && i < pl->n ? cfg_lookup(pl->items[i], "token") : NULL;
            cfg_error_at(lc->rep, at ? at : lc->root, k,
                         "is the same as %s; a prober's token may only call the Prober service, "
                         "so it must differ from the API tokens",
                         same);
            free(k);
            free(p);
        }
    }
    const struct dhaf_api *apis[] = {&cfg->web_api, &cfg->grpc_api};
    const char *names[] = {"web-api", "grpc-api"};
    bool any_ca = false;
    char open_apis[64] = "";
    for (size_t i = 0; i < 2; i++) {
        any_ca |= apis[i]->tls.ca_file != NULL;
        if (!apis[i]->tls.ca_file)
            snprintf(open_apis + strlen(open_apis), sizeof(open_apis) - strlen(open_apis),
                     "%sdhaf.%s", open_apis[0] ? " and " : "", names[i]);
    }
    if (cfg->read_token && !cfg->api_token && open_apis[0])
        cfg_error_at(lc->rep, at_key(lc, "dhaf.read-token"), "dhaf.read-token",
                     "restricts nothing on %s: without dhaf.api-token or a client CA "
                     "(tls.client-ca-file) every caller there is admin; set dhaf.api-token too",
                     open_apis);
    const struct dhaf_strlist *lists[] = {&cfg->admin_cns, &cfg->read_cns};
    const char *lnames[] = {"dhaf.admin-cns", "dhaf.read-cns"};
    for (size_t l = 0; l < 2; l++) {
        if (lists[l]->n && !any_ca)
            cfg_error_at(lc->rep, at_key(lc, lnames[l]), lnames[l],
                         "no API asks for client certificates: set "
                         "dhaf.web-api.tls.client-ca-file or dhaf.grpc-api.tls.client-ca-file");
        for (size_t i = 0; i < lists[l]->n; i++) {
            const char *cn = lists[l]->v[i];
            const char *why = NULL;
            char buf[160];
            if (l == 0 && in_list(&cfg->read_cns, cn))
                why = "is also in dhaf.read-cns; a name has one role";
            for (size_t p = 0; !why && p < cfg->n_probers; p++)
                if (cfg->probers[p].name && strcmp(cfg->probers[p].name, cn) == 0) {
                    snprintf(buf, sizeof(buf),
                             "is the name of prober %s; a prober's certificate may only call the "
                             "Prober service",
                             cn);
                    why = buf;
                }
            if (why)
                cfg_error_at(lc->rep, at_key(lc, lnames[l]), lnames[l], "\"%s\" %s", cn, why);
        }
    }
}

/* A secret that lets a caller in from the network must be at least this long. */
#define STRONG_SECRET_MIN 16

/* Why secret s is too weak to guard an exposed node, or NULL when it is fine. Never quotes s. */
static const char *weak_secret(const char *s)
{
    static const char *const placeholders[] = {"replace-me", "replace_me", "replaceme",
                                               "change-me",  "change_me",  "changeme"};
    if (strlen(s) < STRONG_SECRET_MIN)
        return "is shorter than 16 bytes";
    for (size_t i = 0; i < sizeof(placeholders) / sizeof(placeholders[0]); i++) {
        size_t pl = strlen(placeholders[i]);
        for (const char *c = s; *c; c++)
            if (strncasecmp(c, placeholders[i], pl) == 0)
                return "is still the example's placeholder (REPLACE-ME...)";
    }
    return NULL;
}

/* Reports secret (the value of key in section map at path) when it is weak. exposed names the
 * non-loopback bind; an error unless dhaf.insecure-api, then a warning. */
static void check_secret(struct loadctx *lc, const struct ynode *map, const char *path,
                         const char *key, const char *secret, const char *exposed)
{
    const char *why = secret ? weak_secret(secret) : NULL;
    if (!why)
        return;
    char *fk = dhaf_xasprintf("%s-file", key);
    const struct ynode *at = cfg_lookup(map, key);
    const char *written = key;
    if (!at || ynode_is_null(at)) {
        at = cfg_lookup(map, fk);
        written = fk;
    }
    char *p = cfg_join(path, written);
    const char *fix = "use a random secret of 16 bytes or more (e.g. openssl rand -hex 32)";
    if (lc->cfg->insecure_api)
        dhaf_cfg_report_warn(lc->rep, at ? at->line : 0, at ? at->col : 0, p,
                             "%s, too weak for a node reachable from the network (%s); %s", why,
                             exposed, fix);
    else
        cfg_error_at(lc->rep, at ? at : map, p,
                     "%s, too weak for a node reachable from the network (%s); %s, or set "
                     "dhaf.insecure-api: true if you mean it",
                     why, exposed, fix);
    free(p);
    free(fk);
}

/* On a node whose API is bound to a non-loopback address, the secrets that let a caller in
 * (api-token, the probers' tokens, a notifier's join-code) must not be weak or placeholders. */
static void check_secrets(struct loadctx *lc)
{
    const struct dhaf_config *cfg = lc->cfg;
    const struct dhaf_api *apis[] = {&cfg->web_api, &cfg->grpc_api};
    const char *names[] = {"web-api", "grpc-api"};
    char exposed[160] = "";
    for (size_t i = 0; i < 2 && !exposed[0]; i++)
        if (apis[i]->host && !dhaf_is_loopback_host(apis[i]->host))
            snprintf(exposed, sizeof(exposed), "dhaf.%s.host is %s", names[i], apis[i]->host);
    if (!exposed[0])
        return;
    const struct ynode *dhaf = ynode_get(lc->root, "dhaf", NULL);
    check_secret(lc, dhaf ? dhaf : lc->root, "dhaf", "api-token", cfg->api_token, exposed);
    check_secret(lc, dhaf ? dhaf : lc->root, "dhaf", "read-token", cfg->read_token, exposed);
    const struct ynode *pl = ynode_get(lc->root, "probers", NULL);
    for (size_t i = 0; i < cfg->n_probers && pl && pl->kind == YNODE_SEQ && i < pl->n; i++) {
        char *p = cfg_index("probers", i);
        check_secret(lc, pl->items[i], p, "token", cfg->probers[i].token, exposed);
        free(p);
    }
    const struct ynode *nl = ynode_get(lc->root, "notifiers", NULL);
    for (size_t i = 0; i < cfg->n_notifiers && nl && nl->kind == YNODE_SEQ && i < nl->n; i++) {
        const struct dhaf_section *s = &cfg->notifiers[i];
        for (const struct dhaf_cfgkey *k = s->keys; s->conf && k && k->key; k++) {
            if (k->type != DHAF_CFG_SECRET || strcmp(k->key, "join-code") != 0)
                continue;
            char *p = cfg_index("notifiers", i);
            check_secret(lc, nl->items[i], p, k->key, *(char **)((char *)s->conf + k->offset),
                         exposed);
            free(p);
        }
    }
}

/* A switcher call that runs without asking the fence (an exec program until its timeout) must
 * fit in the time a leader's lease is surely valid after a renewal: the TTL minus one
 * keep-alive interval (TTL/3), as node/cluster.c counts it. */
static void check_switch_budgets(struct loadctx *lc)
{
    const struct dhaf_config *cfg = lc->cfg;
    const struct ynode *list = ynode_get(lc->root, "services", NULL);
    int ttl = cfg->etcd.leader_key_ttl;
    if (!ttl || !list || list->kind != YNODE_SEQ)
        return;
    int64_t budget = (int64_t)ttl * 1000 - (int64_t)ttl * 1000 / 3;
    for (size_t i = 0; i < cfg->n_services && i < list->n; i++) {
        const struct dhaf_section *sw = &cfg->services[i].switcher;
        const char *key = NULL;
        if (!sw->conf || !sw->max_call_ms)
            continue;
        int64_t need = sw->max_call_ms(sw->conf, &key);
        if (need <= budget || !key)
            continue;
        const struct ynode *swn = ynode_get(list->items[i], "switcher", NULL);
        const struct ynode *at = swn ? ynode_get(swn, key, NULL) : NULL;
        char *path = dhaf_xasprintf("services[%zu].switcher.%s", i, key);
        cfg_error_at(lc->rep,
                     at    ? at
                     : swn ? swn
                           : list->items[i],
                     path,
                     "the %s switcher may run %lld ms in one call, but with etcd.leader-key-ttl "
                     "%d s a leader may act for at most %lld ms after renewing its lease (the TTL "
                     "minus one keep-alive interval): lower %s to %lld s or less, or raise "
                     "etcd.leader-key-ttl to at least %lld",
                     sw->type, (long long)need, ttl, (long long)budget, key,
                     (long long)(budget / 1000), (long long)((need * 3 + 1999) / 2000));
        free(path);
    }
}

static void cross_checks(struct loadctx *lc)
{
    struct dhaf_config *cfg = lc->cfg;
    check_switch_budgets(lc);
    if (cfg->heartbeat_interval && cfg->healthy_node_status_ttl &&
        cfg->healthy_node_status_ttl <= cfg->heartbeat_interval)
        cfg_error_at(lc->rep, at_key(lc, "dhaf.healthy-node-status-ttl"),
                     "dhaf.healthy-node-status-ttl",
                     "%d must be greater than dhaf.heartbeat-interval (%d)",
                     cfg->healthy_node_status_ttl, cfg->heartbeat_interval);
    if (cfg->heartbeat_interval && cfg->etcd.leader_key_ttl &&
        cfg->etcd.leader_key_ttl <= cfg->heartbeat_interval)
        cfg_error_at(lc->rep, at_key(lc, "etcd.leader-key-ttl"), "etcd.leader-key-ttl",
                     "%d must be greater than dhaf.heartbeat-interval (%d)",
                     cfg->etcd.leader_key_ttl, cfg->heartbeat_interval);
    if (!!cfg->etcd.username != !!cfg->etcd.password) {
        const char *have = cfg->etcd.username ? "etcd.username" : "etcd.password";
        const char *need = cfg->etcd.username ? "etcd.password" : "etcd.username";
        const struct ynode *hv = cfg_lookup(lc->root, have);
        if (!hv && !cfg->etcd.username)
            hv = cfg_lookup(lc->root, "etcd.password-file");
        cfg_error_at(lc->rep, hv ? hv : lc->root, need,
                     "missing; etcd.username and etcd.password go together");
    }
    check_tls(lc, &cfg->etcd.client_tls, "etcd.tls", "ca-file");
    check_api(lc, &cfg->web_api, "web-api");
    check_api(lc, &cfg->grpc_api, "grpc-api");
    check_secrets(lc);
    check_roles(lc);
    if (cfg->web_api.names.n > DHAF_WEB_NAMES_MAX)
        cfg_error_at(lc->rep, at_key(lc, "dhaf.web-api.names"), "dhaf.web-api.names",
                     "%zu names; at most %d", cfg->web_api.names.n, DHAF_WEB_NAMES_MAX);
    if (cfg->web_api.port && cfg->web_api.port == cfg->grpc_api.port && cfg->web_api.host &&
        cfg->grpc_api.host && strcmp(cfg->web_api.host, cfg->grpc_api.host) == 0)
        cfg_error_at(lc->rep, at_key(lc, "dhaf.grpc-api.port"), "dhaf.grpc-api.port",
                     "%d is also the web-api port on the same host", cfg->grpc_api.port);
}

/* ------------------------------------------------------------------ entry points */

static int load_tree(struct ynode *root, const char *dir, const struct dhaf_cfg_catalog *cat,
                     struct dhaf_config *cfg, struct dhaf_cfg_report *rep)
{
    struct loadctx lc = {.rep = rep, .cat = cat, .dir = dir, .root = root, .cfg = cfg};
    struct dhaf_cfg_ctx c = section(&lc, root, "", dhaf_config_keys, NULL);
    cfg_apply(&c, cfg);
    if (root->kind == YNODE_MAP) {
        load_etcd_hosts(&lc);
        load_services(&lc);
        load_notifiers(&lc);
        load_probers(&lc);
        cross_checks(&lc);
    }
    return rep->n_errs ? DHAF_ECONFIG : 0;
}

static int by_service_name(const void *a, const void *b)
{
    return strcmp((*(const struct dhaf_service *const *)a)->name,
                  (*(const struct dhaf_service *const *)b)->name);
}

static int finish(int rc, struct ynode *root, struct dhaf_config *cfg)
{
    ynode_free(root);
    if (rc) {
        dhaf_config_release(cfg);
        return rc;
    }
    if (cfg->n_services) { /* (names are validated, present and unique) */
        cfg->by_name = dhaf_xcalloc(cfg->n_services, sizeof(*cfg->by_name));
        for (size_t i = 0; i < cfg->n_services; i++)
            cfg->by_name[i] = &cfg->services[i];
        qsort(cfg->by_name, cfg->n_services, sizeof(*cfg->by_name), by_service_name);
    }
    return 0;
}

int dhaf_config_load_mem(const char *text, size_t len, const char *name, const char *dir,
                         const struct dhaf_cfg_catalog *cat, struct dhaf_config *cfg,
                         struct dhaf_cfg_report *rep)
{
    memset(cfg, 0, sizeof(*cfg));
    struct ynode *root = NULL;
    if (ytree_load_mem(text, len, &root, rep) != 0)
        return DHAF_ECONFIG;
    cfg->file = dhaf_xstrdup(name ? name : "<config>");
    cfg->dir = dhaf_xstrdup(dir ? dir : ".");
    return finish(load_tree(root, cfg->dir, cat, cfg, rep), root, cfg);
}

int dhaf_config_load(const char *path, const struct dhaf_cfg_catalog *cat, struct dhaf_config *cfg,
                     struct dhaf_cfg_report *rep)
{
    memset(cfg, 0, sizeof(*cfg));
    struct ynode *root = NULL;
    if (ytree_load_file(path, &root, rep) != 0)
        return DHAF_ECONFIG;
    cfg->file = dhaf_xstrdup(path);
    char *tmp = dhaf_xstrdup(path);
    cfg->dir = dhaf_xstrdup(dirname(tmp));
    free(tmp);
    return finish(load_tree(root, cfg->dir, cat, cfg, rep), root, cfg);
}

void dhaf_section_release(struct dhaf_section *s)
{
    dhaf_cfgkeys_release(notifier_keys, s);
    dhaf_cfgkeys_release(s->keys, s->conf);
    DHAF_FREE(s->conf);
    DHAF_FREE(s->type);
    DHAF_FREE(s->name);
}

void dhaf_config_release(struct dhaf_config *cfg)
{
    for (size_t i = 0; i < cfg->n_services; i++) {
        struct dhaf_service *s = &cfg->services[i];
        for (size_t j = 0; j < s->n_eps; j++)
            dhaf_cfgkeys_release(ep_keys, &s->eps[j]);
        free(s->eps);
        dhaf_section_release(&s->switcher);
        dhaf_section_release(&s->checker);
        dhaf_cfgkeys_release(service_keys, s);
    }
    free(cfg->services);
    free(cfg->by_name);
    for (size_t i = 0; i < cfg->n_notifiers; i++)
        dhaf_section_release(&cfg->notifiers[i]);
    free(cfg->notifiers);
    for (size_t i = 0; i < cfg->n_probers; i++)
        dhaf_cfgkeys_release(prober_keys, &cfg->probers[i]);
    free(cfg->probers);
    for (size_t i = 0; i < cfg->etcd.n_hosts; i++)
        free(cfg->etcd.hosts[i]);
    free(cfg->etcd.hosts);
    dhaf_cfgkeys_release(dhaf_config_keys, cfg);
    free(cfg->file);
    free(cfg->dir);
    memset(cfg, 0, sizeof(*cfg));
}

static int name_is(const void *name, const void *svc)
{
    return strcmp(name, (*(const struct dhaf_service *const *)svc)->name);
}

const struct dhaf_service *dhaf_config_service(const struct dhaf_config *cfg, const char *name)
{
    if (cfg->by_name) {
        const struct dhaf_service *const *hit =
            bsearch(name, cfg->by_name, cfg->n_services, sizeof(*cfg->by_name), name_is);
        return hit ? *hit : NULL;
    }
    for (size_t i = 0; i < cfg->n_services; i++)
        if (cfg->services[i].name && strcmp(cfg->services[i].name, name) == 0)
            return &cfg->services[i];
    return NULL;
}

int dhaf_service_ep_index(const struct dhaf_service *svc, const char *ep)
{
    for (size_t i = 0; i < svc->n_eps; i++)
        if (svc->eps[i].name && strcmp(svc->eps[i].name, ep) == 0)
            return (int)i;
    return -1;
}

void dhaf_config_write_reference(FILE *out)
{
    fprintf(out, "### Cluster, node, etcd and logging\n\n");
    dhaf_cfgkeys_write_reference(out, "", dhaf_config_keys);
    fprintf(out, "\n### Services\n\n");
    dhaf_cfgkeys_write_reference(out, "services[].", service_keys);
    fprintf(out, "\n### Entry points\n\n");
    dhaf_cfgkeys_write_reference(out, "services[].entry-points[].", ep_keys);
    fprintf(out, "\n### Every health checker\n\n");
    dhaf_cfgkeys_write_reference(out, "services[].health-checker.", checker_keys);
    fprintf(out, "\n### Every notifier\n\n");
    dhaf_cfgkeys_write_reference(out, "notifiers[].", notifier_keys);
    fprintf(out, "\n### Probers\n\n");
    dhaf_cfgkeys_write_reference(out, "probers[].", prober_keys);
}

int dhaf_section_load_mem(enum dhaf_pkind kind, const char *text, size_t len, const char *name,
                          const struct dhaf_cfg_catalog *cat, struct dhaf_section *out,
                          struct dhaf_cfg_report *rep)
{
    memset(out, 0, sizeof(*out));
    struct ynode *root = NULL;
    if (ytree_load_mem(text, len, &root, rep) != 0)
        return DHAF_ECONFIG;
    struct loadctx lc = {.rep = rep, .cat = cat, .dir = ".", .root = root, .cfg = NULL};
    load_section(&lc, root, root, name, kind, out);
    ynode_free(root);
    if (rep->n_errs) {
        dhaf_section_release(out);
        return DHAF_ECONFIG;
    }
    return 0;
}

char *dhaf_section_to_json(const struct dhaf_section *s)
{
    json_t *o = json_object();
    json_object_set_new(o, "type", json_string(s->type));
    if (s->name)
        json_object_set_new(o, "name", json_string(s->name));
    dhaf_cfgkeys_to_json(s->keys, s->conf, o);
    if (s->rise)
        json_object_set_new(o, "rise", json_integer(s->rise));
    if (s->fall)
        json_object_set_new(o, "fall", json_integer(s->fall));
    if (s->min_severity > 0 || s->events.n || s->repeat_window)
        dhaf_cfgkeys_to_json(notifier_keys, s, o);
    char *text = dhaf_json_dump(o);
    json_decref(o);
    return text;
}

static int load_keys(const char *path, const struct dhaf_cfgkey *keys, void *base,
                     struct dhaf_cfg_report *rep, bool skip_unknown)
{
    struct ynode *root = NULL;
    if (ytree_load_file(path, &root, rep) != 0)
        return DHAF_ECONFIG;
    char *tmp = dhaf_xstrdup(path);
    char *dir = dhaf_xstrdup(dirname(tmp));
    free(tmp);
    struct dhaf_cfg_ctx c = {.rep = rep,
                             .map = root,
                             .line = 1,
                             .col = 1,
                             .path = "",
                             .dir = dir,
                             .keys = keys,
                             .skip_unknown = skip_unknown};
    cfg_apply(&c, base);
    free(dir);
    ynode_free(root);
    if (rep->n_errs) {
        dhaf_cfgkeys_release(keys, base);
        return DHAF_ECONFIG;
    }
    return 0;
}

int dhaf_config_load_keys(const char *path, const struct dhaf_cfgkey *keys, void *base,
                          struct dhaf_cfg_report *rep)
{
    return load_keys(path, keys, base, rep, false);
}

int dhaf_config_peek_keys(const char *path, const struct dhaf_cfgkey *keys, void *base,
                          struct dhaf_cfg_report *rep)
{
    return load_keys(path, keys, base, rep, true);
}
