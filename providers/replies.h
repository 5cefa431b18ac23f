/* SPDX-License-Identifier: MIT */
/* The reply parsers of the third-party providers (Cloudflare, Google Cloud, Telegram, SMTP),
 * callable without the network: the providers' own code paths, exposed for fuzz/. */
#ifndef DHAF_PROVIDER_REPLIES_H
#define DHAF_PROVIDER_REPLIES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <curl/curl.h>
#include <jansson.h>

#include "dhaf/err.h"
#include "dhaf/http.h"

/* ---- Cloudflare (providers/switchers/cloudflare.c) ---------------------------------------- */

/* What a call came back with, for the caller's decisions. */
struct cf_reply {
    long status;     /* HTTP status; 0 when no reply arrived */
    int64_t cf_code; /* errors[0].code of a refusal; 0 when none */
    bool unsure;     /* a write may have been applied although no success was seen */
    json_t *root;    /* the envelope when the call succeeded (caller json_decref) */
    json_t *result;  /* borrowed from root */
};

enum cf_shape {
    CF_ARRAY,  /* result: [...] (list endpoints) */
    CF_OBJECT, /* result: {...} (create, edit) */
};

/**
 * Judges one HTTP reply of the API v4: OK only for HTTP 2xx with success:true and a result of
 * the expected shape. Returns 0 with rep->root (caller json_decref's it) and rep->result set,
 * or an error in err (never NULL). method and url are only quoted in messages (borrowed).
 */
int cf_judge(const char *method, const char *url, const struct dhaf_http_resp *resp,
             enum cf_shape shape, struct cf_reply *rep, struct dhaf_err *err);

/* ---- Google Cloud (providers/switchers/google_cloud.c) ------------------------------------ */

/** Explains a Google error reply r (its error.code, status, errors[0].reason and message) in
 *  err; returns the dhaf code for r's HTTP status. */
int gcp_api_error(const char *method, const char *url, const struct dhaf_http_resp *r,
                  struct dhaf_err *err);

/** An operation's name and status, checked (*name and *status are borrowed from op). Returns
 *  0 or DHAF_EPROTO; where is quoted in the message. */
int gcp_op_parse(const json_t *op, const char *where, const char **name, const char **status,
                 struct dhaf_err *err);

/** A DONE operation: 0 without `error`, else its errors[].code/message and
 *  httpErrorStatusCode in err. */
int gcp_op_result(const json_t *op, const char *name, struct dhaf_err *err);

/* ---- Telegram (providers/notifiers/telegram.c) -------------------------------------------- */

#define TG_DESC_MAX 200 /* bytes of an API description quoted in errors and logs */

/* What a Bot API call came back with. */
struct tg_reply {
    long status;  /* HTTP status; 0 when no reply arrived */
    int64_t code; /* error_code of a refusal; 0 otherwise */
    char desc[TG_DESC_MAX];
    int64_t retry_after; /* parameters.retry_after (s); -1 when absent */
    int64_t migrate_to;  /* parameters.migrate_to_chat_id; 0 when absent */
    json_t *root;        /* the reply when ok (release with tg_reply_release) */
    const json_t *result;
};

/**
 * Takes in the HTTP reply resp of a Bot API call (rep initialised by the caller; shown is the
 * URL quoted in messages, token redacted). Returns 0 with rep->root and rep->result (caller
 * json_decref's rep->root), or an error in err with rep->code, desc, retry_after and
 * migrate_to set.
 */
int tg_parse_reply(const struct dhaf_http_resp *resp, const char *shown, struct tg_reply *rep,
                   struct dhaf_err *err);

/* ---- SMTP replies of the e-mail notifier (providers/notifiers/email.c) -------------------- */

#define EMAIL_REPLY_MAX 200 /* of one server reply quoted in an error */

/* What the server said, from libcurl's protocol trace: the verbs we sent (never their
 * arguments, which carry credentials during AUTH) and the server's replies. */
struct email_trace {
    char verb[12];     /* the last SMTP command sent: "EHLO", "AUTH", "MAIL", "RCPT", ... */
    char bad_verb[12]; /* the command the last 4xx/5xx reply answered */
    char bad_reply[EMAIL_REPLY_MAX];
};

/** libcurl's CURLOPT_DEBUGFUNCTION: records into ud (a struct email_trace) the verbs sent
 *  (CURLINFO_HEADER_OUT) and the last 4xx/5xx reply (CURLINFO_HEADER_IN). Returns 0. */
int email_on_debug(CURL *h, curl_infotype type, char *data, size_t size, void *ud);

/** Replaces every occurrence of secret (4 bytes or more) in text by "***". NULLs are fine. */
void email_scrub(char *text, const char *secret);

#endif
