/* SPDX-License-Identifier: MIT */
/* lib/spawn: output capping, per-program deadlines, keep_group, descriptors, helpers. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dhaf/cancel.h"
#include "dhaf/err.h"
#include "dhaf/spawn.h"

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void assert_no_children(void)
{
    errno = 0;
    assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
    assert_int_equal(errno, ECHILD);
}

/* A `/bin/sh -c script` program (the shell is the program here, run directly). */
struct shproc {
    char *argv[4];
};

static void sh(struct dhaf_proc *p, struct shproc *s, const char *script, uint32_t timeout_ms)
{
    memset(p, 0, sizeof(*p));
    s->argv[0] = "/bin/sh";
    s->argv[1] = "-c";
    s->argv[2] = (char *)script;
    s->argv[3] = NULL;
    p->path = "/bin/sh";
    p->argv = s->argv;
    p->timeout_ms = timeout_ms;
}

static int group_setup(void **state)
{
    (void)state;
    return prctl(PR_SET_CHILD_SUBREAPER, 1) == 0 ? 0 : -1;
}

/* Each program keeps to its own deadline; output beyond 4 KiB is read and dropped. */
static void test_outcomes_and_deadlines(void **state)
{
    (void)state;
    static const char *const scripts[] = {
        "echo out; echo err >&2; exit 7",
        "head -c 10000 /dev/zero | tr '\\0' x; echo",
        "sleep 5",
        "echo started; sleep 5",
        /* closes the pipe long before it exits */
        "exec 1>&-; exec 2>&-; sleep 0.3; exit 0",
    };
    static const uint32_t timeouts[] = {2000, 2000, 300, 800, 2000};
    enum { N = sizeof(scripts) / sizeof(scripts[0]) };
    struct dhaf_proc *p = calloc(N, sizeof(*p));
    struct shproc s[N];
    assert_non_null(p);
    for (int i = 0; i < N; i++)
        sh(&p[i], &s[i], scripts[i], timeouts[i]);
    int64_t t0 = mono_ms();
    assert_int_equal(dhaf_spawn_run_all(p, N), 0);
    int64_t took = mono_ms() - t0;

    assert_int_equal(p[0].outcome, DHAF_PROC_EXITED);
    assert_int_equal(p[0].exit_code, 7);
    assert_string_equal(p[0].out, "out\nerr\n");
    assert_false(p[0].out_truncated);

    assert_int_equal(p[1].outcome, DHAF_PROC_EXITED);
    assert_int_equal(p[1].exit_code, 0);
    assert_int_equal(p[1].out_len, DHAF_PROC_OUT_MAX);
    assert_int_equal(strlen(p[1].out), DHAF_PROC_OUT_MAX);
    assert_true(p[1].out_truncated);

    assert_int_equal(p[2].outcome, DHAF_PROC_TIMEOUT);
    assert_true(p[2].elapsed_ms >= 290 && p[2].elapsed_ms < 1500);
    assert_int_equal(p[3].outcome, DHAF_PROC_TIMEOUT);
    assert_true(p[3].elapsed_ms >= 790 && p[3].elapsed_ms < 1900);
    assert_string_equal(p[3].out, "started\n");

    assert_int_equal(p[4].outcome, DHAF_PROC_EXITED);
    assert_true(p[4].elapsed_ms >= 290 && p[4].elapsed_ms < 1900);

    assert_true(took >= 790 && took < 1200);
    for (int i = 0; i < N; i++)
        assert_true(p[i].pid > 0);
    free(p);
    assert_no_children();
}

struct fire_when {
    const char *marker;
    struct dhaf_cancel *cancel;
};

/* Fires the token once the program has created its marker file (it is running then). */
static void *fire_when_started(void *arg)
{
    struct fire_when *fw = arg;
    int64_t until = mono_ms() + 10000;
    while (mono_ms() < until && access(fw->marker, F_OK) != 0)
        usleep(5000);
    dhaf_cancel_fire(fw->cancel);
    return NULL;
}

/* A fired cancel token kills the whole group at once (a term that closes), and a token fired
 * before the start starts nothing. */
static void test_cancel(void **state)
{
    (void)state;
    char marker[64], script[200];
    snprintf(marker, sizeof(marker), "/tmp/dhaf-spawn-cancel-%d", (int)getpid());
    unlink(marker);
    snprintf(script, sizeof(script), "sleep 30 & touch %s; sleep 30", marker);
    struct dhaf_cancel cancel;
    dhaf_cancel_init(&cancel);
    struct dhaf_proc *p = calloc(1, sizeof(*p));
    struct shproc s;
    assert_non_null(p);
    sh(p, &s, script, 20000);
    p->cancel = &cancel;
    struct fire_when fw = {marker, &cancel};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fire_when_started, &fw), 0);
    int64_t t0 = mono_ms();
    assert_int_equal(dhaf_spawn_run_all(p, 1), 0);
    int64_t took = mono_ms() - t0;
    pthread_join(th, NULL);
    unlink(marker);
    assert_int_equal(p->outcome, DHAF_PROC_CANCELLED);
    assert_true(took < 3000);
    assert_int_equal(kill(-p->pid, 0), -1); /* the background sleep died with the group */
    char buf[100];
    assert_non_null(strstr(dhaf_proc_describe(p, buf, sizeof(buf)), ": cancelled"));
    assert_no_children();

    /* already fired: nothing starts */
    sh(p, &s, "exit 0", 2000);
    p->cancel = &cancel;
    assert_int_equal(dhaf_spawn_run_all(p, 1), 0);
    assert_int_equal(p->outcome, DHAF_PROC_CANCELLED);
    assert_int_equal(p->pid, 0);
    assert_string_equal(dhaf_proc_describe(p, buf, sizeof(buf)), "not started: cancelled");
    free(p);
    dhaf_cancel_destroy(&cancel);
}

/* keep_group leaves what the program started alive; the caller owns it then. */
static void test_keep_group(void **state)
{
    (void)state;
    struct dhaf_proc *p = calloc(1, sizeof(*p));
    struct shproc s;
    assert_non_null(p);
    sh(p, &s, "sleep 30 >/dev/null 2>&1 & echo $!", 2000);
    p->keep_group = true;
    assert_int_equal(dhaf_spawn_run_all(p, 1), 0);
    assert_int_equal(p->outcome, DHAF_PROC_EXITED);
    pid_t bg = (pid_t)atoi(p->out);
    assert_true(bg > 1);
    assert_int_equal(kill(bg, 0), 0);      /* still running */
    assert_int_equal(kill(-p->pid, 0), 0); /* in the program's group */
    assert_int_equal(kill(bg, SIGKILL), 0);
    assert_int_equal(waitpid(bg, NULL, 0), bg); /* ours, as we are a subreaper */
    free(p);
    assert_no_children();
}

/* True once pid is gone (not even a zombie), polled for up to 3 s. */
static bool gone(pid_t pid)
{
    int64_t until = mono_ms() + 3000;
    while (kill(pid, 0) == 0 && mono_ms() < until)
        usleep(2000);
    return kill(pid, 0) == -1 && errno == ESRCH;
}

/* Descendants that left the program's group (setsid: another session) die with the run at
 * its deadline; after a normal exit they are left to run, as our (the subreaper's) children;
 * keep_group leaves them alone. */
static void test_setsid_descendants(void **state)
{
    (void)state;
    static const struct {
        const char *script;
        uint32_t timeout_ms;
        enum dhaf_proc_outcome outcome;
    } cases[] = {
        {"setsid sleep 301 >/dev/null 2>&1 & echo $!; sleep 30", 300, DHAF_PROC_TIMEOUT},
        /* a double fork: the middle process exits, the grandchild is an orphan */
        {"(setsid sleep 303 >/dev/null 2>&1 & echo $!) ; sleep 30", 300, DHAF_PROC_TIMEOUT},
    };
    struct dhaf_proc *p = calloc(1, sizeof(*p));
    struct shproc s;
    assert_non_null(p);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        sh(p, &s, cases[i].script, cases[i].timeout_ms);
        assert_int_equal(dhaf_spawn_run_all(p, 1), 0);
        assert_int_equal(p->outcome, cases[i].outcome);
        pid_t bg = (pid_t)atoi(p->out);
        assert_true(bg > 1);
        assert_true(gone(bg));
        assert_no_children();
    }
    /* a normal exit: the setsid one lives on, adopted by this process (a subreaper); the
     * script exits once it has left the group (its session id is its pid) */
    sh(p, &s,
       "setsid sleep 302 >/dev/null 2>&1 & b=$!; "
       "while [ \"$(cut -d' ' -f6 /proc/$b/stat)\" != \"$b\" ]; do :; done; echo $b; exit 0",
       2000);
    assert_int_equal(dhaf_spawn_run_all(p, 1), 0);
    assert_int_equal(p->outcome, DHAF_PROC_EXITED);
    pid_t adopted = (pid_t)atoi(p->out);
    assert_true(adopted > 1);
    assert_int_equal(kill(adopted, 0), 0);
    assert_int_equal(kill(adopted, SIGKILL), 0);
    assert_int_equal(waitpid(adopted, NULL, 0), adopted);
    assert_no_children();
    /* keep_group: the caller owns what the program started, in its session or another */
    sh(p, &s, "setsid sleep 304 >/dev/null 2>&1 & echo $!", 2000);
    p->keep_group = true;
    assert_int_equal(dhaf_spawn_run_all(p, 1), 0);
    pid_t bg = (pid_t)atoi(p->out);
    assert_true(bg > 1);
    assert_int_equal(kill(bg, 0), 0);
    assert_int_equal(kill(bg, SIGKILL), 0);
    assert_int_equal(waitpid(bg, NULL, 0), bg);
    free(p);
    assert_no_children();
}

/* The child sees only 0, 1 and 2, even when we hold a descriptor without O_CLOEXEC. */
static void test_descriptors(void **state)
{
    (void)state;
    int leak = open("/dev/null", O_RDONLY); /* deliberately without O_CLOEXEC */
    assert_true(leak > 2);
    struct dhaf_proc *p = calloc(1, sizeof(*p));
    struct shproc s;
    assert_non_null(p);
    sh(p, &s, "ls /proc/self/fd | sort -n | tr '\\n' ' '; read x || echo EOF", 2000);
    assert_int_equal(dhaf_spawn_run_all(p, 1), 0);
    /* ls lists its own directory descriptor too: 0 1 2 3 means nothing else came along. */
    assert_string_equal(p->out, "0 1 2 3 EOF\n");
    close(leak);
    free(p);
    assert_no_children();
}

/* A daemon may run with stdin closed: the pipe then gets descriptor 0, which must not collide
 * with the child's stdin, stdout or stderr. */
static void test_closed_stdin(void **state)
{
    (void)state;
    int saved = dup(STDIN_FILENO);
    assert_true(saved > 2);
    close(STDIN_FILENO);
    struct dhaf_proc *p = calloc(1, sizeof(*p));
    struct shproc s;
    assert_non_null(p);
    sh(p, &s, "echo out; echo err >&2; read x || echo EOF", 2000);
    int rc = dhaf_spawn_run_all(p, 1);
    assert_int_equal(dup2(saved, STDIN_FILENO), STDIN_FILENO);
    close(saved);
    assert_int_equal(rc, 0);
    assert_int_equal(p->outcome, DHAF_PROC_EXITED);
    assert_int_equal(p->exit_code, 0);
    assert_string_equal(p->out, "out\nerr\nEOF\n");
    free(p);
    assert_no_children();
}

static void test_bad_input(void **state)
{
    (void)state;
    struct dhaf_proc *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    assert_int_equal(dhaf_spawn_run_all(p, 1), DHAF_EINVAL);
    assert_int_equal(dhaf_spawn_run_all(NULL, 0), 0);
    free(p);
}

static void test_first_line_and_describe(void **state)
{
    (void)state;
    static const struct {
        const char *out;
        size_t len;
        const char *want; /* NULL = no line */
    } cases[] = {
        {"", 8, NULL},
        {"\n \r\n\t\n", 8, NULL},
        {"  db down \r\nmore\n", 64, "db down"},
        {"\n\nsecond", 64, "second"},
        {"a\tb\001c", 64, "a b c"},
        {"abcdefghij", 5, "abcd"},
        {"ab\xc3\xa9z", 4, "ab"}, /* does not cut the two-byte é */
    };
    struct dhaf_proc *p = calloc(1, sizeof(*p));
    assert_non_null(p);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char buf[64];
        p->out_len = strlen(cases[i].out);
        memcpy(p->out, cases[i].out, p->out_len + 1);
        const char *got = dhaf_proc_first_line(p, buf, cases[i].len);
        if (cases[i].want) {
            assert_non_null(got);
            assert_string_equal(got, cases[i].want);
        } else {
            assert_null(got);
            assert_string_equal(buf, "");
        }
    }
    /* the excerpt: lines joined with " | ", blanks and control characters one space each */
    static const struct {
        const char *out;
        size_t len;
        const char *want;
    } ex[] = {
        {"", 8, NULL},
        {"\n \r\n\t\n", 8, NULL},
        {"  error: API refused \r\n\nhint:\tcheck\001 it\n", 64,
         "error: API refused | hint: check it"},
        {"abc\ndef", 6, "abc"}, /* " | d" does not fit */
        {"ab\xc3\xa9z", 4, "ab"},
        {"ab\xc3\xa9", 5, "ab\xc3\xa9"},
        {"ok \xff\xfe then \xe2\x82", 64, "ok ?? then ??"}, /* not UTF-8: '?' each */
    };
    for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
        char buf[64];
        p->out_len = strlen(ex[i].out);
        memcpy(p->out, ex[i].out, p->out_len + 1);
        const char *got = dhaf_proc_excerpt(p, buf, ex[i].len);
        if (ex[i].want) {
            assert_non_null(got);
            assert_string_equal(got, ex[i].want);
        } else {
            assert_null(got);
            assert_string_equal(buf, "");
        }
    }
    char b[96];
    p->outcome = DHAF_PROC_EXITED;
    p->exit_code = 3;
    assert_string_equal(dhaf_proc_describe(p, b, sizeof(b)), "exit code 3");
    p->outcome = DHAF_PROC_TIMEOUT;
    p->timeout_ms = 5000;
    assert_string_equal(dhaf_proc_describe(p, b, sizeof(b)), "killed after 5 s");
    p->timeout_ms = 1500;
    assert_string_equal(dhaf_proc_describe(p, b, sizeof(b)), "killed after 1500 ms");
    p->outcome = DHAF_PROC_SIGNALED;
    p->signo = SIGSEGV;
    assert_string_equal(dhaf_proc_describe(p, b, sizeof(b)),
                        "killed by signal 11 (Segmentation fault)");
    p->outcome = DHAF_PROC_NOSTART;
    p->err = ENOENT;
    assert_string_equal(dhaf_proc_describe(p, b, sizeof(b)),
                        "could not start: No such file or directory");
    p->outcome = DHAF_PROC_LOST;
    assert_string_equal(dhaf_proc_describe(p, b, sizeof(b)), "exit status lost");
    free(p);
}

static void test_env(void **state)
{
    (void)state;
    setenv("DHAF_TEST_A", "old", 1);
    unsetenv("DHAF_TEST_B");
    setenv("DHAF_TEST_C", "gone", 1);
    static const char *const names[] = {"DHAF_TEST_A", "DHAF_TEST_B", "DHAF_TEST_C"};
    static const char *const values[] = {"new", "b=1", NULL};
    char **env = dhaf_env_new(names, values, 3);
    int a = 0, b = 0, c = 0, path = 0;
    for (char **e = env; *e; e++) {
        a += strncmp(*e, "DHAF_TEST_A=", 12) == 0;
        b += strncmp(*e, "DHAF_TEST_B=", 12) == 0;
        c += strncmp(*e, "DHAF_TEST_C=", 12) == 0;
        path += strncmp(*e, "PATH=", 5) == 0;
        if (strncmp(*e, "DHAF_TEST_A=", 12) == 0)
            assert_string_equal(*e, "DHAF_TEST_A=new");
        if (strncmp(*e, "DHAF_TEST_B=", 12) == 0)
            assert_string_equal(*e, "DHAF_TEST_B=b=1");
    }
    assert_int_equal(a, 1);
    assert_int_equal(b, 1);
    assert_int_equal(c, 0);
    assert_int_equal(path, getenv("PATH") ? 1 : 0);
    dhaf_env_free(env);
    dhaf_env_free(NULL);
    unsetenv("DHAF_TEST_A");
    unsetenv("DHAF_TEST_C");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcomes_and_deadlines),
        cmocka_unit_test(test_keep_group),
        cmocka_unit_test(test_setsid_descendants),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_descriptors),
        cmocka_unit_test(test_closed_stdin),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_first_line_and_describe),
        cmocka_unit_test(test_env),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
