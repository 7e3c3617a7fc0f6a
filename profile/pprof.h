/*
 * pprof.h - the profile layer's internal interfaces: the profile.proto
 * builder (pprof.c), coroutine labels (labels.c), and the sinks every
 * profile, metric and debug-server writer shares.
 *
 * A collector (cpuprof.c, profiles.c) gathers stacks as raw PCs, as the
 * unwinder returns them: pc[0] is where the code stood (exact) when the
 * stack was taken from a signal context, every other pc is a return
 * address. It hands them to a builder on a normal thread (never inside a
 * signal handler, never with Ms frozen: the builder allocates and
 * symbolizes), which interns locations, functions and strings, gzips the
 * encoded proto and writes it.
 */
#ifndef WEFT_PPROF_H
#define WEFT_PPROF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ----------------------------------------------------------------- labels */

/*
 * A coroutine's labels: immutable once published, reference-counted.
 * A G holds one reference (g->labels, NULL: none); a spawn takes another
 * for the child; a CPU sample takes one in the signal handler (an atomic
 * increment is signal-safe, and the set cannot die meanwhile: the G that
 * holds it is the one the handler interrupted). Pairs are sorted by key.
 */
#define LABEL_MAX 64
#define LABEL_LEN 255
struct weft__labels {
    _Atomic int32_t ref;
    int32_t n;
    struct weft__labels *next; /* profiles.c's deferred frees */
    struct {
        const char *k, *v; /* point into the same allocation */
    } kv[];
};
void weft__labels_ref(struct weft__labels *l);   /* l may be NULL */
void weft__labels_unref(struct weft__labels *l); /* l may be NULL */
/* Reading another G's labels while that G may run (a snapshot whose
 * freeze some M did not answer): between read_begin and read_end no set
 * is freed, so a pointer loaded from g->labels stays valid memory, and
 * tryref takes a reference unless the set already died (NULL then).
 * begin/end take a lock: call them outside a freeze. */
void weft__labels_read_begin(void);
void weft__labels_read_end(void);
struct weft__labels *weft__labels_tryref(struct weft__labels *l);
struct g;
/* weft__labels_of - tryref of gp's set, loaded with acquire. Out of line
 * on purpose: weft__gstacks is not instrumented for TSan (RACY), and the
 * acquire that orders the set's contents must be seen. */
struct weft__labels *weft__labels_of(struct g *gp);

/* ---------------------------------------------------------------- builder */

enum pprof_kind {
    PPROF_CPU,          /* samples/count, cpu/nanoseconds */
    PPROF_GOROUTINE,    /* goroutine/count */
    PPROF_THREADCREATE, /* threadcreate/count */
    PPROF_BLOCK,        /* contentions/count, delay/nanoseconds */
    PPROF_MUTEX,        /* contentions/count, delay/nanoseconds */
};

/* Pseudo-PCs, below any mapping, that the builder and the text writers
 * name (weft__pprof_pseudo): time spent in weft's scheduler (a CPU
 * sample taken on an M's own stack), and a coroutine whose stack no
 * snapshot could read (running on an M that did not answer the freeze:
 * the dump's "stack unavailable"). A sample with no location at all
 * would count in pprof's total and under no node. */
#define PPROF_PC_SCHED ((uintptr_t)1)
#define PPROF_PC_UNAVAILABLE ((uintptr_t)2)
const char *weft__pprof_pseudo(uintptr_t pc); /* its name, or NULL */

struct pprof;
/*
 * weft__pprof_new - a builder for one profile of kind. period: the
 * sampling period (CPU: ns between samples; others 1), start: wall-clock
 * ns since the epoch (time_nanos), duration: ns (CPU; else 0). NULL when
 * out of memory.
 */
struct pprof *weft__pprof_new(enum pprof_kind kind, int64_t period,
                              int64_t start, int64_t duration);
/*
 * weft__pprof_add - one sample: n pcs, leaf first; exact: pc[0] is where
 * the code stood, not a return address; values: as many as the kind's
 * sample types; labels: may be NULL (the builder takes no reference; keep
 * l alive until weft__pprof_write). Identical stacks are not merged:
 * collectors aggregate before. Returns 0 or WEFT_ENOMEM.
 */
int weft__pprof_add(struct pprof *b, const uintptr_t *pc, int n, bool exact,
                    const int64_t *values, const struct weft__labels *l);
/* weft__pprof_write - encode, gzip and write the profile to fd (fd < 0:
 * nothing), then free b. Returns 0 or a negative errno. */
int weft__pprof_write(struct pprof *b, int fd);
void weft__pprof_free(struct pprof *b);

/* ------------------------------------------------------------------ sinks */

/*
 * weft__writeall - write all n bytes to fd: a blocking fd directly; on
 * EAGAIN (a non-blocking fd), waits with weft_fd_wait on a coroutine
 * (WEFT_EBUSY if another coroutine waits to write fd), with poll(2)
 * elsewhere. Returns 0 or a negative errno.
 */
int weft__writeall(int fd, const void *buf, size_t n);

/* weft__fdlist - the fds open now (from /proc/self/fd, without the
 * listing's own), ascending, in *out (malloc'd). Returns the count,
 * WEFT_ENOMEM, or -ENOENT without /proc. weft__fdtarget - what fd links
 * to there ("socket:[123]", a path), "" if it is gone. */
long weft__fdlist(int **out);
void weft__fdtarget(int fd, char *buf, size_t cap);

/* A growing text buffer (p NUL-terminated once anything is put), for the
 * text forms of profiles, metrics and leak reports. oom: an allocation
 * failed; later puts do nothing and the text is cut. Free p. */
struct sbuf {
    char *p;
    size_t n, cap;
    bool oom;
};
void weft__sputn(struct sbuf *b, const char *s, size_t n);
void weft__sputs(struct sbuf *b, const char *s);
__attribute__((format(printf, 2, 3))) void weft__sprint(struct sbuf *b,
                                                        const char *fmt,
                                                        ...);

#endif /* WEFT_PPROF_H */
