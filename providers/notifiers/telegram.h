/* SPDX-License-Identifier: MIT */
/* Telegram notifier: a bot that subscribers join with a code and that posts every event. */
#ifndef DHAF_TG_H
#define DHAF_TG_H

struct tg_config {
    char *token;     /* secret */
    char *join_code; /* secret */
    char *api_url;
};

#endif
