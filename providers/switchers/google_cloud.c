/* SPDX-License-Identifier: MIT */
/* Google Cloud metadata switcher: config keys (the API client arrives with the switchers issue). */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>

#include "dhaf/provider.h"
#include "google_cloud.h"

#define GCP(field) offsetof(struct gcp_config, field)

/* Metadata keys: letters, digits, '-' and '_', at most 128 characters (Compute Engine rule). */
static int check_metadata_key(const char *v, char *why, size_t wl)
{
    size_t n = 0;
    for (; v[n]; n++)
        if (!isalnum((unsigned char)v[n]) && v[n] != '-' && v[n] != '_')
            break;
    if (v[n] || n > 128) {
        snprintf(why, wl,
                 "\"%.60s\" is not a metadata key (letters, digits, '-', '_'; at most 128)", v);
        return -1;
    }
    return 0;
}

/* clang-format off */
static const struct dhaf_cfgkey gcp_keys[] = {
    {"project", DHAF_CFG_STR, GCP(project), true, NULL, 0, 0, NULL, NULL, NULL,
     "Google Cloud project ID."},
    {"metadata-key", DHAF_CFG_STR, GCP(metadata_key), true, NULL, 0, 0, NULL, check_metadata_key,
     NULL, "Project metadata key the gateway reads the entry point address from."},
    {"credentials-path", DHAF_CFG_PATH, GCP(credentials_path), true, NULL, 0, 0, NULL, NULL, NULL,
     "Service-account JSON key file (relative to the config file's directory)."},
    {"api-url", DHAF_CFG_URL, GCP(api_url), false, "https://compute.googleapis.com/compute/v1", 0,
     0, NULL, NULL, NULL, "Base URL of the Compute Engine API (for proxies and tests)."},
    DHAF_KEY_END,
};
/* clang-format on */

const struct dhaf_provider dhaf_switcher_google_cloud = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_SWITCHER,
    .type = "google-cloud",
    .summary = "Switches entry points through a Google Cloud gateway (project metadata).",
    .keys = gcp_keys,
    .config_size = sizeof(struct gcp_config),
};
