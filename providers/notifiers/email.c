/* SPDX-License-Identifier: MIT */
/* E-mail notifier: config keys and rules (sending arrives with the notifiers issue). */
#include <stddef.h>

#include "dhaf/provider.h"
#include "email.h"

#define EM(field) offsetof(struct email_config, field)

static const char *const securities[] = {"ssl", "starttls", NULL};

/* clang-format off */
static const struct dhaf_cfgkey email_keys[] = {
    {"from", DHAF_CFG_EMAIL, EM(from), true, NULL, 0, 0, NULL, NULL, NULL,
     "Sender address of the notifications."},
    {"to", DHAF_CFG_EMAIL, EM(to), true, NULL, 0, 0, NULL, NULL, NULL,
     "Recipient address of the notifications."},
    {"smtp.server", DHAF_CFG_HOST, EM(server), true, NULL, 0, 0, NULL, NULL, NULL,
     "SMTP server host."},
    {"smtp.port", DHAF_CFG_INT, EM(port), true, NULL, 1, 65535, NULL, NULL, NULL,
     "SMTP server port."},
    {"smtp.security", DHAF_CFG_ENUM, EM(security), false, NULL, 0, 0, securities, NULL, NULL,
     "ssl (implicit TLS) or starttls (required); absent: STARTTLS when offered."},
    {"smtp.username", DHAF_CFG_STR, EM(username), false, NULL, 0, 0, NULL, NULL, NULL,
     "SMTP user (with password)."},
    {"smtp.password", DHAF_CFG_SECRET, EM(password), false, NULL, 0, 0, NULL, NULL, NULL,
     "SMTP password (also password-file or ${ENV})."},
    DHAF_KEY_END,
};
/* clang-format on */

static void email_finish(void *conf, struct dhaf_cfg_ctx *ctx)
{
    struct email_config *e = conf;
    if (e->username && !e->password)
        dhaf_cfg_fail(ctx, "smtp.password", "missing; smtp.username and smtp.password go together");
    else if (!e->username && e->password)
        dhaf_cfg_fail(ctx, "smtp.username", "missing; smtp.username and smtp.password go together");
}

const struct dhaf_provider dhaf_notifier_email = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_NOTIFIER,
    .type = "email",
    .summary = "E-mail notifications from dhaf.",
    .keys = email_keys,
    .config_size = sizeof(struct email_config),
    .finish = email_finish,
};
