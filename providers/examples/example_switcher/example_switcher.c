/* SPDX-License-Identifier: MIT */
/* Example switcher plugin "example-file-switcher": "traffic goes to" the entry point whose
 * name a file holds. switch_to writes the name (atomically: temporary file, then rename);
 * current reads it back, so a change made by hand is seen.
 *
 *   switcher: {type: example-file-switcher, file: /var/lib/dhaf/current}
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dhaf/provider.h"

struct file_sw_config {
    char *file;
};

/* clang-format off */
static const struct dhaf_cfgkey file_sw_keys[] = {
    {"file", DHAF_CFG_PATH, offsetof(struct file_sw_config, file), true, NULL, 0, 0, NULL, NULL,
     NULL, "File that holds the name of the entry point traffic goes to."},
    DHAF_KEY_END,
};
/* clang-format on */

/* One instance (one service, on the leader). Both pointers are borrowed from dhaf for the
 * instance's life. */
struct file_sw {
    const struct file_sw_config *conf;
    const struct dhaf_provider_ctx *ctx;
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

static int file_sw_init(const void *conf, const struct dhaf_provider_ctx *ctx, void **state,
                        struct dhaf_err *err)
{
    struct file_sw *sw = calloc(1, sizeof(*sw));
    if (!sw)
        return fail(err, DHAF_EINTERNAL, "example-file-switcher: out of memory");
    sw->conf = conf;
    sw->ctx = ctx;
    *state = sw;
    return 0;
}

static void file_sw_destroy(void *state)
{
    free(state);
}

/* Idempotent: writing the same name again changes nothing. Fenced: a plugin calls no dhaf
 * function, so it asks req->fence->left_ms() right before its one change and gives up when the
 * leadership ended (a slow write would also check that it fits in what is left). */
static int file_sw_switch(void *state, const struct dhaf_switch_req *req, struct dhaf_err *err)
{
    struct file_sw *sw = state;
    size_t ep = req->to;
    if (ep >= sw->ctx->n_eps)
        return fail(err, DHAF_EINVAL, "example-file-switcher: no entry point #%zu", ep);
    if (req->fence->left_ms(req->fence->ud) <= 0)
        return fail(err, DHAF_EFENCED, "example-file-switcher: this node no longer leads");
    char tmp[4096];
    int len = snprintf(tmp, sizeof(tmp), "%s.tmp", sw->conf->file);
    if (len < 0 || (size_t)len >= sizeof(tmp))
        return fail(err, DHAF_EINVAL, "example-file-switcher: the file's path is too long");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return fail(err, DHAF_EIO, "example-file-switcher: %s: %s", tmp, strerror(errno));
    char line[128];
    len = snprintf(line, sizeof(line), "%s\n", sw->ctx->eps[ep].name);
    int rc = 0;
    if (len < 0 || write(fd, line, (size_t)len) != len || fsync(fd) != 0)
        rc = fail(err, DHAF_EIO, "example-file-switcher: writing %s: %s", tmp, strerror(errno));
    if (close(fd) != 0 && rc == 0)
        rc = fail(err, DHAF_EIO, "example-file-switcher: writing %s: %s", tmp, strerror(errno));
    if (rc == 0 && rename(tmp, sw->conf->file) != 0)
        rc = fail(err, DHAF_EIO, "example-file-switcher: renaming %s: %s", tmp, strerror(errno));
    if (rc != 0)
        unlink(tmp);
    return rc;
}

static int file_sw_current(void *state, const struct dhaf_fence *fence, int *ep,
                           struct dhaf_err *err)
{
    (void)fence; /* a local read: nothing to bound */
    struct file_sw *sw = state;
    FILE *f = fopen(sw->conf->file, "re");
    if (!f) {
        if (errno == ENOENT)
            return fail(err, DHAF_ENOTFOUND, "example-file-switcher: %s does not exist yet",
                        sw->conf->file);
        return fail(err, DHAF_EIO, "example-file-switcher: %s: %s", sw->conf->file,
                    strerror(errno));
    }
    char name[128] = "";
    if (!fgets(name, sizeof(name), f))
        name[0] = '\0';
    fclose(f);
    name[strcspn(name, "\r\n")] = '\0';
    *ep = -1; /* a name that is not one of the service's entry points */
    for (size_t i = 0; i < sw->ctx->n_eps; i++)
        if (strcmp(sw->ctx->eps[i].name, name) == 0)
            *ep = (int)i;
    return 0;
}

static const struct dhaf_provider example_file_switcher = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_SWITCHER,
    .type = "example-file-switcher",
    .summary = "Example plugin: writes the current entry point's name to a file.",
    .keys = file_sw_keys,
    .config_size = sizeof(struct file_sw_config),
    .init = file_sw_init,
    .destroy = file_sw_destroy,
    .switch_to = file_sw_switch,
    .current = file_sw_current,
};

const struct dhaf_provider *const dhaf_provider_entry[] = {&example_file_switcher, NULL};
