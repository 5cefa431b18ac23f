/* SPDX-License-Identifier: MIT */
/* tcp checker: real sockets on loopback (open, refused, connect timeout, send/expect, IPv6,
 * 200 targets in one call). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "checkers/tcp.h"
#include "fake_proc.h"
#include "dhaf/provider.h"

extern const struct dhaf_provider dhaf_checker_tcp;

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Starts a non-blocking connect to ip:port and returns the socket (left pending). */
static int pending_connect(const char *ip, int port)
{
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    assert_int_equal(inet_pton(AF_INET, ip, &s4.sin_addr), 1);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    int rc = connect(fd, (struct sockaddr *)&s4, sizeof(s4));
    assert_true(rc == 0 || errno == EINPROGRESS);
    return fd;
}

/* A listener whose accept queue is full: Linux drops further SYNs (tcp_abort_on_overflow=0), so
 * a connect to it hangs until our timeout. fill[] keeps the queued connections open. */
struct blackhole {
    int lfd, port;
    int fill[2];
};

static void blackhole_open(struct blackhole *b, const char *ip)
{
    b->lfd = test_bind(ip, 0, &b->port);
    assert_true(b->lfd >= 0);
    for (int i = 0; i < 2; i++)
        b->fill[i] = pending_connect(ip, b->port);
    usleep(50 * 1000); /* let the handshakes land in the accept queue */
}

static void blackhole_close(struct blackhole *b)
{
    for (int i = 0; i < 2; i++)
        close(b->fill[i]);
    close(b->lfd);
}

static void target_init(struct dhaf_check_target *t, struct dhaf_check_result *r,
                        const struct tcp_config *c, const char *ip)
{
    memset(t, 0, sizeof(*t));
    t->conf = c;
    t->service = "main";
    t->ep_name = "ep";
    t->ep_ip = ip;
    t->family = strchr(ip, ':') ? AF_INET6 : AF_INET;
    t->result = r;
}

static void check_one(const struct tcp_config *c, const char *ip, struct dhaf_check_result *r)
{
    struct dhaf_check_target t;
    target_init(&t, r, c, ip);
    dhaf_checker_tcp.check(&t, 1);
}

/* Every result names a code of the status table. */
static void assert_reason_known(const char *reason)
{
    for (const struct dhaf_reason *x = dhaf_checker_tcp.reasons; x->code; x++)
        if (strcmp(x->code, reason) == 0)
            return;
    fail_msg("reason %s is not in the status table", reason);
}

/* --- a small server thread for the exchange tests: a banner port and an echo port --- */

struct server {
    int banner_fd, echo_fd, banner_port, echo_port;
    int stop[2];
    pthread_t th;
};

static struct server srv;

static void *server_main(void *arg)
{
    struct server *s = arg;
    for (;;) {
        struct pollfd p[3] = {
            {s->stop[0], POLLIN, 0}, {s->banner_fd, POLLIN, 0}, {s->echo_fd, POLLIN, 0}};
        if (poll(p, 3, -1) < 0)
            continue;
        if (p[0].revents)
            return NULL;
        if (p[1].revents) {
            int c = accept4(s->banner_fd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                static const char banner[] = "220 hello dhaf\r\n";
                ssize_t w = write(c, banner, sizeof(banner) - 1);
                (void)w;
                close(c);
            }
        }
        if (p[2].revents) {
            int c = accept4(s->echo_fd, NULL, NULL, SOCK_CLOEXEC);
            if (c >= 0) {
                struct timeval tv = {2, 0};
                setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
                char buf[256];
                ssize_t k = read(c, buf, sizeof(buf));
                if (k > 0) {
                    ssize_t w = write(c, buf, (size_t)k);
                    (void)w;
                }
                close(c);
            }
        }
    }
}

static int group_setup(void **state)
{
    (void)state;
    srv.banner_fd = test_bind("127.0.0.31", 16, &srv.banner_port);
    srv.echo_fd = test_bind("127.0.0.31", 16, &srv.echo_port);
    if (srv.banner_fd < 0 || srv.echo_fd < 0 || pipe(srv.stop) != 0)
        return -1;
    return pthread_create(&srv.th, NULL, server_main, &srv) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    ssize_t w = write(srv.stop[1], "x", 1);
    (void)w;
    pthread_join(srv.th, NULL);
    close(srv.banner_fd);
    close(srv.echo_fd);
    close(srv.stop[0]);
    close(srv.stop[1]);
    return 0;
}

/* --- tests --- */

static void test_open_port(void **state)
{
    (void)state;
    int port;
    int lfd = test_bind("127.0.0.32", 16, &port);
    assert_true(lfd >= 0);
    struct tcp_config c = {.port = port, .receive_timeout = 1, .timeout = 2};
    struct dhaf_check_result r;
    check_one(&c, "127.0.0.32", &r);
    assert_true(r.healthy);
    assert_string_equal(r.reason, "ok");
    assert_non_null(strstr(r.text, "connected in"));
    assert_true(r.latency_ms < 1000);
    close(lfd);
}

static void test_ipv6(void **state)
{
    (void)state;
    int port, cport;
    int lfd = test_bind("::1", 16, &port);
    if (lfd < 0)
        skip(); /* no IPv6 loopback here */
    int closed = test_bind("::1", -1, &cport);
    assert_true(closed >= 0);
    struct tcp_config c = {.port = port, .receive_timeout = 1, .timeout = 2};
    struct tcp_config cc = {.port = cport, .receive_timeout = 1, .timeout = 2};
    struct dhaf_check_result r[2];
    struct dhaf_check_target t[2];
    target_init(&t[0], &r[0], &c, "::1");
    target_init(&t[1], &r[1], &cc, "::1");
    dhaf_checker_tcp.check(t, 2);
    assert_true(r[0].healthy);
    assert_string_equal(r[0].reason, "ok");
    assert_false(r[1].healthy);
    assert_string_equal(r[1].reason, "refused");
    assert_non_null(strstr(r[1].text, "[::1]:"));
    close(lfd);
    close(closed);
}

static void test_refused(void **state)
{
    (void)state;
    int port;
    /* Bound but not listening: the port stays ours and answers every SYN with a RST. */
    int fd = test_bind("127.0.0.33", -1, &port);
    assert_true(fd >= 0);
    struct tcp_config c = {.port = port, .receive_timeout = 1, .timeout = 2};
    struct dhaf_check_result r;
    check_one(&c, "127.0.0.33", &r);
    assert_false(r.healthy);
    assert_string_equal(r.reason, "refused");
    assert_non_null(strstr(r.text, "Connection refused"));
    assert_non_null(strstr(r.text, "127.0.0.33:"));
    close(fd);
}

static void test_connect_timeout(void **state)
{
    (void)state;
    struct blackhole b;
    blackhole_open(&b, "127.0.0.34");
    struct tcp_config c = {.port = b.port, .receive_timeout = 5, .timeout = 1};
    struct dhaf_check_result r;
    int64_t t0 = mono_ms();
    check_one(&c, "127.0.0.34", &r);
    int64_t took = mono_ms() - t0;
    assert_false(r.healthy);
    assert_string_equal(r.reason, "timeout");
    assert_non_null(strstr(r.text, "no connection within 1 s"));
    assert_true(took >= 950 && took < 1500);
    blackhole_close(&b);
}

static void test_send_expect(void **state)
{
    (void)state;
    static const struct {
        const char *name;
        int which; /* 0 banner, 1 echo, 2 silent listener */
        const char *send, *expect;
        const char *reason, *text;
    } cases[] = {
        {"banner matches", 0, NULL, "hello dhaf", "ok", "expected text received"},
        {"banner mismatch", 0, NULL, "+PONG", "expect",
         "expected text not in \"220 hello dhaf\\r\\n\""},
        {"echo matches", 1, "ping-42\r\n", "ping-42", "ok", "expected text received"},
        {"echo mismatch", 1, "abc", "xyz", "expect", "expected text not in \"abc\""},
        {"send only", 2, "hello", NULL, "ok", "sent 5 bytes"},
        {"silent peer", 2, "PING\r\n", "PONG", "expect", "nothing received within 1 s"},
        {"silent, expect only", 2, NULL, "SSH-", "expect", "nothing received within 1 s"},
    };
    int sport;
    int silent = test_bind("127.0.0.35", 64, &sport);
    assert_true(silent >= 0);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int port = cases[i].which == 0   ? srv.banner_port
                   : cases[i].which == 1 ? srv.echo_port
                                         : sport;
        const char *ip = cases[i].which == 2 ? "127.0.0.35" : "127.0.0.31";
        struct tcp_config c = {.port = port,
                               .receive_timeout = 1,
                               .timeout = 2,
                               .send = (char *)cases[i].send,
                               .expect = (char *)cases[i].expect};
        struct dhaf_check_result r;
        int64_t t0 = mono_ms();
        check_one(&c, ip, &r);
        int64_t took = mono_ms() - t0;
        print_message("%-20s %-7s %4lld ms  %s\n", cases[i].name, r.reason, (long long)took,
                      r.text);
        assert_string_equal(r.reason, cases[i].reason);
        assert_int_equal(r.healthy, strcmp(cases[i].reason, "ok") == 0);
        assert_non_null(strstr(r.text, cases[i].text));
        if (strstr(cases[i].text, "within 1 s"))
            assert_true(took >= 950 && took < 1500);
        else
            assert_true(took < 900);
    }
    close(silent);
}

static void test_bad_inputs(void **state)
{
    (void)state;
    struct tcp_config c = {.port = 80, .receive_timeout = 1, .timeout = 1};
    struct dhaf_check_result r[3];
    struct dhaf_check_target t[3];
    target_init(&t[0], &r[0], &c, "not-an-ip");
    target_init(&t[1], &r[1], &c, "10.0.0.1");
    t[1].family = AF_INET6; /* family and address disagree */
    target_init(&t[2], &r[2], NULL, "127.0.0.1");
    dhaf_checker_tcp.check(t, 3);
    for (int i = 0; i < 3; i++) {
        assert_false(r[i].healthy);
        assert_string_equal(r[i].reason, "internal");
    }
    assert_non_null(strstr(r[0].text, "is not an IPv4 address"));
    assert_non_null(strstr(r[1].text, "is not an IPv6 address"));
    dhaf_checker_tcp.check(t, 0); /* nothing to do */
    void *st = &c;
    struct dhaf_err err;
    assert_int_equal(dhaf_checker_tcp.init(&c, NULL, &st, &err), 0);
    assert_null(st);
}

static void test_errno_mapping(void **state)
{
    (void)state;
    static const struct {
        int err;
        const char *reason;
    } cases[] = {
        {ECONNREFUSED, "refused"},    {ECONNRESET, "refused"},       {ETIMEDOUT, "timeout"},
        {ENETUNREACH, "unreachable"}, {EHOSTUNREACH, "unreachable"}, {ENETDOWN, "unreachable"},
        {EACCES, "unreachable"},      {EMFILE, "internal"},          {EADDRNOTAVAIL, "internal"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        assert_string_equal(tcp_errno_reason(cases[i].err), cases[i].reason);
    for (const struct dhaf_reason *x = dhaf_checker_tcp.reasons; x->code; x++)
        assert_non_null(x->description);
}

/* 200 targets in one call: 150 that time out, 25 open, 25 refused, with different confs. The
 * call lasts about one timeout because all connects share one poll loop. */
static void test_many_concurrent(void **state)
{
    (void)state;
    enum { N = 200 };
    struct blackhole b;
    blackhole_open(&b, "127.0.0.36");
    int oport, cport;
    int open_fd = test_bind("127.0.0.37", 128, &oport);
    int closed_fd = test_bind("127.0.0.38", -1, &cport);
    assert_true(open_fd >= 0 && closed_fd >= 0);
    struct tcp_config slow = {.port = b.port, .receive_timeout = 1, .timeout = 1};
    struct tcp_config open = {.port = oport, .receive_timeout = 1, .timeout = 1};
    struct tcp_config closed = {.port = cport, .receive_timeout = 1, .timeout = 1};
    struct dhaf_check_target *t = calloc(N, sizeof(*t));
    struct dhaf_check_result *r = calloc(N, sizeof(*r));
    assert_non_null(t);
    assert_non_null(r);
    for (int i = 0; i < N; i++) {
        if (i % 8 == 1)
            target_init(&t[i], &r[i], &open, "127.0.0.37");
        else if (i % 8 == 2)
            target_init(&t[i], &r[i], &closed, "127.0.0.38");
        else
            target_init(&t[i], &r[i], &slow, "127.0.0.36");
    }
    int64_t t0 = mono_ms();
    dhaf_checker_tcp.check(t, N);
    int64_t took = mono_ms() - t0;
    print_message("%d targets in %lld ms\n", N, (long long)took);
    for (int i = 0; i < N; i++) {
        const char *want = i % 8 == 1 ? "ok" : i % 8 == 2 ? "refused" : "timeout";
        assert_reason_known(r[i].reason);
        assert_string_equal(r[i].reason, want);
    }
    assert_true(took >= 950 && took < 1800);
    free(t);
    free(r);
    close(open_fd);
    close(closed_fd);
    blackhole_close(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_port),     cmocka_unit_test(test_ipv6),
        cmocka_unit_test(test_refused),       cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_send_expect),   cmocka_unit_test(test_bad_inputs),
        cmocka_unit_test(test_errno_mapping), cmocka_unit_test(test_many_concurrent),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
