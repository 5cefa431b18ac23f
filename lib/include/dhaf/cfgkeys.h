/* SPDX-License-Identifier: MIT */
/* Declarative config-key tables: what a config section may contain, its types, defaults and
 * ranges, and the error report that collects every problem with file:line:column and path. */
#ifndef DHAF_CFGKEYS_H
#define DHAF_CFGKEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum dhaf_cfg_type {
    DHAF_CFG_STR,    /* char *: any non-empty string */
    DHAF_CFG_NAME,   /* char *: ^[A-Za-z0-9_-]{1,64}$ */
    DHAF_CFG_SECRET, /* char *: also accepts `<key>-file: path` and `${ENV}`; never printed */
    DHAF_CFG_PATH,   /* char *: a file path; relative paths are resolved against the config's dir */
    DHAF_CFG_HOST,   /* char *: DNS name or IP address */
    DHAF_CFG_URL,    /* char *: http:// or https:// URL */
    DHAF_CFG_EMAIL,  /* char *: local@domain */
    DHAF_CFG_INT,    /* int in [min, max] */
    DHAF_CFG_BOOL,   /* bool: true/false (also yes/no, on/off) */
    DHAF_CFG_ENUM,   /* int: index into choices (matched case-insensitively); -1 when unset */
    DHAF_CFG_STRMAP, /* struct dhaf_strmap: mapping of string to string */
    DHAF_CFG_STRLIST,  /* struct dhaf_strlist: a list of strings, or "a,b,c" (check: per item) */
    DHAF_CFG_EXTERNAL, /* known key, parsed by the caller (lists, `type`, ...) */
};

/** Extra check of a scalar value: returns 0, or non-zero with a reason written to why. */
typedef int (*dhaf_cfg_check_fn)(const char *value, char *why, size_t whylen);

/* One key of a section. `key` may contain dots: "smtp.server" is `server` inside `smtp`. */
struct dhaf_cfgkey {
    const char *key;
    enum dhaf_cfg_type type;
    size_t offset; /* where the value goes in the section's struct */
    bool required;
    const char *def;            /* default, written as it would be in YAML; NULL = none */
    long min, max;              /* DHAF_CFG_INT range (inclusive) */
    const char *const *choices; /* DHAF_CFG_ENUM values, NULL-terminated */
    dhaf_cfg_check_fn check;    /* optional extra check of the scalar text */
    const char *alias;          /* an accepted older spelling (e.g. receiveTimeout) */
    const char *help;           /* one line for the config reference */
};

/* Mapping of strings (e.g. HTTP headers), in file order. */
struct dhaf_strmap {
    size_t n;
    char **keys;
    char **vals;
};

/* A list of strings, in file order. */
struct dhaf_strlist {
    size_t n;
    char **v;
};

/* One problem found in a config file. Line and column are 1-based; 0 when not applicable. */
struct dhaf_cfg_error {
    int line, col;
    char *path; /* parameter path: services[0].health-checker.expected-codes */
    char *msg;
};

/* Every problem of one load, in file order of discovery. */
struct dhaf_cfg_report {
    char *file;
    struct dhaf_cfg_error *errs;
    size_t n_errs, cap_errs;
    struct dhaf_cfg_error *warns;
    size_t n_warns, cap_warns;
    size_t dropped; /* errors beyond DHAF_CFG_MAX_ERRORS */
};

#define DHAF_CFG_MAX_ERRORS 200

/** Initialises an empty report for file (copied). */
void dhaf_cfg_report_init(struct dhaf_cfg_report *rep, const char *file);
/** Frees everything the report holds. */
void dhaf_cfg_report_release(struct dhaf_cfg_report *rep);
/** Adds an error; path may be NULL or "". */
void dhaf_cfg_report_error(struct dhaf_cfg_report *rep, int line, int col, const char *path,
                           const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/** Adds a warning (does not make the config invalid). */
void dhaf_cfg_report_warn(struct dhaf_cfg_report *rep, int line, int col, const char *path,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/** Prints `file:line:col: error: path: message`, one per line, warnings first. */
void dhaf_cfg_report_print(const struct dhaf_cfg_report *rep, FILE *out);

/* Where a section sits in the file; handed to a section's finish hook. Opaque. */
struct dhaf_cfg_ctx;

/** Reports an error at `key` of the section (at the section itself when the key is absent). */
void dhaf_cfg_fail(struct dhaf_cfg_ctx *ctx, const char *key, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/** True when `key` was written in the file (not defaulted). */
bool dhaf_cfg_isset(const struct dhaf_cfg_ctx *ctx, const char *key);

/** Cross-field checks and derived defaults, run after the keys were parsed. */
typedef void (*dhaf_cfg_finish_fn)(void *conf, struct dhaf_cfg_ctx *ctx);

/* What a provider type's section may contain. */
struct dhaf_cfg_schema {
    const char *type;
    const struct dhaf_cfgkey *keys; /* terminated by an entry with key == NULL */
    size_t conf_size;               /* size of the struct the keys' offsets point into */
    dhaf_cfg_finish_fn finish;      /* may be NULL */
    /* switchers: the longest call that must fit in the leader's lease, and the key it comes
     * from (see struct dhaf_provider's max_call_ms); may be NULL */
    int64_t (*max_call_ms)(const void *conf, const char **key);
};

/** Frees what a parsed section struct owns (strings, maps), per its key table. */
void dhaf_cfgkeys_release(const struct dhaf_cfgkey *keys, void *base);

/** Adds every key of keys that has a value in base to obj (a jansson json_t * object). */
void dhaf_cfgkeys_to_json(const struct dhaf_cfgkey *keys, const void *base, void *obj);

/** Levenshtein-based suggestion: the candidate closest to word, or NULL if none is close. */
const char *dhaf_cfg_suggest(const char *word, const char *const *cands, size_t n);

/**
 * Writes a Markdown table of keys (key, type, default, description) for the config reference;
 * prefix is prepended to every key ("services[].switcher." ...).
 */
void dhaf_cfgkeys_write_reference(FILE *out, const char *prefix, const struct dhaf_cfgkey *keys);

#endif
