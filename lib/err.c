/* SPDX-License-Identifier: MIT */
/* Error codes table and struct dhaf_err helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dhaf/err.h"

const char *dhaf_strerror_name(int code)
{
    switch (code) {
#define DHAF_ERR_NAME(name, val, msg)                                                              \
    case val:                                                                                      \
        return #name;
        DHAF_ERRNO_MAP(DHAF_ERR_NAME)
#undef DHAF_ERR_NAME
    }
    return "UNKNOWN";
}

const char *dhaf_strerror(int code)
{
    switch (code) {
#define DHAF_ERR_TEXT(name, val, msg)                                                              \
    case val:                                                                                      \
        return msg;
        DHAF_ERRNO_MAP(DHAF_ERR_TEXT)
#undef DHAF_ERR_TEXT
    }
    return "unknown error";
}

int dhaf_err_set(struct dhaf_err *err, int code, const char *fmt, ...)
{
    if (!err)
        return code;
    /* Format aside first: callers may pass err->msg itself as an argument. */
    char buf[DHAF_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    err->code = code;
    err->status = 0;
    memcpy(err->msg, buf, sizeof(buf));
    return code;
}

void dhaf_err_clear(struct dhaf_err *err)
{
    if (!err)
        return;
    err->code = DHAF_EOK;
    err->status = 0;
    err->msg[0] = '\0';
}
