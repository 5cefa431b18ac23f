/* SPDX-License-Identifier: MIT */
/* Logging: one key=value line per event on stderr (or one JSON object), level-filtered, and
 * rate-limited lines for failures that repeat while their cause lasts. */
#ifndef DHAF_LOG_H
#define DHAF_LOG_H

#include <stdbool.h>
#include <stddef.h>

struct dhaf_clock;

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

/* ---- Rate-limited lines. A failure that repeats every round while its cause lasts (etcd
 * refusing writes: every vote, state and event write fails) is logged at most once per key per
 * DHAF_LOG_LIMIT_MS; the next line that passes says how many were held back (repeated=N). A
 * key is a stable name, the line's event (e.g. "state-not-written"). */

#define DHAF_LOG_LIMIT_MS   10000
#define DHAF_LOG_LIMIT_KEYS 64 /* distinct keys tracked; beyond, the rest share one slot */

/**
 * Says whether a line of key may be written now: the first one, and then the first one at
 * least DHAF_LOG_LIMIT_MS after the last one written. *repeated gets the number held back since
 * the last written line (0 for the first). A line held back is counted. Thread-safe; key is
 * borrowed for the call (copied when new, cut to 47 bytes).
 */
bool dhaf_log_limit(const char *key, unsigned long *repeated);

/** Writes like dhaf_log_write, with ` repeated=N` appended when repeated > 0. */
void dhaf_log_write_repeated(enum dhaf_log_level level, unsigned long repeated, const char *fmt,
                             ...) __attribute__((format(printf, 3, 4)));

/** Sets the clock the limiter reads (NULL: the system's monotonic clock; borrowed until the
 *  next call) and forgets every key: for unit tests in virtual time. */
void dhaf_log_limit_reset(const struct dhaf_clock *clock);

/* DHAF_LOG with at most one line per key per DHAF_LOG_LIMIT_MS (see dhaf_log_limit). The
 * arguments are evaluated only for a line that is written. */
#define DHAF_LOG_LIMITED(key, level, ...)                                                          \
    do {                                                                                           \
        unsigned long dhaf_log_rep_;                                                               \
        if ((level) >= dhaf_log_threshold && dhaf_log_limit((key), &dhaf_log_rep_))                \
            dhaf_log_write_repeated((level), dhaf_log_rep_, __VA_ARGS__);                          \
    } while (0)

#endif
