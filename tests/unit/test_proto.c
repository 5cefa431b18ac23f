/* SPDX-License-Identifier: MIT */
/* Wire-format checks of the generated protobuf-c code: etcd messages must encode exactly as
 * etcd's own protos do (field numbers), and dhaf.v1 messages must round-trip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dhaf/v1/dhaf.pb-c.h"
#include "dhaf/v1/prober.pb-c.h"
#include "etcdserverpb/rpc.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

static void expect_bytes(const ProtobufCMessage *m, const uint8_t *want, size_t n)
{
    uint8_t buf[256];
    size_t len = protobuf_c_message_get_packed_size(m);
    assert_int_equal(len, n);
    assert_int_equal(protobuf_c_message_pack(m, buf), n);
    assert_memory_equal(buf, want, n);
}

static void test_put_request(void **state)
{
    (void)state;
    Etcdserverpb__PutRequest put = ETCDSERVERPB__PUT_REQUEST__INIT;
    put.key.data = (uint8_t *)"foo";
    put.key.len = 3;
    put.value.data = (uint8_t *)"bar";
    put.value.len = 3;
    put.lease = 5;
    /* key=1 (bytes), value=2 (bytes), lease=3 (varint) */
    static const uint8_t want[] = {0x0a, 3, 'f', 'o', 'o', 0x12, 3, 'b', 'a', 'r', 0x18, 5};
    expect_bytes(&put.base, want, sizeof(want));
}

static void test_compare_create_revision_zero(void **state)
{
    (void)state;
    /* The election's compare: create_revision(key) == 0 must be on the wire, zero included. */
    Etcdserverpb__Compare cmp = ETCDSERVERPB__COMPARE__INIT;
    cmp.result = ETCDSERVERPB__COMPARE__COMPARE_RESULT__EQUAL;
    cmp.target = ETCDSERVERPB__COMPARE__COMPARE_TARGET__CREATE;
    cmp.key.data = (uint8_t *)"k";
    cmp.key.len = 1;
    cmp.target_union_case = ETCDSERVERPB__COMPARE__TARGET_UNION_CREATE_REVISION;
    cmp.create_revision = 0;
    /* target=2 (CREATE=1), key=3, create_revision=5 (oneof, 0) */
    static const uint8_t want[] = {0x10, 1, 0x1a, 1, 'k', 0x28, 0};
    expect_bytes(&cmp.base, want, sizeof(want));
}

static void test_watch_response_events_field(void **state)
{
    (void)state;
    /* WatchResponse.events is field 11: tag (11 << 3 | 2) = 0x5a. */
    Mvccpb__Event ev = MVCCPB__EVENT__INIT;
    ev.type = MVCCPB__EVENT__EVENT_TYPE__DELETE;
    Mvccpb__Event *evs[] = {&ev};
    Etcdserverpb__WatchResponse wr = ETCDSERVERPB__WATCH_RESPONSE__INIT;
    wr.watch_id = 7;
    wr.n_events = 1;
    wr.events = evs;
    static const uint8_t want[] = {0x10, 7, 0x5a, 2, 0x08, 1};
    expect_bytes(&wr.base, want, sizeof(want));
}

static void test_lease_keepalive(void **state)
{
    (void)state;
    Etcdserverpb__LeaseKeepAliveRequest ka = ETCDSERVERPB__LEASE_KEEP_ALIVE_REQUEST__INIT;
    ka.id = 0x1234;
    static const uint8_t want[] = {0x08, 0xb4, 0x24};
    expect_bytes(&ka.base, want, sizeof(want));
}

static void test_dhaf_round_trip(void **state)
{
    (void)state;
    Dhaf__V1__EntryPointStatus ep = DHAF__V1__ENTRY_POINT_STATUS__INIT;
    ep.name = "ep-1";
    ep.ip = "10.0.0.1";
    ep.priority = 1;
    ep.healthy = 1;
    ep.state = DHAF__V1__ENTRY_POINT_STATE__ENTRY_POINT_STATE_CURRENT;
    Dhaf__V1__EntryPointStatus *eps[] = {&ep};
    Dhaf__V1__ServiceStatus s = DHAF__V1__SERVICE_STATUS__INIT;
    s.name = "main";
    s.domain = "foo.com";
    s.current_entry_point = "ep-1";
    s.n_entry_points = 1;
    s.entry_points = eps;
    uint8_t buf[256];
    size_t n = dhaf__v1__service_status__pack(&s, buf);
    Dhaf__V1__ServiceStatus *back = dhaf__v1__service_status__unpack(NULL, n, buf);
    assert_non_null(back);
    assert_string_equal(back->name, "main");
    assert_int_equal(back->n_entry_points, 1);
    assert_string_equal(back->entry_points[0]->ip, "10.0.0.1");
    assert_int_equal(back->entry_points[0]->state,
                     DHAF__V1__ENTRY_POINT_STATE__ENTRY_POINT_STATE_CURRENT);
    dhaf__v1__service_status__free_unpacked(back, NULL);

    /* Garbage must be refused, not crash. */
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1};
    assert_null(dhaf__v1__report_request__unpack(NULL, sizeof(junk), junk));
}

static void test_service_names(void **state)
{
    (void)state;
    /* Method paths are built from these names: they must match etcd's and ours exactly. */
    assert_string_equal(etcdserverpb__kv__descriptor.name, "etcdserverpb.KV");
    assert_string_equal(etcdserverpb__lease__descriptor.name, "etcdserverpb.Lease");
    assert_string_equal(etcdserverpb__watch__descriptor.name, "etcdserverpb.Watch");
    assert_string_equal(etcdserverpb__auth__descriptor.name, "etcdserverpb.Auth");
    assert_string_equal(dhaf__v1__dhaf__descriptor.name, "dhaf.v1.Dhaf");
    assert_string_equal(dhaf__v1__prober__descriptor.name, "dhaf.v1.Prober");
    assert_int_equal(dhaf__v1__dhaf__descriptor.n_methods,
                     13); /* + drain, undrain, pause, resume */
    assert_int_equal(dhaf__v1__prober__descriptor.n_methods, 3); /* + WatchSuspects */
    /* gRPC's own services on the node's port (node/api.c builds their paths by hand) */
    assert_string_equal(grpc__health__v1__health__descriptor.name, "grpc.health.v1.Health");
    assert_int_equal(grpc__health__v1__health__descriptor.n_methods, 2); /* Check, Watch */
    assert_string_equal(grpc__reflection__v1__server_reflection__descriptor.name,
                        "grpc.reflection.v1.ServerReflection");
    assert_int_equal(grpc__reflection__v1__server_reflection__descriptor.n_methods, 1);
    assert_int_equal(GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN, 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_request),
        cmocka_unit_test(test_compare_create_revision_zero),
        cmocka_unit_test(test_watch_response_events_field),
        cmocka_unit_test(test_lease_keepalive),
        cmocka_unit_test(test_dhaf_round_trip),
        cmocka_unit_test(test_service_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
