/* SPDX-License-Identifier: MIT */
/* The exec switcher under the leader's fence: nothing starts once the lease is over, the
 * program's timeout is cut to what is left of the lease, a closing term kills it, and the
 * script sees DHAF_EPOCH and DHAF_EXPECT_FROM to refuse a stale call itself. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "dhaf/valid.h"

#include "config_load.h"
#include "dhaf/cancel.h"
#include "dhaf/clock.h"
#include "dhaf/config.h"
#include "dhaf/provider.h"
#include "fake_proc.h"
#include "switch_call.h"

extern const struct dhaf_provider dhaf_switcher_exec;

struct sw {
    char dir[64];
    struct dhaf_config cfg;
    struct dhaf_provider_ctx ctx;
    void *st;
};

static void file_write(const char *dir, const char *name, const char *text, mode_t mode)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    chmod(path, mode);
}

static char *file_read(const char *dir, const char *name)
{
    char path[160];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return test_read_file(path);
}

/* A service on the exec switcher: init prints the current name; switch records its argv and
 * environment, then sleeps the seconds in the file "sleep" (if any) before it switches. */
static int setup(void **state)
{
    struct sw *s = calloc(1, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "/tmp/dhaf-unit-execsw-XXXXXX");
    assert_non_null(mkdtemp(s->dir));
    char body[600], yaml[1200];
    snprintf(body, sizeof(body), "#!/bin/sh\ncat %s/current 2>/dev/null || true\n", s->dir);
    file_write(s->dir, "init.sh", body, 0755);
    snprintf(body, sizeof(body),
             "#!/bin/sh\necho \"$1 $2 epoch=$DHAF_EPOCH expect=$DHAF_EXPECT_FROM\" > %s/called\n"
             "[ -f %s/sleep ] && sleep \"$(cat %s/sleep)\"\necho \"$1\" > %s/current\n",
             s->dir, s->dir, s->dir, s->dir);
    file_write(s->dir, "switch.sh", body, 0755);
    file_write(s->dir, "current", "ep-1\n", 0644);
    snprintf(yaml, sizeof(yaml),
             "dhaf: {cluster-name: c1, node-name: n1}\n"
             "etcd: {hosts: \"127.0.0.1:2379\"}\n"
             "services:\n"
             "- name: web\n  domain: site.test\n"
             "  entry-points: [{name: ep-1, ip: 10.0.0.1}, {name: ep-2, ip: 10.0.0.2}]\n"
             "  switcher: {type: exec, init: %s/init.sh, switch: %s/switch.sh, timeout: 8}\n"
             "  health-checker: {type: tcp, port: 80}\n",
             s->dir, s->dir);
    assert_int_equal(test_config_load(yaml, "exec.dhaf", ".", &s->cfg), 0);
    const struct dhaf_service *v = &s->cfg.services[0];
    s->ctx = (struct dhaf_provider_ctx){.service = v->name,
                                        .domain = v->domain,
                                        .eps = v->eps,
                                        .n_eps = v->n_eps,
                                        .node = "n1",
                                        .epoch = 42};
    struct dhaf_err err;
    assert_int_equal(dhaf_switcher_exec.init(v->switcher.conf, &s->ctx, &s->st, &err), 0);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct sw *s = *state;
    dhaf_switcher_exec.destroy(s->st);
    dhaf_config_release(&s->cfg);
    char cmd[120];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", s->dir);
    assert_int_equal(system(cmd), 0);
    free(s);
    return 0;
}

static void test_env_and_budget(void **state)
{
    struct sw *s = *state;
    struct test_fence f;
    struct dhaf_err err;
    assert_int_equal(
        sw_to_from(&dhaf_switcher_exec, s->st, 1, 0, test_fence_init(&f, 60000, NULL), &err), 0);
    char *called = file_read(s->dir, "called");
    assert_string_equal(called, "ep-2 10.0.0.2 epoch=42 expect=ep-1\n");
    free(called);
    /* unknown `from`: an empty DHAF_EXPECT_FROM */
    assert_int_equal(sw_to(&dhaf_switcher_exec, s->st, 0, &err), 0);
    called = file_read(s->dir, "called");
    assert_string_equal(called, "ep-1 10.0.0.1 epoch=42 expect=\n");
    free(called);
    /* what must fit in the lease: the timeout, named */
    const char *key = NULL;
    assert_int_equal(dhaf_switcher_exec.max_call_ms(s->cfg.services[0].switcher.conf, &key), 8000);
    assert_string_equal(key, "timeout");
}

static void test_lease_over_starts_nothing(void **state)
{
    struct sw *s = *state;
    struct test_fence f;
    struct dhaf_err err;
    assert_int_equal(
        sw_to_from(&dhaf_switcher_exec, s->st, 1, 0, test_fence_init(&f, 0, NULL), &err),
        DHAF_EFENCED);
    assert_non_null(strstr(err.msg, "not started: this node's leadership ended"));
    assert_null(file_read(s->dir, "called"));
}

/* A failing script that prints a lot (here 2,000 two-byte characters): the error carries
 * the start of its output, cut on a whole character within the message's 511 bytes, never
 * mid-character by the message itself. */
static void test_long_output_cut_whole(void **state)
{
    struct sw *s = *state;
    for (int odd = 0; odd < 2; odd++) { /* (both parities of where 511 bytes fall) */
        char body[400];
        snprintf(body, sizeof(body),
                 "#!/bin/sh\n%si=0; while [ $i -lt 2000 ]; do printf '\\303\\251'; "
                 "i=$((i+1)); done\nexit 4\n",
                 odd ? "printf x; " : "");
        file_write(s->dir, "switch.sh", body, 0755);
        struct test_fence f;
        struct dhaf_err err;
        assert_int_equal(
            sw_to_from(&dhaf_switcher_exec, s->st, 1, 0, test_fence_init(&f, 60000, NULL), &err),
            DHAF_EIO);
        size_t n = strlen(err.msg);
        print_message("%zu bytes: ...%s\n", n, err.msg + (n > 40 ? n - 40 : 0));
        assert_non_null(strstr(err.msg, odd ? "exit code 4: x\xc3\xa9" : "exit code 4: \xc3\xa9"));
        assert_true(n > 400 && n < DHAF_ERR_MSG_MAX);
        assert_true(strcmp(err.msg + n - 2, "\xc3\xa9") == 0); /* ends on a whole character */
        char clean[DHAF_ERR_MSG_MAX];
        assert_int_equal(dhaf_utf8_clean(clean, sizeof(clean), err.msg), n); /* valid UTF-8 */
    }
}

/* The program's 8 s timeout is cut to the 300 ms left of the lease. */
static void test_timeout_cut_to_the_lease(void **state)
{
    struct sw *s = *state;
    struct test_fence f;
    struct dhaf_err err;
    file_write(s->dir, "sleep", "5", 0644);
    int64_t t0 = dhaf_mono_ms();
    assert_int_equal(
        sw_to_from(&dhaf_switcher_exec, s->st, 1, 0, test_fence_init(&f, 300, NULL), &err),
        DHAF_ETIMEOUT);
    assert_true(dhaf_mono_ms() - t0 < 3000);
    assert_non_null(strstr(err.msg, "killed after 300 ms"));
    assert_non_null(strstr(err.msg, "the end of the leader's lease came before timeout"));
    char *cur = file_read(s->dir, "current");
    assert_string_equal(cur, "ep-1\n"); /* killed before it switched */
    free(cur);
}

struct fire_when {
    const char *dir;
    struct dhaf_cancel *cancel;
};

/* Fires the token once the script has started (it wrote "called"). */
static void *fire_when_called(void *arg)
{
    struct fire_when *fw = arg;
    char path[160];
    snprintf(path, sizeof(path), "%s/called", fw->dir);
    int64_t until = dhaf_mono_ms() + 10000;
    while (dhaf_mono_ms() < until && access(path, F_OK) != 0)
        usleep(5000);
    dhaf_cancel_fire(fw->cancel);
    return NULL;
}

/* The term closes while the script runs: it is killed, and nothing is switched. */
static void test_term_close_kills_the_script(void **state)
{
    struct sw *s = *state;
    struct test_fence f;
    struct dhaf_err err;
    struct dhaf_cancel cancel;
    dhaf_cancel_init(&cancel);
    file_write(s->dir, "sleep", "5", 0644);
    struct fire_when fw = {s->dir, &cancel};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, fire_when_called, &fw), 0);
    int64_t t0 = dhaf_mono_ms();
    int rc =
        sw_to_from(&dhaf_switcher_exec, s->st, 1, 0, test_fence_init(&f, 60000, &cancel), &err);
    int64_t took = dhaf_mono_ms() - t0;
    pthread_join(th, NULL);
    assert_int_equal(rc, DHAF_EFENCED);
    assert_true(took < 3000);
    assert_non_null(strstr(err.msg, "cancelled (this node's leadership ended)"));
    char *cur = file_read(s->dir, "current");
    assert_string_equal(cur, "ep-1\n");
    free(cur);
    dhaf_cancel_destroy(&cancel);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_env_and_budget, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lease_over_starts_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_long_output_cut_whole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_cut_to_the_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_term_close_kills_the_script, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
