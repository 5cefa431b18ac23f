/* SPDX-License-Identifier: MIT */
/* Web health checker: an HTTP(S) request per entry point, judged by code and body. */
#ifndef DHAF_WEB_H
#define DHAF_WEB_H

#include <stdbool.h>

#include "dhaf/cfgkeys.h"

enum web_schema { WEB_HTTP = 0, WEB_HTTPS = 1 };

struct web_config {
    int schema; /* enum web_schema */
    int method; /* index into web_methods */
    int port;   /* 80 / 443 by schema when not given */
    char *path;
    struct dhaf_strmap headers;
    bool follow_redirects;
    int timeout;
    int retries; /* retries after the first attempt */
    char *expected_codes;
    char *expected_body;
    bool domain_forwarding;
    bool ignore_ssl_errors;
};

extern const char *const web_methods[];

#endif
