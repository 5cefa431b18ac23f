/* SPDX-License-Identifier: MIT */
/* Plugin loader: dlopen()s the .so files of an extensions directory, checks every provider
 * they export against the ABI of dhaf/provider.h and keeps them for the registry. */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dhaf/alloc.h"
#include "dhaf/log.h"
#include "dhaf/plugins.h"
#include "dhaf/registry.h"
#include "dhaf/valid.h"

/* Bounds for walking tables whose end only the plugin knows: a missing terminator reads past
 * the array, and this at least stops the walk instead of looping forever. */
#define MAX_PROVIDERS_PER_FILE 64
#define MAX_KEYS               256
#define MAX_REASONS            256

struct plugin_file {
    char *path;
    void *handle; /* dlopen()ed */
};

struct plugin_provider {
    const struct dhaf_provider *p; /* points into the file's .so */
    size_t file;                   /* index into files */
};

static struct plugin_file *files;
static size_t n_files, cap_files;
static struct plugin_provider *provs;
static size_t n_provs, cap_provs;

size_t dhaf_plugins_count(void)
{
    return n_provs;
}

const struct dhaf_provider *dhaf_plugins_at(size_t i)
{
    return i < n_provs ? provs[i].p : NULL;
}

const char *dhaf_plugins_file(size_t i)
{
    return i < n_provs ? files[provs[i].file].path : NULL;
}

/* Forgets the providers and files past the first keep_provs / keep_files. */
static void truncate_to(size_t keep_provs, size_t keep_files)
{
    n_provs = keep_provs;
    while (n_files > keep_files) {
        struct plugin_file *f = &files[--n_files];
        dlclose(f->handle);
        DHAF_FREE(f->path);
    }
}

void dhaf_plugins_unload(void)
{
    truncate_to(0, 0);
    DHAF_FREE(provs);
    DHAF_FREE(files);
    cap_provs = cap_files = 0;
}

/* Bytes a value of type t takes in the provider's config struct; 0 for types a plugin may not
 * use (DHAF_CFG_EXTERNAL: nobody would parse it). */
static size_t slot_size(enum dhaf_cfg_type t)
{
    switch (t) {
    case DHAF_CFG_STR:
    case DHAF_CFG_NAME:
    case DHAF_CFG_SECRET:
    case DHAF_CFG_PATH:
    case DHAF_CFG_HOST:
    case DHAF_CFG_URL:
    case DHAF_CFG_EMAIL:
        return sizeof(char *);
    case DHAF_CFG_INT:
    case DHAF_CFG_ENUM:
        return sizeof(int);
    case DHAF_CFG_BOOL:
        return sizeof(bool);
    case DHAF_CFG_STRMAP:
        return sizeof(struct dhaf_strmap);
    case DHAF_CFG_STRLIST:
        return sizeof(struct dhaf_strlist);
    case DHAF_CFG_EXTERNAL:
        break;
    }
    return 0;
}

/* True when key (or its first dotted component) is one the framework reads itself in a
 * section of kind. */
static bool reserved_key(enum dhaf_pkind kind, const char *key)
{
    size_t len = strcspn(key, ".");
    static const char *const common[] = {"type", NULL};
    static const char *const checker[] = {"rise", "fall", NULL};
    static const char *const notifier[] = {"name", "min-severity", "events", "repeat-window", NULL};
    const char *const *lists[] = {common, kind == DHAF_PKIND_CHECKER    ? checker
                                          : kind == DHAF_PKIND_NOTIFIER ? notifier
                                                                        : NULL};
    for (size_t l = 0; l < 2; l++)
        for (size_t i = 0; lists[l] && lists[l][i]; i++)
            if (strlen(lists[l][i]) == len && strncmp(key, lists[l][i], len) == 0)
                return true;
    return false;
}

/* The key table: terminated, every row of a type a plugin may use, inside config_size. */
static int check_keys(const char *path, const char *what, const struct dhaf_provider *p,
                      struct dhaf_err *err)
{
    if (!p->keys)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "plugin %s: %s: no key table (keys is NULL; a provider without "
                            "settings still has {DHAF_KEY_END})",
                            path, what);
    for (size_t i = 0;; i++) {
        const struct dhaf_cfgkey *k = &p->keys[i];
        if (i == MAX_KEYS)
            return dhaf_err_set(err, DHAF_EINVAL,
                                "plugin %s: %s: more than %d config keys: is the key table "
                                "terminated by DHAF_KEY_END?",
                                path, what, MAX_KEYS);
        if (!k->key)
            return 0;
        size_t size = (unsigned)k->type <= DHAF_CFG_EXTERNAL ? slot_size(k->type) : 0;
        if (!k->key[0] || reserved_key(p->kind, k->key))
            return dhaf_err_set(err, DHAF_EINVAL,
                                "plugin %s: %s: config key \"%.64s\" is empty or one the framework "
                                "reads itself",
                                path, what, k->key);
        if (size == 0)
            return dhaf_err_set(err, DHAF_EINVAL,
                                "plugin %s: %s: config key \"%.64s\" has type %d, not one a plugin "
                                "may use (DHAF_CFG_STR .. DHAF_CFG_STRLIST)",
                                path, what, k->key, (int)k->type);
        if (k->offset > p->config_size || p->config_size - k->offset < size)
            return dhaf_err_set(err, DHAF_EINVAL,
                                "plugin %s: %s: config key \"%.64s\" lies outside its config "
                                "struct (offset %zu + %zu bytes > config_size %zu)",
                                path, what, k->key, k->offset, size, p->config_size);
        if (k->type == DHAF_CFG_ENUM && !k->choices)
            return dhaf_err_set(err, DHAF_EINVAL,
                                "plugin %s: %s: enum config key \"%.64s\" has no choices", path,
                                what, k->key);
        if (k->type == DHAF_CFG_INT && k->min > k->max)
            return dhaf_err_set(err, DHAF_EINVAL,
                                "plugin %s: %s: config key \"%.64s\": min %ld > max %ld", path,
                                what, k->key, k->min, k->max);
    }
}

/* The operations of the provider's kind; a checker's status table. */
static int check_ops(const char *path, const char *what, const struct dhaf_provider *p,
                     struct dhaf_err *err)
{
    const char *missing = NULL;
    switch (p->kind) {
    case DHAF_PKIND_CHECKER:
        missing = !p->check ? "check" : !p->reasons ? "reasons" : NULL;
        break;
    case DHAF_PKIND_SWITCHER:
        missing = !p->switch_to ? "switch_to" : NULL;
        break;
    case DHAF_PKIND_NOTIFIER:
        missing = !p->notify ? "notify" : NULL;
        break;
    }
    if (missing)
        return dhaf_err_set(err, DHAF_EINVAL, "plugin %s: %s: %s is NULL (a %s must have it)", path,
                            what, missing, dhaf_pkind_name(p->kind));
    if (p->kind != DHAF_PKIND_CHECKER)
        return 0;
    for (size_t i = 0;; i++) {
        if (i == MAX_REASONS)
            return dhaf_err_set(err, DHAF_EINVAL,
                                "plugin %s: %s: more than %d reasons: is the status table "
                                "terminated by {NULL, NULL}?",
                                path, what, MAX_REASONS);
        if (!p->reasons[i].code)
            return i ? 0
                     : dhaf_err_set(err, DHAF_EINVAL, "plugin %s: %s: the status table is empty",
                                    path, what);
        if (!p->reasons[i].description)
            return dhaf_err_set(err, DHAF_EINVAL,
                                "plugin %s: %s: reason \"%.64s\" has no description", path, what,
                                p->reasons[i].code);
    }
}

/* Everything dhaf relies on before it hands the provider a config or a call. */
static int check_provider(const char *path, size_t idx, const struct dhaf_provider *p,
                          struct dhaf_err *err)
{
    /* abi_version is the first member in every version: read it before anything else. */
    if (p->abi_version != DHAF_PROVIDER_ABI_VERSION)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "plugin %s: ABI version %u, this dhaf speaks %d (rebuild the plugin "
                            "against this dhaf's dhaf/provider.h)",
                            path, p->abi_version, DHAF_PROVIDER_ABI_VERSION);
    if ((unsigned)p->kind > DHAF_PKIND_NOTIFIER)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "plugin %s: provider #%zu has kind %d, not DHAF_PKIND_SWITCHER, "
                            "_CHECKER or _NOTIFIER",
                            path, idx, (int)p->kind);
    if (!p->type || !dhaf_valid_name(p->type))
        return dhaf_err_set(err, DHAF_EINVAL,
                            "plugin %s: provider #%zu: type %s%.64s%s is not a valid name "
                            "(1-64 of A-Z a-z 0-9 _ -)",
                            path, idx, p->type ? "\"" : "", p->type ? p->type : "NULL",
                            p->type ? "\"" : "");
    char what[96];
    snprintf(what, sizeof(what), "%s \"%s\"", dhaf_pkind_name(p->kind), p->type);
    if (!p->summary)
        return dhaf_err_set(err, DHAF_EINVAL, "plugin %s: %s: no summary", path, what);
    if (p->config_size == 0)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "plugin %s: %s: config_size is 0 (the size of the struct its keys "
                            "fill; at least 1)",
                            path, what);
    int rc = check_keys(path, what, p, err);
    return rc ? rc : check_ops(path, what, p, err);
}

/* A type is unique per kind among the built-ins and every loaded plugin. */
static int check_clash(const char *path, const struct dhaf_provider *p, struct dhaf_err *err)
{
    for (size_t i = 0; i < n_provs; i++)
        if (provs[i].p->kind == p->kind && strcmp(provs[i].p->type, p->type) == 0)
            return dhaf_err_set(err, DHAF_EEXISTS,
                                "plugin %s: %s type \"%s\" is already provided by plugin %s; "
                                "remove one of the two",
                                path, dhaf_pkind_name(p->kind), p->type, files[provs[i].file].path);
    /* Not among the plugins, so a hit is a built-in. */
    if (dhaf_registry_find(p->kind, p->type))
        return dhaf_err_set(err, DHAF_EEXISTS,
                            "plugin %s: %s type \"%s\" clashes with dhaf's built-in %s \"%s\"; "
                            "give the plugin's type another name",
                            path, dhaf_pkind_name(p->kind), p->type, dhaf_pkind_name(p->kind),
                            p->type);
    return 0;
}

/* Opens one file and registers its providers (the caller rolls back on failure). */
static int load_file(const char *path, struct dhaf_err *err)
{
    dlerror();
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *why = dlerror();
        why = why ? why : "unknown error";
        return dhaf_err_set(err, DHAF_EINVAL, "plugin %s: cannot load: %s%s", path, why,
                            strstr(why, "undefined symbol")
                                ? " (a plugin may call no dhaf function: see docs/extensions.md)"
                                : "");
    }
    DHAF_GROW(files, n_files + 1, cap_files);
    files[n_files++] = (struct plugin_file){dhaf_xstrdup(path), h};

    void *sym = dlsym(h, DHAF_PLUGIN_ENTRY_SYMBOL);
    if (!sym)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "plugin %s: no symbol %s: not a dhaf plugin (see docs/extensions.md)",
                            path, DHAF_PLUGIN_ENTRY_SYMBOL);
    const struct dhaf_provider *const *entry = (const struct dhaf_provider *const *)sym;
    size_t i = 0;
    for (; entry[i]; i++) {
        if (i == MAX_PROVIDERS_PER_FILE)
            return dhaf_err_set(err, DHAF_EINVAL,
                                "plugin %s: more than %d providers: is %s terminated by NULL?",
                                path, MAX_PROVIDERS_PER_FILE, DHAF_PLUGIN_ENTRY_SYMBOL);
        int rc = check_provider(path, i, entry[i], err);
        if (rc == 0)
            rc = check_clash(path, entry[i], err);
        if (rc)
            return rc;
        DHAF_GROW(provs, n_provs + 1, cap_provs);
        provs[n_provs++] = (struct plugin_provider){entry[i], n_files - 1};
    }
    if (i == 0)
        return dhaf_err_set(err, DHAF_EINVAL, "plugin %s: %s is empty: it provides nothing", path,
                            DHAF_PLUGIN_ENTRY_SYMBOL);
    return 0;
}

/* scandir filter: visible names ending in ".so". */
static int so_name(const struct dirent *d)
{
    size_t len = strlen(d->d_name);
    return d->d_name[0] != '.' && len > 3 && strcmp(d->d_name + len - 3, ".so") == 0;
}

/* Byte order, whatever the locale. */
static int by_name(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

/* Code from a file that someone else can write runs as this process: the directory and every
 * .so must belong to root or to this process's user, and be writable by nobody else. */
static int check_trusted(const char *what, const char *path, const struct stat *st,
                         struct dhaf_err *err)
{
    uid_t me = geteuid();
    if (st->st_uid != 0 && st->st_uid != me)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "%s %s is owned by uid %u, neither root nor this process's user "
                            "(uid %u): whoever owns it can run code as dhaf; chown it",
                            what, path, (unsigned)st->st_uid, (unsigned)me);
    if (st->st_mode & (S_IWGRP | S_IWOTH))
        return dhaf_err_set(err, DHAF_EINVAL,
                            "%s %s is writable by %s (mode %04o): whoever can write it can run "
                            "code as dhaf; chmod go-w it",
                            what, path, (st->st_mode & S_IWOTH) ? "every user" : "its group",
                            (unsigned)(st->st_mode & 07777));
    return 0;
}

int dhaf_plugins_load(const char *dir, struct dhaf_err *err)
{
    size_t keep_provs = n_provs, keep_files = n_files;
    struct dirent **ents = NULL;
    struct stat dst;
    if (stat(dir, &dst) == 0 && S_ISDIR(dst.st_mode)) {
        int rc = check_trusted("extensions directory", dir, &dst, err);
        if (rc)
            return rc;
    }
    int n = scandir(dir, &ents, so_name, by_name);
    if (n < 0) {
        if (errno == ENOENT) {
            char q[300];
            DHAF_LOG(DHAF_LOG_DEBUG, "event=plugins-none dir=\"%s\" reason=\"no such directory\"",
                     dhaf_log_quote(q, sizeof(q), dir));
            return 0;
        }
        return dhaf_err_set(err, DHAF_EIO, "extensions directory %s: %s", dir, strerror(errno));
    }
    int rc = 0;
    char q[300];
    for (int i = 0; i < n && rc == 0; i++) {
        char *path = dhaf_xasprintf("%s/%s", dir, ents[i]->d_name);
        struct stat st;
        if (stat(path, &st) != 0)
            rc = dhaf_err_set(err, DHAF_EIO, "plugin %s: %s", path, strerror(errno));
        else if (S_ISREG(st.st_mode) && (rc = check_trusted("plugin", path, &st, err)) == 0)
            rc = load_file(path, err);
        else
            DHAF_LOG(DHAF_LOG_DEBUG,
                     "event=plugin-skipped file=\"%s\" reason=\"not a regular file\"",
                     dhaf_log_quote(q, sizeof(q), path));
        free(path);
    }
    for (int i = 0; i < n; i++)
        free(ents[i]);
    free(ents);
    if (rc) {
        truncate_to(keep_provs, keep_files);
        return rc;
    }
    for (size_t i = keep_provs; i < n_provs; i++)
        DHAF_LOG(DHAF_LOG_INFO, "event=plugin-loaded file=\"%s\" kind=%s type=%s abi=%u",
                 dhaf_log_quote(q, sizeof(q), files[provs[i].file].path),
                 dhaf_pkind_name(provs[i].p->kind), provs[i].p->type, provs[i].p->abi_version);
    return 0;
}
