/* SPDX-License-Identifier: MIT */
/* Roles of API callers: see access.h. */
#include "access.h"

#include <stdio.h>
#include <string.h>

#include "dhaf/rpc.h"

const char *access_role_name(enum access_role r)
{
    switch (r) {
    case ACCESS_ADMIN:
        return "admin";
    case ACCESS_READ:
        return "read-only";
    case ACCESS_PROBER:
        return "prober";
    default:
        return "none";
    }
}

static bool listed(const struct dhaf_strlist *l, const char *v)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->v[i], v) == 0)
            return true;
    return false;
}

static void set(struct access_who *who, enum access_role role, bool by_token, const char *fmt,
                const char *arg)
{
    who->role = role;
    who->by_token = by_token;
    snprintf(who->name, sizeof(who->name), fmt, arg);
}

/* The role a token gives: every token is compared, none skipped, so that the time taken
 * does not tell which one (nor how many) matched. */
static void by_token(const struct dhaf_config *cfg, const char *tok, struct access_who *who)
{
    bool admin = cfg->api_token && dhaf_rpc_token_equal(tok, cfg->api_token);
    bool read = cfg->read_token && dhaf_rpc_token_equal(tok, cfg->read_token);
    const char *prober = NULL;
    for (size_t i = 0; i < cfg->n_probers; i++)
        if (cfg->probers[i].token && dhaf_rpc_token_equal(tok, cfg->probers[i].token))
            prober = cfg->probers[i].name;
    if (admin) /* the config refuses equal tokens: at most one of these holds */
        set(who, ACCESS_ADMIN, true, "%s", "api-token");
    else if (read)
        set(who, ACCESS_READ, true, "%s", "read-token");
    else if (prober)
        set(who, ACCESS_PROBER, true, "prober:%s", prober);
}

static void by_cn(const struct dhaf_config *cfg, const char *cn, struct access_who *who)
{
    if (listed(&cfg->admin_cns, cn)) {
        set(who, ACCESS_ADMIN, false, "cn:%.80s", cn);
        return;
    }
    if (listed(&cfg->read_cns, cn)) {
        set(who, ACCESS_READ, false, "cn:%.80s", cn);
        return;
    }
    for (size_t i = 0; i < cfg->n_probers; i++)
        if (cfg->probers[i].name && strcmp(cfg->probers[i].name, cn) == 0) {
            set(who, ACCESS_PROBER, false, "prober:%.80s", cn);
            return;
        }
    /* Without lists or an admin token, the client CA alone says who may act (as before the
     * roles existed), but never for a prober's certificate (above). */
    if (!cfg->admin_cns.n && !cfg->read_cns.n && !cfg->api_token)
        set(who, ACCESS_ADMIN, false, "cn:%.80s", cn);
}

int access_identify(const struct dhaf_config *cfg, const struct access_creds *cr,
                    struct access_who *who, struct dhaf_err *err)
{
    memset(who, 0, sizeof(*who));
    if (cr->token) {
        by_token(cfg, cr->token, who);
        if (who->role != ACCESS_NONE)
            return 0;
        if (cfg->api_token || cfg->read_token)
            return dhaf_err_set(err, DHAF_EAUTH, "invalid token");
        /* an API that asks for no token: a client that sends one anyway is not refused */
    }
    if (cr->cn) {
        by_cn(cfg, cr->cn, who);
        if (who->role == ACCESS_NONE)
            return dhaf_err_set(err, DHAF_EAUTH,
                                "the client certificate's CN \"%.64s\" has no role here (it is "
                                "in neither dhaf.admin-cns nor dhaf.read-cns); send a token or "
                                "use a listed certificate",
                                cr->cn);
        return 0;
    }
    if (cfg->api_token || cfg->read_token)
        return dhaf_err_set(err, DHAF_EAUTH, "missing \"Authorization: Bearer <token>\"");
    if (cr->client_ca)
        return dhaf_err_set(err, DHAF_EAUTH,
                            "a client certificate signed by the configured client CA is required");
    set(who, ACCESS_ADMIN, false, "%s", "anonymous");
    return 0;
}

int access_allow(const struct access_who *who, enum access_role need, const char *what,
                 struct dhaf_err *err)
{
    if (who->role == ACCESS_PROBER)
        return dhaf_err_set(err, DHAF_EDENIED,
                            "%s: %s is a prober's credential, which may only call the Prober "
                            "service",
                            what, who->name);
    if (who->role < need)
        return dhaf_err_set(err, DHAF_EDENIED, "%s needs the %s role; %s has the %s role", what,
                            access_role_name(need), who->name, access_role_name(who->role));
    return 0;
}

void access_peer_addr(const char *peer, char *buf, size_t len)
{
    if (!peer || !*peer) {
        snprintf(buf, len, "?");
        return;
    }
    const char *p = peer;
    if (!strncmp(p, "ipv4:", 5) || !strncmp(p, "ipv6:", 5))
        p += 5;
    size_t n = strlen(p);
    if (*p == '[') { /* [v6]:port */
        const char *end = strchr(p, ']');
        n = end ? (size_t)(end - p - 1) : n - 1;
        p++;
    } else if (peer != p && strchr(p, ':')) { /* v4:port after a transport prefix */
        n = (size_t)(strrchr(p, ':') - p);
    }
    snprintf(buf, len, "%.*s", (int)n, p);
    if (!buf[0])
        snprintf(buf, len, "?");
}
