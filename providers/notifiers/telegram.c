/* SPDX-License-Identifier: MIT */
/* Telegram notifier: config keys and rules (the bot arrives with the notifiers issue). */
#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "dhaf/provider.h"
#include "telegram.h"

#define TG(field) offsetof(struct tg_config, field)

/* Bot tokens look like 123456789:AAE...: digits, a colon, then [A-Za-z0-9_-]. The message
 * never repeats the token. */
static int check_token(const char *v, char *why, size_t wl)
{
    const char *p = v;
    while (isdigit((unsigned char)*p))
        p++;
    bool ok = p > v && *p == ':' && p[1];
    for (p = ok ? p + 1 : p; ok && *p; p++)
        ok = isalnum((unsigned char)*p) || *p == '_' || *p == '-';
    if (!ok) {
        snprintf(why, wl,
                 "is not a Telegram bot token (expected digits:letters, as @BotFather "
                 "gives it)");
        return -1;
    }
    return 0;
}

/* clang-format off */
static const struct dhaf_cfgkey tg_keys[] = {
    {"token", DHAF_CFG_SECRET, TG(token), true, NULL, 0, 0, NULL, check_token, NULL,
     "Bot API token from @BotFather (also token-file or ${ENV})."},
    {"join-code", DHAF_CFG_SECRET, TG(join_code), true, NULL, 0, 0, NULL, NULL, NULL,
     "Code a chat sends as /start <join-code> to subscribe."},
    {"api-url", DHAF_CFG_URL, TG(api_url), false, "https://api.telegram.org", 0, 0, NULL, NULL,
     NULL, "Base URL of the Telegram Bot API (for proxies and tests)."},
    DHAF_KEY_END,
};
/* clang-format on */

const struct dhaf_provider dhaf_notifier_tg = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_NOTIFIER,
    .type = "tg",
    .summary = "Telegram messenger notifications from dhaf.",
    .keys = tg_keys,
    .config_size = sizeof(struct tg_config),
};
