/* SPDX-License-Identifier: MIT */
/* node/reflect.c's index of a FileDescriptorSet: the set embedded in the node (every service
 * it serves, the symbols grpcurl asks for), imports sent after the file that needs them, and
 * malformed sets (truncated at every length, garbage) refused with an error, never a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dhaf_descriptors.h"
#include "reflect.h"

static struct reflect_index *embedded(void)
{
    struct dhaf_err err;
    struct reflect_index *x = reflect_index_new(dhaf_descriptor_set, dhaf_descriptor_set_len, &err);
    assert_non_null(x);
    return x;
}

/* The file a symbol (or a file name) resolves to first, as its index; -1 when unknown. */
static long first_file(const struct reflect_index *x, const char *name, bool by_symbol)
{
    size_t out[16];
    size_t n = reflect_lookup(x, name, by_symbol, out, 16);
    return n ? (long)out[0] : -1;
}

static void test_embedded_set(void **state)
{
    (void)state;
    struct reflect_index *x = embedded();
    const char *want[] = {"dhaf.v1.Dhaf", "dhaf.v1.Prober", "grpc.health.v1.Health",
                          "grpc.reflection.v1alpha.ServerReflection",
                          "grpc.reflection.v1.ServerReflection"};
    assert_int_equal(reflect_n_services(x), 5);
    for (size_t i = 0; i < 5; i++) {
        bool found = false;
        for (size_t j = 0; j < reflect_n_services(x); j++)
            found |= strcmp(reflect_service(x, j), want[i]) == 0;
        assert_true(found);
    }
    assert_null(reflect_service(x, 5));
    long dhaf = first_file(x, "dhaf/v1/dhaf.proto", false);
    long health = first_file(x, "grpc/health/v1/health.proto", false);
    assert_true(dhaf >= 0 && health >= 0 && dhaf != health);
    /* services, methods, messages, fields, nested enums and their values */
    assert_int_equal(first_file(x, "dhaf.v1.Dhaf", true), dhaf);
    assert_int_equal(first_file(x, "dhaf.v1.Dhaf.GetVersion", true), dhaf);
    assert_int_equal(first_file(x, "dhaf.v1.ClusterStatus", true), dhaf);
    assert_int_equal(first_file(x, "dhaf.v1.GetServiceRequest.service", true), dhaf);
    assert_int_equal(first_file(x, "grpc.health.v1.Health.Watch", true), health);
    assert_int_equal(first_file(x, "grpc.health.v1.HealthCheckResponse.ServingStatus", true),
                     health);
    assert_int_equal(first_file(x, "grpc.health.v1.HealthCheckResponse.SERVING", true), health);
    assert_true(first_file(x, "dhaf.v1.Prober.WatchSuspects", true) >= 0);
    /* unknown names, near misses */
    assert_int_equal(first_file(x, "dhaf.v1.NoSuch", true), -1);
    assert_int_equal(first_file(x, "dhaf.v1.Dhaf.", true), -1);
    assert_int_equal(first_file(x, "Dhaf", true), -1);
    assert_int_equal(first_file(x, "", true), -1);
    assert_int_equal(first_file(x, "dhaf/v1/none.proto", false), -1);
    /* the bytes sent are the file's own FileDescriptorProto (field 1 is its name) */
    const uint8_t *p;
    size_t n;
    reflect_file(x, (size_t)dhaf, &p, &n);
    assert_true(n > 100 && p[0] == 0x0a && p[1] == strlen("dhaf/v1/dhaf.proto"));
    assert_memory_equal(p + 2, "dhaf/v1/dhaf.proto", p[1]);
    reflect_index_free(x);
}

/* A growing buffer of protobuf wire bytes, for hand-made descriptors. */
struct buf {
    uint8_t b[512];
    size_t n;
};

static void put_len(struct buf *o, unsigned field, const void *p, size_t n)
{
    assert_true(n < 128 && o->n + n + 2 <= sizeof(o->b));
    o->b[o->n++] = (uint8_t)(field << 3 | 2);
    o->b[o->n++] = (uint8_t)n;
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put_str(struct buf *o, unsigned field, const char *s)
{
    put_len(o, field, s, strlen(s));
}

/* A file name, package, optional import, and one message M (or one service S with method
 * Go). */
static void file(struct buf *set, const char *name, const char *dep, bool service)
{
    struct buf f = {.n = 0}, m = {.n = 0}, meth = {.n = 0};
    put_str(&f, 1, name);
    put_str(&f, 2, "p");
    if (dep)
        put_str(&f, 3, dep);
    if (service) {
        put_str(&meth, 1, "Go");
        put_str(&m, 1, "S");
        put_len(&m, 2, meth.b, meth.n);
        put_len(&f, 6, m.b, m.n);
    } else {
        put_str(&m, 1, "M");
        put_len(&f, 4, m.b, m.n);
    }
    put_len(set, 1, f.b, f.n);
}

static void test_imports_follow(void **state)
{
    (void)state;
    struct buf set = {.n = 0};
    file(&set, "c.proto", NULL, false);
    file(&set, "b.proto", "c.proto", false);
    file(&set, "a.proto", "b.proto", true);
    struct dhaf_err err;
    struct reflect_index *x = reflect_index_new(set.b, set.n, &err);
    assert_non_null(x);
    size_t out[8];
    /* a.proto defines p.S; its imports follow it */
    assert_int_equal(reflect_lookup(x, "p.S.Go", true, out, 8), 3);
    assert_int_equal(out[0], 2); /* a, then b, then c */
    assert_int_equal(out[1], 1);
    assert_int_equal(out[2], 0);
    assert_int_equal(reflect_lookup(x, "b.proto", false, out, 8), 2);
    assert_int_equal(reflect_lookup(x, "p.S.Go", true, out, 1), 1); /* room for one */
    assert_int_equal(reflect_n_services(x), 1);
    assert_string_equal(reflect_service(x, 0), "p.S");
    reflect_index_free(x);
}

static void test_malformed_refused(void **state)
{
    (void)state;
    struct dhaf_err err;
    /* every truncation: an index of the whole files before the cut, or an error */
    size_t refused = 0;
    for (size_t len = 0; len < dhaf_descriptor_set_len; len += 3) {
        struct reflect_index *x = reflect_index_new(dhaf_descriptor_set, len, &err);
        if (!x) {
            refused++;
            assert_non_null(strstr(err.msg, "descriptor set"));
        }
        reflect_index_free(x);
    }
    assert_true(refused > 0);
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1};
    assert_null(reflect_index_new(junk, sizeof(junk), &err));
    /* a file whose name is not a string of the right length */
    static const uint8_t short_name[] = {0x0a, 0x04, 0x0a, 0x09, 'a', 'b'};
    assert_null(reflect_index_new(short_name, sizeof(short_name), &err));
    /* a group (wire type 3) where a file should be */
    static const uint8_t group[] = {0x0b, 0x0c};
    assert_null(reflect_index_new(group, sizeof(group), &err));
    /* an empty set is an index of nothing */
    struct reflect_index *x = reflect_index_new(junk, 0, &err);
    assert_non_null(x);
    assert_int_equal(reflect_n_services(x), 0);
    assert_int_equal(first_file(x, "p.S", true), -1);
    reflect_index_free(x);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embedded_set),
        cmocka_unit_test(test_imports_follow),
        cmocka_unit_test(test_malformed_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
