/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the reply parsers of the third-party providers (providers/replies.h):
 * Cloudflare API v4 envelopes, Google Cloud error and operation replies, Telegram Bot API
 * replies (JSON) and the SMTP replies the e-mail notifier reads from libcurl's trace.
 * Input: byte 0 chooses the parser, byte 1 the HTTP status, the rest is the body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dhaf/err.h"
#include "dhaf/http.h"
#include "dhaf/log.h"
#include "replies.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum which { CF_LIST, CF_EDIT, GCP_ERROR, GCP_OPERATION, TG_REPLY, SMTP_TRACE, N_WHICH };

static const long statuses[] = {200, 201, 204, 301, 400, 401, 403, 404,
                                408, 409, 429, 500, 502, 503, 504, 0};
#define N_STATUSES (sizeof(statuses) / sizeof(statuses[0]))

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    dhaf_log_setup(DHAF_LOG_ERROR, DHAF_LOG_TEXT);
    return 0;
}

/* Every error says something, within its buffer. */
static void check_err(int rc, const struct dhaf_err *err)
{
    if (rc == 0)
        return;
    if (!err->msg[0] || strnlen(err->msg, sizeof(err->msg)) == sizeof(err->msg))
        abort();
}

static void cloudflare(const struct dhaf_http_resp *resp, enum cf_shape shape)
{
    struct cf_reply rep = {0};
    struct dhaf_err err = {0};
    int rc =
        cf_judge("GET", "https://api.cloudflare.test/client/v4/zones", resp, shape, &rep, &err);
    check_err(rc, &err);
    if (rc == 0) {
        /* accepted only from HTTP 2xx, with a result of the asked shape */
        if (resp->status < 200 || resp->status > 299 || !rep.root ||
            (shape == CF_ARRAY ? !json_is_array(rep.result) : !json_is_object(rep.result)))
            abort();
        json_decref(rep.root);
    } else if (rep.root) {
        abort();
    }
}

static void gcp_operation(const struct dhaf_http_resp *resp)
{
    struct dhaf_err err = {0};
    json_t *op = json_loadb(resp->body, resp->body_len, JSON_REJECT_DUPLICATES, NULL);
    if (!json_is_object(op)) {
        json_decref(op);
        return;
    }
    const char *name = NULL, *status = NULL;
    int rc = gcp_op_parse(op, "POST https://compute.test/setCommonInstanceMetadata", &name, &status,
                          &err);
    check_err(rc, &err);
    if (rc == 0) {
        if (!name || !*name || !status)
            abort();
        memset(&err, 0, sizeof(err));
        check_err(gcp_op_result(op, name, &err), &err);
    }
    json_decref(op);
}

static void telegram(const struct dhaf_http_resp *resp)
{
    struct tg_reply rep;
    struct dhaf_err err = {0};
    memset(&rep, 0, sizeof(rep));
    rep.retry_after = -1;
    int rc = tg_parse_reply(resp, "https://api.telegram.test/bot<redacted>/getUpdates", &rep, &err);
    check_err(rc, &err);
    if (strnlen(rep.desc, sizeof(rep.desc)) == sizeof(rep.desc))
        abort();
    if (rc == 0 && !rep.root)
        abort();
    json_decref(rep.root);
}

/* The body as libcurl's trace lines: a line starting with '>' is one we sent (HEADER_OUT),
 * any other a server reply (HEADER_IN). Each is handed over in a buffer of its exact size
 * (libcurl's are not NUL-terminated). */
static void smtp(const char *body, size_t len)
{
    static const char secret[] = "s3cret-pass";
    struct email_trace t = {{0}, {0}, {0}};
    size_t i = 0;
    while (i < len) {
        size_t e = i;
        while (e < len && body[e] != '\n')
            e++;
        if (e < len)
            e++; /* the '\n' is part of the line, as in libcurl's trace */
        bool out = body[i] == '>';
        size_t n = e - i - (out ? 1 : 0);
        char *line = malloc(n ? n : 1);
        if (!line)
            abort();
        memcpy(line, body + i + (out ? 1 : 0), n);
        email_on_debug(NULL, out ? CURLINFO_HEADER_OUT : CURLINFO_HEADER_IN, line, n, &t);
        free(line);
        i = e;
    }
    if (!memchr(t.verb, 0, sizeof(t.verb)) || !memchr(t.bad_verb, 0, sizeof(t.bad_verb)) ||
        !memchr(t.bad_reply, 0, sizeof(t.bad_reply)))
        abort();
    for (const char *p = t.bad_reply; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f)
            abort(); /* quoted in errors and logs: no control bytes */
    email_scrub(t.bad_reply, secret);
    if (strstr(t.bad_reply, secret))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    enum which w = (enum which)(data[0] % N_WHICH);
    /* the body NUL-terminated as dhaf_http_do gives it, in a buffer of its exact size */
    struct dhaf_http_resp resp = {
        .status = statuses[data[1] % N_STATUSES], .body_len = size - 2, .retry_after = -1};
    resp.body = malloc(size - 1);
    if (!resp.body)
        abort();
    memcpy(resp.body, data + 2, size - 2);
    resp.body[size - 2] = '\0';

    struct dhaf_err err = {0};
    switch (w) {
    case CF_LIST:
        cloudflare(&resp, CF_ARRAY);
        break;
    case CF_EDIT:
        cloudflare(&resp, CF_OBJECT);
        break;
    case GCP_ERROR:
        check_err(gcp_api_error("GET", "https://compute.test/projects/p", &resp, &err), &err);
        break;
    case GCP_OPERATION:
        gcp_operation(&resp);
        break;
    case TG_REPLY:
        telegram(&resp);
        break;
    case SMTP_TRACE:
    default:
        smtp(resp.body, resp.body_len);
        break;
    }
    free(resp.body);
    return 0;
}
