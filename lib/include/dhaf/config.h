/* SPDX-License-Identifier: MIT */
/* The node's configuration: the original dhaf YAML format, validated as a whole at load. */
#ifndef DHAF_CONFIG_H
#define DHAF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dhaf/cfgkeys.h"

enum dhaf_pkind {
    DHAF_PKIND_SWITCHER = 0,
    DHAF_PKIND_CHECKER = 1,
    DHAF_PKIND_NOTIFIER = 2,
};

/** "switcher", "health-checker", "notifier". */
const char *dhaf_pkind_name(enum dhaf_pkind kind);

/* Where provider types come from: the built-in table and loaded plugins (providers/registry). */
struct dhaf_cfg_catalog {
    /** Fills *out with the schema of type; returns 0, or non-zero when the type is unknown. */
    int (*find)(const struct dhaf_cfg_catalog *cat, enum dhaf_pkind kind, const char *type,
                struct dhaf_cfg_schema *out);
    /** The i-th type name of a kind (for suggestions); NULL past the end. */
    const char *(*type_at)(const struct dhaf_cfg_catalog *cat, enum dhaf_pkind kind, size_t i);
    void *data;
    /** The i-th event kind name (notifiers' `events:` must name one); NULL past the end. The
     *  hook may be NULL (a program that sends no events): then only the names' form is checked. */
    const char *(*event_kind_at)(const struct dhaf_cfg_catalog *cat, size_t i);
};

/* One switcher, health checker or notifier instance's settings. */
struct dhaf_section {
    char *type;
    char *name;                     /* notifiers only (default "<type>-anon") */
    void *conf;                     /* the provider's config struct, laid out by keys */
    const struct dhaf_cfgkey *keys; /* borrowed from the provider */
    int rise, fall;                 /* health checkers: results in a row to change opinion */
    int min_severity;               /* notifiers: index into info|warning|critical (-1: all) */
    struct dhaf_strlist events;     /* notifiers: the event kinds sent (n == 0: every kind) */
    int repeat_window;              /* notifiers: seconds repeats are collapsed in (0: off) */
    int line, col;                  /* where the section starts */
    int64_t (*max_call_ms)(const void *conf, const char **key); /* from the schema; may be NULL */
};

struct dhaf_tls {
    char *cert_file; /* TLS is on when set */
    char *key_file;
    char *ca_file; /* server: client CA (mTLS); client: CA bundle to verify the server */
};

#define DHAF_WEB_NAMES_MAX 32 /* dhaf.web-api.names */

struct dhaf_api {
    char *host;
    int port;
    struct dhaf_tls tls;
    struct dhaf_strlist names; /* web-api: more host names it is reached by (Host checks) */
};

struct dhaf_ep {
    char *name;
    char *ip;
    int family; /* AF_INET or AF_INET6 */
    int line;
};

struct dhaf_service {
    char *name;
    char *domain;
    struct dhaf_ep *eps; /* in priority order (config order) */
    size_t n_eps;
    struct dhaf_section switcher;
    struct dhaf_section checker;
};

struct dhaf_prober_cfg {
    char *name;
    char *token; /* secret */
    char *location;
};

struct dhaf_etcd_cfg {
    char **hosts; /* "host:port" */
    size_t n_hosts;
    bool tls; /* https:// endpoints */
    char *username;
    char *password; /* secret */
    int leader_key_ttl;
    int compaction_interval;    /* seconds between the leader's compactions; 0 = off */
    int compaction_retention;   /* revisions of history a compaction keeps */
    struct dhaf_tls client_tls; /* ca-file, cert-file, key-file */
};

struct dhaf_config {
    char *file;
    char *dir; /* directory of file: relative paths were resolved against it */

    char *cluster_name;
    char *node_name;
    int healthy_node_status_ttl;
    int heartbeat_interval;
    int tact_interval;
    int tact_post_switch_delay;
    int min_voters;        /* fresh voters a decision needs; 0: a strict majority of the expected */
    bool dry_run;          /* this node, leading, shows its decisions and carries none out */
    int switch_back_delay; /* tacts a higher-priority EP must be healthy before switching back */
    bool auto_switch_back; /* false: failback only by a switchover */
    int flap_threshold;    /* an EP whose flap penalty reaches it is held down (0: off) */
    int flap_half_life;    /* seconds in which a flap penalty halves */
    int provider_check_interval; /* seconds between the leader's reads of each provider (0: off) */
    int config_drift_grace;      /* seconds nodes' configs may differ before a config-drift event */
    struct dhaf_api web_api;
    struct dhaf_api grpc_api;
    char *api_token;  /* secret: the admin role */
    char *read_token; /* secret: the read-only role (status, services, events, metrics) */
    struct dhaf_strlist admin_cns; /* client-certificate CNs with the admin role */
    struct dhaf_strlist read_cns;  /* ... with the read-only role */
    bool insecure_api;
    bool probe;
    char *extensions_dir;

    struct dhaf_etcd_cfg etcd;

    int log_level;  /* enum dhaf_log_level */
    int log_format; /* enum dhaf_log_format */

    struct dhaf_service *services;
    size_t n_services;
    const struct dhaf_service **by_name; /* services sorted by name, for dhaf_config_service's
                                            binary search (NULL: a config built by hand) */
    struct dhaf_section *notifiers;
    size_t n_notifiers;
    struct dhaf_prober_cfg *probers;
    size_t n_probers;
};

/**
 * Loads and validates the config file at path. Every problem goes into rep (caller-initialised,
 * caller releases). Returns 0 and fills *cfg (release with dhaf_config_release), or
 * DHAF_ECONFIG with *cfg zeroed. cat gives the provider types (borrowed; may be NULL, then
 * every provider section is an error).
 */
int dhaf_config_load(const char *path, const struct dhaf_cfg_catalog *cat, struct dhaf_config *cfg,
                     struct dhaf_cfg_report *rep);

/** The same from text in memory; name is used in messages and dir for relative paths. */
int dhaf_config_load_mem(const char *text, size_t len, const char *name, const char *dir,
                         const struct dhaf_cfg_catalog *cat, struct dhaf_config *cfg,
                         struct dhaf_cfg_report *rep);

/** Frees everything cfg owns and zeroes it. */
void dhaf_config_release(struct dhaf_config *cfg);

/** Finds a service by name; NULL when absent. O(log n) for a loaded config (votes name
 *  every service: a linear search per result was O(n^2) at 1,000 services). */
const struct dhaf_service *dhaf_config_service(const struct dhaf_config *cfg, const char *name);

/** Position of ep in svc's list (0 = highest priority); -1 when absent. */
int dhaf_service_ep_index(const struct dhaf_service *svc, const char *ep);

/**
 * Parses one provider section given as YAML or JSON text (a probe plan's checker) into *out,
 * exactly as a section of a config file. name is used in messages. Returns 0 or
 * DHAF_ECONFIG with the problems in rep. Release with dhaf_section_release.
 */
int dhaf_section_load_mem(enum dhaf_pkind kind, const char *text, size_t len, const char *name,
                          const struct dhaf_cfg_catalog *cat, struct dhaf_section *out,
                          struct dhaf_cfg_report *rep);

/**
 * Loads any YAML file (a prober's config) into base following keys at its top level, with
 * the same checks and messages as the node's config. Returns 0 or DHAF_ECONFIG (problems in
 * rep). Release with dhaf_cfgkeys_release(keys, base).
 */
int dhaf_config_load_keys(const char *path, const struct dhaf_cfgkey *keys, void *base,
                          struct dhaf_cfg_report *rep);

/** Like dhaf_config_load_keys, but keys of the file that are not in the table are ignored:
 *  for reading a few settings out of a node's config (dhafctl). */
int dhaf_config_peek_keys(const char *path, const struct dhaf_cfgkey *keys, void *base,
                          struct dhaf_cfg_report *rep);

/** Frees what a section holds. */
void dhaf_section_release(struct dhaf_section *s);

/** The section's values as a JSON object (type, rise/fall and every key that has a value),
 *  as dhaf_section_load_mem reads it back. Caller frees. */
char *dhaf_section_to_json(const struct dhaf_section *s);

/** The key table of the top level, for docs and tests (sections dhaf, etcd, log). */
extern const struct dhaf_cfgkey dhaf_config_keys[];

/** Writes the Markdown reference of every non-provider section (top level, services, entry
 *  points, notifiers, probers). */
void dhaf_config_write_reference(FILE *out);

#endif
