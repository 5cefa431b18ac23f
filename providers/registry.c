/* SPDX-License-Identifier: MIT */
/* Built-in provider table, then the loaded plugins (providers/plugins.c), and the config
 * catalog view of both. */
#include <string.h>

#include "dhaf/plugins.h"
#include "dhaf/registry.h"

extern const struct dhaf_provider dhaf_switcher_cloudflare;
extern const struct dhaf_provider dhaf_switcher_google_cloud;
extern const struct dhaf_provider dhaf_switcher_exec;
extern const struct dhaf_provider dhaf_checker_web;
extern const struct dhaf_provider dhaf_checker_tcp;
extern const struct dhaf_provider dhaf_checker_exec;
extern const struct dhaf_provider dhaf_notifier_email;
extern const struct dhaf_provider dhaf_notifier_tg;
extern const struct dhaf_provider dhaf_notifier_webhook;

static const struct dhaf_provider *const builtins[] = {
    &dhaf_switcher_cloudflare, &dhaf_switcher_google_cloud, &dhaf_switcher_exec,
    &dhaf_checker_web,         &dhaf_checker_tcp,           &dhaf_checker_exec,
    &dhaf_notifier_email,      &dhaf_notifier_tg,           &dhaf_notifier_webhook,
};

#define N_BUILTINS (sizeof(builtins) / sizeof(builtins[0]))

const struct dhaf_provider *dhaf_registry_at(size_t i)
{
    return i < N_BUILTINS ? builtins[i] : dhaf_plugins_at(i - N_BUILTINS);
}

const struct dhaf_provider *dhaf_registry_find(enum dhaf_pkind kind, const char *type)
{
    const struct dhaf_provider *p;
    for (size_t i = 0; (p = dhaf_registry_at(i)) != NULL; i++)
        if (p->kind == kind && strcmp(p->type, type) == 0)
            return p;
    return NULL;
}

static int cat_find(const struct dhaf_cfg_catalog *cat, enum dhaf_pkind kind, const char *type,
                    struct dhaf_cfg_schema *out)
{
    (void)cat;
    const struct dhaf_provider *p = dhaf_registry_find(kind, type);
    if (!p)
        return -1;
    out->type = p->type;
    out->keys = p->keys;
    out->conf_size = p->config_size;
    out->finish = p->finish;
    out->max_call_ms = p->kind == DHAF_PKIND_SWITCHER ? p->max_call_ms : NULL;
    return 0;
}

static const char *cat_type_at(const struct dhaf_cfg_catalog *cat, enum dhaf_pkind kind, size_t i)
{
    (void)cat;
    const struct dhaf_provider *p;
    for (size_t j = 0; (p = dhaf_registry_at(j)) != NULL; j++)
        if (p->kind == kind && i-- == 0)
            return p->type;
    return NULL;
}

static const struct dhaf_cfg_catalog catalog = {cat_find, cat_type_at, NULL, NULL};

const struct dhaf_cfg_catalog *dhaf_registry_catalog(void)
{
    return &catalog;
}
