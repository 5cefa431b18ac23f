/* SPDX-License-Identifier: MIT */
/* Webhook notifier: every event as an HTTP POST - dhaf's own JSON, signed with HMAC-SHA256
 * when a secret is set, or {"text": ...} for Slack and Mattermost incoming webhooks. */
#ifndef DHAF_WEBHOOK_H
#define DHAF_WEBHOOK_H

enum webhook_format { WEBHOOK_JSON = 0, WEBHOOK_SLACK = 1, WEBHOOK_TEXT = 2 };

struct webhook_config {
    char *url;     /* secret: Slack's and Mattermost's URLs are the credential */
    char *secret;  /* secret: the HMAC key; NULL = unsigned */
    int format;    /* enum webhook_format */
    int timeout;   /* seconds one request may take */
    int retries;   /* further attempts within one delivery */
    char *ca_file; /* PEM bundle to verify the receiver with; NULL = the system's CAs */
};

/**
 * The signature header's value for body (len bytes) sent at timestamp (Unix seconds, as in
 * X-Dhaf-Timestamp): "sha256=" and the lower-case hex HMAC-SHA256, keyed with secret, of
 * "<timestamp>.<body>". Into buf (at least 72 bytes). Returns buf.
 */
char *webhook_signature(const char *secret, long long timestamp, const char *body, size_t len,
                        char *buf, size_t buflen);

#endif
