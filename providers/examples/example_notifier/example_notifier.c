/* SPDX-License-Identifier: MIT */
/* Example notifier plugin "example-log": appends one line per event to a file.
 *
 *   notifiers:
 *     - {type: example-log, name: audit, file: /var/log/dhaf-events.log}
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dhaf/provider.h"

struct log_ntf_config {
    char *file;
};

/* clang-format off */
static const struct dhaf_cfgkey log_ntf_keys[] = {
    {"file", DHAF_CFG_PATH, offsetof(struct log_ntf_config, file), true, NULL, 0, 0, NULL, NULL,
     NULL, "File to append one line per event to (created when missing)."},
    DHAF_KEY_END,
};
/* clang-format on */

struct log_ntf {
    const struct log_ntf_config *conf; /* borrowed from dhaf for the instance's life */
    const char *instance;              /* likewise */
};

/* A plugin cannot call dhaf_err_set (dhaf exports no functions): fill the struct directly. */
static int fail(struct dhaf_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(struct dhaf_err *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
        err->code = code;
        err->status = 0;
    }
    return code;
}

static int log_ntf_init(const void *conf, const struct dhaf_provider_ctx *ctx, void **state,
                        struct dhaf_err *err)
{
    struct log_ntf *n = calloc(1, sizeof(*n));
    if (!n)
        return fail(err, DHAF_EINTERNAL, "example-log: out of memory");
    n->conf = conf;
    n->instance = ctx->instance;
    *state = n;
    return 0;
}

static void log_ntf_destroy(void *state)
{
    free(state);
}

static const char *or_dash(const char *s)
{
    return s && s[0] ? s : "-";
}

/* One write(2) with O_APPEND per event, so lines never interleave. */
static int log_ntf_notify(void *state, const struct dhaf_event_view *ev, struct dhaf_err *err)
{
    struct log_ntf *n = state;
    char line[2048];
    int len =
        snprintf(line, sizeof(line),
                 "seq=%" PRIu64 " at_ms=%" PRId64 " notifier=%s kind=%s level=%s "
                 "service=%s node=%s from=%s to=%s message=\"",
                 ev->seq, ev->at_ms, or_dash(n->instance), or_dash(ev->kind), or_dash(ev->level),
                 or_dash(ev->service), or_dash(ev->node), or_dash(ev->from), or_dash(ev->to));
    if (len < 0 || (size_t)len > sizeof(line) - 3)
        return fail(err, DHAF_EINTERNAL, "example-log: cannot format event %" PRIu64, ev->seq);
    /* One event, one line: no newline or quote of the message may break it. */
    for (const char *m = ev->message ? ev->message : ""; *m && (size_t)len < sizeof(line) - 2; m++)
        line[len++] = *m == '\n' || *m == '\r' || *m == '"' ? ' ' : *m;
    line[len++] = '"';
    line[len++] = '\n';
    int fd = open(n->conf->file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(err, DHAF_EUNAVAILABLE, "example-log: %s: %s", n->conf->file, strerror(errno));
    int rc = 0;
    if (write(fd, line, (size_t)len) != len)
        rc = fail(err, DHAF_EUNAVAILABLE, "example-log: writing %s: %s", n->conf->file,
                  strerror(errno));
    close(fd);
    return rc;
}

static const struct dhaf_provider example_log_notifier = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_NOTIFIER,
    .type = "example-log",
    .summary = "Example plugin: appends one line per event to a file.",
    .keys = log_ntf_keys,
    .config_size = sizeof(struct log_ntf_config),
    .init = log_ntf_init,
    .destroy = log_ntf_destroy,
    .notify = log_ntf_notify,
};

const struct dhaf_provider *const dhaf_provider_entry[] = {&example_log_notifier, NULL};
