/* SPDX-License-Identifier: MIT */
/* TCP health checker: non-blocking connects to every entry point in one poll() loop, with an
 * optional exchange (send bytes, expect text in the reply). */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "dhaf/clock.h"
#include "dhaf/alloc.h"
#include "dhaf/probe.h"
#include "dhaf/provider.h"
#include "tcp.h"

#define TCP(field) offsetof(struct tcp_config, field)

static int check_expect(const char *v, char *why, size_t wl)
{
    if (strlen(v) > TCP_RECV_MAX) {
        snprintf(why, wl, "at most %d bytes (only that much of the reply is read)", TCP_RECV_MAX);
        return -1;
    }
    return 0;
}

/* clang-format off */
static const struct dhaf_cfgkey tcp_keys[] = {
    {"port", DHAF_CFG_INT, TCP(port), true, NULL, 1, 65535, NULL, NULL, NULL,
     "Port to connect to."},
    {"receive-timeout", DHAF_CFG_INT, TCP(receive_timeout), false, "5", 1, 86400, NULL, NULL,
     "receiveTimeout",
     "Seconds for `send` and `expect` once connected (the seed's README: receiveTimeout)."},
    {"timeout", DHAF_CFG_INT, TCP(timeout), false, "5", 1, 86400, NULL, NULL, NULL,
     "Seconds the connect may take."},
    {"send", DHAF_CFG_STR, TCP(send), false, NULL, 0, 0, NULL, NULL, NULL,
     "Bytes to send once connected, as written (use YAML double-quote escapes such as \\r\\n)."},
    {"expect", DHAF_CFG_STR, TCP(expect), false, NULL, 0, 0, NULL, check_expect, NULL,
     "Text the peer must send within receive-timeout (case-sensitive, in its first 4096 bytes)."},
    DHAF_KEY_END,
};
/* clang-format on */

enum tcp_status { TS_OK, TS_TIMEOUT, TS_REFUSED, TS_UNREACHABLE, TS_SEND, TS_EXPECT, TS_INTERNAL };

static const struct dhaf_reason tcp_reasons[] = {
    [TS_OK] = {"ok", "connected (and the exchange succeeded)"},
    [TS_TIMEOUT] = {"timeout", "no connection within the timeout"},
    [TS_REFUSED] = {"refused", "the connection was refused or reset: nothing listens on the port"},
    [TS_UNREACHABLE] = {"unreachable", "the network or host is unreachable or prohibited"},
    [TS_SEND] = {"send", "the configured bytes could not be sent within the receive timeout"},
    [TS_EXPECT] = {"expect", "the expected text did not arrive within the receive timeout"},
    [TS_INTERNAL] = {"internal", "the check could not be run (bad address, no sockets left)"},
    {NULL, NULL},
};

static enum tcp_status errno_status(int err)
{
    switch (err) {
    case ECONNREFUSED:
    case ECONNRESET:
        return TS_REFUSED;
    case ETIMEDOUT:
        return TS_TIMEOUT;
    case ENETUNREACH:
    case EHOSTUNREACH:
    case ENETDOWN:
    case EHOSTDOWN:
    case EACCES: /* an ICMP "administratively prohibited" */
    case EPERM:
        return TS_UNREACHABLE;
    default: /* EMFILE, EADDRNOTAVAIL (no local port left), EAFNOSUPPORT ... */
        return TS_INTERNAL;
    }
}

const char *tcp_errno_reason(int err)
{
    return tcp_reasons[errno_status(err)].code;
}

enum phase {
    PH_CONNECT,  /* waiting for the connect */
    PH_EXCHANGE, /* connected; sending and/or waiting for the expected text */
    PH_DONE,     /* result written, socket closed */
};

/* One entry point's check in flight. */
struct probe {
    struct dhaf_check_target *t;
    const struct tcp_config *c;
    enum phase phase;
    int fd;
    int64_t start_ms;
    int64_t deadline_ms; /* of the current phase */
    size_t send_len, sent;
    bool matched;
    char *buf; /* expect only: TCP_RECV_MAX + 1 bytes, NUL-ended */
    size_t got;
    char addr[INET6_ADDRSTRLEN + 8]; /* "ip:port" or "[ip]:port", for texts */
};

static void finish(struct probe *pr, enum tcp_status s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes the result, closes the socket and ends the probe. */
static void finish(struct probe *pr, enum tcp_status s, const char *fmt, ...)
{
    struct dhaf_check_result *r = pr->t->result;
    va_list ap;
    r->healthy = s == TS_OK;
    r->reason = tcp_reasons[s].code;
    va_start(ap, fmt);
    vsnprintf(r->text, sizeof(r->text), fmt, ap);
    va_end(ap);
    if (pr->fd >= 0)
        close(pr->fd);
    pr->fd = -1;
    DHAF_FREE(pr->buf);
    pr->phase = PH_DONE;
    dhaf_check_done(pr->t); /* the engine takes it now, not with the slowest of the call */
}

static void finish_errno(struct probe *pr, const char *what, int err)
{
    finish(pr, errno_status(err), "%s%s%s: %s", pr->addr, *what ? " " : "", what, strerror(err));
}

/* Quotes untrusted bytes from the peer for a result text: printable ASCII as is, the rest
 * escaped, at most 64 input bytes. */
static const char *quote_peer(char *dst, size_t dl, const char *src, size_t n)
{
    size_t o = 0;
    if (n > 64)
        n = 64;
    for (size_t i = 0; i < n && o + 5 < dl; i++) {
        unsigned char ch = (unsigned char)src[i];
        if (ch == '\n')
            o += (size_t)snprintf(dst + o, dl - o, "\\n");
        else if (ch == '\r')
            o += (size_t)snprintf(dst + o, dl - o, "\\r");
        else if (ch < ' ' || ch >= 0x7f || ch == '"' || ch == '\\')
            o += (size_t)snprintf(dst + o, dl - o, "\\x%02x", ch);
        else
            dst[o++] = (char)ch;
    }
    dst[o] = '\0';
    return dst;
}

static void connected(struct probe *pr, int64_t now);

/* Opens the socket and starts the connect; may finish the probe at once. */
static void probe_start(struct probe *pr, struct dhaf_check_target *t, int64_t now)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    const struct tcp_config *c = t->conf;

    memset(pr, 0, sizeof(*pr));
    memset(&ss, 0, sizeof(ss));
    pr->t = t;
    pr->c = c;
    pr->fd = -1;
    pr->start_ms = now;
    memset(t->result, 0, sizeof(*t->result));
    if (!c || !t->ep_ip) {
        finish(pr, TS_INTERNAL, "no config or entry point address");
        return;
    }
    int family = t->family;
    if (family != AF_INET && family != AF_INET6)
        family = strchr(t->ep_ip, ':') ? AF_INET6 : AF_INET;
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)c->port);
        if (inet_pton(AF_INET6, t->ep_ip, &s6->sin6_addr) != 1) {
            finish(pr, TS_INTERNAL, "\"%.64s\" is not an IPv6 address", t->ep_ip);
            return;
        }
        sl = sizeof(*s6);
        snprintf(pr->addr, sizeof(pr->addr), "[%s]:%d", t->ep_ip, c->port);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)c->port);
        if (inet_pton(AF_INET, t->ep_ip, &s4->sin_addr) != 1) {
            finish(pr, TS_INTERNAL, "\"%.64s\" is not an IPv4 address", t->ep_ip);
            return;
        }
        sl = sizeof(*s4);
        snprintf(pr->addr, sizeof(pr->addr), "%s:%d", t->ep_ip, c->port);
    }

    pr->fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (pr->fd < 0) {
        finish(pr, TS_INTERNAL, "%s socket: %s", pr->addr, strerror(errno));
        return;
    }
    pr->phase = PH_CONNECT;
    pr->deadline_ms = now + (int64_t)c->timeout * 1000;
    if (connect(pr->fd, (struct sockaddr *)&ss, sl) == 0)
        connected(pr, dhaf_mono_ms());
    else if (errno != EINPROGRESS)
        finish_errno(pr, "connect", errno);
}

static void try_send(struct probe *pr, int64_t now)
{
    while (pr->sent < pr->send_len) {
        ssize_t k = send(pr->fd, pr->c->send + pr->sent, pr->send_len - pr->sent, MSG_NOSIGNAL);
        if (k > 0) {
            pr->sent += (size_t)k;
        } else if (k < 0 && errno == EINTR) {
            continue;
        } else if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return;
        } else {
            finish(pr, TS_SEND, "%s send: %s (%zu of %zu bytes sent)", pr->addr,
                   k < 0 ? strerror(errno) : "nothing sent", pr->sent, pr->send_len);
            return;
        }
    }
    if (!pr->c->expect || pr->matched) {
        if (pr->matched)
            pr->t->result->latency_ms = (uint32_t)(now - pr->start_ms);
        finish(pr, TS_OK, "connected in %u ms, sent %zu bytes%s", pr->t->result->latency_ms,
               pr->send_len, pr->matched ? ", expected text received" : "");
    }
}

static void try_recv(struct probe *pr, int64_t now)
{
    char q[300];
    while (pr->got < TCP_RECV_MAX) {
        ssize_t k = recv(pr->fd, pr->buf + pr->got, TCP_RECV_MAX - pr->got, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (k < 0) {
            finish(pr, TS_EXPECT, "%s receive: %s (after %zu bytes)", pr->addr, strerror(errno),
                   pr->got);
            return;
        }
        if (k == 0) {
            if (pr->got == 0)
                finish(pr, TS_EXPECT, "%s closed the connection without sending anything",
                       pr->addr);
            else
                finish(pr, TS_EXPECT, "%s closed the connection; expected text not in \"%s\"",
                       pr->addr, quote_peer(q, sizeof(q), pr->buf, pr->got));
            return;
        }
        pr->got += (size_t)k;
        pr->buf[pr->got] = '\0';
        if (memmem(pr->buf, pr->got, pr->c->expect, strlen(pr->c->expect))) {
            pr->matched = true;
            if (pr->sent == pr->send_len) {
                pr->t->result->latency_ms = (uint32_t)(now - pr->start_ms);
                finish(pr, TS_OK, "connected, expected text received in %u ms",
                       pr->t->result->latency_ms);
            }
            return;
        }
    }
    finish(pr, TS_EXPECT, "%s: expected text not in the first %d bytes: \"%s\"", pr->addr,
           TCP_RECV_MAX, quote_peer(q, sizeof(q), pr->buf, pr->got));
}

/* The connect succeeded: healthy now, or start the exchange. */
static void connected(struct probe *pr, int64_t now)
{
    pr->t->result->latency_ms = (uint32_t)(now - pr->start_ms);
    if (!pr->c->send && !pr->c->expect) {
        finish(pr, TS_OK, "connected in %u ms", pr->t->result->latency_ms);
        return;
    }
    pr->phase = PH_EXCHANGE;
    pr->deadline_ms = now + (int64_t)pr->c->receive_timeout * 1000;
    pr->send_len = pr->c->send ? strlen(pr->c->send) : 0;
    if (pr->c->expect)
        pr->buf = dhaf_xmalloc(TCP_RECV_MAX + 1);
    try_send(pr, now);
}

static short probe_events(const struct probe *pr)
{
    if (pr->phase == PH_CONNECT)
        return POLLOUT;
    short ev = 0;
    if (pr->sent < pr->send_len)
        ev |= POLLOUT;
    if (pr->c->expect && !pr->matched)
        ev |= POLLIN;
    return ev;
}

static void probe_io(struct probe *pr, short revents, int64_t now)
{
    if (pr->phase == PH_CONNECT) {
        int err = 0;
        socklen_t el = sizeof(err);
        if (getsockopt(pr->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
            err = errno;
        if (err)
            finish_errno(pr, "", err);
        else if (revents & POLLOUT)
            connected(pr, now);
        return;
    }
    if (pr->c->expect && !pr->matched && (revents & (POLLIN | POLLHUP | POLLERR)))
        try_recv(pr, now);
    if (pr->phase == PH_EXCHANGE && pr->sent < pr->send_len &&
        (revents & (POLLOUT | POLLHUP | POLLERR)))
        try_send(pr, now);
}

static void probe_deadline(struct probe *pr)
{
    char q[300];
    if (pr->phase == PH_CONNECT)
        finish(pr, TS_TIMEOUT, "%s: no connection within %d s", pr->addr, pr->c->timeout);
    else if (pr->sent < pr->send_len)
        finish(pr, TS_SEND, "%s: sent %zu of %zu bytes within %d s", pr->addr, pr->sent,
               pr->send_len, pr->c->receive_timeout);
    else if (pr->got == 0)
        finish(pr, TS_EXPECT, "%s: nothing received within %d s", pr->addr, pr->c->receive_timeout);
    else
        finish(pr, TS_EXPECT, "%s: expected text not received within %d s; got \"%s\"", pr->addr,
               pr->c->receive_timeout, quote_peer(q, sizeof(q), pr->buf, pr->got));
}

/* Nothing to prepare: every check opens its own sockets. */
static int tcp_init(const void *conf, const struct dhaf_provider_ctx *ctx, void **state,
                    struct dhaf_err *err)
{
    (void)conf;
    (void)ctx;
    (void)err;
    *state = NULL;
    return 0;
}

static void tcp_check(struct dhaf_check_target *targets, size_t n)
{
    struct probe *prs = dhaf_xcalloc(n, sizeof(*prs));
    struct pollfd *pfds = dhaf_xcalloc(n, sizeof(*pfds));
    size_t *pidx = dhaf_xcalloc(n, sizeof(*pidx));
    size_t active = 0;

    int64_t now = dhaf_mono_ms();
    for (size_t i = 0; i < n; i++) {
        prs[i].phase = PH_DONE;
        prs[i].fd = -1;
        if (!targets[i].result)
            continue;
        probe_start(&prs[i], &targets[i], now);
        if (prs[i].phase != PH_DONE)
            active++;
    }

    while (active > 0) {
        now = dhaf_mono_ms();
        int64_t wait = 1000;
        size_t np = 0;
        for (size_t i = 0; i < n; i++) {
            if (prs[i].phase == PH_DONE)
                continue;
            pfds[np] = (struct pollfd){.fd = prs[i].fd, .events = probe_events(&prs[i])};
            pidx[np++] = i;
            if (prs[i].deadline_ms - now < wait)
                wait = prs[i].deadline_ms - now;
        }
        if (wait < 0)
            wait = 0;
        int pr = poll(pfds, np, (int)wait);
        now = dhaf_mono_ms();
        for (size_t k = 0; pr > 0 && k < np; k++)
            if (pfds[k].revents)
                probe_io(&prs[pidx[k]], pfds[k].revents, now);
        active = 0;
        for (size_t i = 0; i < n; i++) {
            if (prs[i].phase != PH_DONE && now >= prs[i].deadline_ms)
                probe_deadline(&prs[i]);
            if (prs[i].phase != PH_DONE)
                active++;
        }
    }
    free(prs);
    free(pfds);
    free(pidx);
}

const struct dhaf_provider dhaf_checker_tcp = {
    .abi_version = DHAF_PROVIDER_ABI_VERSION,
    .kind = DHAF_PKIND_CHECKER,
    .type = "tcp",
    .summary = "Checks that a TCP port accepts connections.",
    .keys = tcp_keys,
    .config_size = sizeof(struct tcp_config),
    .init = tcp_init,
    .check = tcp_check,
    .reasons = tcp_reasons,
};
