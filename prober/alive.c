/* SPDX-License-Identifier: MIT */
#include "alive.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int alive_path(char *buf, size_t len, const char *name)
{
    const char *dir = getenv("DHAF_ALIVE_DIR");
    if (!dir || !*dir)
        dir = getenv("TMPDIR");
    if (!dir || !*dir)
        dir = "/tmp";
    int n = snprintf(buf, len, "%s/dhaf-prober-%s.alive", dir, name);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

int alive_touch(const char *path, int64_t now_s, int64_t stale_s, bool reported)
{
    char tmp[4200], text[160];
    int n = snprintf(tmp, sizeof(tmp), "%s.%d", path, (int)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return -ENAMETOOLONG;
    int len =
        snprintf(text, sizeof(text), "alive-until %" PRId64 "\nwritten %" PRId64 "\nreported %s\n",
                 now_s + stale_s, now_s, reported ? "yes" : "no");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
    if (fd < 0)
        return -errno;
    int rc = write(fd, text, (size_t)len) == len ? 0 : -EIO;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc == 0 && rename(tmp, path) != 0)
        rc = -errno;
    if (rc)
        unlink(tmp);
    return rc;
}

int alive_check(const char *path, int64_t now_s, FILE *out)
{
    FILE *f = fopen(path, "re");
    if (!f) {
        fprintf(out, "unhealthy: %s: %s (is the prober running, with the same TMPDIR?)\n", path,
                strerror(errno));
        return 1;
    }
    char buf[160] = {0};
    size_t got = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[got] = 0;
    long long until = 0, written = 0;
    char reported[8] = "";
    if (sscanf(buf, "alive-until %lld\nwritten %lld\nreported %7s", &until, &written, reported) !=
        3) {
        fprintf(out, "unhealthy: %s: not a prober liveness file\n", path);
        return 1;
    }
    if (now_s > until) {
        fprintf(out,
                "unhealthy: the prober's main loop last ran %lld s ago (alive until %lld s "
                "ago)\n",
                (long long)(now_s - written), (long long)(now_s - until));
        return 1;
    }
    fprintf(out, "healthy: the prober's main loop ran %lld s ago; last report %s\n",
            (long long)(now_s - written), strcmp(reported, "yes") ? "failed" : "reached a node");
    return 0;
}
