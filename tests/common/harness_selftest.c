/* SPDX-License-Identifier: MIT */
/* Self-test of the etcd harness: real etcd, put/get, auth, member kill/restart, clean teardown. */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "etcd_harness.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Counts live processes whose parent is this test process (etcd or a stray etcdctl). */
static int count_children(void)
{
    DIR *d = opendir("/proc");
    int n = 0;
    struct dirent *de;
    assert_non_null(d);
    while ((de = readdir(d)) != NULL) {
        char path[300], buf[512];
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[len] = '\0';
        /* Fields after the last ')' of "pid (comm) state ppid". */
        const char *p = strrchr(buf, ')');
        char state;
        int ppid;
        if (p && sscanf(p + 1, " %c %d", &state, &ppid) == 2 && ppid == (int)getpid())
            n++;
    }
    closedir(d);
    return n;
}

static void assert_gone(const pid_t *pids, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        if (pids[k] <= 0)
            continue;
        errno = 0;
        assert_int_equal(kill(pids[k], 0), -1);
        assert_int_equal(errno, ESRCH);
    }
    assert_int_equal(count_children(), 0);
}

static void test_single_member_put_get_auth(void **state)
{
    (void)state;
    struct etcd_cluster c;
    char out[256], dir[512];
    pid_t pids[ETCD_MAX_MEMBERS] = {0};
    struct stat st;

    double t0 = now_s();
    assert_int_equal(etcd_cluster_start(&c, 1), 0);
    fprintf(stderr, "# start of 1 member: %.3f s\n", now_s() - t0);
    snprintf(dir, sizeof(dir), "%s", c.dir);
    pids[0] = c.m[0].pid;
    assert_true(pids[0] > 0);
    assert_int_equal(stat(c.dir, &st), 0);
    assert_non_null(strstr(c.endpoints, "127.0.0.1:"));

    assert_int_equal(etcd_cluster_ctl(&c, out, sizeof(out), "put /dhaf/k hello"), 0);
    assert_string_equal(out, "OK\n");
    assert_int_equal(etcd_cluster_ctl(&c, out, sizeof(out), "get /dhaf/k --print-value-only"), 0);
    assert_string_equal(out, "hello\n");

    /* Truncation: the captured output is cut to outlen - 1 bytes and NUL-terminated. */
    char small[3];
    assert_int_equal(etcd_cluster_ctl(&c, small, sizeof(small), "get /dhaf/k --print-value-only"),
                     0);
    assert_string_equal(small, "he");
    /* A failing command reports etcdctl's own exit code. */
    assert_true(etcd_cluster_ctl(&c, NULL, 0, "no-such-subcommand") > 0);

    double t1 = now_s();
    assert_int_equal(etcd_cluster_enable_auth(&c, "s3cret:pw"), 0);
    fprintf(stderr, "# enable auth: %.3f s\n", now_s() - t1);
    assert_string_equal(c.user, "root");
    assert_string_equal(c.password, "s3cret:pw");
    assert_int_equal(etcd_cluster_ctl(&c, out, sizeof(out), "get /dhaf/k --print-value-only"), 0);
    assert_string_equal(out, "hello\n");

    /* Without credentials the same read must be refused. */
    c.user[0] = '\0';
    assert_int_not_equal(etcd_cluster_ctl(&c, out, sizeof(out), "get /dhaf/k"), 0);
    snprintf(c.user, sizeof(c.user), "root");
    /* /health keeps answering true with auth on (the harness relies on it). */
    assert_int_equal(etcd_member_wait_healthy(&c, 0, 2000), 0);

    etcd_cluster_stop(&c);
    assert_int_equal(stat(dir, &st), -1);
    etcd_cluster_stop(&c); /* twice is harmless */
    assert_gone(pids, 1);
}

static void test_three_members_kill_restart(void **state)
{
    (void)state;
    struct etcd_cluster c;
    char out[256], dir[512];
    pid_t pids[2 * ETCD_MAX_MEMBERS] = {0};
    struct stat st;

    double t0 = now_s();
    assert_int_equal(etcd_cluster_start(&c, 3), 0);
    fprintf(stderr, "# start of 3 members: %.3f s\n", now_s() - t0);
    snprintf(dir, sizeof(dir), "%s", c.dir);
    for (size_t k = 0; k < 3; k++) {
        pids[k] = c.m[k].pid;
        assert_true(pids[k] > 0);
        assert_int_not_equal(c.m[k].client_port, c.m[k].peer_port);
    }
    assert_int_equal(etcd_cluster_ctl(&c, out, sizeof(out), "put /dhaf/a 1"), 0);
    assert_int_equal(etcd_cluster_ctl(&c, out, sizeof(out), "member list"), 0);
    assert_non_null(strstr(out, "m0"));
    assert_non_null(strstr(out, "m2"));

    assert_int_equal(etcd_member_kill(&c, 0), 0);
    assert_int_equal(c.m[0].pid, 0);
    assert_int_equal(etcd_member_kill(&c, 0), 0); /* killing a dead member is a no-op */

    /* m0 may have been the leader: wait for the survivors to agree on a new one. */
    double t1 = now_s();
    assert_int_equal(etcd_member_wait_healthy(&c, 1, 10000), 0);
    assert_int_equal(etcd_member_wait_healthy(&c, 2, 10000), 0);
    /* The harness passes only the endpoints of running members to etcdctl. */
    assert_int_equal(etcd_cluster_ctl(&c, out, sizeof(out), "--command-timeout=5s put /dhaf/b 2"),
                     0);
    assert_string_equal(out, "OK\n");
    fprintf(stderr, "# put after killing m0: %.3f s\n", now_s() - t1);

    double t2 = now_s();
    assert_int_equal(etcd_member_restart(&c, 0), 0);
    fprintf(stderr, "# restart of m0: %.3f s\n", now_s() - t2);
    pids[3] = c.m[0].pid;
    assert_true(pids[3] > 0);
    /* etcdctl checks every endpoint it is given, so all three must answer. */
    assert_int_equal(etcd_cluster_ctl(&c, out, sizeof(out), "endpoint health"), 0);
    assert_int_equal(etcd_cluster_ctl(&c, out, sizeof(out), "get /dhaf/b --print-value-only"), 0);
    assert_string_equal(out, "2\n");

    /* A graceful stop, then a second restart from the same data dir. */
    assert_int_equal(etcd_member_stop(&c, 1), 0);
    assert_int_equal(c.m[1].pid, 0);
    assert_int_equal(etcd_member_restart(&c, 1), 0);
    pids[4] = c.m[1].pid;

    etcd_cluster_stop(&c);
    assert_int_equal(stat(dir, &st), -1);
    etcd_cluster_stop(&c);
    assert_gone(pids, 5);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct etcd_cluster c;
    assert_int_equal(etcd_cluster_start(&c, 0), -1);
    assert_int_equal(etcd_cluster_start(&c, ETCD_MAX_MEMBERS + 1), -1);
    etcd_cluster_stop(&c);
    assert_int_equal(etcd_member_kill(&c, 5), -1);
    assert_int_equal(etcd_cluster_ctl(&c, NULL, 0, "get x"), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_single_member_put_get_auth),
        cmocka_unit_test(test_three_members_kill_restart),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
