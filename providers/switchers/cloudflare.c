/* SPDX-License-Identifier: MIT */
/* Cloudflare DNS switcher: config keys (the API client arrives with the switchers issue). */
#include <stddef.h>

#include "cloudflare.h"
#include "dhaf/provider.h"

#define CF(field) offsetof(struct cf_config, field)

/* clang-format off */
static const struct dhaf_cfgkey cf_keys[] = {
    {"api-token", DHAF_CFG_SECRET, CF(api_token), true, NULL, 0, 0, NULL, NULL, NULL,
     "API token allowed to edit the zone's DNS records (also api-token-file or ${ENV})."},
    {"zone", DHAF_CFG_HOST, CF(zone), true, NULL, 0, 0, NULL, NULL, NULL,
     "Zone (domain) whose records dhaf manages, e.g. foo.com."},
    {"api-url", DHAF_CFG_URL, CF(api_url), false, "https://api.cloudflare.com/client/v4", 0, 0,
     NULL, NULL, NULL, "Base URL of the Cloudflare API v4 (for proxies and tests)."},
    DHAF_KEY_END,
};
/* clang-format on */

const struct dhaf_provider dhaf_switcher_cloudflare = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_SWITCHER,
    .type = "cloudflare",
    .summary = "Switches entry points by changing the Cloudflare DNS record.",
    .keys = cf_keys,
    .config_size = sizeof(struct cf_config),
};
