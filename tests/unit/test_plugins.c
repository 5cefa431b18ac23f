/* SPDX-License-Identifier: MIT */
/* The plugin loader: the example plugins, and one fixture .so (tests/unit/plugin_fixture.c)
 * per way a plugin can be broken, each refused with its own message and nothing registered. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "dhaf/config.h"
#include "switch_call.h"
#include "dhaf/plugins.h"
#include "dhaf/registry.h"
#include "fake_proc.h"

#ifndef FIXTURES_DIR
#error FIXTURES_DIR (the built fx_*.so) must be defined by the build
#endif

/* A temporary extensions directory of symlinks to built plugins. */
struct tdir {
    char path[64];
};

static void tdir_new(struct tdir *d)
{
    assert_int_equal(test_tmpdir(d->path, sizeof(d->path), "plugins"), 0);
}

/* name -> target (an absolute path). */
static void tdir_link(struct tdir *d, const char *name, const char *target)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", d->path, name);
    assert_int_equal(symlink(target, path), 0);
}

static void tdir_fixture(struct tdir *d, const char *name, const char *fx)
{
    char target[512];
    snprintf(target, sizeof(target), "%s/fx_%s.so", FIXTURES_DIR, fx);
    tdir_link(d, name, target);
}

static void tdir_free(struct tdir *d)
{
    test_rmrf(d->path);
}

static int unload(void **state)
{
    (void)state;
    dhaf_plugins_unload();
    return 0;
}

static void test_missing_dir_is_empty(void **state)
{
    (void)state;
    struct dhaf_err err;
    assert_int_equal(dhaf_plugins_load("/nonexistent/dhaf-extensions", &err), 0);
    assert_int_equal(dhaf_plugins_count(), 0);
    /* A file where the directory should be is an error, though. */
    int rc = dhaf_plugins_load("/etc/hostname", &err);
    assert_int_not_equal(rc, 0);
    assert_non_null(strstr(err.msg, "extensions directory /etc/hostname: Not a directory"));
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *fx; /* fixture, or NULL for the bad-ABI example */
        const char *want;
    } cases[] = {
        {NULL, "ABI version 999, this dhaf speaks 2 (rebuild the plugin"},
        {"no_symbol", "no symbol dhaf_provider_entry: not a dhaf plugin"},
        {"empty", "dhaf_provider_entry is empty: it provides nothing"},
        {"bad_kind", "provider #0 has kind 7, not DHAF_PKIND_SWITCHER"},
        {"bad_name", "provider #0: type \"no spaces allowed\" is not a valid name"},
        {"no_keys", "health-checker \"fx-multi\": no key table"},
        {"key_outside", "config key \"far\" lies outside its config struct (offset 16 + 8 "
                        "bytes > config_size 16)"},
        {"reserved_key", "config key \"rise\" is empty or one the framework reads itself"},
        {"zero_size", "health-checker \"fx-multi\": config_size is 0"},
        {"no_op", "health-checker \"fx-multi\": check is NULL (a health-checker must have it)"},
        {"builtin_clash", "health-checker type \"tcp\" clashes with dhaf's built-in "
                          "health-checker \"tcp\""},
        {"undefined", "undefined symbol: dhaf_err_set (a plugin may call no dhaf function"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tdir d;
        tdir_new(&d);
        /* A good plugin sorted first: it must be rolled back with the bad one. */
        tdir_fixture(&d, "00-good.so", "multi");
        if (cases[i].fx)
            tdir_fixture(&d, "bad.so", cases[i].fx);
        else
            tdir_link(&d, "bad.so", EXAMPLES_BAD_DIR "/example_bad_abi.so");
        struct dhaf_err err;
        int rc = dhaf_plugins_load(d.path, &err);
        char want_file[128];
        snprintf(want_file, sizeof(want_file), "plugin %s/bad.so: ", d.path);
        print_message("case %s: %s\n", cases[i].fx ? cases[i].fx : "bad-abi", err.msg);
        assert_int_not_equal(rc, 0);
        assert_non_null(strstr(err.msg, want_file));
        assert_non_null(strstr(err.msg, cases[i].want));
        assert_int_equal(dhaf_plugins_count(), 0);
        assert_null(dhaf_registry_find(DHAF_PKIND_CHECKER, "fx-multi"));
        tdir_free(&d);
    }
}

static void test_skips_what_is_not_a_plugin(void **state)
{
    (void)state;
    struct tdir d;
    tdir_new(&d);
    tdir_fixture(&d, "good.so", "multi");
    tdir_fixture(&d, ".hidden.so", "no_symbol"); /* would be refused if it were loaded */
    tdir_fixture(&d, "good.so.disabled", "no_symbol");
    char sub[128];
    snprintf(sub, sizeof(sub), "%s/dir.so", d.path);
    assert_int_equal(mkdir(sub, 0700), 0);
    struct dhaf_err err;
    assert_int_equal(dhaf_plugins_load(d.path, &err), 0);
    assert_int_equal(dhaf_plugins_count(), 3);
    tdir_free(&d);
}

/* One .so with three providers; the framework parses and validates their keys like a
 * built-in's, and "known types" lists them. */
static void test_multi_through_registry(void **state)
{
    (void)state;
    struct tdir d;
    tdir_new(&d);
    tdir_fixture(&d, "multi.so", "multi");
    struct dhaf_err err;
    assert_int_equal(dhaf_plugins_load(d.path, &err), 0);
    assert_int_equal(dhaf_plugins_count(), 3);
    assert_non_null(strstr(dhaf_plugins_file(0), "/multi.so"));
    assert_null(dhaf_plugins_at(3));
    const struct dhaf_provider *ck = dhaf_registry_find(DHAF_PKIND_CHECKER, "fx-multi");
    assert_non_null(ck);
    assert_ptr_equal(dhaf_registry_find(DHAF_PKIND_SWITCHER, "fx-multi"), dhaf_plugins_at(1));
    assert_ptr_equal(dhaf_registry_find(DHAF_PKIND_NOTIFIER, "fx-multi"), dhaf_plugins_at(2));
    assert_non_null(dhaf_registry_find(DHAF_PKIND_CHECKER, "tcp")); /* built-ins still there */
    size_t n = 0;
    while (dhaf_registry_at(n))
        n++;
    assert_ptr_equal(dhaf_registry_at(n - 3), ck);

    const struct dhaf_cfg_catalog *cat = dhaf_registry_catalog();
    struct dhaf_section sec;
    struct dhaf_cfg_report rep;
    const char *good = "{type: fx-multi, level: 3, label: hi}";
    dhaf_cfg_report_init(&rep, "t");
    assert_int_equal(
        dhaf_section_load_mem(DHAF_PKIND_CHECKER, good, strlen(good), "hc", cat, &sec, &rep), 0);
    dhaf_cfg_report_release(&rep);
    struct dhaf_check_result res;
    memset(&res, 0, sizeof(res));
    struct dhaf_check_target t = {.conf = sec.conf, .ep_name = "ep-1", .result = &res};
    ck->check(&t, 1);
    assert_true(res.healthy);
    assert_string_equal(res.text, "level 3 label hi");
    dhaf_section_release(&sec);

    const char *range = "{type: fx-multi, level: 12}";
    dhaf_cfg_report_init(&rep, "t");
    assert_int_not_equal(
        dhaf_section_load_mem(DHAF_PKIND_CHECKER, range, strlen(range), "hc", cat, &sec, &rep), 0);
    assert_true(rep.n_errs >= 1);
    assert_non_null(strstr(rep.errs[0].path, "level"));
    dhaf_cfg_report_release(&rep);

    const char *typo = "{type: fx-multy}";
    dhaf_cfg_report_init(&rep, "t");
    assert_int_not_equal(
        dhaf_section_load_mem(DHAF_PKIND_CHECKER, typo, strlen(typo), "hc", cat, &sec, &rep), 0);
    assert_int_equal(rep.n_errs, 1);
    print_message("%s\n", rep.errs[0].msg);
    assert_non_null(strstr(rep.errs[0].msg, "did you mean \"fx-multi\""));
    assert_non_null(strstr(rep.errs[0].msg, "known types: web, tcp, exec, fx-multi"));
    dhaf_cfg_report_release(&rep);

    dhaf_plugins_unload();
    assert_int_equal(dhaf_plugins_count(), 0);
    assert_null(dhaf_registry_find(DHAF_PKIND_CHECKER, "fx-multi"));
    assert_null(dhaf_registry_at(n - 3));
    tdir_free(&d);
}

static void test_two_plugins_one_type(void **state)
{
    (void)state;
    struct tdir d;
    tdir_new(&d);
    tdir_fixture(&d, "a.so", "dup_a");
    tdir_fixture(&d, "b.so", "dup_b");
    struct dhaf_err err;
    assert_int_not_equal(dhaf_plugins_load(d.path, &err), 0);
    char want[256];
    snprintf(want, sizeof(want),
             "plugin %s/b.so: health-checker type \"fx-dup\" is already provided by plugin "
             "%s/a.so; remove one of the two",
             d.path, d.path);
    assert_string_equal(err.msg, want);
    assert_int_equal(dhaf_plugins_count(), 0);
    tdir_free(&d);
}

/* The examples of providers/examples load; a second directory may add more, but never the
 * same types again (that load is refused whole, the first stays). */
static void test_examples_and_second_load(void **state)
{
    (void)state;
    struct dhaf_err err;
    assert_int_equal(dhaf_plugins_load(EXAMPLES_DIR, &err), 0);
    assert_int_equal(dhaf_plugins_count(), 3);
    assert_non_null(dhaf_registry_find(DHAF_PKIND_CHECKER, "example-file"));
    assert_non_null(dhaf_registry_find(DHAF_PKIND_SWITCHER, "example-file-switcher"));
    assert_non_null(dhaf_registry_find(DHAF_PKIND_NOTIFIER, "example-log"));

    struct tdir d;
    tdir_new(&d);
    tdir_fixture(&d, "multi.so", "multi");
    assert_int_equal(dhaf_plugins_load(d.path, &err), 0);
    assert_int_equal(dhaf_plugins_count(), 6);

    assert_int_not_equal(dhaf_plugins_load(EXAMPLES_DIR, &err), 0);
    assert_non_null(strstr(err.msg, "health-checker type \"example-file\" is already provided by "
                                    "plugin " EXAMPLES_DIR "/example_checker.so"));
    assert_int_equal(dhaf_plugins_count(), 6);
    tdir_free(&d);
}

/* Parses a section of kind for a loaded plugin type (fails the test when it does not parse). */
static void section(enum dhaf_pkind kind, const char *text, struct dhaf_section *out)
{
    struct dhaf_cfg_report rep;
    dhaf_cfg_report_init(&rep, "t");
    int rc =
        dhaf_section_load_mem(kind, text, strlen(text), "sec", dhaf_registry_catalog(), out, &rep);
    if (rc != 0)
        dhaf_cfg_report_print(&rep, stderr);
    assert_int_equal(rc, 0);
    dhaf_cfg_report_release(&rep);
}

/* The examples do their jobs when called the way the node calls them. */
static void test_examples_work(void **state)
{
    (void)state;
    struct dhaf_err err;
    assert_int_equal(dhaf_plugins_load(EXAMPLES_DIR, &err), 0);
    char dir[64], text[512], path[256], *got;
    assert_int_equal(test_tmpdir(dir, sizeof(dir), "examples"), 0);
    struct dhaf_ep eps[] = {{.name = "ep-1", .ip = "127.0.0.1"}, {.name = "ep-2", .ip = "::1"}};
    struct dhaf_provider_ctx ctx = {.service = "web",
                                    .eps = eps,
                                    .n_eps = 2,
                                    .node = "n1",
                                    .cluster = "c1",
                                    .instance = "audit"};

    /* checker: healthy iff <dir>/<ep> exists */
    const struct dhaf_provider *ck = dhaf_registry_find(DHAF_PKIND_CHECKER, "example-file");
    struct dhaf_section sec;
    snprintf(text, sizeof(text), "{type: example-file, dir: %s}", dir);
    section(DHAF_PKIND_CHECKER, text, &sec);
    snprintf(path, sizeof(path), "%s/ep-2", dir);
    fclose(fopen(path, "w"));
    struct dhaf_check_result res[2];
    memset(res, 0, sizeof(res));
    struct dhaf_check_target t[2] = {{.conf = sec.conf, .ep_name = "ep-1", .result = &res[0]},
                                     {.conf = sec.conf, .ep_name = "ep-2", .result = &res[1]}};
    ck->check(t, 2);
    assert_false(res[0].healthy);
    assert_string_equal(res[0].reason, "missing");
    assert_true(res[1].healthy);
    assert_string_equal(res[1].reason, "ok");
    unlink(path);
    dhaf_section_release(&sec);

    /* switcher: nothing set yet, then "make it point to ep-2" (twice: idempotent) */
    const struct dhaf_provider *sw =
        dhaf_registry_find(DHAF_PKIND_SWITCHER, "example-file-switcher");
    snprintf(text, sizeof(text), "{type: example-file-switcher, file: %s/current}", dir);
    section(DHAF_PKIND_SWITCHER, text, &sec);
    void *st = NULL;
    assert_int_equal(sw->init(sec.conf, &ctx, &st, &err), 0);
    int cur = 7;
    assert_int_equal(sw_current(sw, st, &cur, &err), DHAF_ENOTFOUND);
    assert_int_equal(sw_to(sw, st, 1, &err), 0);
    assert_int_equal(sw_to(sw, st, 1, &err), 0);
    assert_int_equal(sw_current(sw, st, &cur, &err), 0);
    assert_int_equal(cur, 1);
    snprintf(path, sizeof(path), "%s/current", dir);
    got = test_read_file(path);
    assert_string_equal(got, "ep-2\n");
    free(got);
    FILE *f = fopen(path, "w"); /* changed by hand to something unknown */
    fputs("elsewhere\n", f);
    fclose(f);
    assert_int_equal(sw_current(sw, st, &cur, &err), 0);
    assert_int_equal(cur, -1);
    assert_int_not_equal(sw_to(sw, st, 2, &err), 0);
    assert_non_null(strstr(err.msg, "no entry point #2"));
    sw->destroy(st);
    unlink(path);
    dhaf_section_release(&sec);

    /* notifier: one line per event */
    const struct dhaf_provider *nt = dhaf_registry_find(DHAF_PKIND_NOTIFIER, "example-log");
    snprintf(text, sizeof(text), "{type: example-log, name: audit, file: %s/events.log}", dir);
    section(DHAF_PKIND_NOTIFIER, text, &sec);
    assert_int_equal(nt->init(sec.conf, &ctx, &st, &err), 0);
    const char *reasons[] = {"missing"};
    struct dhaf_event_view ev = {.seq = 42,
                                 .kind = "failover",
                                 .level = "warning",
                                 .cluster = "c1",
                                 .service = "web",
                                 .node = "n1",
                                 .from = "ep-1",
                                 .to = "ep-2",
                                 .reasons = reasons,
                                 .n_reasons = 1,
                                 .message = "web: \"ep-1\" is down,\nnow ep-2",
                                 .at_ms = 1000};
    assert_int_equal(nt->notify(st, &ev, &err), 0);
    ev.seq = 43;
    ev.kind = "new-leader";
    ev.service = ev.from = ev.to = NULL;
    ev.message = "n1 leads";
    assert_int_equal(nt->notify(st, &ev, &err), 0);
    nt->destroy(st);
    snprintf(path, sizeof(path), "%s/events.log", dir);
    got = test_read_file(path);
    assert_string_equal(got, "seq=42 at_ms=1000 notifier=audit kind=failover level=warning "
                             "service=web node=n1 from=ep-1 to=ep-2 message=\"web:  ep-1  is down, "
                             "now ep-2\"\n"
                             "seq=43 at_ms=1000 notifier=audit kind=new-leader level=warning "
                             "service=- node=n1 from=- to=- message=\"n1 leads\"\n");
    free(got);
    unlink(path);
    dhaf_section_release(&sec);
    test_rmrf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_missing_dir_is_empty, unload),
        cmocka_unit_test_teardown(test_refusals, unload),
        cmocka_unit_test_teardown(test_skips_what_is_not_a_plugin, unload),
        cmocka_unit_test_teardown(test_multi_through_registry, unload),
        cmocka_unit_test_teardown(test_two_plugins_one_type, unload),
        cmocka_unit_test_teardown(test_examples_and_second_load, unload),
        cmocka_unit_test_teardown(test_examples_work, unload),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
