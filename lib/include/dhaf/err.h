/* SPDX-License-Identifier: MIT */
/* Error codes and the caller-provided error detail every dhaf function fills in. */
#ifndef DHAF_ERR_H
#define DHAF_ERR_H

#include <stddef.h>

/* X(name, value, message): one table for codes, names and default messages. */
#define DHAF_ERRNO_MAP(X)                                                                          \
    X(OK, 0, "ok")                                                                                 \
    X(INVAL, -1, "invalid argument")                                                               \
    X(CONFIG, -2, "invalid configuration")                                                         \
    X(IO, -3, "input/output error")                                                                \
    X(NOTFOUND, -4, "not found")                                                                   \
    X(EXISTS, -5, "already exists")                                                                \
    X(CONFLICT, -6, "conflict")                                                                    \
    X(TIMEOUT, -7, "deadline exceeded")                                                            \
    X(UNAVAILABLE, -8, "unavailable")                                                              \
    X(AUTH, -9, "authentication failed")                                                           \
    X(PROTO, -10, "protocol error")                                                                \
    X(UNKNOWN_OUTCOME, -11, "outcome unknown")                                                     \
    X(FENCED, -12, "no longer the leader")                                                         \
    X(TOOBIG, -13, "too large")                                                                    \
    X(INTERNAL, -14, "internal error")                                                             \
    X(COMPACTED, -15, "revision compacted")                                                        \
    X(CANCELLED, -16, "cancelled")                                                                 \
    X(DENIED, -17, "permission denied")

enum dhaf_errno {
#define DHAF_ERR_ENUM(name, val, msg) DHAF_E##name = (val),
    DHAF_ERRNO_MAP(DHAF_ERR_ENUM)
#undef DHAF_ERR_ENUM
};

#define DHAF_ERR_MSG_MAX 512

/* Detail of the last failure: a code and a message with context (file:line, URL, status). */
struct dhaf_err {
    int code;
    int status; /* the transport's own status when there is one: gRPC code, HTTP status */
    char msg[DHAF_ERR_MSG_MAX];
};

/** Name of a code ("EINVAL" style without the E: "INVAL"); never NULL. */
const char *dhaf_strerror_name(int code);

/** Default message of a code ("invalid argument"); never NULL. */
const char *dhaf_strerror(int code);

/**
 * Records code and a printf-style message in err (err may be NULL: then only the code is
 * returned). Returns code, so callers can write `return dhaf_err_set(err, DHAF_EINVAL, ...)`.
 */
int dhaf_err_set(struct dhaf_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/** Resets err to OK with an empty message. err may be NULL. */
void dhaf_err_clear(struct dhaf_err *err);

#endif
