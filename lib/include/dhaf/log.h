/* SPDX-License-Identifier: MIT */
/* Logging: one key=value line per event on stderr (or one JSON object), level-filtered. */
#ifndef DHAF_LOG_H
#define DHAF_LOG_H

#include <stddef.h>

enum dhaf_log_level {
    DHAF_LOG_DEBUG = 0,
    DHAF_LOG_INFO = 1,
    DHAF_LOG_WARN = 2,
    DHAF_LOG_ERROR = 3,
};

enum dhaf_log_format {
    DHAF_LOG_TEXT = 0, /* ts=... level=info <message> */
    DHAF_LOG_JSON = 1, /* {"ts":"...","level":"info","event":"...",...} */
};

/* Current threshold; read by DHAF_LOG before it evaluates any argument. */
extern enum dhaf_log_level dhaf_log_threshold;

/** Sets the threshold and output format (process-wide; call at start-up or on reload). */
void dhaf_log_setup(enum dhaf_log_level level, enum dhaf_log_format format);

/** Parses "debug|info|warn|error"; returns 0 or DHAF_EINVAL. */
int dhaf_log_level_parse(const char *s, enum dhaf_log_level *out);
/** Parses "text|json"; returns 0 or DHAF_EINVAL. */
int dhaf_log_format_parse(const char *s, enum dhaf_log_format *out);

/**
 * Writes one line. fmt produces `key=value key2="quoted value"` pairs; values with spaces are
 * quoted by the caller with "%s" (pass untrusted text through dhaf_log_quote). In JSON mode
 * the pairs become object members. Thread-safe (one write(2) per line).
 */
void dhaf_log_write(enum dhaf_log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/** Copies s into buf (of len bytes) escaping '"', '\\' and control characters, so it can
 *  stand inside a quoted log value; cuts long text. Returns buf. */
const char *dhaf_log_quote(char *buf, size_t len, const char *s);

#define DHAF_LOG(level, ...)                                                                       \
    do {                                                                                           \
        if ((level) >= dhaf_log_threshold)                                                         \
            dhaf_log_write((level), __VA_ARGS__);                                                  \
    } while (0)

#endif
