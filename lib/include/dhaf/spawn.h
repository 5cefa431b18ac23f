/* SPDX-License-Identifier: MIT */
/* Running operators' programs: many children at once with posix_spawn (never fork: the process
 * is multi-threaded), output captured, a deadline each, the process group killed and reaped. */
#ifndef DHAF_SPAWN_H
#define DHAF_SPAWN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dhaf/cancel.h"

/* Output kept per program (stdout and stderr together); the rest is read and dropped. */
#define DHAF_PROC_OUT_MAX 4096

/* How a program ended. */
enum dhaf_proc_outcome {
    DHAF_PROC_EXITED,    /* it exited by itself: exit_code */
    DHAF_PROC_SIGNALED,  /* a signal that did not come from us killed it: signo */
    DHAF_PROC_TIMEOUT,   /* still running at timeout_ms: its process group was killed */
    DHAF_PROC_NOSTART,   /* it could not be started: err is the errno */
    DHAF_PROC_LOST,      /* its exit status was lost: SIGCHLD is ignored in this process, or
                            something else reaps with waitpid(-1) */
    DHAF_PROC_CANCELLED, /* cancel fired: its process group was killed (or it never started) */
};

/* One program to run, and what became of it. */
struct dhaf_proc {
    /* in: borrowed, must stay valid during dhaf_spawn_run_all() */
    const char *path;           /* the program, run directly: no shell, no PATH search */
    char *const *argv;          /* NULL-terminated, argv[0] included */
    char *const *envp;          /* NULL-terminated; NULL = this process's environ */
    uint32_t timeout_ms;        /* after this the process group is killed with SIGKILL (0 = 1 ms) */
    bool keep_group;            /* leave alive what it started in its group (default: killed when it
                                   exits, so a check leaves no process behind) */
    struct dhaf_cancel *cancel; /* when it fires, the process group is killed within 20 ms; a
                                   fired token starts nothing (NULL: none) */

    /* out */
    enum dhaf_proc_outcome outcome;
    int exit_code;       /* DHAF_PROC_EXITED */
    int signo;           /* DHAF_PROC_SIGNALED */
    int err;             /* DHAF_PROC_NOSTART: errno of pipe2 or posix_spawn */
    pid_t pid;           /* the child's pid, which is also its process group id; 0 if none */
    uint32_t elapsed_ms; /* from start to exit (or to the kill) */
    char out[DHAF_PROC_OUT_MAX + 1]; /* first DHAF_PROC_OUT_MAX bytes of output, NUL-ended */
    size_t out_len;
    bool out_truncated; /* it wrote more than DHAF_PROC_OUT_MAX bytes */
};

/**
 * Runs every program of procs[0..n) concurrently and returns when all have ended and been
 * reaped. Each child gets its own process group (pgid = its pid), stdin from /dev/null,
 * stdout and stderr into one pipe, default signal dispositions, an empty signal mask and no
 * other inherited descriptors. One poll() loop reads the outputs and a waitpid(WNOHANG)
 * sweep notices exits; at a child's deadline its whole group gets SIGKILL. After the child
 * is gone, the rest of its group is killed too (unless keep_group), and group members that
 * became our children are reaped as well. The first call makes this process a child
 * subreaper (orphans of its children come back to it), and every child gets DHAF_SPAWN_ID=
 * <pid>.<seq> in its environment, inherited by its descendants: at a deadline or a cancel,
 * every process carrying the run's mark is killed too (one scan of /proc, repeated every
 * 10 ms while more turn up), so `setsid` grandchildren do not outlive a timeout. After a
 * normal exit they are not looked for (a scan per run is too dear for a busy checker): they
 * run on as our adopted children. Adopted zombies nobody reaps within 1 s are reaped (at most
 * one scan of /proc a second). A descendant that clears its environment escapes the mark.
 *
 * The outputs are written into procs; the inputs are only read. Safe to call from several
 * threads at once: it waits only for its own children, never with waitpid(-1). A child that
 * survives SIGKILL for DHAF_SPAWN_KILL_GRACE_MS (stuck in the kernel) is left to be reaped by
 * a later call, so this never blocks for longer than the largest timeout plus that grace.
 *
 * Returns 0, or DHAF_EINVAL when an input is missing (then nothing is run).
 */
int dhaf_spawn_run_all(struct dhaf_proc *procs, size_t n);

/* How long a child killed with SIGKILL may take to disappear before it is left behind. */
#define DHAF_SPAWN_KILL_GRACE_MS 2000

/**
 * Writes the first non-empty line of p's output into buf (len bytes), trimmed, with control
 * characters replaced by spaces, cut to fit. Returns buf, or NULL when the output has no
 * non-blank line (buf then holds "").
 */
const char *dhaf_proc_first_line(const struct dhaf_proc *p, char *buf, size_t len);
/** The start of p's output (stdout and stderr) as one line: control characters and line breaks
 *  become " | " between the parts, cut to fit buf (never in a UTF-8 sequence). NULL when the
 *  program printed nothing but blanks (buf is then ""). */
const char *dhaf_proc_excerpt(const struct dhaf_proc *p, char *buf, size_t len);

/**
 * Describes how p ended, for operators: "exit code 3", "killed after 5 s", "killed by signal 11
 * (Segmentation fault)", "could not start: No such file or directory", "exit status lost",
 * "killed after 120 ms: cancelled".
 * Returns buf.
 */
const char *dhaf_proc_describe(const struct dhaf_proc *p, char *buf, size_t len);

/**
 * Makes an environment for a child: a copy of this process's environ where each names[i] is
 * set to values[i] (added, or replacing the inherited value). Caller frees with dhaf_env_free().
 * Names must not contain '='.
 */
char **dhaf_env_new(const char *const *names, const char *const *values, size_t n);

/** Frees what dhaf_env_new() returned. env may be NULL. */
void dhaf_env_free(char **env);

#endif
