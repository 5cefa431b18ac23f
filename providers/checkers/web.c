/* SPDX-License-Identifier: MIT */
/* Web health checker: config keys and their rules (the checks arrive with the probing issue). */
#include <ctype.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dhaf/alloc.h"
#include "dhaf/provider.h"
#include "dhaf/valid.h"
#include "web.h"

#define WEB(field) offsetof(struct web_config, field)

static const char *const web_schemas[] = {"http", "https", NULL};
const char *const web_methods[] = {"GET", "POST", "HEAD", NULL};

static int check_codes(const char *v, char *why, size_t wl)
{
    struct dhaf_codes c;
    if (dhaf_codes_parse(v, &c, why, wl) != 0)
        return -1;
    dhaf_codes_release(&c);
    return 0;
}

static int check_path(const char *v, char *why, size_t wl)
{
    for (const char *p = v; *p; p++) {
        if ((unsigned char)*p <= ' ' || *p == 0x7f || *p == '#') {
            snprintf(why, wl, "the path may not contain spaces, control characters or '#'");
            return -1;
        }
    }
    return 0;
}

/* clang-format off */
static const struct dhaf_cfgkey web_keys[] = {
    {"schema", DHAF_CFG_ENUM, WEB(schema), false, "http", 0, 0, web_schemas, NULL, NULL,
     "URI schema: http or https."},
    {"method", DHAF_CFG_ENUM, WEB(method), false, "GET", 0, 0, web_methods, NULL, NULL,
     "HTTP method: GET, POST or HEAD."},
    {"port", DHAF_CFG_INT, WEB(port), false, NULL, 1, 65535, NULL, NULL, NULL,
     "Port to check; 80 for http, 443 for https when not given."},
    {"path", DHAF_CFG_STR, WEB(path), false, "/", 0, 0, NULL, check_path, NULL,
     "Path to request."},
    {"headers", DHAF_CFG_STRMAP, WEB(headers), false, NULL, 0, 0, NULL, NULL, NULL,
     "Extra request headers (name: value)."},
    {"follow-redirects", DHAF_CFG_BOOL, WEB(follow_redirects), false, "false", 0, 0, NULL, NULL,
     NULL, "Follow HTTP redirects."},
    {"timeout", DHAF_CFG_INT, WEB(timeout), false, "5", 1, 86400, NULL, NULL, NULL,
     "Seconds one attempt may take."},
    {"retries", DHAF_CFG_INT, WEB(retries), false, "2", 0, 100, NULL, NULL, NULL,
     "Retries after a failed first attempt, made at once."},
    {"expected-codes", DHAF_CFG_STR, WEB(expected_codes), false, "200", 0, 0, NULL, check_codes,
     NULL, "Healthy response codes, e.g. 200,3XX (X = any digit)."},
    {"expected-response-body", DHAF_CFG_STR, WEB(expected_body), false, NULL, 0, 0, NULL, NULL,
     NULL, "Text the body must contain (case-insensitive)."},
    {"domain-forwarding", DHAF_CFG_BOOL, WEB(domain_forwarding), false, "true", 0, 0, NULL, NULL,
     NULL, "Send the service domain as Host (and SNI) unless headers set Host."},
    {"ignore-ssl-errors", DHAF_CFG_BOOL, WEB(ignore_ssl_errors), false, "false", 0, 0, NULL,
     NULL, NULL, "Accept any TLS certificate (https only)."},
    DHAF_KEY_END,
};
/* clang-format on */

static void web_finish(void *conf, struct dhaf_cfg_ctx *ctx)
{
    struct web_config *w = conf;
    if (w->port == 0)
        w->port = w->schema == WEB_HTTPS ? 443 : 80;
    if (w->path && w->path[0] != '/') {
        char *p = dhaf_xasprintf("/%s", w->path);
        free(w->path);
        w->path = p;
    }
    for (size_t i = 0; i < w->headers.n; i++) {
        const char *name = w->headers.keys[i], *val = w->headers.vals[i];
        bool ok = name[0] != '\0';
        for (const char *p = name; ok && *p; p++)
            ok = isalnum((unsigned char)*p) || strchr("!#$%&'*+-.^_`|~", *p);
        if (!ok) {
            dhaf_cfg_fail(ctx, "headers", "\"%.60s\" is not a valid HTTP header name", name);
            continue;
        }
        if (strpbrk(val, "\r\n")) {
            dhaf_cfg_fail(ctx, "headers", "the value of header \"%s\" contains a line break", name);
        }
    }
    if (w->ignore_ssl_errors && w->schema != WEB_HTTPS)
        dhaf_cfg_fail(ctx, "ignore-ssl-errors", "applies to https only; schema is http");
}

const struct dhaf_provider dhaf_checker_web = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_CHECKER,
    .type = "web",
    .summary = "Checks the health of an http(s) service.",
    .keys = web_keys,
    .config_size = sizeof(struct web_config),
    .finish = web_finish,
};
