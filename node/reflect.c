/* SPDX-License-Identifier: MIT */
/* Server reflection from the embedded FileDescriptorSet. The set is read with a small
 * protobuf wire walker (only the names it needs: files, packages, imports, services,
 * methods, messages and their fields, enums), once, into an index; requests are answered
 * from it. Reflection asks for the read role like the other dhaf.v1 reads (the auth hook of
 * api.c): it reveals only the API's shape, but a credential-less caller has no use for it.
 * Each stream holds a worker thread while it is open: at most REFLECT_MAX_STREAMS at once, and
 * one left idle for REFLECT_IDLE_MS is ended. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dhaf/alloc.h"
#include "dhaf/log.h"
#include "dhaf_descriptors.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "reflect.h"

#define MAX_DEPTH  32   /* nesting of message types */
#define SYMBOL_MAX 1024 /* the longest name looked up */

struct rfile {
    const uint8_t *p; /* the serialized FileDescriptorProto, in the set */
    size_t n;
    char *name;
    char **deps; /* names of the files it imports */
    size_t n_deps;
};

struct rsym {
    char *name;
    size_t file;
};

struct reflect_index {
    struct rfile *files;
    size_t n_files;
    struct rsym *syms;
    size_t n_syms, cap_syms;
    char **services;
    size_t n_services;
};

/* ------------------------------------------------------------------ wire */

struct rd {
    const uint8_t *p, *end;
};

static bool rd_varint(struct rd *r, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && r->p < r->end; shift += 7) {
        uint8_t b = *r->p++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

/* The next field of r: 1 with its number and, for a length-delimited one, its bytes (*p, *n;
 * else *p NULL); 0 at the end; -1 when malformed. */
static int rd_field(struct rd *r, uint32_t *num, const uint8_t **p, size_t *n)
{
    if (r->p >= r->end)
        return 0;
    uint64_t tag, v;
    if (!rd_varint(r, &tag) || (tag >> 3) == 0 || (tag >> 3) > UINT32_MAX)
        return -1;
    *num = (uint32_t)(tag >> 3);
    *p = NULL;
    *n = 0;
    switch (tag & 7) {
    case 0:
        return rd_varint(r, &v) ? 1 : -1;
    case 1:
        if (r->end - r->p < 8)
            return -1;
        r->p += 8;
        return 1;
    case 5:
        if (r->end - r->p < 4)
            return -1;
        r->p += 4;
        return 1;
    case 2:
        if (!rd_varint(r, &v) || v > (uint64_t)(r->end - r->p))
            return -1;
        *p = r->p;
        *n = (size_t)v;
        r->p += v;
        return 1;
    default: /* groups: not in a descriptor dhaf makes */
        return -1;
    }
}

/* The first field num of message (p, n) as a string; NULL when absent or malformed. */
static char *rd_string(const uint8_t *p, size_t n, uint32_t want)
{
    struct rd r = {p, p + n};
    uint32_t num;
    const uint8_t *v;
    size_t vn;
    int rc;
    while ((rc = rd_field(&r, &num, &v, &vn)) == 1)
        if (num == want && v)
            return memchr(v, 0, vn) ? NULL : dhaf_xstrndup((const char *)v, vn);
    return NULL;
}

/* ------------------------------------------------------------------ index */

static void add_sym(struct reflect_index *x, const char *scope, const char *name, size_t file)
{
    if (x->n_syms == x->cap_syms) {
        x->cap_syms = x->cap_syms ? 2 * x->cap_syms : 64;
        x->syms = dhaf_xreallocarray(x->syms, x->cap_syms, sizeof(*x->syms));
    }
    x->syms[x->n_syms].name = scope[0] ? dhaf_xasprintf("%s.%s", scope, name) : dhaf_xstrdup(name);
    x->syms[x->n_syms++].file = file;
}

/* Names of the elements of field num of (p, n) (messages with a name at field 1), each
 * added as scope.name. Returns 0 or -1 when malformed. */
static int add_names(struct reflect_index *x, const char *scope, const uint8_t *p, size_t n,
                     uint32_t want, size_t file)
{
    struct rd r = {p, p + n};
    uint32_t num;
    const uint8_t *v;
    size_t vn;
    int rc;
    while ((rc = rd_field(&r, &num, &v, &vn)) == 1) {
        if (num != want || !v)
            continue;
        char *name = rd_string(v, vn, 1);
        if (!name)
            return -1;
        add_sym(x, scope, name, file);
        free(name);
    }
    return rc;
}

/* An EnumDescriptorProto in scope: the enum, and its values (which C++ scoping puts beside
 * the enum, in scope). */
static int scan_enum(struct reflect_index *x, const char *scope, const uint8_t *p, size_t n,
                     size_t file)
{
    char *name = rd_string(p, n, 1);
    if (!name)
        return -1;
    add_sym(x, scope, name, file);
    free(name);
    return add_names(x, scope, p, n, 2, file);
}

/* A DescriptorProto in scope: the message, its fields, nested messages and enums. */
static int scan_message(struct reflect_index *x, const char *scope, const uint8_t *p, size_t n,
                        size_t file, int depth)
{
    char *name = rd_string(p, n, 1);
    if (!name || depth > MAX_DEPTH) {
        free(name);
        return -1;
    }
    add_sym(x, scope, name, file);
    free(name);
    char *full = dhaf_xstrdup(x->syms[x->n_syms - 1].name);
    struct rd r = {p, p + n};
    uint32_t num;
    const uint8_t *v;
    size_t vn;
    int rc;
    while ((rc = rd_field(&r, &num, &v, &vn)) == 1) {
        if (!v)
            continue;
        if (num == 2 || num == 6) { /* a field, an extension declared inside */
            char *f = rd_string(v, vn, 1);
            if (f)
                add_sym(x, full, f, file);
            free(f);
            rc = f ? 0 : -1;
        } else if (num == 3) {
            rc = scan_message(x, full, v, vn, file, depth + 1);
        } else if (num == 4) {
            rc = scan_enum(x, full, v, vn, file);
        }
        if (rc < 0)
            break;
    }
    free(full);
    return rc < 0 ? -1 : 0;
}

/* A ServiceDescriptorProto in the package: the service and its methods. */
static int scan_service(struct reflect_index *x, const char *pkg, const uint8_t *p, size_t n,
                        size_t file)
{
    char *name = rd_string(p, n, 1);
    if (!name)
        return -1;
    add_sym(x, pkg, name, file);
    free(name);
    char *full = dhaf_xstrdup(x->syms[x->n_syms - 1].name);
    x->services = dhaf_xreallocarray(x->services, x->n_services + 1, sizeof(*x->services));
    x->services[x->n_services++] = dhaf_xstrdup(full);
    int rc = add_names(x, full, p, n, 2, file);
    free(full);
    return rc;
}

/* One FileDescriptorProto: its name, imports and symbols. */
static int scan_file(struct reflect_index *x, size_t file, struct dhaf_err *err)
{
    struct rfile *f = &x->files[file];
    f->name = rd_string(f->p, f->n, 1);
    char *pkg = rd_string(f->p, f->n, 2);
    if (!pkg)
        pkg = dhaf_xstrdup("");
    struct rd r = {f->p, f->p + f->n};
    uint32_t num;
    const uint8_t *v;
    size_t vn;
    int rc = f->name ? 1 : -1;
    while (rc >= 0 && (rc = rd_field(&r, &num, &v, &vn)) == 1) {
        if (!v)
            continue;
        if (num == 3) {
            f->deps = dhaf_xreallocarray(f->deps, f->n_deps + 1, sizeof(*f->deps));
            f->deps[f->n_deps++] = dhaf_xstrndup((const char *)v, vn);
        } else if (num == 4) {
            rc = scan_message(x, pkg, v, vn, file, 0);
        } else if (num == 5) {
            rc = scan_enum(x, pkg, v, vn, file);
        } else if (num == 6) {
            rc = scan_service(x, pkg, v, vn, file);
        } else if (num == 7) {
            char *e = rd_string(v, vn, 1);
            if (e)
                add_sym(x, pkg, e, file);
            rc = e ? 0 : -1;
            free(e);
        }
    }
    free(pkg);
    if (rc < 0)
        return dhaf_err_set(err, DHAF_EINVAL,
                            "descriptor set: file %zu (%s) is not a well-formed "
                            "FileDescriptorProto",
                            file, f->name ? f->name : "no name");
    return 0;
}

static int sym_cmp(const void *a, const void *b)
{
    return strcmp(((const struct rsym *)a)->name, ((const struct rsym *)b)->name);
}

struct reflect_index *reflect_index_new(const uint8_t *set, size_t len, struct dhaf_err *err)
{
    struct reflect_index *x = dhaf_xcalloc(1, sizeof(*x));
    struct rd r = {set, set + len};
    uint32_t num;
    const uint8_t *v;
    size_t vn;
    int rc;
    while ((rc = rd_field(&r, &num, &v, &vn)) == 1) {
        if (num != 1 || !v)
            continue;
        x->files = dhaf_xreallocarray(x->files, x->n_files + 1, sizeof(*x->files));
        x->files[x->n_files++] = (struct rfile){.p = v, .n = vn};
    }
    if (rc < 0) {
        dhaf_err_set(err, DHAF_EINVAL, "descriptor set: malformed after file %zu", x->n_files);
        reflect_index_free(x);
        return NULL;
    }
    for (size_t i = 0; i < x->n_files; i++) {
        if (scan_file(x, i, err) != 0) {
            reflect_index_free(x);
            return NULL;
        }
    }
    if (x->n_syms) /* qsort and bsearch take no NULL array, even of 0 elements */
        qsort(x->syms, x->n_syms, sizeof(*x->syms), sym_cmp);
    return x;
}

void reflect_index_free(struct reflect_index *x)
{
    if (!x)
        return;
    for (size_t i = 0; i < x->n_files; i++) {
        free(x->files[i].name);
        for (size_t d = 0; d < x->files[i].n_deps; d++)
            free(x->files[i].deps[d]);
        free(x->files[i].deps);
    }
    for (size_t i = 0; i < x->n_syms; i++)
        free(x->syms[i].name);
    for (size_t i = 0; i < x->n_services; i++)
        free(x->services[i]);
    free(x->files);
    free(x->syms);
    free(x->services);
    free(x);
}

size_t reflect_n_services(const struct reflect_index *x)
{
    return x->n_services;
}

const char *reflect_service(const struct reflect_index *x, size_t i)
{
    return i < x->n_services ? x->services[i] : NULL;
}

size_t reflect_n_files(const struct reflect_index *x)
{
    return x->n_files;
}

void reflect_file(const struct reflect_index *x, size_t i, const uint8_t **p, size_t *n)
{
    *p = x->files[i].p;
    *n = x->files[i].n;
}

static bool file_by_name(const struct reflect_index *x, const char *name, size_t *out)
{
    for (size_t i = 0; i < x->n_files; i++)
        if (x->files[i].name && strcmp(x->files[i].name, name) == 0) {
            *out = i;
            return true;
        }
    return false;
}

size_t reflect_lookup(const struct reflect_index *x, const char *name, bool by_symbol, size_t *out,
                      size_t room)
{
    size_t first;
    if (by_symbol) {
        if (!x->n_syms)
            return 0;
        struct rsym key = {.name = (char *)name};
        const struct rsym *s = bsearch(&key, x->syms, x->n_syms, sizeof(*x->syms), sym_cmp);
        if (!s)
            return 0;
        first = s->file;
    } else if (!file_by_name(x, name, &first)) {
        return 0;
    }
    if (room == 0)
        return 0;
    /* the file, then its imports breadth first, each once (out[] is the queue) */
    size_t n = 0;
    out[n++] = first;
    for (size_t q = 0; q < n; q++) {
        const struct rfile *f = &x->files[out[q]];
        for (size_t d = 0; d < f->n_deps && n < room; d++) {
            size_t k;
            bool seen = false;
            if (!file_by_name(x, f->deps[d], &k))
                continue; /* --include_imports puts every import in the set */
            for (size_t j = 0; j < n && !seen; j++)
                seen = out[j] == k;
            if (!seen)
                out[n++] = k;
        }
    }
    return n;
}

/* ------------------------------------------------------------------ the service */

static pthread_once_t index_once = PTHREAD_ONCE_INIT;
static struct reflect_index *the_index; /* of the embedded set; lives as long as the process */
static atomic_int streams;

static void index_build(void)
{
    struct dhaf_err err;
    dhaf_err_clear(&err);
    the_index = reflect_index_new(dhaf_descriptor_set, dhaf_descriptor_set_len, &err);
    if (!the_index)
        DHAF_LOG(DHAF_LOG_ERROR, "event=reflection-unavailable reason=\"%s\"", err.msg);
}

typedef Grpc__Reflection__V1__ServerReflectionRequest Req;
typedef Grpc__Reflection__V1__ServerReflectionResponse Resp;

/* The reply to one request (sent by the caller). */
static int answer(const Req *req, struct dhaf_rpc_call *call, struct dhaf_err *err)
{
    const struct reflect_index *x = the_index;
    Resp resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    resp.valid_host = req->host;
    resp.original_request = (Req *)req;
    Grpc__Reflection__V1__FileDescriptorResponse fd =
        GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1__ListServiceResponse ls =
        GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1__ExtensionNumberResponse en =
        GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
    Grpc__Reflection__V1__ErrorResponse er = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1__ServiceResponse *svcs = NULL, **svcp = NULL;
    size_t *files = NULL;
    ProtobufCBinaryData *blobs = NULL;
    char msg[600], q[300];
    const char *name = NULL;
    bool by_symbol = false;

    switch (req->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        svcs = dhaf_xcalloc(x->n_services + 1, sizeof(*svcs));
        svcp = dhaf_xcalloc(x->n_services + 1, sizeof(*svcp));
        for (size_t i = 0; i < x->n_services; i++) {
            grpc__reflection__v1__service_response__init(&svcs[i]);
            svcs[i].name = x->services[i];
            svcp[i] = &svcs[i];
        }
        ls.n_service = x->n_services;
        ls.service = svcp;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp.list_services_response = &ls;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        name = req->file_by_filename;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        name = req->file_containing_symbol;
        by_symbol = true;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        /* dhaf's protos declare no extensions */
        snprintf(msg, sizeof(msg), "no extension %d of \"%s\" is known",
                 req->file_containing_extension ? req->file_containing_extension->extension_number
                                                : 0,
                 dhaf_log_quote(q, sizeof(q),
                                req->file_containing_extension &&
                                        req->file_containing_extension->containing_type
                                    ? req->file_containing_extension->containing_type
                                    : ""));
        er.error_code = dhaf_rpc_err_to_status(DHAF_ENOTFOUND);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE: {
        size_t one;
        if (reflect_lookup(x, req->all_extension_numbers_of_type, true, &one, 1)) {
            en.base_type_name = req->all_extension_numbers_of_type; /* none: an empty list */
            resp.message_response_case =
                GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            resp.all_extension_numbers_response = &en;
        } else {
            snprintf(msg, sizeof(msg), "type not found: \"%s\"",
                     dhaf_log_quote(q, sizeof(q), req->all_extension_numbers_of_type));
            er.error_code = dhaf_rpc_err_to_status(DHAF_ENOTFOUND);
        }
        break;
    }
    default:
        snprintf(msg, sizeof(msg), "the request asks for nothing this server knows (case %d)",
                 (int)req->message_request_case);
        er.error_code = dhaf_rpc_err_to_status(DHAF_EINVAL);
        break;
    }
    if (name) {
        files = dhaf_xcalloc(x->n_files + 1, sizeof(*files));
        size_t n =
            strlen(name) < SYMBOL_MAX ? reflect_lookup(x, name, by_symbol, files, x->n_files) : 0;
        if (n == 0) {
            snprintf(msg, sizeof(msg), "%s not found: \"%s\"", by_symbol ? "symbol" : "file",
                     dhaf_log_quote(q, sizeof(q), name));
            er.error_code = dhaf_rpc_err_to_status(DHAF_ENOTFOUND);
        } else {
            blobs = dhaf_xcalloc(n, sizeof(*blobs));
            for (size_t i = 0; i < n; i++) {
                const uint8_t *p;
                reflect_file(x, files[i], &p, &blobs[i].len);
                blobs[i].data = (uint8_t *)p;
            }
            fd.n_file_descriptor_proto = n;
            fd.file_descriptor_proto = blobs;
            resp.message_response_case =
                GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
            resp.file_descriptor_response = &fd;
        }
    }
    if (er.error_code) {
        er.error_message = msg;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp.error_response = &er;
    }
    int rc = dhaf_rpc_send(call, &resp.base, err);
    free(svcs);
    free(svcp);
    free(files);
    free(blobs);
    return rc;
}

int reflect_handler(void *ud, struct dhaf_rpc_call *call, const ProtobufCMessage *first,
                    struct dhaf_err *err)
{
    (void)ud;
    pthread_once(&index_once, index_build);
    if (!the_index)
        return dhaf_err_set(err, DHAF_EINTERNAL, "reflection is unavailable (see the node's log)");
    if (atomic_fetch_add(&streams, 1) >= REFLECT_MAX_STREAMS) {
        atomic_fetch_sub(&streams, 1);
        return dhaf_err_set(err, DHAF_ETOOBIG, "%d reflection streams already run on this node",
                            REFLECT_MAX_STREAMS);
    }
    int rc = answer((const Req *)first, call, err);
    while (rc == 0) {
        ProtobufCMessage *next = NULL;
        rc = dhaf_rpc_recv(call, &next, REFLECT_IDLE_MS, err);
        if (rc == DHAF_ETIMEOUT) {
            dhaf_err_set(err, DHAF_ETIMEOUT, "no reflection request for %d s; ending the stream",
                         REFLECT_IDLE_MS / 1000);
            break;
        }
        if (rc || !next)
            break; /* the client's side closed (OK), or it went away */
        rc = answer((const Req *)next, call, err);
        protobuf_c_message_free_unpacked(next, NULL);
    }
    atomic_fetch_sub(&streams, 1);
    /* a client that went away ends its stream, it is not an error of ours */
    return rc == DHAF_ECANCELLED ? 0 : rc;
}
