/* SPDX-License-Identifier: MIT */
/* lib/rpc in one process over loopback: unary and streaming calls, bearer tokens, unknown
 * methods, deadlines, error mapping, SO_REUSEPORT off, a clean stop under load,
 * bidirectional calls (dhaf_rpc_recv), and
 * credentials checked before the message, call limits and the receive deadline. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "dhaf/clock.h"
#include "dhaf/rpc.h"
#include "dhaf/v1/prober.pb-c.h"

#define PLAN   "/dhaf.v1.Prober/GetPlan"
#define REPORT "/dhaf.v1.Prober/Report"
#define STREAM "/dhaf.test/Stream"
#define BIDI   "/dhaf.test/Bidi"

/* GetPlan: echoes the prober name as location; "fail" → NOT_FOUND; "slow" sleeps until the
 * client gives up. */
static int h_plan(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *req,
                  struct dhaf_err *err)
{
    (void)ud;
    const Dhaf__V1__GetPlanRequest *r = (const Dhaf__V1__GetPlanRequest *)req;
    if (strcmp(r->prober, "fail") == 0)
        return dhaf_err_set(err, DHAF_ENOTFOUND, "no prober \"%s\"", r->prober);
    if (strcmp(r->prober, "slow") == 0) {
        while (!dhaf_rpc_call_cancelled(call))
            usleep(5000);
        return dhaf_err_set(err, DHAF_ETIMEOUT, "gave up");
    }
    Dhaf__V1__ProbePlan plan = DHAF__V1__PROBE_PLAN__INIT;
    plan.generation = 42;
    plan.interval_s = (uint32_t)strlen(r->prober);
    const char *cn = dhaf_rpc_call_peer_cn(call);
    plan.generation += cn ? 1000 : 0;
    return dhaf_rpc_send(call, &plan.base, err);
}

/* Streams: replies `seq` messages for a request. */
static int h_stream(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *req,
                    struct dhaf_err *err)
{
    (void)ud;
    const Dhaf__V1__ReportRequest *r = (const Dhaf__V1__ReportRequest *)req;
    for (uint64_t i = 0; i < r->seq; i++) {
        Dhaf__V1__ReportResponse resp = DHAF__V1__REPORT_RESPONSE__INIT;
        resp.generation = i;
        int rc = dhaf_rpc_send(call, &resp.base, err);
        if (rc)
            return rc;
    }
    return 0;
}

/* A public method: no token needed. */
static int auth_open(void *ud, struct dhaf_rpc_call *call, struct dhaf_err *err)
{
    (void)ud;
    (void)call;
    (void)err;
    return 0;
}

/* Bidirectional: answers each request with generation = 2 x seq, and with 9999 when no
 * request came for 300 ms (the receive stays pending and is waited for again); ends with OK
 * when the client closes its side. */
static int h_bidi(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *first,
                  struct dhaf_err *err)
{
    (void)ud;
    ProtobufCMessage *next = NULL;
    const ProtobufCMessage *req = first;
    int rc = 0;
    while (rc == 0) {
        Dhaf__V1__ReportResponse resp = DHAF__V1__REPORT_RESPONSE__INIT;
        resp.generation = req ? 2 * ((const Dhaf__V1__ReportRequest *)req)->seq : 9999;
        rc = dhaf_rpc_send(call, &resp.base, err);
        if (next)
            protobuf_c_message_free_unpacked(next, NULL);
        next = NULL;
        if (rc)
            break;
        rc = dhaf_rpc_recv(call, &next, 300, err);
        if (rc == DHAF_ETIMEOUT) {
            rc = 0;
            req = NULL;
            continue;
        }
        if (rc || !next)
            break;
        req = next;
    }
    return rc;
}

static const struct dhaf_rpc_method methods[] = {
    {PLAN, &dhaf__v1__get_plan_request__descriptor, false, h_plan, NULL, NULL},
    {STREAM, &dhaf__v1__report_request__descriptor, true, h_stream, auth_open, NULL},
    {BIDI, &dhaf__v1__report_request__descriptor, DHAF_RPC_BIDI, h_bidi, auth_open, NULL},
};

struct fixture {
    struct dhaf_rpc_server *srv;
    struct dhaf_rpc_channel *ch;
    char target[64];
};

static int setup(void **state)
{
    static struct fixture f;
    struct dhaf_err err;
    struct dhaf_rpc_server_opts o = {.addr = "127.0.0.1:0", .bearer_token = "s3cret"};
    f.srv = dhaf_rpc_server_start(&o, methods, sizeof(methods) / sizeof(methods[0]), &err);
    if (!f.srv) {
        fprintf(stderr, "server: %s\n", err.msg);
        return -1;
    }
    snprintf(f.target, sizeof(f.target), "127.0.0.1:%d", dhaf_rpc_server_port(f.srv));
    f.ch = dhaf_rpc_channel_new(f.target, NULL, &err);
    *state = &f;
    return f.ch ? 0 : -1;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    dhaf_rpc_channel_free(f->ch);
    dhaf_rpc_server_stop(f->srv);
    return 0;
}

static int plan(struct fixture *f, const char *name, const char *token, int timeout_ms,
                Dhaf__V1__ProbePlan **out, struct dhaf_err *err)
{
    Dhaf__V1__GetPlanRequest req = DHAF__V1__GET_PLAN_REQUEST__INIT;
    req.prober = (char *)name;
    char auth[128];
    snprintf(auth, sizeof(auth), "Bearer %s", token ? token : "");
    struct dhaf_rpc_md md = {"authorization", auth};
    ProtobufCMessage *resp = NULL;
    int rc = dhaf_rpc_call(f->ch, PLAN, &req.base, &dhaf__v1__probe_plan__descriptor, &resp,
                           timeout_ms, &md, token ? 1 : 0, NULL, err);
    *out = (Dhaf__V1__ProbePlan *)resp;
    return rc;
}

static void test_unary(void **state)
{
    struct fixture *f = *state;
    struct dhaf_err err;
    Dhaf__V1__ProbePlan *p = NULL;
    assert_int_equal(plan(f, "probe-eu", "s3cret", 2000, &p, &err), 0);
    assert_non_null(p);
    assert_int_equal(p->generation, 42);
    assert_int_equal(p->interval_s, 8);
    dhaf__v1__probe_plan__free_unpacked(p, NULL);
}

static void test_auth(void **state)
{
    struct fixture *f = *state;
    struct dhaf_err err;
    Dhaf__V1__ProbePlan *p = NULL;
    assert_int_equal(plan(f, "x", NULL, 2000, &p, &err), DHAF_EAUTH);
    assert_int_equal(err.status, 16);
    assert_non_null(strstr(err.msg, "missing \"authorization: Bearer <token>\""));
    assert_int_equal(plan(f, "x", "s3cre", 2000, &p, &err), DHAF_EAUTH);
    assert_non_null(strstr(err.msg, "invalid token"));
    assert_null(strstr(err.msg, "s3cret")); /* the expected token never leaks */
    assert_null(p);
}

static void test_errors(void **state)
{
    struct fixture *f = *state;
    struct dhaf_err err;
    Dhaf__V1__ProbePlan *p = NULL;
    assert_int_equal(plan(f, "fail", "s3cret", 2000, &p, &err), DHAF_ENOTFOUND);
    assert_int_equal(err.status, 5);
    assert_non_null(strstr(err.msg, "no prober \"fail\""));

    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    assert_int_equal(plan(f, "slow", "s3cret", 200, &p, &err), DHAF_ETIMEOUT);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    assert_true(ms >= 150 && ms < 1500);

    Dhaf__V1__GetPlanRequest req = DHAF__V1__GET_PLAN_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    assert_int_equal(dhaf_rpc_call(f->ch, "/dhaf.v1.Prober/Nope", &req.base,
                                   &dhaf__v1__probe_plan__descriptor, &resp, 2000, NULL, 0, NULL,
                                   &err),
                     DHAF_EPROTO);
    assert_int_equal(err.status, 12);
    assert_non_null(strstr(err.msg, "unknown method /dhaf.v1.Prober/Nope"));
    /* a request that does not decode as the method's message */
    Dhaf__V1__ReportRequest bad = DHAF__V1__REPORT_REQUEST__INIT;
    bad.seq = 0xffffffffffull;
    Dhaf__V1__CheckResult r0 = DHAF__V1__CHECK_RESULT__INIT, *rs[] = {&r0};
    bad.n_results = 1;
    bad.results = rs;
    struct dhaf_rpc_md md = {"authorization", "Bearer s3cret"};
    int rc = dhaf_rpc_call(f->ch, PLAN, &bad.base, &dhaf__v1__probe_plan__descriptor, &resp, 2000,
                           &md, 1, NULL, &err);
    /* field 3 varint vs prober(1) string: protobuf-c accepts unknown fields, so it may decode;
     * either way the server must answer, not crash */
    if (rc == 0)
        protobuf_c_message_free_unpacked(resp, NULL);
    else
        assert_int_equal(err.status, 3);
}

static void test_stream(void **state)
{
    struct fixture *f = *state;
    struct dhaf_err err;
    struct dhaf_rpc_stream *s = dhaf_rpc_stream_open(f->ch, STREAM, NULL, 0, 5000, &err);
    assert_non_null(s);
    Dhaf__V1__ReportRequest req = DHAF__V1__REPORT_REQUEST__INIT;
    req.seq = 300;
    assert_int_equal(dhaf_rpc_stream_send(s, &req.base, 2000, &err), 0);
    assert_int_equal(dhaf_rpc_stream_close_send(s, 2000, &err), 0);
    for (uint64_t i = 0; i < 300; i++) {
        ProtobufCMessage *m = NULL;
        assert_int_equal(
            dhaf_rpc_stream_recv(s, &dhaf__v1__report_response__descriptor, &m, 2000, &err), 0);
        assert_int_equal(((Dhaf__V1__ReportResponse *)m)->generation, i);
        protobuf_c_message_free_unpacked(m, NULL);
    }
    ProtobufCMessage *m = NULL;
    /* end of stream with status OK */
    assert_int_equal(
        dhaf_rpc_stream_recv(s, &dhaf__v1__report_response__descriptor, &m, 2000, &err),
        DHAF_ECANCELLED);
    assert_int_equal(err.status, 0);
    assert_null(m);
    dhaf_rpc_stream_close(s);
}

static void test_stream_recv_timeout_keeps_pending(void **state)
{
    struct fixture *f = *state;
    struct dhaf_err err;
    /* A stream whose server waits for a request that never comes: recv times out, then the
     * close cancels it cleanly. */
    struct dhaf_rpc_stream *s = dhaf_rpc_stream_open(f->ch, STREAM, NULL, 0, 0, &err);
    assert_non_null(s);
    ProtobufCMessage *m = NULL;
    assert_int_equal(dhaf_rpc_stream_recv(s, &dhaf__v1__report_response__descriptor, &m, 100, &err),
                     DHAF_ETIMEOUT);
    assert_int_equal(dhaf_rpc_stream_recv(s, &dhaf__v1__report_response__descriptor, &m, 100, &err),
                     DHAF_ETIMEOUT);
    dhaf_rpc_stream_close(s);
}

static uint64_t bidi_next(struct dhaf_rpc_stream *s)
{
    struct dhaf_err err;
    ProtobufCMessage *m = NULL;
    assert_int_equal(
        dhaf_rpc_stream_recv(s, &dhaf__v1__report_response__descriptor, &m, 3000, &err), 0);
    uint64_t g = ((Dhaf__V1__ReportResponse *)m)->generation;
    protobuf_c_message_free_unpacked(m, NULL);
    return g;
}

static void bidi_send(struct dhaf_rpc_stream *s, uint64_t seq)
{
    struct dhaf_err err;
    Dhaf__V1__ReportRequest req = DHAF__V1__REPORT_REQUEST__INIT;
    req.seq = seq;
    assert_int_equal(dhaf_rpc_stream_send(s, &req.base, 2000, &err), 0);
}

/* Requests and replies interleaved on one call; a receive that timed out on the server is
 * waited for again; the client's half-close ends the call with OK; a cancel mid-call ends
 * the handler (the server stops cleanly in teardown). */
static void test_bidi(void **state)
{
    struct fixture *f = *state;
    struct dhaf_err err;
    struct dhaf_rpc_stream *s = dhaf_rpc_stream_open(f->ch, BIDI, NULL, 0, 10000, &err);
    assert_non_null(s);
    bidi_send(s, 1);
    assert_int_equal(bidi_next(s), 2);
    bidi_send(s, 5);
    assert_int_equal(bidi_next(s), 10);
    assert_int_equal(bidi_next(s), 9999); /* nothing sent for 300 ms */
    bidi_send(s, 7);
    uint64_t g = bidi_next(s);
    while (g == 9999) /* more timeouts may have passed on a slow machine */
        g = bidi_next(s);
    assert_int_equal(g, 14);
    assert_int_equal(dhaf_rpc_stream_close_send(s, 2000, &err), 0);
    ProtobufCMessage *m = NULL;
    int rc;
    while ((rc = dhaf_rpc_stream_recv(s, &dhaf__v1__report_response__descriptor, &m, 3000, &err)) ==
           0)
        protobuf_c_message_free_unpacked(m, NULL); /* a 9999 sent before the close arrived */
    assert_int_equal(rc, DHAF_ECANCELLED);
    assert_int_equal(err.status, 0); /* OK */
    dhaf_rpc_stream_close(s);

    s = dhaf_rpc_stream_open(f->ch, BIDI, NULL, 0, 10000, &err);
    assert_non_null(s);
    bidi_send(s, 3);
    assert_int_equal(bidi_next(s), 6);
    dhaf_rpc_stream_close(s); /* cancelled while the handler waits for the next request */
}

static void test_reuseport_off(void **state)
{
    struct fixture *f = *state;
    struct dhaf_err err;
    struct dhaf_rpc_server_opts o = {.addr = f->target};
    struct dhaf_rpc_server *second = dhaf_rpc_server_start(&o, methods, 2, &err);
    assert_null(second);
    assert_non_null(strstr(err.msg, "cannot listen on"));
}

static void test_unreachable(void **state)
{
    (void)state;
    struct dhaf_err err;
    /* port 1 on loopback: nothing listens there */
    struct dhaf_rpc_channel *ch = dhaf_rpc_channel_new("127.0.0.1:1", NULL, &err);
    assert_non_null(ch);
    Dhaf__V1__GetPlanRequest req = DHAF__V1__GET_PLAN_REQUEST__INIT;
    ProtobufCMessage *resp = NULL;
    enum dhaf_rpc_sent sent = DHAF_RPC_MAYBE_SENT;
    assert_int_equal(dhaf_rpc_call(ch, PLAN, &req.base, &dhaf__v1__probe_plan__descriptor, &resp,
                                   1000, NULL, 0, &sent, &err),
                     DHAF_EUNAVAILABLE);
    assert_int_equal(sent, DHAF_RPC_NOT_SENT);
    assert_int_equal(dhaf_rpc_call(ch, PLAN, &req.base, &dhaf__v1__probe_plan__descriptor, &resp, 0,
                                   NULL, 0, &sent, &err),
                     DHAF_EINVAL); /* no deadline, no call */
    dhaf_rpc_channel_free(ch);
}

static void test_token_equal(void **state)
{
    (void)state;
    assert_true(dhaf_rpc_token_equal("abc", "abc"));
    assert_false(dhaf_rpc_token_equal("abc", "abd"));
    assert_false(dhaf_rpc_token_equal("abc", "abcd"));
    assert_false(dhaf_rpc_token_equal("", "a"));
    assert_true(dhaf_rpc_token_equal("", ""));
}

static void test_stop_with_calls_in_flight(void **state)
{
    (void)state;
    struct dhaf_err err;
    struct dhaf_rpc_server_opts o = {.addr = "127.0.0.1:0"};
    struct dhaf_rpc_server *srv = dhaf_rpc_server_start(&o, methods, 2, &err);
    assert_non_null(srv);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", dhaf_rpc_server_port(srv));
    struct dhaf_rpc_channel *ch = dhaf_rpc_channel_new(target, NULL, &err);
    /* a long stream in flight while the server stops */
    struct dhaf_rpc_stream *s = dhaf_rpc_stream_open(ch, STREAM, NULL, 0, 0, &err);
    ProtobufCMessage *m = NULL;
    dhaf_rpc_stream_recv(s, &dhaf__v1__report_response__descriptor, &m, 50, &err);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    dhaf_rpc_server_stop(srv);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    assert_true(ms < 2000);
    assert_int_not_equal(
        dhaf_rpc_stream_recv(s, &dhaf__v1__report_response__descriptor, &m, 2000, &err), 0);
    dhaf_rpc_stream_close(s);
    dhaf_rpc_channel_free(ch);
}

/* Waits for the end of a header-only stream (it never sends a message); returns the status. */
static int stream_end_status(struct dhaf_rpc_stream *s, struct dhaf_err *err)
{
    ProtobufCMessage *m = NULL;
    int rc = dhaf_rpc_stream_recv(s, &dhaf__v1__probe_plan__descriptor, &m, 3000, err);
    assert_int_not_equal(rc, 0);
    assert_null(strstr(err->msg, "nothing received within")); /* the server ended it */
    return err->status;
}

/* Credentials first, slots, limits and the receive deadline: calls without a token are
 * refused from their headers (they never take a slot, however many); an authenticated call
 * that never sends its message holds its slot only until the receive deadline; the
 * per-connection limit refuses the next call on that connection, not on another one. */
static void test_auth_first_and_limits(void **state)
{
    (void)state;
    struct dhaf_err err;
    struct dhaf_rpc_server_opts o = {.addr = "127.0.0.1:0",
                                     .bearer_token = "s3cret",
                                     .max_concurrent_calls = 4,
                                     .max_calls_per_peer = 3,
                                     .max_calls_per_connection = 2,
                                     .recv_timeout_ms = 400};
    struct dhaf_rpc_server *srv = dhaf_rpc_server_start(&o, methods, 2, &err);
    assert_non_null(srv);
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", dhaf_rpc_server_port(srv));
    struct dhaf_rpc_channel *ch = dhaf_rpc_channel_new(target, NULL, &err);
    struct dhaf_rpc_channel *ch2 = dhaf_rpc_channel_new(target, NULL, &err);
    struct fixture f1 = {.srv = srv, .ch = ch}, f2 = {.srv = srv, .ch = ch2};
    Dhaf__V1__ProbePlan *p = NULL;

    /* 8 header-only calls without a token (twice the slots): all UNAUTHENTICATED at once */
    struct dhaf_rpc_stream *anon[8];
    for (int i = 0; i < 8; i++)
        anon[i] = dhaf_rpc_stream_open(ch, PLAN, NULL, 0, 10000, &err);
    for (int i = 0; i < 8; i++) {
        assert_int_equal(stream_end_status(anon[i], &err), 16);
        dhaf_rpc_stream_close(anon[i]);
    }
    assert_int_equal(plan(&f1, "abc", "s3cret", 2000, &p, &err), 0);
    protobuf_c_message_free_unpacked(&p->base, NULL);

    /* 2 authenticated calls that never send their message hold the connection's 2 slots */
    struct dhaf_rpc_md md = {"authorization", "Bearer s3cret"};
    struct dhaf_rpc_stream *held[2];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (int i = 0; i < 2; i++)
        held[i] = dhaf_rpc_stream_open(ch, PLAN, &md, 1, 10000, &err);
    /* the next call on that connection is refused once both are in (poll with a deadline:
     * they race it, and a loaded machine takes its time) */
    int rc = 0;
    for (int64_t until = dhaf_mono_ms() + 5000; dhaf_mono_ms() < until && rc != DHAF_ETOOBIG;) {
        rc = plan(&f1, "abc", "s3cret", 2000, &p, &err);
        if (rc == 0)
            protobuf_c_message_free_unpacked(&p->base, NULL);
        else
            usleep(5000);
    }
    assert_int_equal(rc, DHAF_ETOOBIG);
    assert_non_null(strstr(err.msg, "on this connection (2)"));
    /* another connection is served */
    assert_int_equal(plan(&f2, "abc", "s3cret", 2000, &p, &err), 0);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    /* the held calls are cancelled after the receive deadline, freeing their slots. (One of
     * them may have lost the race for the connection's slots to a probe above: refused.) */
    int expired = 0;
    for (int i = 0; i < 2; i++) {
        int st = stream_end_status(held[i], &err);
        if (st == 8) {
            assert_non_null(strstr(err.msg, "on this connection"));
        } else {
            assert_int_equal(st, 4);
            assert_non_null(strstr(err.msg, "no request message within 400 ms"));
            expired++;
        }
        dhaf_rpc_stream_close(held[i]);
    }
    assert_true(expired >= 1);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    assert_true(ms >= 350 && ms < 2500);
    /* and their slots are free again (once the server has seen their end) */
    rc = DHAF_ETOOBIG;
    for (int i = 0; i < 200 && rc == DHAF_ETOOBIG; i++) {
        rc = plan(&f1, "abc", "s3cret", 2000, &p, &err);
        if (rc == DHAF_ETOOBIG)
            usleep(5000);
    }
    assert_int_equal(rc, 0);
    protobuf_c_message_free_unpacked(&p->base, NULL);
    dhaf_rpc_channel_free(ch);
    dhaf_rpc_channel_free(ch2);
    dhaf_rpc_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_stream),
        cmocka_unit_test(test_stream_recv_timeout_keeps_pending),
        cmocka_unit_test(test_bidi),
        cmocka_unit_test(test_reuseport_off),
    };
    const struct CMUnitTest standalone[] = {
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_token_equal),
        cmocka_unit_test(test_stop_with_calls_in_flight),
        cmocka_unit_test(test_auth_first_and_limits),
    };
    int rc = cmocka_run_group_tests(tests, setup, teardown);
    rc |= cmocka_run_group_tests(standalone, NULL, NULL);
    return rc;
}
