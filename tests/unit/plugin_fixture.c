/* SPDX-License-Identifier: MIT */
/* Test plugins for unit_plugins: one source built once per FX_<CASE> definition into
 * fx_<case>.so, each broken in one way the loader must refuse (or, FX_MULTI, FX_DUP_*, well
 * formed). See tests/unit/test_plugins.c. */
#include <stddef.h>
#include <stdio.h>

#include "dhaf/provider.h"

struct fx_config {
    int level;
    char *label;
};

/* clang-format off */
static const struct dhaf_cfgkey fx_keys[] = {
    {"level", DHAF_CFG_INT, offsetof(struct fx_config, level), false, "1", 0, 9, NULL, NULL, NULL,
     "A number."},
    {"label", DHAF_CFG_STR, offsetof(struct fx_config, label), false, NULL, 0, 0, NULL, NULL, NULL,
     "A string."},
#if defined(FX_KEY_OUTSIDE)
    {"far", DHAF_CFG_STR, sizeof(struct fx_config), false, NULL, 0, 0, NULL, NULL, NULL, "Past."},
#elif defined(FX_RESERVED_KEY)
    {"rise", DHAF_CFG_INT, offsetof(struct fx_config, level), false, NULL, 0, 9, NULL, NULL, NULL,
     "The framework's own."},
#endif
    DHAF_KEY_END,
};
/* clang-format on */

static const struct dhaf_reason fx_reasons[] = {{"ok", "fine"}, {NULL, NULL}};

#if defined(FX_UNDEFINED)
/* dhaf exports no functions: this reference makes dlopen(RTLD_NOW) fail. */
#define FX_SET_TEXT(r, ...) dhaf_err_set(NULL, 0, __VA_ARGS__)
#else
#define FX_SET_TEXT(r, ...) snprintf((r)->text, sizeof((r)->text), __VA_ARGS__)
#endif

static __attribute__((unused)) void fx_check(struct dhaf_check_target *t, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct fx_config *c = t[i].conf;
        t[i].result->healthy = c->level > 0;
        t[i].result->reason = fx_reasons[0].code;
        FX_SET_TEXT(t[i].result, "level %d label %s", c->level, c->label ? c->label : "-");
    }
}

static int fx_switch(void *state, const struct dhaf_switch_req *req, struct dhaf_err *err)
{
    (void)state;
    (void)req;
    (void)err;
    return 0;
}

static int fx_notify(void *state, const struct dhaf_event_view *ev, struct dhaf_err *err)
{
    (void)state;
    (void)ev;
    (void)err;
    return 0;
}

#if defined(FX_BUILTIN_CLASH)
#define FX_TYPE "tcp"
#elif defined(FX_BAD_NAME)
#define FX_TYPE "no spaces allowed"
#elif defined(FX_DUP_A) || defined(FX_DUP_B)
#define FX_TYPE "fx-dup"
#else
#define FX_TYPE "fx-multi"
#endif

static const struct dhaf_provider fx_checker __attribute__((unused)) = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
#if defined(FX_BAD_KIND)
    .kind = (enum dhaf_pkind)7,
#else
    .kind = DHAF_PKIND_CHECKER,
#endif
    .type = FX_TYPE,
    .summary = "Test fixture.",
#if !defined(FX_NO_KEYS)
    .keys = fx_keys,
#endif
#if !defined(FX_ZERO_SIZE)
    .config_size = sizeof(struct fx_config),
#endif
#if !defined(FX_NO_OP)
    .check = fx_check,
#endif
    .reasons = fx_reasons,
};

/* FX_MULTI also brings a switcher and a notifier of the same type name: names are per kind. */
static const struct dhaf_provider fx_switcher __attribute__((unused)) = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_SWITCHER,
    .type = "fx-multi",
    .summary = "Test fixture.",
    .keys = fx_keys,
    .config_size = sizeof(struct fx_config),
    .switch_to = fx_switch,
};

static const struct dhaf_provider fx_notifier __attribute__((unused)) = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_NOTIFIER,
    .type = "fx-multi",
    .summary = "Test fixture.",
    .keys = fx_keys,
    .config_size = sizeof(struct fx_config),
    .notify = fx_notify,
};

#if defined(FX_NO_SYMBOL)
const struct dhaf_provider *const not_the_entry[] = {&fx_checker, &fx_switcher, &fx_notifier, NULL};
#elif defined(FX_EMPTY)
const struct dhaf_provider *const dhaf_provider_entry[] = {NULL};
#elif defined(FX_MULTI)
const struct dhaf_provider *const dhaf_provider_entry[] = {&fx_checker, &fx_switcher, &fx_notifier,
                                                           NULL};
#else
const struct dhaf_provider *const dhaf_provider_entry[] = {&fx_checker, NULL};
#endif
