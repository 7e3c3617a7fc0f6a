/*
 * metrics.c - the runtime's metrics: weft_metrics_read (numbers) and
 * weft_metrics_write (Prometheus text exposition 0.0.4, what /metrics
 * serves), the scheduling-latency histogram, the process gauges.
 *
 * Where the figures come from:
 *  - Hot-path counters live in each P (struct pmetrics, runtime.h),
 *    written by the P's owner with relaxed load + store (no lock prefix,
 *    no line shared with another core) and summed here: coroutines
 *    created and ended (live = created - ended), steals, mutex wait,
 *    the latency histogram.
 *  - Context switches cost nothing extra: execute already bumps the P's
 *    32-bit schedtick. sysmon widens it every busy tick into
 *    pmetrics.ticks, whose low 32 bits equal schedtick when written; a
 *    reader adds the ticks since (schedtick - low bits, modulo 2^32). It
 *    is exact as long as a P does not run 2^32 ticks between two sysmon
 *    ticks (which come every 10 ms at most while a P is busy).
 *  - Scheduling latency, as Go's gTrackingPeriod: a G made runnable
 *    while its run count (g->runs) is 0 modulo METRICS_TRACK_PERIOD is
 *    stamped with the clock; execute, seeing the same count, calls
 *    weft__metrics_schedlat. Go samples 1 in 8; a weft switch costs ~5
 *    ns against Go's ~55, and two clock reads (~28 ns each here) in 8
 *    switches would double it, so we sample 1 in 256 (~0.2 ns a switch).
 *  - Global words: sched.mcount (threads), sched.nhandoff (sysmon's
 *    syscall retakes), netpoll's waiter count.
 *  - Process gauges as client_golang's process collector: /proc/self/stat,
 *    /proc/self/fd, getrlimit, /proc/stat's btime.
 *
 * Invariants:
 *  1. Reading never stops or locks the scheduler: every field is read
 *     with relaxed atomic loads (schedtrace.c's rule); Ps are immutable
 *     while the runtime runs. Figures are approximate against each other
 *     and a live count is clamped at 0 (created and ended are read from
 *     different Ps at different moments).
 *  2. A histogram's count is the sum of its bucket counts as read, so the
 *     text's le="+Inf" bucket always equals _count and buckets are
 *     cumulative, whatever races the read had.
 *  3. The text is built in memory and written at once; families are
 *     sorted by name at write time, so a later family (the leak
 *     detector's gauges) is one more row in families[].
 *
 * Rejected: global atomic counters for switches and spawns (a shared
 * line bounced between cores on every switch); a lock-step snapshot
 * (would need the scheduler stopped).
 */
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "pprof.h"
#include "runtime.h"

_Static_assert(METRICS_LAT_BUCKETS == WEFT_METRICS_LAT_BUCKETS,
               "runtime.h and weft.h disagree on the latency buckets");
_Static_assert((METRICS_TRACK_PERIOD & (METRICS_TRACK_PERIOD - 1)) == 0,
               "a power of two: runs % PERIOD is a mask");

/* The first published struct's size: smaller callers are refused. */
#define METRICS_SIZE_V1                                                        \
    (offsetof(struct weft_metrics, process_start_time_ns) + sizeof(int64_t))

/* Upper bounds in ns: 1-2-5 from 100 ns to 1 s, then +Inf. */
static const int64_t latbounds[METRICS_LAT_BUCKETS] = {
    100,       200,       500,       1000,      2000,      5000,
    10000,     20000,     50000,     100000,    200000,    500000,
    1000000,   2000000,   5000000,   10000000,  20000000,  50000000,
    100000000, 200000000, 500000000, 1000000000, INT64_MAX,
};

/* ------------------------------------------------------------- writers */

/* weft__metrics_schedlat - gp was stamped runnable; it runs now on pp.
 * Called from execute (owner of pp), cold: 1 in METRICS_TRACK_PERIOD. */
__attribute__((noinline, cold)) void weft__metrics_schedlat(struct p *pp,
                                                            struct g *gp)
{
    if (gp->runnableat == 0)
        return; /* made runnable by a path that does not stamp */
    int64_t d = weft__nanotime() - gp->runnableat;
    gp->runnableat = 0;
    if (d < 0)
        d = 0;
    int i = 0;
    while (d > latbounds[i])
        i++; /* ends at the INT64_MAX bound */
    weft__pstat_add(&pp->metrics.lat[i], 1);
    weft__pstat_add(&pp->metrics.latsum, (uint64_t)d);
}

/* weft__metrics_mutexwait - a sync-object waiter blocked ns. Runs on the
 * waiter after it resumed, so its M holds a P it owns. */
void weft__metrics_mutexwait(int64_t ns)
{
    struct m *mp = weft__getm();
    if (mp == NULL || mp->p == NULL || ns <= 0)
        return;
    weft__pstat_add(&mp->p->metrics.mutexwait, (uint64_t)ns);
}

/* weft__metrics_tick - widen each P's schedtick (see the top). sysmon
 * only: it is the only writer of pmetrics.ticks. */
void weft__metrics_tick(void)
{
    for (int32_t i = 0; i < weft__gomaxprocs; i++) {
        struct p *pp = weft__allp[i];
        uint64_t w = __atomic_load_n(&pp->metrics.ticks, __ATOMIC_RELAXED);
        uint32_t t = LOAD(&pp->schedtick);
        __atomic_store_n(&pp->metrics.ticks, w + (uint32_t)(t - (uint32_t)w),
                         __ATOMIC_RELAXED);
    }
}

/* ------------------------------------------------------------- reading */

/* sched.mcount is a plain word written under sched.lock; read it racily
 * as schedtrace.c does, and tell TSan (invariant 1). */
__attribute__((no_sanitize("thread"))) static int32_t mcount(void)
{
    return __atomic_load_n(&weft__sched.mcount, __ATOMIC_RELAXED);
}

static uint64_t rd(const uint64_t *f)
{
    return __atomic_load_n(f, __ATOMIC_RELAXED);
}

/* procstat - the process figures into m; -1 where unavailable. */
static void procstat(struct weft_metrics *m)
{
    m->process_cpu_ns = m->process_virtual_memory_bytes = -1;
    m->process_resident_memory_bytes = m->process_start_time_ns = -1;
    m->process_open_fds = m->process_max_fds = -1;
    m->process_virtual_memory_max_bytes = -1;

    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    char buf[1024];
    int fd = open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    /* Fields after the command name, which may hold spaces and ')'. */
    char *p = n > 0 ? (buf[n] = '\0', strrchr(buf, ')')) : NULL;
    if (p != NULL && tck > 0) {
        unsigned long long utime, stime, start, vsize;
        long long rss;
        /* state(3) ... utime(14) stime(15) ... starttime(22) vsize(23)
         * rss(24) */
        if (sscanf(p + 1,
                   " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu"
                   " %*d %*d %*d %*d %*d %*d %llu %llu %lld",
                   &utime, &stime, &start, &vsize, &rss) == 5) {
            m->process_cpu_ns =
                (int64_t)((utime + stime) * (1000000000ull / (unsigned)tck));
            m->process_virtual_memory_bytes = (int64_t)vsize;
            m->process_resident_memory_bytes = (int64_t)(rss * page);
            /* starttime is in ticks since boot: add /proc/stat's btime,
             * as the procfs package does. */
            FILE *f = fopen("/proc/stat", "re");
            char line[256];
            long long btime = -1;
            while (f != NULL && fgets(line, sizeof line, f) != NULL)
                if (sscanf(line, "btime %lld", &btime) == 1)
                    break;
            if (f != NULL)
                fclose(f);
            if (btime >= 0)
                m->process_start_time_ns =
                    btime * 1000000000ll +
                    (int64_t)(start * (1000000000ull / (unsigned)tck));
        }
    }
    int *fds;
    long nfd = weft__fdlist(&fds);
    if (nfd >= 0) {
        free(fds);
        m->process_open_fds = nfd + 1; /* the listing's own fd, as Go */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
        m->process_max_fds = rl.rlim_cur == RLIM_INFINITY
                                 ? INT64_MAX
                                 : (int64_t)rl.rlim_cur;
    if (getrlimit(RLIMIT_AS, &rl) == 0)
        m->process_virtual_memory_max_bytes =
            rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > INT64_MAX
                ? INT64_MAX
                : (int64_t)rl.rlim_cur;
}

/* collect - every figure into m (the whole current struct). Runtime on. */
static void collect(struct weft_metrics *m)
{
    memset(m, 0, sizeof *m);
    uint64_t created = 0, exited = 0;
    int32_t np = weft__gomaxprocs;
    for (int32_t i = 0; i < np; i++) {
        struct pmetrics *pm = &weft__allp[i]->metrics;
        created += rd(&pm->created);
        exited += rd(&pm->exited);
        m->steals += rd(&pm->steals);
        m->mutex_wait_ns += (int64_t)rd(&pm->mutexwait);
        m->sched_lat_sum_ns += (int64_t)rd(&pm->latsum);
        for (int b = 0; b < METRICS_LAT_BUCKETS; b++)
            m->sched_lat_counts[b] += rd(&pm->lat[b]);
        uint64_t w = rd(&pm->ticks);
        uint32_t t = LOAD(&weft__allp[i]->schedtick);
        m->context_switches += w + (uint32_t)(t - (uint32_t)w);
    }
    for (int b = 0; b < METRICS_LAT_BUCKETS; b++) {
        m->sched_lat_count += m->sched_lat_counts[b]; /* invariant 2 */
        m->sched_lat_bounds_ns[b] = latbounds[b];
    }
    m->coroutines = created > exited ? (int64_t)(created - exited) : 0;
    m->coroutines_created = created;
    m->threads = mcount();
    m->procs = np;
    m->syscall_handoffs = LOAD(&weft__sched.nhandoff);
    m->netpoll_waiters = weft__netpoll_nwaiters();
    procstat(m);
    weft__leakcheck_metrics(m);
}

WEFT_EXTERN int weft_metrics_read(struct weft_metrics *m, size_t size)
{
    if (m == NULL || size < METRICS_SIZE_V1 || size > INT32_MAX)
        return WEFT_EINVAL;
    if (!weft__runtime_on())
        return WEFT_ENORUNTIME;
    struct weft_metrics all;
    collect(&all);
    size_t n = size < sizeof all ? size : sizeof all;
    memcpy(m, &all, n);
    if (size > n)
        memset((char *)m + n, 0, size - n);
    return (int)n;
}

/* ---------------------------------------------------------------- text */

static void putu(struct sbuf *o, uint64_t v)
{
    char b[24];
    weft__sputn(o, b, (size_t)snprintf(b, sizeof b, "%llu", (unsigned long long)v));
}

/*
 * weft__metrics_fmtg - v as Go's strconv.FormatFloat(v, 'g', -1, 64),
 * which expfmt uses: the shortest digits that read back as v; exponent form when the
 * decimal exponent is < -4 or >= 6 (Go's eprec for the shortest form),
 * with at least two exponent digits ("8.163328e+06", "1e-07"), else
 * plain ("123456", "0.0001"); "+Inf", "-Inf", "NaN".
 */
void weft__metrics_fmtg(char *out, size_t cap, double v)
{
    if (isnan(v)) {
        snprintf(out, cap, "NaN");
        return;
    }
    if (isinf(v)) {
        snprintf(out, cap, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    if (v == 0) {
        snprintf(out, cap, signbit(v) ? "-0" : "0");
        return;
    }
    char e[40];
    for (int prec = 0; prec < 17; prec++) {
        snprintf(e, sizeof e, "%.*e", prec, v);
        if (strtod(e, NULL) == v)
            break;
    }
    /* e: [-]d[.ddd]e[+-]XX */
    const char *s = e;
    bool neg = *s == '-';
    if (neg)
        s++;
    char digs[24];
    int nd = 0;
    for (; *s != 'e'; s++)
        if (*s != '.')
            digs[nd++] = *s;
    while (nd > 1 && digs[nd - 1] == '0')
        nd--;
    int exp = atoi(s + 1);
    size_t k = 0;
    char *w = out;
#define OUT(c) (k + 1 < cap ? (void)(w[k++] = (c)) : (void)0)
    if (neg)
        OUT('-');
    if (exp < -4 || exp >= 6) {
        OUT(digs[0]);
        if (nd > 1) {
            OUT('.');
            for (int i = 1; i < nd; i++)
                OUT(digs[i]);
        }
        OUT('e');
        OUT(exp < 0 ? '-' : '+');
        int a = exp < 0 ? -exp : exp;
        if (a >= 100)
            OUT((char)('0' + a / 100));
        OUT((char)('0' + a / 10 % 10));
        OUT((char)('0' + a % 10));
    } else if (exp < 0) {
        OUT('0');
        OUT('.');
        for (int i = -1; i > exp; i--)
            OUT('0');
        for (int i = 0; i < nd; i++)
            OUT(digs[i]);
    } else {
        for (int i = 0; i <= exp; i++)
            OUT(i < nd ? digs[i] : '0');
        if (nd > exp + 1) {
            OUT('.');
            for (int i = exp + 1; i < nd; i++)
                OUT(digs[i]);
        }
    }
#undef OUT
    w[k] = '\0';
}

static void putf(struct sbuf *o, double v)
{
    char b[48];
    weft__metrics_fmtg(b, sizeof b, v);
    weft__sputs(o, b);
}

enum kind { GAUGE, COUNTER, HISTOGRAM };
static const char *const kindname[] = {"gauge", "counter", "histogram"};

/*
 * A family: name, help, kind, and where its value is in struct
 * weft_metrics (an int64_t or uint64_t; scale: divide by it, 1e9 for ns
 * to seconds: a division of integers is correctly rounded, so 100 ns is
 * 1e-07, where 100 * 1e-9 is 1.0000000000000001e-07). A histogram reads the sched_lat_* fields. A family
 * whose value is negative (-1: unavailable) is left out.
 */
struct family {
    const char *name, *help;
    enum kind kind;
    size_t off;
    bool isunsigned;
    double scale;
    const char *labels; /* "{k=\"v\"}" of one sample of a labelled
                         * family (rows with the same name, one HELP/TYPE
                         * for them all), or NULL */
};

#define F(n, h, k, field, sc)                                                  \
    {n, h, k, offsetof(struct weft_metrics, field),                            \
     _Generic(((struct weft_metrics *)0)->field, uint64_t: true,               \
              default: false),                                                 \
     sc, NULL}
#define FL(n, h, field, l)                                                     \
    {n, h, GAUGE, offsetof(struct weft_metrics, field), false, 1, l}

static const struct family families[] = {
    F("weft_coroutines", "Number of coroutines that currently exist.", GAUGE,
      coroutines, 1),
    F("weft_threads", "Number of OS threads (Ms) created to run coroutines.",
      GAUGE, threads, 1),
    F("weft_procs", "Number of Ps: coroutines that can run at once "
                    "(WEFTMAXPROCS).",
      GAUGE, procs, 1),
    F("weft_coroutines_created_total",
      "Count of coroutines created since the runtime started.", COUNTER,
      coroutines_created, 1),
    F("weft_context_switches_total",
      "Count of scheduler ticks: a coroutine switched in, or a yield with "
      "nothing else to run.",
      COUNTER, context_switches, 1),
    F("weft_steals_total",
      "Count of successful steals of runnable coroutines from another P.",
      COUNTER, steals, 1),
    F("weft_syscall_handoffs_total",
      "Count of Ps taken from a thread blocked in a system call and handed "
      "to another thread.",
      COUNTER, syscall_handoffs, 1),
    F("weft_netpoll_waiters",
      "Number of coroutines parked waiting for a file descriptor.", GAUGE,
      netpoll_waiters, 1),
    F("weft_mutex_wait_seconds_total",
      "Approximate cumulative time coroutines have spent blocked on a "
      "weft_mutex_t or weft_rwmutex_t.",
      COUNTER, mutex_wait_ns, 1e9),
    F("weft_sched_latencies_seconds",
      "Distribution of the time coroutines have spent in the scheduler in a "
      "runnable state before actually running (1 in 256 transitions "
      "sampled).",
      HISTOGRAM, sched_lat_count, 1e9),
    F("process_cpu_seconds_total",
      "Total user and system CPU time spent in seconds.", COUNTER,
      process_cpu_ns, 1e9),
    F("process_open_fds", "Number of open file descriptors.", GAUGE,
      process_open_fds, 1),
    F("process_max_fds", "Maximum number of open file descriptors.", GAUGE,
      process_max_fds, 1),
    F("process_virtual_memory_bytes", "Virtual memory size in bytes.", GAUGE,
      process_virtual_memory_bytes, 1),
    F("process_virtual_memory_max_bytes",
      "Maximum amount of virtual memory available in bytes.", GAUGE,
      process_virtual_memory_max_bytes, 1),
    F("process_resident_memory_bytes", "Resident memory size in bytes.",
      GAUGE, process_resident_memory_bytes, 1),
    F("process_start_time_seconds",
      "Start time of the process since unix epoch in seconds.", GAUGE,
      process_start_time_ns, 1e9),
    /* The leak detector's (leakcheck.c). */
#define OPENFDS "Number of open file descriptors by kind (/proc/self/fd)."
    FL("weft_open_fds", OPENFDS, open_fds_socket, "{kind=\"socket\"}"),
    FL("weft_open_fds", OPENFDS, open_fds_pipe, "{kind=\"pipe\"}"),
    FL("weft_open_fds", OPENFDS, open_fds_file, "{kind=\"file\"}"),
    FL("weft_open_fds", OPENFDS, open_fds_other, "{kind=\"other\"}"),
#undef OPENFDS
    F("weft_fds", "Number of file descriptors opened or adopted through "
                  "weft and not yet closed.",
      GAUGE, weft_fds, 1),
#define SUSPECT "1 while the leak monitor (leakcheck) suspects a leak of " \
                "this kind."
    FL("weft_leak_suspected", SUSPECT, leak_suspected_socket,
       "{kind=\"socket\"}"),
    FL("weft_leak_suspected", SUSPECT, leak_suspected_coroutine,
       "{kind=\"coroutine\"}"),
    FL("weft_leak_suspected", SUSPECT, leak_suspected_fd, "{kind=\"fd\"}"),
#undef SUSPECT
};
#undef F
#undef FL

#define NFAM (sizeof families / sizeof families[0])

static int bynamecmp(const void *a, const void *b)
{
    const struct family *const *x = a, *const *y = b;
    int c = strcmp((*x)->name, (*y)->name);
    if (c != 0 || (*x)->labels == NULL || (*y)->labels == NULL)
        return c;
    return strcmp((*x)->labels, (*y)->labels);
}

static void histogram(struct sbuf *o, const struct family *f,
                      const struct weft_metrics *m)
{
    uint64_t cum = 0;
    for (int b = 0; b < METRICS_LAT_BUCKETS; b++) {
        cum += m->sched_lat_counts[b];
        weft__sputs(o, f->name);
        weft__sputs(o, "_bucket{le=\"");
        if (m->sched_lat_bounds_ns[b] == INT64_MAX)
            weft__sputs(o, "+Inf");
        else
            putf(o, (double)m->sched_lat_bounds_ns[b] / f->scale);
        weft__sputs(o, "\"} ");
        putu(o, cum);
        weft__sputs(o, "\n");
    }
    weft__sputs(o, f->name);
    weft__sputs(o, "_sum ");
    putf(o, (double)m->sched_lat_sum_ns / f->scale);
    weft__sputs(o, "\n");
    weft__sputs(o, f->name);
    weft__sputs(o, "_count ");
    putu(o, cum); /* invariant 2: equals le="+Inf" */
    weft__sputs(o, "\n");
}

/* render - the exposition text of m into o. */
static void render(struct sbuf *o, const struct weft_metrics *m)
{
    const struct family *sorted[NFAM];
    for (size_t i = 0; i < NFAM; i++)
        sorted[i] = &families[i];
    qsort(sorted, NFAM, sizeof sorted[0], bynamecmp);
    for (size_t i = 0; i < NFAM; i++) {
        const struct family *f = sorted[i];
        const char *at = (const char *)m + f->off;
        double v;
        if (f->isunsigned) {
            uint64_t u;
            memcpy(&u, at, sizeof u);
            v = (double)u;
        } else {
            int64_t s;
            memcpy(&s, at, sizeof s);
            if (s < 0)
                continue; /* unavailable */
            v = s == INT64_MAX && f->scale == 1 ? 18446744073709551615.0
                                                : (double)s;
        }
        /* A labelled family's later rows share the first one's head. */
        if (f->labels == NULL || i == 0 ||
            strcmp(sorted[i - 1]->name, f->name) != 0) {
            weft__sputs(o, "# HELP ");
            weft__sputs(o, f->name);
            weft__sputs(o, " ");
            weft__sputs(o, f->help); /* ours: no '\\' or newline to escape */
            weft__sputs(o, "\n# TYPE ");
            weft__sputs(o, f->name);
            weft__sputs(o, " ");
            weft__sputs(o, kindname[f->kind]);
            weft__sputs(o, "\n");
        }
        if (f->kind == HISTOGRAM) {
            histogram(o, f, m);
            continue;
        }
        weft__sputs(o, f->name);
        if (f->labels != NULL)
            weft__sputs(o, f->labels);
        weft__sputs(o, " ");
        putf(o, v / f->scale);
        weft__sputs(o, "\n");
    }
}

WEFT_EXTERN int weft_metrics_write(int fd)
{
    if (fd < 0)
        return WEFT_EBADF;
    if (!weft__runtime_on())
        return WEFT_ENORUNTIME;
    struct weft_metrics m;
    collect(&m);
    struct sbuf o = {0};
    render(&o, &m);
    int rc = o.oom ? WEFT_ENOMEM : weft__writeall(fd, o.p, o.n);
    free(o.p);
    return rc;
}
