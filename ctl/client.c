/* SPDX-License-Identifier: MIT */
/* dhafctl's connection: endpoint and token from flags, environment or the node's config. */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "client.h"
#include "dhaf/alloc.h"
#include "dhaf/config.h"

/* The few settings dhafctl reads from a node's config; everything else in it is ignored. */
struct node_api {
    char *host;
    int port;
    char *token;
    char *cert_file;
};

#define NA(f) offsetof(struct node_api, f)
/* clang-format off */
static const struct dhaf_cfgkey node_api_keys[] = {
    {"dhaf.grpc-api.host", DHAF_CFG_HOST, NA(host), false, "localhost", 0, 0, NULL, NULL, NULL, ""},
    {"dhaf.grpc-api.port", DHAF_CFG_INT, NA(port), false, "8129", 1, 65535, NULL, NULL, NULL, ""},
    {"dhaf.grpc-api.tls.cert-file", DHAF_CFG_PATH, NA(cert_file), false, NULL, 0, 0, NULL, NULL,
     NULL, ""},
    {"dhaf.api-token", DHAF_CFG_SECRET, NA(token), false, NULL, 0, 0, NULL, NULL, NULL, ""},
    {NULL, 0, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL},
};
/* clang-format on */

/* A token file: a regular file of at most TOKEN_FILE_MAX bytes, trailing white space removed.
 * Returns the token (caller frees), or NULL after printing why. */
#define TOKEN_FILE_MAX 4096
static char *read_token_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        fprintf(stderr, "dhafctl: --token-file %s: %s\n", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > TOKEN_FILE_MAX) {
        fprintf(stderr, "dhafctl: --token-file %s: not a regular file of at most %d bytes\n", path,
                TOKEN_FILE_MAX);
        close(fd);
        return NULL;
    }
    if (st.st_mode & S_IROTH)
        fprintf(stderr,
                "dhafctl: warning: --token-file %s is readable by every user; chmod o-r it\n",
                path);
    char *buf = dhaf_xmalloc((size_t)st.st_size + 1);
    size_t n = 0;
    while (n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    while (n > 0 && strchr(" \t\r\n", buf[n - 1]))
        n--;
    buf[n] = '\0';
    if (n == 0 || memchr(buf, '\0', n) || strpbrk(buf, "\r\n")) {
        fprintf(stderr, "dhafctl: --token-file %s: %s\n", path,
                n == 0 ? "is empty" : "holds more than one line (a token is one line)");
        explicit_bzero(buf, (size_t)st.st_size + 1);
        free(buf);
        return NULL;
    }
    return buf;
}

int ctl_connect(struct ctl *c)
{
    const char *endpoint = c->endpoint ? c->endpoint : getenv("DHAF_ENDPOINT");
    if (c->token_file && !c->token && !(c->file_token = read_token_file(c->token_file)))
        return 2;
    const char *token = c->token ? c->token : c->file_token ? c->file_token : getenv("DHAF_TOKEN");
    const char *ca = c->ca_file ? c->ca_file : getenv("DHAF_CA");
    if (c->config) {
        struct node_api na;
        memset(&na, 0, sizeof(na));
        struct dhaf_cfg_report rep;
        dhaf_cfg_report_init(&rep, c->config);
        if (dhaf_config_peek_keys(c->config, node_api_keys, &na, &rep) != 0) {
            dhaf_cfg_report_print(&rep, stderr);
            dhaf_cfg_report_release(&rep);
            return 2;
        }
        dhaf_cfg_report_release(&rep);
        /* a node bound to every address is reached on loopback from its own machine */
        const char *host = na.host;
        if (!strcmp(host, "0.0.0.0"))
            host = "127.0.0.1";
        else if (!strcmp(host, "::"))
            host = "::1";
        c->target = strchr(host, ':') ? dhaf_xasprintf("[%s]:%d", host, na.port)
                                      : dhaf_xasprintf("%s:%d", host, na.port);
        if (na.token)
            c->cfg_token = dhaf_xstrdup(na.token);
        if (na.cert_file) {
            c->tls = true;
            c->cfg_ca = dhaf_xstrdup(na.cert_file); /* a self-signed node certificate */
        }
        dhaf_cfgkeys_release(node_api_keys, &na);
    }
    if (endpoint) {
        free(c->target);
        c->target = dhaf_xstrdup(endpoint);
    }
    if (!c->target) {
        fprintf(stderr, "dhafctl: no node to talk to: give --config FILE (a node's config), "
                        "--endpoint HOST:PORT, or set DHAF_ENDPOINT\n");
        return 2;
    }
    if (!token)
        token = c->cfg_token;
    if (token)
        c->bearer = dhaf_xasprintf("Bearer %s", token);
    if (ca) {
        c->tls = true;
        free(c->cfg_ca);
        c->cfg_ca = dhaf_xstrdup(ca);
    }
    struct dhaf_rpc_tls tls = {.tls = c->tls, .ca_file = c->cfg_ca};
    struct dhaf_err err;
    c->ch = dhaf_rpc_channel_new(c->target, &tls, &err);
    if (!c->ch) {
        fprintf(stderr, "dhafctl: %s\n", err.msg);
        return 1;
    }
    return 0;
}

int ctl_call(struct ctl *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp)
{
    char path[128];
    snprintf(path, sizeof(path), "/dhaf.v1.Dhaf/%s", method);
    struct dhaf_rpc_md md[2];
    size_t n = 0;
    if (c->bearer)
        md[n++] = (struct dhaf_rpc_md){"authorization", c->bearer};
    md[n++] = (struct dhaf_rpc_md){"x-dhaf-client", "dhafctl/" DHAF_VERSION};
    struct dhaf_err err;
    int rc = dhaf_rpc_call(c->ch, path, req, desc, resp, c->timeout_ms, md, n, NULL, &err);
    if (rc == 0)
        return 0;
    /* the server's own message, without our transport prefix */
    const char *msg = err.msg;
    const char *colon = strstr(msg, ": ");
    const char *status = dhaf_rpc_status_name(err.status);
    const char *after = colon ? strstr(colon + 2, status) : NULL;
    if (after && after[strlen(status)] == ':')
        msg = after + strlen(status) + 2;
    /* The node's own answer when its etcd is down names etcd; a transport failure does not. */
    if ((rc == DHAF_EUNAVAILABLE || rc == DHAF_ETIMEOUT) && strstr(msg, "etcd"))
        fprintf(stderr, "dhafctl: the node at %s answered, but it cannot reach etcd: %s\n",
                c->target, msg);
    else if (rc == DHAF_EUNAVAILABLE || rc == DHAF_ETIMEOUT)
        fprintf(stderr, "dhafctl: cannot reach the node at %s: %s\n", c->target, msg);
    else if (rc == DHAF_EAUTH)
        fprintf(stderr,
                "dhafctl: refused (%s): give the node's api-token with --token-file, "
                "DHAF_TOKEN or --config\n",
                msg);
    else
        fprintf(stderr, "dhafctl: %s\n", msg);
    return 1;
}

void ctl_close(struct ctl *c)
{
    dhaf_rpc_channel_free(c->ch);
    free(c->target);
    if (c->bearer)
        explicit_bzero(c->bearer, strlen(c->bearer));
    free(c->bearer);
    if (c->cfg_token)
        explicit_bzero(c->cfg_token, strlen(c->cfg_token));
    free(c->cfg_token);
    if (c->file_token)
        explicit_bzero(c->file_token, strlen(c->file_token));
    free(c->file_token);
    free(c->cfg_ca);
}
