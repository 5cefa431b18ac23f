/* SPDX-License-Identifier: MIT */
/* HTTP client for provider APIs: one easy handle on a private multi handle per request,
 * polled until done or the deadline, response capped. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <curl/curl.h>

#include "dhaf/alloc.h"
#include "dhaf/clock.h"
#include "dhaf/http.h"

#define DEFAULT_MAX (1024 * 1024)

static pthread_once_t once = PTHREAD_ONCE_INIT;

static void global_init(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct sink {
    char *buf;
    size_t len, cap, max;
    bool overflow;
    long retry_after;
};

static size_t on_body(char *data, size_t size, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t add = size * n;
    if (s->len + add > s->max) {
        s->overflow = true;
        return 0; /* makes curl stop with CURLE_WRITE_ERROR */
    }
    DHAF_GROW(s->buf, s->len + add + 1, s->cap);
    memcpy(s->buf + s->len, data, add);
    s->len += add;
    s->buf[s->len] = '\0';
    return add;
}

static size_t on_header(char *data, size_t size, size_t n, void *ud)
{
    struct sink *s = ud;
    size_t len = size * n;
    if (len > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
        char tmp[32];
        size_t l = len - 12 < sizeof(tmp) - 1 ? len - 12 : sizeof(tmp) - 1;
        memcpy(tmp, data + 12, l);
        tmp[l] = '\0';
        char *end = NULL;
        long v = strtol(tmp, &end, 10);
        if (end != tmp && v >= 0 && v < 86400)
            s->retry_after = v;
    }
    return len;
}

/* A cancel hook: the request's poll returns at once. */
static void wake_multi(void *arg)
{
    curl_multi_wakeup(arg);
}

int dhaf_http_do(const struct dhaf_http_req *req, struct dhaf_http_resp *resp, struct dhaf_err *err)
{
    memset(resp, 0, sizeof(*resp));
    resp->retry_after = -1;
    const char *shown = req->shown_url ? req->shown_url : req->url;
    if (!req->url || !req->method || req->timeout_ms <= 0)
        return dhaf_err_set(err, DHAF_EINVAL, "HTTP request without URL, method or deadline");
    pthread_once(&once, global_init);

    struct sink s = {.max = req->max_response ? req->max_response : DEFAULT_MAX, .retry_after = -1};
    CURL *e = curl_easy_init();
    CURLM *m = curl_multi_init();
    struct curl_slist *hl = NULL;
    for (const char *const *h = req->headers; h && *h; h++)
        hl = curl_slist_append(hl, *h);
    curl_easy_setopt(e, CURLOPT_URL, req->url);
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, req->method);
    if (strcmp(req->method, "GET") == 0)
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    if (req->body) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)req->body_len);
    }
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, hl);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)req->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)req->timeout_ms);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(e, CURLOPT_HEADERDATA, &s);
    curl_easy_setopt(e, CURLOPT_USERAGENT, "dhaf/" DHAF_VERSION);
    if (req->ca_file)
        curl_easy_setopt(e, CURLOPT_CAINFO, req->ca_file);
    char curl_err[CURL_ERROR_SIZE] = "";
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, curl_err);
    curl_multi_add_handle(m, e);

    /* a fired cancel wakes the poll below at once; without a free hook slot the loop still
     * notices it within its 200 ms poll */
    bool hooked = req->cancel && dhaf_cancel_hook(req->cancel, wake_multi, m);
    bool cancelled = dhaf_cancel_fired(req->cancel);
    int64_t deadline = dhaf_mono_ms() + req->timeout_ms + 100;
    int running = 1;
    CURLcode result = CURLE_OK;
    bool done = false;
    while (!done && !cancelled) {
        curl_multi_perform(m, &running);
        int left;
        CURLMsg *msg;
        while ((msg = curl_multi_info_read(m, &left)) != NULL) {
            if (msg->msg == CURLMSG_DONE) {
                result = msg->data.result;
                done = true;
            }
        }
        if (done)
            break;
        if ((cancelled = dhaf_cancel_fired(req->cancel)))
            break;
        int64_t wait = deadline - dhaf_mono_ms();
        if (wait <= 0) {
            result = CURLE_OPERATION_TIMEDOUT; /* curl's own timeout should come first */
            break;
        }
        curl_multi_poll(m, NULL, 0, wait > 200 ? 200 : (int)wait, NULL);
    }

    if (hooked)
        dhaf_cancel_unhook(req->cancel, wake_multi, m);

    int rc = 0;
    if (cancelled) {
        rc = dhaf_err_set(err, DHAF_ECANCELLED, "%s %s: cancelled", req->method, shown);
    } else if (result == CURLE_OK) {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &resp->status);
        resp->body = s.buf ? s.buf : dhaf_xstrdup("");
        resp->body_len = s.len;
        resp->retry_after = s.retry_after;
        s.buf = NULL;
    } else if (s.overflow) {
        rc = dhaf_err_set(err, DHAF_ETOOBIG, "%s %s: the response is larger than %zu bytes",
                          req->method, shown, s.max);
    } else if (result == CURLE_OPERATION_TIMEDOUT) {
        rc = dhaf_err_set(err, DHAF_ETIMEOUT, "%s %s: no answer within %d ms", req->method, shown,
                          req->timeout_ms);
    } else {
        rc = dhaf_err_set(err, DHAF_EUNAVAILABLE, "%s %s: %s", req->method, shown,
                          curl_err[0] ? curl_err : curl_easy_strerror(result));
    }
    free(s.buf);
    curl_multi_remove_handle(m, e);
    curl_easy_cleanup(e);
    curl_multi_cleanup(m);
    curl_slist_free_all(hl);
    return rc;
}

void dhaf_http_resp_release(struct dhaf_http_resp *resp)
{
    DHAF_FREE(resp->body);
    resp->body_len = 0;
}

const char *dhaf_http_safe_text(char *buf, size_t len, const char *s)
{
    size_t o = 0;
    for (; s && *s && o + 4 < len; s++)
        buf[o++] = ((unsigned char)*s < 0x20 || *s == 0x7f) ? ' ' : *s;
    if (s && *s) {
        memcpy(buf + o, "...", 3);
        o += 3;
    }
    buf[o] = '\0';
    return buf;
}
