/* SPDX-License-Identifier: MIT */
/* E-mail notifier: one mail per event through an SMTP server. */
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
};

#endif
