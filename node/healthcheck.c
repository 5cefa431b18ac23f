/* SPDX-License-Identifier: MIT */
/* `dhaf-node --healthcheck`: asks the node's own REST listener for /healthz, as a container
 * HEALTHCHECK or an exec probe does. It runs beside the node (same host or container), so a
 * listener on every address is reached on loopback. Over TLS the certificate is not verified:
 * the request carries no credential and /healthz says nothing but "ok", and a loopback peer
 * inside the same network namespace is the node itself. A REST port that demands client
 * certificates (mTLS) cannot be asked this way: probe gRPC health instead (docs/api.md). */
#include "healthcheck.h"

#include <stdio.h>
#include <string.h>

#include <curl/curl.h>

static size_t discard(char *p, size_t size, size_t n, void *ud)
{
    (void)p;
    (void)ud;
    return size * n;
}

/* The address a client on this host uses for a listener bound to host. */
static const char *loopback_for(const char *host, char *buf, size_t len)
{
    if (!host || !*host || !strcmp(host, "0.0.0.0") || !strcmp(host, "*"))
        return "127.0.0.1";
    if (!strcmp(host, "::") || !strcmp(host, "[::]"))
        return "[::1]";
    if (strchr(host, ':') && host[0] != '[') { /* an IPv6 literal */
        snprintf(buf, len, "[%s]", host);
        return buf;
    }
    return host;
}

int node_healthcheck(const struct dhaf_config *cfg, int timeout_ms, FILE *out)
{
    char v6[80], url[200];
    bool tls = cfg->web_api.tls.cert_file != NULL;
    snprintf(url, sizeof(url), "%s://%s:%d/healthz", tls ? "https" : "http",
             loopback_for(cfg->web_api.host, v6, sizeof(v6)), cfg->web_api.port);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        fprintf(out, "unhealthy: libcurl did not initialise\n");
        return 1;
    }
    CURL *h = curl_easy_init();
    if (!h) {
        fprintf(out, "unhealthy: out of memory\n");
        return 1;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    if (tls) {
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    CURLcode cc = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(h);
    if (cc != CURLE_OK) {
        fprintf(out, "unhealthy: %s: %s\n", url, curl_easy_strerror(cc));
        return 1;
    }
    if (status != 200) {
        fprintf(out, "unhealthy: %s answered HTTP %ld\n", url, status);
        return 1;
    }
    fprintf(out, "healthy: %s answered 200\n", url);
    return 0;
}
