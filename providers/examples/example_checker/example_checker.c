/* SPDX-License-Identifier: MIT */
/* Example health-checker plugin "example-file": an entry point is healthy while a file named
 * like it exists in a directory (`touch /run/dhaf-ok/ep-1` brings ep-1 up, `rm` takes it down).
 *
 *   health-checker: {type: example-file, dir: /run/dhaf-ok}
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "dhaf/provider.h"

/* The struct the key table fills; dhaf allocates, fills and frees it (its strings too). */
struct file_check_config {
    char *dir;
};

/* clang-format off */
static const struct dhaf_cfgkey file_check_keys[] = {
    {"dir", DHAF_CFG_PATH, offsetof(struct file_check_config, dir), true, NULL, 0, 0, NULL, NULL,
     NULL, "Directory holding one file per healthy entry point, named like the entry point."},
    DHAF_KEY_END,
};
/* clang-format on */

enum file_check_status { FC_OK, FC_MISSING, FC_ERROR };

static const struct dhaf_reason file_check_reasons[] = {
    [FC_OK] = {"ok", "the entry point's file exists"},
    [FC_MISSING] = {"missing", "the entry point's file does not exist"},
    [FC_ERROR] = {"error", "the file could not be looked at (permissions, I/O, a too long path)"},
    {NULL, NULL},
};

/* One stat() per target: quick enough to do them one after another (a checker that talks to
 * the network must run its targets concurrently in one event loop instead). */
static void file_check(struct dhaf_check_target *targets, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const struct file_check_config *conf = targets[i].conf;
        struct dhaf_check_result *r = targets[i].result;
        char path[4096];
        struct stat st;
        int len = snprintf(path, sizeof(path), "%s/%s", conf->dir, targets[i].ep_name);
        enum file_check_status s;
        if (len < 0 || (size_t)len >= sizeof(path)) {
            s = FC_ERROR;
            snprintf(r->text, sizeof(r->text), "the path of %s's file is too long",
                     targets[i].ep_name);
        } else if (stat(path, &st) == 0) {
            s = FC_OK;
            snprintf(r->text, sizeof(r->text), "%.200s exists", path);
        } else {
            s = errno == ENOENT ? FC_MISSING : FC_ERROR;
            snprintf(r->text, sizeof(r->text), "%.200s: %s", path, strerror(errno));
        }
        r->healthy = s == FC_OK;
        r->reason = file_check_reasons[s].code;
        r->latency_ms = 0;
    }
}

static const struct dhaf_provider example_file_checker = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_CHECKER,
    .type = "example-file",
    .summary = "Example plugin: an entry point is healthy while <dir>/<entry point name> exists.",
    .keys = file_check_keys,
    .config_size = sizeof(struct file_check_config),
    .check = file_check,
    .reasons = file_check_reasons,
    /* init and destroy: nothing to prepare, so NULL. */
};

/* The one symbol dhaf looks for: every provider of this .so, NULL-terminated. */
const struct dhaf_provider *const dhaf_provider_entry[] = {&example_file_checker, NULL};
