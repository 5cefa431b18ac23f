/* SPDX-License-Identifier: MIT */
/* Cloudflare DNS switcher: points the service's A/AAAA record at the chosen entry point. */
#ifndef DHAF_CF_H
#define DHAF_CF_H

struct cf_config {
    char *api_token; /* secret */
    char *zone;
    char *api_url;
};

#endif
