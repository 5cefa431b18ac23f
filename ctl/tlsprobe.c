/* SPDX-License-Identifier: MIT */
/* dhafctl's TLS probe: one non-blocking TCP connect and OpenSSL handshake under a deadline. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "dhaf/clock.h"
#include "tlsprobe.h"

/* Splits target into host and port; returns false for what is not host:port (unix:...). */
static bool split_target(const char *target, char *host, size_t hlen, char *port, size_t plen)
{
    static const char *const prefixes[] = {"dns:///", "dns:", "ipv4:", "ipv6:"};
    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
        if (!strncmp(target, prefixes[i], strlen(prefixes[i]))) {
            target += strlen(prefixes[i]);
            break;
        }
    const char *colon;
    const char *h = target;
    size_t n;
    if (*target == '[') {
        const char *end = strchr(target, ']');
        if (!end || end[1] != ':')
            return false;
        h = target + 1;
        n = (size_t)(end - h);
        colon = end + 1;
    } else {
        colon = strrchr(target, ':');
        if (!colon || strchr(target, ':') != colon || strchr(target, ','))
            return false;
        n = (size_t)(colon - target);
    }
    if (n == 0 || n >= hlen || strlen(colon + 1) == 0 || strlen(colon + 1) >= plen)
        return false;
    memcpy(host, h, n);
    host[n] = '\0';
    snprintf(port, plen, "%s", colon + 1);
    return true;
}

static int remaining(int64_t deadline)
{
    int64_t left = deadline - dhaf_mono_ms();
    return left > 0 ? (int)left : 0;
}

/* Waits until fd is ready for events; false at the deadline. */
static bool wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int left = remaining(deadline);
        if (left == 0)
            return false;
        int r = poll(&p, 1, left);
        if (r > 0)
            return true;
        if (r < 0 && errno != EINTR)
            return false;
    }
}

static int connect_deadline(const char *host, const char *port, int64_t deadline)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(host, port, &hints, &res) != 0)
        return -1;
    int fd = -1;
    for (struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
            break;
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (errno == EINPROGRESS && wait_fd(fd, POLLOUT, deadline) &&
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0 && soerr == 0)
            break;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

/* Set by the message callback when the server sent a TLS handshake message or alert. */
static void on_msg(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg)
{
    (void)version, (void)buf, (void)len, (void)ssl;
    if (!write_p && (content_type == SSL3_RT_HANDSHAKE || content_type == SSL3_RT_ALERT))
        *(bool *)arg = true;
}

void tlsprobe_run(const char *target, bool verify, const char *ca_file, int timeout_ms,
                  struct tlsprobe *out)
{
    memset(out, 0, sizeof(*out));
    char host[256], port[16];
    if (!split_target(target, host, sizeof(host), port, sizeof(port)))
        return;
    int64_t deadline = dhaf_mono_ms() + timeout_ms;
    int fd = connect_deadline(host, port, deadline);
    if (fd < 0)
        return;
    bool tls_seen = false;
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL *ssl = ctx ? SSL_new(ctx) : NULL;
    if (!ssl)
        goto out;
    SSL_set_msg_callback(ssl, on_msg);
    SSL_set_msg_callback_arg(ssl, &tls_seen);
    /* gRPC's ALPN; verification is ours to read afterwards, so the handshake goes on */
    static const unsigned char alpn[] = {2, 'h', '2'};
    SSL_set_alpn_protos(ssl, alpn, sizeof(alpn));
    bool check_ca = verify && (ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
                                       : SSL_CTX_set_default_verify_paths(ctx)) == 1;
    SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    unsigned char ip[16];
    bool is_ip = inet_pton(AF_INET, host, ip) == 1 || inet_pton(AF_INET6, host, ip) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(ssl, host);
    if (check_ca && is_ip) /* the name check gRPC makes too */
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host);
    else if (check_ca)
        SSL_set1_host(ssl, host);
    SSL_set_fd(ssl, fd);
    int r;
    while ((r = SSL_connect(ssl)) != 1) {
        int e = SSL_get_error(ssl, r);
        if (e == SSL_ERROR_WANT_READ    ? !wait_fd(fd, POLLIN, deadline)
            : e == SSL_ERROR_WANT_WRITE ? !wait_fd(fd, POLLOUT, deadline)
                                        : true)
            break;
    }
    if (r == 1 || tls_seen) {
        out->result = TLSPROBE_TLS;
        if (r == 1 && check_ca) {
            long v = SSL_get_verify_result(ssl);
            out->verified = v == X509_V_OK;
            out->name_mismatch =
                v == X509_V_ERR_HOSTNAME_MISMATCH || v == X509_V_ERR_IP_ADDRESS_MISMATCH;
            if (!out->verified)
                snprintf(out->verify_msg, sizeof(out->verify_msg), "%s",
                         X509_verify_cert_error_string(v));
        }
    } else if (remaining(deadline) > 0) {
        out->result = TLSPROBE_PLAIN; /* an answer, or the connection closed, without TLS */
    }
out:
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
}
