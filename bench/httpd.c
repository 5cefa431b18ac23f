/* SPDX-License-Identifier: MIT */
/* dhaf-bench-httpd: the targets of bench/probe: one port on many loopback addresses, each bound
 * on its own, answering every request with "200 OK" and a short body from one epoll loop. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "dhaf/valid.h"

#define HTTPD_MAX_ADDRS  60000
#define HTTPD_REQ_MAX    4096 /* a request head longer than this gets 431 */
#define HTTPD_EVENTS     256
#define HTTPD_ACCEPTS    64 /* accepts per listener wake-up, so one address cannot starve others */
#define HTTPD_BIND_TRIES 20

static const char resp_ok[] = "HTTP/1.1 200 OK\r\n"
                              "Content-Type: text/plain\r\n"
                              "Content-Length: 3\r\n"
                              "Connection: close\r\n"
                              "\r\n"
                              "ok\n";
static const char resp_ok_head[] = "HTTP/1.1 200 OK\r\n"
                                   "Content-Type: text/plain\r\n"
                                   "Content-Length: 3\r\n"
                                   "Connection: close\r\n"
                                   "\r\n";
static const char resp_too_large[] = "HTTP/1.1 431 Request Header Fields Too Large\r\n"
                                     "Content-Length: 0\r\n"
                                     "Connection: close\r\n"
                                     "\r\n";

enum conn_kind { CONN_LISTENER, CONN_CLIENT, CONN_SIGNAL, CONN_TIMER };

/* One epoll registration: a listening socket, an accepted connection, the signalfd or the
 * lifetime timer. A client reads its request head into buf, then writes out[0..out_len). */
struct conn {
    enum conn_kind kind;
    int fd;
    struct conn *prev, *next; /* in conns: every registration, freed at exit */
    size_t len;
    const char *out;
    size_t out_len, out_done;
    char buf[HTTPD_REQ_MAX];
};

struct httpd_opts {
    uint32_t first; /* host order */
    long count;
    int port; /* 0: pick a free one */
    long lifetime;
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: dhaf-bench-httpd [--first IP] [--count N] [--port P] [--lifetime S]\n"
            "\n"
            "Binds port P on N consecutive IPv4 loopback addresses starting at IP (each address\n"
            "on its own, never 0.0.0.0) and answers every HTTP request with 200 OK and the\n"
            "body \"ok\", then closes the connection. Prints \"port=P\" on stdout once every\n"
            "address is bound. Exits on SIGTERM or SIGINT, or after S seconds.\n"
            "\n"
            "  --first IP     first address (default 127.0.1.1; must be in 127.0.0.0/8)\n"
            "  --count N      number of addresses (default 1000)\n"
            "  --port P       port (default 0: a port free on every address)\n"
            "  --lifetime S   exit after S seconds (default 0: never)\n"
            "  -h, --help     this help\n"
            "\n"
            "Exit 0: stopped by a signal or the lifetime; 1: could not bind; 2: usage.\n");
}

/* Returns 0, 1 after --help, or 2 on a usage error. */
static int parse_opts(int argc, char **argv, struct httpd_opts *o)
{
    static const struct option opts[] = {
        {"first", required_argument, NULL, 'f'}, {"count", required_argument, NULL, 'c'},
        {"port", required_argument, NULL, 'p'},  {"lifetime", required_argument, NULL, 'l'},
        {"help", no_argument, NULL, 'h'},        {NULL, 0, NULL, 0},
    };
    struct in_addr a;
    long v;
    int c;
    *o = (struct httpd_opts){.first = 0x7f000101u, .count = 1000, .port = 0, .lifetime = 0};
    opterr = 0;
    int idx = 0;
    while ((c = getopt_long(argc, argv, ":h", opts, &idx)) != -1) {
        switch (c) {
        case 'f':
            if (inet_pton(AF_INET, optarg, &a) != 1 || (ntohl(a.s_addr) >> 24) != 127) {
                fprintf(stderr, "dhaf-bench-httpd: --first: \"%s\" is not in 127.0.0.0/8\n",
                        optarg);
                return 2;
            }
            o->first = ntohl(a.s_addr);
            break;
        case 'c':
            if (!dhaf_parse_long(optarg, 1, HTTPD_MAX_ADDRS, &v))
                goto bad_value;
            o->count = v;
            break;
        case 'p':
            if (!dhaf_parse_long(optarg, 0, 65535, &v))
                goto bad_value;
            o->port = (int)v;
            break;
        case 'l':
            if (!dhaf_parse_long(optarg, 0, 86400, &v))
                goto bad_value;
            o->lifetime = v;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case ':':
            fprintf(stderr, "dhaf-bench-httpd: %s needs a value\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "dhaf-bench-httpd: unknown option %s\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "dhaf-bench-httpd: unexpected argument %s\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if ((o->first >> 24) != 127 || ((o->first + (uint32_t)o->count - 1) >> 24) != 127) {
        fprintf(stderr, "dhaf-bench-httpd: the addresses leave 127.0.0.0/8\n");
        return 2;
    }
    return 0;
bad_value:
    fprintf(stderr, "dhaf-bench-httpd: bad value \"%s\" for --%s\n", optarg, opts[idx].name);
    usage(stderr);
    return 2;
}

/* Opens a listening socket on addr:port (host order); returns the fd or -1 with errno. */
static int listen_on(uint32_t addr, int port)
{
    struct sockaddr_in sa = {
        .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(addr)};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 4096) != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

/* Binds every address on one port: the given one, or a port the kernel picks for the first
 * address that is also free on the others (tried again with a new pick when it is not).
 * Fills fds and returns the port, or -1 after a message. */
static int bind_all(const struct httpd_opts *o, int *fds)
{
    for (int attempt = 0; attempt < HTTPD_BIND_TRIES; attempt++) {
        int port = o->port;
        long n = 0;
        for (; n < o->count; n++) {
            fds[n] = listen_on(o->first + (uint32_t)n, port);
            if (fds[n] < 0)
                break;
            if (port == 0) {
                struct sockaddr_in sa;
                socklen_t sl = sizeof(sa);
                if (getsockname(fds[n], (struct sockaddr *)&sa, &sl) != 0) {
                    close(fds[n]);
                    break;
                }
                port = ntohs(sa.sin_port);
            }
        }
        if (n == o->count)
            return port;
        int e = errno;
        for (long i = 0; i < n; i++)
            close(fds[i]);
        if (o->port != 0 || e != EADDRINUSE) {
            struct in_addr a = {.s_addr = htonl(o->first + (uint32_t)n)};
            fprintf(stderr, "dhaf-bench-httpd: cannot listen on %s:%d: %s\n", inet_ntoa(a), port,
                    strerror(e));
            return -1;
        }
    }
    fprintf(stderr, "dhaf-bench-httpd: found no port free on all %ld addresses\n", o->count);
    return -1;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static struct conn *conns;

static struct conn *conn_new(enum conn_kind kind, int fd)
{
    struct conn *c = malloc(kind == CONN_CLIENT ? sizeof(*c) : offsetof(struct conn, buf));
    if (!c)
        return NULL;
    c->kind = kind;
    c->fd = fd;
    c->len = 0;
    c->out = NULL;
    c->out_len = c->out_done = 0;
    c->prev = NULL;
    c->next = conns;
    if (conns)
        conns->prev = c;
    conns = c;
    return c;
}

static void conn_close(struct conn *c)
{
    close(c->fd); /* also leaves the epoll set */
    if (c->prev)
        c->prev->next = c->next;
    else
        conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* Writes what is left of c's answer. Returns true when the connection is finished (all
 * written, or an error): then it has been closed. */
static bool conn_flush(int ep, struct conn *c)
{
    while (c->out_done < c->out_len) {
        ssize_t w = send(c->fd, c->out + c->out_done, c->out_len - c->out_done, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EAGAIN) {
            struct epoll_event ev = {.events = EPOLLOUT, .data.ptr = c};
            if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
                return false;
        }
        if (w <= 0)
            break;
        c->out_done += (size_t)w;
    }
    conn_close(c);
    return true;
}

/* Reads the request head; once it is complete, answers. */
static void conn_read(int ep, struct conn *c)
{
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0 && errno == EAGAIN)
            return; /* wait for the rest of the head */
        if (r <= 0) {
            conn_close(c);
            return;
        }
        size_t from = c->len >= 3 ? c->len - 3 : 0;
        c->len += (size_t)r;
        if (memmem(c->buf + from, c->len - from, "\r\n\r\n", 4)) {
            bool head = c->len >= 5 && memcmp(c->buf, "HEAD ", 5) == 0;
            c->out = head ? resp_ok_head : resp_ok;
            c->out_len = head ? sizeof(resp_ok_head) - 1 : sizeof(resp_ok) - 1;
            conn_flush(ep, c);
            return;
        }
        if (c->len == sizeof(c->buf)) {
            c->out = resp_too_large;
            c->out_len = sizeof(resp_too_large) - 1;
            conn_flush(ep, c);
            return;
        }
    }
}

static void listener_accept(int ep, struct conn *l)
{
    for (int i = 0; i < HTTPD_ACCEPTS; i++) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN)
                fprintf(stderr, "dhaf-bench-httpd: accept: %s\n", strerror(errno));
            return;
        }
        struct conn *c = conn_new(CONN_CLIENT, fd);
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (!c || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
            continue;
        }
        /* The request usually follows the handshake at once: try it before a wake-up. */
        conn_read(ep, c);
    }
}

/* Registers fd, which is closed with the registration (at once when that fails). */
static int watch(int ep, enum conn_kind kind, int fd)
{
    struct conn *c = conn_new(kind, fd);
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
    if (!c || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int e = errno;
        if (c)
            conn_close(c);
        else
            close(fd);
        errno = e;
        return -1;
    }
    return 0;
}

/* Serves until a signal or the lifetime timer. Returns the exit code. */
static int serve(int ep)
{
    struct epoll_event evs[HTTPD_EVENTS];
    for (;;) {
        int n = epoll_wait(ep, evs, HTTPD_EVENTS, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fprintf(stderr, "dhaf-bench-httpd: epoll_wait: %s\n", strerror(errno));
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = evs[i].data.ptr;
            switch (c->kind) {
            case CONN_LISTENER:
                listener_accept(ep, c);
                break;
            case CONN_CLIENT:
                if (c->out)
                    conn_flush(ep, c);
                else
                    conn_read(ep, c);
                break;
            case CONN_SIGNAL:
            case CONN_TIMER:
                return 0;
            }
        }
    }
}

int main(int argc, char **argv)
{
    struct httpd_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc != 0)
        return rc == 1 ? 0 : rc;

    raise_nofile();
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    int ret = 1;
    int *fds = calloc((size_t)o.count, sizeof(*fds));
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int sfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    if (!fds || ep < 0 || sfd < 0 || watch(ep, CONN_SIGNAL, sfd) != 0) {
        fprintf(stderr, "dhaf-bench-httpd: setup: %s\n", strerror(errno));
        goto out;
    }
    if (o.lifetime > 0) {
        int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        struct itimerspec its = {.it_value.tv_sec = o.lifetime};
        if (tfd < 0 || timerfd_settime(tfd, 0, &its, NULL) != 0 ||
            watch(ep, CONN_TIMER, tfd) != 0) {
            fprintf(stderr, "dhaf-bench-httpd: lifetime timer: %s\n", strerror(errno));
            goto out;
        }
    }
    int port = bind_all(&o, fds);
    if (port < 0)
        goto out;
    for (long i = 0; i < o.count; i++) {
        if (watch(ep, CONN_LISTENER, fds[i]) != 0) {
            fprintf(stderr, "dhaf-bench-httpd: epoll: %s\n", strerror(errno));
            while (++i < o.count)
                close(fds[i]);
            goto out;
        }
    }
    printf("port=%d\n", port);
    fflush(stdout);
    ret = serve(ep);
out:
    while (conns)
        conn_close(conns);
    if (ep >= 0)
        close(ep);
    free(fds);
    return ret;
}
