/* SPDX-License-Identifier: MIT */
/* E-mail notifier: one mail per event (multipart text + HTML) through an SMTP server, over
 * STARTTLS or implicit TLS, with optional AUTH. */
#ifndef DHAF_EMAIL_H
#define DHAF_EMAIL_H

enum email_security { EMAIL_SEC_SSL = 0, EMAIL_SEC_STARTTLS = 1 }; /* -1: STARTTLS if offered */

struct email_config {
    char *from;
    char *to;
    char *server;
    int port;
    int security;
    char *username;
    char *password; /* secret */
    char *ca_file;  /* PEM bundle to verify the server with; NULL = the system's CAs */
    int timeout;    /* seconds one mail may take (connecting: at most 10 of them) */
};

#endif
