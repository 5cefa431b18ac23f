/* SPDX-License-Identifier: MIT */
/* dhafctl's connection: endpoint and token from flags, environment or the node's config;
 * errors and warnings as text or JSON. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "client.h"
#include "dhaf/alloc.h"
#include "dhaf/config.h"
#include "tlsprobe.h"

/* JSON strings are UTF-8: a message with other bytes (a file name, a peer's text) gets '?'
 * for each byte of 0x80 and above rather than no object at all. msg is changed then. */
static json_t *json_text(char *msg)
{
    json_t *j = json_string(msg);
    if (j)
        return j;
    for (char *p = msg; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    return json_string(msg);
}

/* One JSON object on one line of out. */
static void put_json(FILE *out, json_t *j)
{
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (s)
        fprintf(out, "%s\n", s);
    free(s);
    json_decref(j);
    fflush(out);
}

int ctl_fail(const struct ctl *c, int exit_code, const char *code, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->out == OUT_JSON) {
        json_t *e = json_pack("{s:s, s:i, s:o}", "code", code, "exit_code", exit_code, "message",
                              json_text(msg));
        if (e && c->target) {
            char target[512];
            snprintf(target, sizeof(target), "%s", c->target);
            json_object_set_new(e, "endpoint", json_text(target));
        }
        put_json(stdout, json_pack("{s:o}", "error", e));
    } else {
        fprintf(c->errors_on_stdout ? stdout : stderr, "dhafctl: %s\n", msg);
    }
    return exit_code;
}

void ctl_warn(const struct ctl *c, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (c->out == OUT_JSON)
        put_json(stderr, json_pack("{s:{s:o}}", "warning", "message", json_text(msg)));
    else
        fprintf(c->errors_on_stdout ? stdout : stderr, "dhafctl: warning: %s\n", msg);
}

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
    {"dhaf.grpc-api.port", DHAF_CFG_INT, NA(port), false, CTL_DEFAULT_PORT, 1, 65535, NULL, NULL, NULL, ""},
    {"dhaf.grpc-api.tls.cert-file", DHAF_CFG_PATH, NA(cert_file), false, NULL, 0, 0, NULL, NULL,
     NULL, ""},
    {"dhaf.api-token", DHAF_CFG_SECRET, NA(token), false, NULL, 0, 0, NULL, NULL, NULL, ""},
    {NULL, 0, 0, false, NULL, 0, 0, NULL, NULL, NULL, NULL},
};
/* clang-format on */

/* A token file: a regular file of at most TOKEN_FILE_MAX bytes, trailing white space removed.
 * Returns the token (caller frees), or NULL after printing why. */
#define TOKEN_FILE_MAX 4096
static char *read_token_file(const struct ctl *c, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        ctl_fail(c, 2, "USAGE", "--token-file %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > TOKEN_FILE_MAX) {
        ctl_fail(c, 2, "USAGE", "--token-file %s: not a regular file of at most %d bytes", path,
                 TOKEN_FILE_MAX);
        close(fd);
        return NULL;
    }
    if (st.st_mode & S_IROTH)
        ctl_warn(c, "--token-file %s is readable by every user; chmod o-r it", path);
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
        ctl_fail(c, 2, "USAGE", "--token-file %s: %s", path,
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
    if (c->token_file && !c->token && !(c->file_token = read_token_file(c, c->token_file)))
        return 2;
    const char *token = c->token ? c->token : c->file_token ? c->file_token : getenv("DHAF_TOKEN");
    const char *ca = c->ca_file ? c->ca_file : getenv("DHAF_CA");
    if (c->config) {
        struct node_api na;
        memset(&na, 0, sizeof(na));
        struct dhaf_cfg_report rep;
        dhaf_cfg_report_init(&rep, c->config);
        if (dhaf_config_peek_keys(c->config, node_api_keys, &na, &rep) != 0) {
            if (c->out == OUT_JSON) { /* the report's lines as the error's message */
                char *text = NULL;
                size_t len = 0;
                FILE *mem = open_memstream(&text, &len);
                if (mem) {
                    dhaf_cfg_report_print(&rep, mem);
                    fclose(mem);
                }
                while (len > 0 && text[len - 1] == '\n')
                    text[--len] = '\0';
                ctl_fail(c, 2, "USAGE", "%s", text ? text : c->config);
                free(text);
            } else {
                dhaf_cfg_report_print(&rep, stderr);
            }
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
    if (!c->target) { /* a node on this machine with the default grpc-api */
        c->target = dhaf_xstrdup(CTL_DEFAULT_ENDPOINT);
        c->default_target = true;
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
    if (c->use_tls)
        c->tls = true;
    return ctl_reconnect(c);
}

int ctl_reconnect(struct ctl *c)
{
    dhaf_rpc_channel_free(c->ch);
    struct dhaf_rpc_tls tls = {.tls = c->tls, .ca_file = c->cfg_ca};
    struct dhaf_err err;
    c->ch = dhaf_rpc_channel_new(c->target, &tls, &err);
    if (!c->ch)
        return ctl_fail(c, 1, "INVALID_ARGUMENT", "%s", err.msg);
    return 0;
}

/* After a transport failure: what a TLS probe of the node's port says, as advice, or "". */
static void tls_advice(const struct ctl *c, char *buf, size_t len)
{
    buf[0] = '\0';
    struct tlsprobe p;
    tlsprobe_run(c->target, c->tls, c->cfg_ca, c->timeout_ms < 2000 ? c->timeout_ms : 2000, &p);
    if (!c->tls && p.result == TLSPROBE_TLS)
        snprintf(buf, len,
                 "the node at %s speaks TLS; pass --ca FILE (the CA of its certificate, or "
                 "DHAF_CA) or --tls to use the system's roots",
                 c->target);
    else if (c->tls && p.result == TLSPROBE_PLAIN)
        snprintf(buf, len,
                 "the node at %s does not speak TLS; drop --ca, --tls and DHAF_CA (or give its "
                 "config with --config)",
                 c->target);
    else if (c->tls && p.result == TLSPROBE_TLS && p.name_mismatch)
        snprintf(buf, len,
                 "the TLS handshake with the node at %s failed: its certificate does not name "
                 "that host (%s); use the name or address the certificate was issued for",
                 c->target, p.verify_msg);
    else if (c->tls && p.result == TLSPROBE_TLS && !p.verified && p.verify_msg[0])
        snprintf(buf, len,
                 "the TLS handshake with the node at %s failed: its certificate is not accepted "
                 "with %s%s (%s); pass the CA that signed it with --ca FILE",
                 c->target, c->cfg_ca ? "the CA " : "the system's CA roots",
                 c->cfg_ca ? c->cfg_ca : "", p.verify_msg);
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
    char advice[512] = "";
    if ((rc == DHAF_EUNAVAILABLE || rc == DHAF_ETIMEOUT) && strstr(msg, "etcd"))
        return ctl_fail(c, 1, status, "the node at %s answered, but it cannot reach etcd: %s",
                        c->target, msg);
    if (rc == DHAF_EUNAVAILABLE || rc == DHAF_ETIMEOUT)
        tls_advice(c, advice, sizeof(advice));
    if (advice[0])
        return ctl_fail(c, 1, status, "%s (%s)", advice, msg);
    if (rc == DHAF_EUNAVAILABLE || rc == DHAF_ETIMEOUT)
        return ctl_fail(c, 1, status, "cannot reach the node at %s%s: %s", c->target,
                        c->default_target ? " (the default: give --endpoint HOST:PORT, "
                                            "DHAF_ENDPOINT or --config FILE)"
                                          : "",
                        msg);
    if (rc == DHAF_EAUTH)
        return ctl_fail(c, 1, status,
                        "refused (%s): give the node's api-token with --token-file, DHAF_TOKEN "
                        "or --config",
                        msg);
    return ctl_fail(c, 1, status, "%s", msg);
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
