/* SPDX-License-Identifier: MIT */
/* exec checker: real scripts in a temp dir (exit codes, argv and env, timeout with the whole
 * process group killed and reaped, spawn errors, 50 at once, init). */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "checkers/exec.h"
#include "dhaf/provider.h"

extern const struct dhaf_provider dhaf_checker_exec;

static char dir[64];

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes an executable script dir/name and returns its path (static buffer per call site is
 * not enough: callers copy). */
static char *script(const char *name, const char *body, mode_t mode)
{
    char *path = NULL;
    assert_true(asprintf(&path, "%s/%s", dir, name) > 0);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "#!/bin/sh\n%s", body);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, mode), 0);
    return path;
}

static char *read_text(const char *name)
{
    static char buf[512];
    char path[128];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        return NULL;
    size_t k = fread(buf, 1, sizeof(buf) - 1, f);
    buf[k] = '\0';
    fclose(f);
    return buf;
}

/* This process has no child left: every one was reaped. */
static void assert_no_children(void)
{
    errno = 0;
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

static void target_init(struct dhaf_check_target *t, struct dhaf_check_result *r,
                        const struct exec_hc_config *c, const char *ep, const char *ip)
{
    memset(t, 0, sizeof(*t));
    t->conf = c;
    t->service = "main";
    t->ep_name = ep;
    t->ep_ip = ip;
    t->family = AF_INET;
    t->result = r;
}

static int64_t check_one(const struct exec_hc_config *c, struct dhaf_check_result *r)
{
    struct dhaf_check_target t;
    target_init(&t, r, c, "ep-1", "10.0.0.1");
    int64_t t0 = mono_ms();
    dhaf_checker_exec.check(&t, 1);
    int64_t took = mono_ms() - t0;
    print_message("%-10s %5lld ms  %s\n", r->reason, (long long)took, r->text);
    return took;
}

static int group_setup(void **state)
{
    (void)state;
    /* Orphaned grandchildren become our children, so the checker can reap them at once
     * instead of leaving them to PID 1 (which may reap late, or never, in a container). */
    if (prctl(PR_SET_CHILD_SUBREAPER, 1) != 0)
        return -1;
    strcpy(dir, "/tmp/dhaf-exec-test-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static void test_exit_codes(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        bool healthy;
        const char *reason, *text;
    } cases[] = {
        {"exit 0\n", true, "ok", "exit code 0"},
        {"echo 'all good'\nexit 0\n", true, "ok", "all good"},
        {"echo 'db down' >&2\nexit 1\n", false, "exit-code", "db down"},
        {"printf '\\n  \\n\\tfirst words  \\nsecond\\n'\nexit 2\n", false, "exit-code",
         "first words"},
        {"exit 3\n", false, "exit-code", "exit code 3"},
        {"kill -TERM $$\n", false, "signal", "killed by signal 15 (Terminated)"},
        {"cat\necho \"stdin was empty\"\n", true, "ok", "stdin was empty"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *path = script("codes.sh", cases[i].body, 0755);
        struct exec_hc_config c = {.init = path, .check = path, .timeout = 5};
        struct dhaf_check_result r;
        check_one(&c, &r);
        assert_int_equal(r.healthy, cases[i].healthy);
        assert_string_equal(r.reason, cases[i].reason);
        assert_string_equal(r.text, cases[i].text);
        free(path);
    }
    assert_no_children();
}

static void test_argv_and_env(void **state)
{
    (void)state;
    char body[512];
    snprintf(body, sizeof(body),
             "echo \"$# $1 $2 $DHAF_SERVICE $DHAF_EP_NAME $DHAF_EP_IP\" > '%s/args.txt'\n"
             "env | grep -c '^DHAF_EP_IP=' >> '%s/args.txt'\n",
             dir, dir);
    char *path = script("args.sh", body, 0755);
    struct exec_hc_config c = {.init = path, .check = path, .timeout = 5};
    struct dhaf_check_result r;
    setenv("DHAF_EP_IP", "stale", 1); /* replaced for the child, not duplicated */
    check_one(&c, &r);
    unsetenv("DHAF_EP_IP");
    assert_true(r.healthy);
    assert_string_equal(read_text("args.txt"), "2 ep-1 10.0.0.1 main ep-1 10.0.0.1\n1\n");
    free(path);
    assert_no_children();
}

/* A check that hangs, with a grandchild in the background: killed at the timeout with its
 * whole process group, and nothing is left (no process in the group, no zombie). */
static void test_timeout_kills_group(void **state)
{
    (void)state;
    char body[512];
    snprintf(body, sizeof(body),
             "echo $$ > '%s/pgid.txt'\nsleep 30 &\necho $! > '%s/bg.txt'\necho 'waiting for db'\n"
             "sleep 30\n",
             dir, dir);
    char *path = script("hang.sh", body, 0755);
    struct exec_hc_config c = {.init = path, .check = path, .timeout = 1};
    struct dhaf_check_result r;
    int64_t took = check_one(&c, &r);
    assert_false(r.healthy);
    assert_string_equal(r.reason, "timeout");
    assert_string_equal(r.text, "killed after 1 s: waiting for db");
    assert_true(took >= 950 && took < 2900);
    assert_true(r.latency_ms >= 950 && r.latency_ms < 2900);

    pid_t pgid = (pid_t)atoi(read_text("pgid.txt"));
    pid_t bg = (pid_t)atoi(read_text("bg.txt"));
    assert_true(pgid > 1 && bg > 1);
    errno = 0;
    assert_int_equal(kill(-pgid, 0), -1);
    assert_int_equal(errno, ESRCH);
    errno = 0;
    assert_int_equal(kill(bg, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_no_children();
    free(path);
}

/* A check that exits but leaves a background process: that process is killed and reaped. */
static void test_leftovers_killed(void **state)
{
    (void)state;
    char body[256];
    snprintf(body, sizeof(body), "sleep 30 &\necho $! > '%s/bg2.txt'\nexit 0\n", dir);
    char *path = script("bg.sh", body, 0755);
    struct exec_hc_config c = {.init = path, .check = path, .timeout = 5};
    struct dhaf_check_result r;
    int64_t took = check_one(&c, &r);
    assert_true(r.healthy);
    assert_true(took < 900);
    pid_t bg = (pid_t)atoi(read_text("bg2.txt"));
    assert_true(bg > 1);
    errno = 0;
    assert_int_equal(kill(bg, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_no_children();
    free(path);
}

static void test_spawn_errors(void **state)
{
    (void)state;
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/no-such-program", dir);
    char *noexec = script("noexec.sh", "exit 0\n", 0644);
    struct exec_hc_config c1 = {.init = missing, .check = missing, .timeout = 5};
    struct exec_hc_config c2 = {.init = noexec, .check = noexec, .timeout = 5};
    struct dhaf_check_result r[3];
    struct dhaf_check_target t[3];
    target_init(&t[0], &r[0], &c1, "ep-1", "10.0.0.1");
    target_init(&t[1], &r[1], &c2, "ep-1", "10.0.0.1");
    target_init(&t[2], &r[2], NULL, "ep-1", "10.0.0.1");
    dhaf_checker_exec.check(t, 3);
    assert_false(r[0].healthy);
    assert_string_equal(r[0].reason, "spawn");
    assert_string_equal(r[0].text, "could not start: No such file or directory");
    assert_false(r[1].healthy);
    assert_string_equal(r[1].reason, "spawn");
    assert_string_equal(r[1].text, "could not start: Permission denied");
    assert_false(r[2].healthy);
    assert_string_equal(r[2].reason, "internal");
    free(noexec);
    assert_no_children();
}

/* 50 checks of one second each finish in about one second: they run side by side. */
static void test_many_concurrent(void **state)
{
    (void)state;
    enum { N = 50 };
    char *ok = script("slow-ok.sh", "sleep 1\necho \"$1 fine\"\n", 0755);
    char *bad = script("slow-bad.sh", "sleep 1\necho \"$1 sick\" >&2\nexit 4\n", 0755);
    struct exec_hc_config cok = {.init = ok, .check = ok, .timeout = 5};
    struct exec_hc_config cbad = {.init = bad, .check = bad, .timeout = 5};
    struct dhaf_check_target t[N];
    struct dhaf_check_result r[N];
    char names[N][16];
    for (int i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "ep-%d", i);
        target_init(&t[i], &r[i], i % 5 == 0 ? &cbad : &cok, names[i], "10.0.0.1");
    }
    int64_t t0 = mono_ms();
    dhaf_checker_exec.check(t, N);
    int64_t took = mono_ms() - t0;
    print_message("%d checks in %lld ms\n", N, (long long)took);
    for (int i = 0; i < N; i++) {
        char want[40];
        snprintf(want, sizeof(want), "%.15s %s", names[i], i % 5 == 0 ? "sick" : "fine");
        assert_int_equal(r[i].healthy, i % 5 != 0);
        assert_string_equal(r[i].reason, i % 5 == 0 ? "exit-code" : "ok");
        assert_string_equal(r[i].text, want);
        assert_true(r[i].latency_ms >= 950);
    }
    assert_true(took >= 950 && took < 2500);
    free(ok);
    free(bad);
    assert_no_children();
}

static void test_init(void **state)
{
    (void)state;
    char *good = script("init-ok.sh", "test \"$DHAF_SERVICE\" = main && test $# -eq 0\n", 0755);
    char *bad = script("init-bad.sh", "echo\necho 'license expired' >&2\nexit 2\n", 0755);
    char *slow = script("init-slow.sh", "sleep 30\n", 0755);
    char missing[128];
    snprintf(missing, sizeof(missing), "%s/missing-init", dir);
    struct dhaf_provider_ctx ctx = {.service = "main"};
    struct dhaf_err err;
    void *st = (void *)&err;

    struct exec_hc_config c = {.init = good, .check = good, .timeout = 5};
    assert_int_equal(dhaf_checker_exec.init(&c, &ctx, &st, &err), 0);
    assert_null(st);

    c.init = bad;
    assert_int_equal(dhaf_checker_exec.init(&c, &ctx, &st, &err), DHAF_EUNAVAILABLE);
    print_message("%s\n", err.msg);
    assert_non_null(strstr(err.msg, "init-bad.sh failed: exit code 2: license expired"));

    c.init = slow;
    c.timeout = 1;
    int64_t t0 = mono_ms();
    assert_int_equal(dhaf_checker_exec.init(&c, &ctx, &st, &err), DHAF_ETIMEOUT);
    assert_true(mono_ms() - t0 < 2900);
    assert_non_null(strstr(err.msg, "killed after 1 s"));

    c.init = missing;
    assert_int_equal(dhaf_checker_exec.init(&c, &ctx, &st, &err), DHAF_EIO);
    assert_non_null(strstr(err.msg, "could not start: No such file or directory"));

    for (const struct dhaf_reason *x = dhaf_checker_exec.reasons; x->code; x++)
        assert_non_null(x->description);
    free(good);
    free(bad);
    free(slow);
    assert_no_children();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exit_codes),
        cmocka_unit_test(test_argv_and_env),
        cmocka_unit_test(test_timeout_kills_group),
        cmocka_unit_test(test_leftovers_killed),
        cmocka_unit_test(test_spawn_errors),
        cmocka_unit_test(test_many_concurrent),
        cmocka_unit_test(test_init),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
