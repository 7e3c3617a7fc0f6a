/*
 * leakcheck.c - the run-time leak monitor: weft_leakcheck_start/stop,
 * WEFTDEBUG=leakcheck=SECONDS, the report on stderr, /debug/leaks
 * (weft_leakcheck_write) and the leak gauges of /metrics.
 *
 * Every period a thread of its own (not an M: it never holds a P, so no
 * coroutine waits for it) takes one sample:
 *  - the live Gs, counted into groups keyed by (spawn site, state), the
 *    state being the wait reason of a waiting G or the status of any
 *    other; per group the oldest wait start;
 *  - the process's open fds from /proc/self/fd by kind (socket, pipe,
 *    file: a path, other: anon inodes and the like);
 *  - the number of fds weft has open (weft__fds).
 * The last HIST samples are kept, per series and per group.
 *
 * The trend rule. The floor of a series at sample i is the smallest of
 * samples i-W+1..i. A series is growing when, over the last K periods,
 * its floor never fell, rose in at least K-1 of them, and rose in all by
 * at least max(MINGROW, floor/20), and the last W samples are all above
 * every one of the K before them. Load that rises and falls moves the
 * peaks and leaves the floor alone (a cycle of up to W periods leaves it
 * flat; a rise must last about W periods to pass both tests); a leak
 * lifts the floor for good. A single step up (a new steady load) lifts
 * the floor once, not K-1 times. Weakly growing: the floor never fell
 * and rose K-1 times, by any amount. With W = 8 and K = 4 a steady leak
 * is reported after 12 samples.
 * The verdict: coroutines growing and fds at least weakly (or the other
 * way round): socket/fd leak; coroutines alone: coroutine leak; fds
 * alone: fd leak outside coroutines. A verdict only upgrades to socket
 * while it lasts (a noisy period does not flip it back and forth), and
 * ends after K periods in which nothing grew.
 *
 * Reports: one block on stderr when a verdict starts or upgrades, again
 * when the leaked amount has doubled since the last block, and one line
 * when it ends. Only then are stacks read (weft__gstacks stops every M
 * for a moment): sampling itself reads the G registry racily, as
 * schedtrace does, and never stops the scheduler (the <= 1% budget).
 *
 * Invariants:
 *  1. lc.mu guards the samples, groups and verdict; it is held only to
 *     copy them in or out, never across a freeze, a symbolization or a
 *     write. lc.ctl serializes start and stop (and the join).
 *  2. The monitor thread exists only while a runtime runs: weft_main
 *     stops it (weft__leakcheck_exit) before joining any M, so the racy
 *     reads of the G registry never see it freed.
 *  3. The monitor thread blocks every signal: a SIGQUIT or SIGPROF is
 *     for the Ms, and a freeze signal must never land on it.
 *  4. Group table bounded (MAXGROUPS); a site that does not fit counts
 *     in the "(other)" group, so /metrics and the page stay bounded.
 *
 * Rejected: a coroutine as the monitor (it would be one of the Gs it
 * counts, hold a P while it reads /proc, and show up in every leak
 * test's snapshot); sysmon doing the work (its ticks are 20 us..10 ms
 * and drive preemption; a /proc scan of thousands of fds does not belong
 * there); unwinding every G every period (a freeze per period costs the
 * httpd budget for nothing: the groups need no stacks).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pprof.h"
#include "runtime.h"

#define RACY __attribute__((no_sanitize("thread")))

#define W 8             /* floor window, samples */
#define K 4             /* periods the floor must rise over */
#define HIST (W + K)    /* samples kept */
#define MINGROW 4       /* smallest rise that counts */
#define MAXGROUPS 256   /* invariant 4 */
#define OTHERSTATE 0xffff
#define NONWAIT 64      /* state = NONWAIT + status for a G not waiting */
#define MINPERIOD ((int64_t)10 * 1000 * 1000)
#define MAXPERIOD ((int64_t)3600 * 1000 * 1000 * 1000)

enum { FD_SOCKET, FD_PIPE, FD_FILE, FD_OTHER, NKIND };
static const char *const kindname[NKIND] = {"socket", "pipe", "file",
                                            "other"};
enum { V_NONE, V_SOCKET, V_COROUTINE, V_FD };
static const char *const verdictname[] = {"none", "socket", "coroutine",
                                          "fd"};

struct sample {
    int64_t when;
    int32_t gs;           /* live coroutines */
    int32_t fds;          /* open fds, all kinds */
    int32_t kind[NKIND];
    int32_t weftfds;
};

struct group {
    uintptr_t pc;         /* spawn site; 0 with OTHERSTATE: "(other)" */
    uint16_t state;
    int32_t n[HIST];      /* by sample number % HIST */
    int64_t oldest;       /* this sample's earliest wait start, 0: none */
};

struct state {
    bool on;
    int64_t period;
    uint64_t nsamples;
    struct sample s[HIST];      /* by sample number % HIST */
    int ngroups;
    struct group g[MAXGROUPS];
    int verdict;
    int64_t since;              /* when the verdict started */
    int32_t baseg, basef;       /* floors when it started */
    int32_t lastg, lastf;       /* levels at the last report */
    int quiet;                  /* periods with nothing growing */
};

static struct {
    pthread_mutex_t ctl;        /* start/stop */
    pthread_mutex_t mu;         /* invariant 1: st */
    pthread_cond_t cv;          /* mu: wakes the monitor to stop */
    bool cvinit;
    bool stop;                  /* mu */
    pthread_t thread;           /* ctl */
    bool running;               /* ctl */
    bool closed;                /* ctl: the runtime is ending (between
                                 * weft__leakcheck_exit and the next
                                 * boot): start refuses, so no monitor
                                 * outlives the registry it reads */
    struct state st;            /* mu */
} lc = {.ctl = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER};

/* ------------------------------------------------------------ text out */

/* fmtdur - ns as "850ms", "12.3s", "4m10s", "2h5m". */
static const char *fmtdur(char *buf, size_t cap, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    int64_t ms = ns / 1000000;
    if (ms < 1000)
        snprintf(buf, cap, "%lldms", (long long)ms);
    else if (ms < 60000)
        snprintf(buf, cap, "%.1fs", (double)ms / 1000);
    else if (ms < 3600000)
        snprintf(buf, cap, "%lldm%llds", (long long)(ms / 60000),
                 (long long)(ms / 1000 % 60));
    else
        snprintf(buf, cap, "%lldh%lldm", (long long)(ms / 3600000),
                 (long long)(ms / 60000 % 60));
    return buf;
}

/* ------------------------------------------------------------- sampling */

static int fdkind(const char *target)
{
    if (strncmp(target, "socket:", 7) == 0)
        return FD_SOCKET;
    if (strncmp(target, "pipe:", 5) == 0)
        return FD_PIPE;
    if (target[0] == '/')
        return FD_FILE;
    return FD_OTHER;
}

/* A path and how many open fds link to it (the fd-leak report). */
struct pathcount {
    char *path;
    int32_t n;
};

/* fdscan - count the open fds by kind into kind[]; with paths, also
 * collect each distinct file path and its count (*np entries, malloc'd).
 * Returns the total, or -1 without /proc. */
static int32_t fdscan(int32_t kind[NKIND], struct pathcount **paths,
                      size_t *np)
{
    memset(kind, 0, NKIND * sizeof kind[0]);
    int *fds;
    long nfd = weft__fdlist(&fds);
    if (nfd < 0)
        return -1;
    int32_t total = 0;
    size_t cap = 0;
    for (long x = 0; x < nfd; x++) {
        char t[256];
        weft__fdtarget(fds[x], t, sizeof t);
        if (t[0] == '\0')
            continue;
        int k = fdkind(t);
        kind[k]++;
        total++;
        if (paths == NULL || k != FD_FILE)
            continue;
        size_t i = 0;
        while (i < *np && strcmp((*paths)[i].path, t) != 0)
            i++;
        if (i < *np) {
            (*paths)[i].n++;
            continue;
        }
        if (*np == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct pathcount *p = realloc(*paths, nc * sizeof *p);
            if (p == NULL)
                continue;
            *paths = p;
            cap = nc;
        }
        char *dup = strdup(t);
        if (dup != NULL)
            (*paths)[(*np)++] = (struct pathcount){dup, 1};
    }
    free(fds);
    return total;
}

/* A group of one sample, before it is merged into the kept groups. */
struct tgroup {
    uintptr_t pc;
    uint16_t state;
    int32_t n;
    int64_t oldest;
};

#define TSLOTS 1024 /* > MAXGROUPS: the open-addressed table stays sparse */

static uint16_t gstate(uint32_t status, int wr)
{
    return status == G_WAITING ? (uint16_t)wr : (uint16_t)(NONWAIT + status);
}

/* countgs - walk the G registry racily (schedtrace.c's invariant 2: a
 * descriptor is never freed while the runtime runs; a stale read counts
 * a G in the wrong group for one sample, never faults) and count the
 * live Gs into t. Returns the number of live Gs. */
static RACY int32_t countgs(struct tgroup *t, int *nt)
{
    size_t n = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    int32_t live = 0;
    for (size_t i = 0; chunks != NULL && i < n; i++) {
        struct g *gp = &chunks[i / ALLG_CHUNK][i % ALLG_CHUNK];
        uint32_t st = LOAD(&gp->status);
        if (st == G_DEAD || st == G_IDLE || gp->id == 0)
            continue;
        live++;
        uintptr_t pc = gp->spawnpc;
        uint16_t s =
            gstate(st, __atomic_load_n(&gp->waitreason, __ATOMIC_RELAXED));
        size_t h = (size_t)((pc * 0x9e3779b97f4a7c15ull) >> 40 ^ s) % TSLOTS;
        while (t[h].n != 0 && (t[h].pc != pc || t[h].state != s))
            h = (h + 1) % TSLOTS;
        if (t[h].n == 0) {
            if (*nt >= MAXGROUPS) { /* bounded: counted as "(other)" */
                pc = 0;
                s = OTHERSTATE;
                h = 0;
                while (t[h].n != 0 && (t[h].pc != pc || t[h].state != s))
                    h = (h + 1) % TSLOTS;
            }
            if (t[h].n == 0) {
                t[h] = (struct tgroup){pc, s, 0, 0};
                ++*nt;
            }
        }
        t[h].n++;
        int64_t since = gp->waitsince;
        if (st == G_WAITING && since > 0 &&
            (t[h].oldest == 0 || since < t[h].oldest))
            t[h].oldest = since;
    }
    return live;
}

/* merge - store sample s and the groups of t as sample number st->nsamples.
 * Caller holds lc.mu. */
static void merge(struct state *st, const struct sample *s,
                  const struct tgroup *t)
{
    size_t slot = st->nsamples % HIST;
    st->s[slot] = *s;
    for (int i = 0; i < st->ngroups; i++) {
        st->g[i].n[slot] = 0;
        st->g[i].oldest = 0;
    }
    for (size_t h = 0; h < TSLOTS; h++) {
        if (t[h].n == 0)
            continue;
        int i = 0;
        while (i < st->ngroups &&
               (st->g[i].pc != t[h].pc || st->g[i].state != t[h].state))
            i++;
        if (i == st->ngroups) {
            /* A new group takes a slot that has been empty for HIST
             * samples, or a new one, or goes to "(other)". */
            int free = -1;
            for (int j = 0; j < st->ngroups && free < 0; j++) {
                bool empty = true;
                for (int k = 0; k < HIST; k++)
                    empty &= st->g[j].n[k] == 0;
                if (empty)
                    free = j;
            }
            if (free < 0 && st->ngroups < MAXGROUPS)
                free = st->ngroups++;
            if (free < 0) {
                for (i = 0; i < st->ngroups; i++)
                    if (st->g[i].state == OTHERSTATE)
                        break;
                if (i == st->ngroups)
                    i = st->ngroups - 1; /* table of one-offs: reuse */
            } else {
                i = free;
                memset(&st->g[i], 0, sizeof st->g[i]);
                st->g[i].pc = t[h].pc;
                st->g[i].state = t[h].state;
            }
        }
        st->g[i].n[slot] += t[h].n;
        if (t[h].oldest != 0 &&
            (st->g[i].oldest == 0 || t[h].oldest < st->g[i].oldest))
            st->g[i].oldest = t[h].oldest;
    }
}

/* takesample - one sample into *s and t (TSLOTS entries, zeroed here). */
static void takesample(struct sample *s, struct tgroup *t)
{
    memset(t, 0, TSLOTS * sizeof *t);
    int nt = 0;
    memset(s, 0, sizeof *s);
    s->when = weft__nanotime();
    s->gs = countgs(t, &nt);
    s->fds = fdscan(s->kind, NULL, NULL);
    struct fdinfo *fi = NULL;
    long nf = weft__fds(&fi);
    s->weftfds = nf > 0 ? (int32_t)nf : 0;
    free(fi);
}

/* ---------------------------------------------------------------- trend */

/* chrono - the last HIST values of a ring, oldest first. */
static void chrono(const struct state *st, const int32_t *ring, size_t stride,
                   int32_t out[HIST])
{
    for (int i = 0; i < HIST; i++) {
        size_t slot = (st->nsamples - HIST + (uint64_t)i) % HIST;
        out[i] = *(const int32_t *)((const char *)ring + slot * stride);
    }
}

enum { GROW_NO, GROW_WEAK, GROW_YES };

/* growing - the trend rule (top of file) on x, oldest first; *from and
 * *to get the floors at the start and end of the K periods. */
static int growing(const int32_t x[HIST], int32_t *from, int32_t *to)
{
    int32_t f[K + 1];
    for (int j = 0; j <= K; j++) {
        f[j] = x[j];
        for (int i = j; i < j + W; i++)
            if (x[i] < f[j])
                f[j] = x[i];
    }
    *from = f[0];
    *to = f[K];
    int rises = 0;
    for (int j = 1; j <= K; j++) {
        if (f[j] < f[j - 1])
            return GROW_NO;
        rises += f[j] > f[j - 1];
    }
    if (rises < K - 1)
        return GROW_NO;
    int32_t need = f[0] / 20 > MINGROW ? f[0] / 20 : MINGROW;
    int32_t peak = x[0];
    for (int i = 1; i < K; i++)
        peak = x[i] > peak ? x[i] : peak;
    return f[K] - f[0] >= need && f[K] > peak ? GROW_YES : GROW_WEAK;
}

/* grouprise - how much group g's floor rose over the last K periods
 * (<= 0: not growing). */
static int32_t grouprise(const struct state *st, const struct group *g)
{
    if (st->nsamples < HIST)
        return 0;
    int32_t x[HIST], from, to;
    chrono(st, g->n, sizeof g->n[0], x);
    return growing(x, &from, &to) == GROW_NO ? 0 : to - from;
}

static void seriesgf(const struct state *st, int32_t g[HIST],
                     int32_t f[HIST])
{
    chrono(st, &st->s[0].gs, sizeof st->s[0], g);
    chrono(st, &st->s[0].fds, sizeof st->s[0], f);
}

/* evaluate - update the verdict after a sample. Returns what to print:
 * 0 nothing, 1 a report block, 2 the end line. Caller holds lc.mu. */
static int evaluate(struct state *st)
{
    if (st->nsamples < HIST)
        return 0;
    int32_t g[HIST], f[HIST], g0, g1, f0, f1;
    seriesgf(st, g, f);
    int gg = growing(g, &g0, &g1);
    int fg = growing(f, &f0, &f1);
    if (st->s[(st->nsamples - 1) % HIST].fds < 0)
        fg = GROW_NO; /* no /proc */
    int v = V_NONE;
    if ((gg == GROW_YES && fg != GROW_NO) ||
        (fg == GROW_YES && gg != GROW_NO))
        v = V_SOCKET;
    else if (gg == GROW_YES)
        v = V_COROUTINE;
    else if (fg == GROW_YES)
        v = V_FD;
    const struct sample *now = &st->s[(st->nsamples - 1) % HIST];
    if (v == V_NONE) {
        if (st->verdict != V_NONE && ++st->quiet >= K) {
            st->verdict = V_NONE;
            return 2;
        }
        return 0;
    }
    st->quiet = 0;
    if (st->verdict == V_NONE ||
        (v == V_SOCKET && st->verdict != V_SOCKET)) {
        st->verdict = v;
        st->since = now->when;
        st->baseg = g0;
        st->basef = f0;
        st->lastg = now->gs;
        st->lastf = now->fds;
        return 1;
    }
    /* Ongoing: report again when the excess has doubled. */
    bool byfd = st->verdict == V_FD;
    int32_t base = byfd ? st->basef : st->baseg;
    int32_t last = byfd ? st->lastf : st->lastg;
    int32_t cur = byfd ? now->fds : now->gs;
    if (last > base && cur - base >= 2 * (last - base)) {
        st->lastg = now->gs;
        st->lastf = now->fds;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------- printing */

/* site - "func at file:line" of a spawn pc into buf. Caller holds the
 * dump lock. */
static const char *site(char *buf, size_t cap, uintptr_t pc)
{
    if (pc == 0) {
        snprintf(buf, cap, "(no spawn site)");
        return buf;
    }
    const struct sym *s = weft__symbolize(pc, false);
    if (s == NULL || s->n == 0)
        snprintf(buf, cap, "%#lx", (unsigned long)pc);
    else if (s->f[0].file != NULL)
        snprintf(buf, cap, "%s at %s:%d", s->f[0].func, s->f[0].file,
                 s->f[0].line);
    else
        snprintf(buf, cap, "%s", s->f[0].func);
    return buf;
}

static const char *statename(uint16_t s)
{
    if (s == OTHERSTATE)
        return "any";
    if (s >= NONWAIT)
        return weft__gstatus_string(s - NONWAIT);
    return weft__waitreason_string(s);
}

static int gscmp(const void *a, const void *b)
{
    const struct gstack *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static const struct gstack *findg(const struct gstack *gs, long ng,
                                  int64_t id)
{
    if (id == 0)
        return NULL;
    struct gstack key = {.id = id};
    return bsearch(&key, gs, (size_t)ng, sizeof *gs, gscmp);
}

static bool ingroup(const struct gstack *x, const struct group *g)
{
    if (g->state == OTHERSTATE)
        return false;
    return x->spawnpc == g->pc && gstate(x->status, x->waitreason) == g->state;
}

/* represent - the stack of g's representative (its G waiting longest),
 * indented under the group. Caller holds the dump lock. */
static void represent(struct sbuf *b, const struct group *g,
                      const struct gstack *gs, long ng, int64_t now)
{
    const struct gstack *best = NULL;
    for (long i = 0; i < ng; i++) {
        if (!ingroup(&gs[i], g))
            continue;
        /* The caller (writing this page) only when nothing else fits. */
        if (best == NULL || best->self ||
            (!gs[i].self && gs[i].waitsince > 0 &&
                             (best->waitsince == 0 ||
                              gs[i].waitsince < best->waitsince)))
            best = &gs[i];
    }
    if (best == NULL) {
        weft__sprint(b, "\t(no coroutine of this group is left)\n\n");
        return;
    }
    static char text[16 * 1024]; /* dump lock */
    size_t n = weft__gstack_text(best, TB_ALL, text, sizeof text);
    weft__sputn(b, text, n < sizeof text ? n : sizeof text);
    weft__sputn(b, "\n", 1);
}

struct rankg {
    const struct group *g;
    int32_t count, rise;
};

static int rankcmp(const void *a, const void *b)
{
    const struct rankg *x = a, *y = b;
    if (x->rise != y->rise)
        return x->rise > y->rise ? -1 : 1;
    return x->count > y->count ? -1 : x->count < y->count;
}

/* rank - st's groups with a G in the last sample, growing first (by
 * rise), then by count. Returns how many; *out malloc'd. */
static int rank(const struct state *st, struct rankg **out)
{
    *out = calloc((size_t)st->ngroups + 1, sizeof **out);
    if (*out == NULL || st->nsamples == 0)
        return 0;
    size_t slot = (st->nsamples - 1) % HIST;
    int n = 0;
    for (int i = 0; i < st->ngroups; i++) {
        const struct group *g = &st->g[i];
        if (g->n[slot] == 0)
            continue;
        (*out)[n++] = (struct rankg){g, g->n[slot], grouprise(st, g)};
    }
    qsort(*out, (size_t)n, sizeof **out, rankcmp);
    return n;
}

static void grouplines(struct sbuf *b, const struct rankg *r, int n,
                       int64_t now, bool growingonly, int max)
{
    char s[512], d[32];
    for (int i = 0; i < n && i < max; i++) {
        if (growingonly && r[i].rise <= 0)
            break;
        const struct group *g = r[i].g;
        weft__sprint(b, "  %6d", r[i].count);
        if (r[i].rise > 0)
            weft__sprint(b, " (+%d)", r[i].rise);
        weft__sprint(b, " [%s]", statename(g->state));
        if (g->oldest > 0)
            weft__sprint(b, " oldest %s", fmtdur(d, sizeof d, now - g->oldest));
        if (g->state == OTHERSTATE)
            weft__sprint(b, " (other sites: over %d groups)\n", MAXGROUPS);
        else
            weft__sprint(b, " created at %s\n", site(s, sizeof s, g->pc));
    }
}

/* fdlines - the fds weft has open; with rg (the growing groups), only
 * those opened by or waited on by one of their Gs. */
static void fdlines(struct sbuf *b, const struct fdinfo *fi, long nf,
                    const struct gstack *gs, long ng, const struct rankg *rg,
                    int nrg, int64_t now, int max)
{
    char s[512], t[256], d[32];
    int shown = 0, skipped = 0;
    for (long i = 0; i < nf; i++) {
        if (rg != NULL) {
            bool mine = false;
            const int64_t ids[3] = {fi[i].readerid, fi[i].writerid,
                                    fi[i].openerid};
            for (int k = 0; k < 3 && !mine; k++) {
                const struct gstack *x = findg(gs, ng, ids[k]);
                for (int j = 0; x != NULL && j < nrg && !mine; j++)
                    mine = rg[j].rise > 0 && ingroup(x, rg[j].g);
            }
            if (!mine)
                continue;
        }
        if (shown == max) {
            skipped++;
            continue;
        }
        shown++;
        weft__fdtarget(fi[i].fd, t, sizeof t);
        weft__sprint(b, "  fd %d %s opened", fi[i].fd, t[0] ? t : "(closed)");
        if (fi[i].openerid != 0)
            weft__sprint(b, " by goroutine %lld", (long long)fi[i].openerid);
        if (fi[i].openpc != 0)
            weft__sprint(b, " at %s", site(s, sizeof s, fi[i].openpc));
        weft__sprint(b, ", %s ago", fmtdur(d, sizeof d, now - fi[i].openedat));
        if (fi[i].readerid != 0)
            weft__sprint(b, "; reader goroutine %lld", (long long)fi[i].readerid);
        if (fi[i].writerid != 0)
            weft__sprint(b, "; writer goroutine %lld", (long long)fi[i].writerid);
        weft__sprint(b, "\n");
    }
    if (skipped > 0)
        weft__sprint(b, "  ... and %d more\n", skipped);
    if (shown == 0 && skipped == 0)
        weft__sprint(b, "  (none)\n");
}

static int pathcmp(const void *a, const void *b)
{
    const struct pathcount *x = a, *y = b;
    return x->n > y->n ? -1 : x->n < y->n;
}

static const char *const headline[] = {
    "",
    "suspected socket/fd leak: coroutines and open fds growing together",
    "suspected coroutine leak: coroutines growing, open fds flat",
    "suspected fd leak outside coroutines: open fds growing, coroutines "
    "flat",
};

/* trendblock - the report of the current verdict (st->verdict != NONE):
 * the headline, the figures, the growing groups with a stack each and,
 * by kind, the fds they hold or the kinds and paths that grew. */
static void trendblock(struct sbuf *b, const struct state *st,
                       const struct gstack *gs, long ng,
                       const struct fdinfo *fi, long nf, int64_t now)
{
    char d1[32], d2[32];
    int32_t g[HIST], f[HIST];
    seriesgf(st, g, f);
    const struct sample *first = &st->s[(st->nsamples - HIST) % HIST];
    const struct sample *last = &st->s[(st->nsamples - 1) % HIST];
    weft__sprint(b, "weft: leakcheck: %s\n", headline[st->verdict]);
    weft__sprint(b, "  suspected for %s; over the last %d samples (%s apart): "
              "coroutines %d -> %d, open fds %d -> %d",
           fmtdur(d1, sizeof d1, now - st->since), HIST,
           fmtdur(d2, sizeof d2, st->period), first->gs, last->gs,
           first->fds, last->fds);
    const char *sep = " (";
    for (int k = 0; k < NKIND; k++) {
        if (last->kind[k] != first->kind[k]) {
            weft__sprint(b, "%s%s %+d", sep, kindname[k],
                   last->kind[k] - first->kind[k]);
            sep = ", ";
        }
    }
    weft__sprint(b, "%s\n", sep[0] == ',' ? ")" : "");
    struct rankg *r;
    int n = rank(st, &r);
    if (st->verdict != V_FD) {
        weft__sprint(b, "  growing groups (count, rise over %d periods, state, "
                  "oldest wait, spawn site):\n", K);
        grouplines(b, r, n, now, true, 8);
        if (st->verdict == V_SOCKET) {
            weft__sprint(b, "  fds those coroutines opened or wait on:\n");
            fdlines(b, fi, nf, gs, ng, r, n, now, 8);
        }
        weft__sprint(b, "  one stack per growing group:\n\n");
        for (int i = 0; i < n && i < 8 && r[i].rise > 0; i++)
            represent(b, r[i].g, gs, ng, now);
    } else {
        int32_t kind[NKIND];
        struct pathcount *p = NULL;
        size_t np = 0;
        fdscan(kind, &p, &np);
        qsort(p, np, sizeof *p, pathcmp);
        weft__sprint(b, "  open fds by kind now: socket %d, pipe %d, file %d, "
                  "other %d\n",
               kind[FD_SOCKET], kind[FD_PIPE], kind[FD_FILE],
               kind[FD_OTHER]);
        weft__sprint(b, "  files open most often:\n");
        for (size_t i = 0; i < np; i++) {
            if (i < 8)
                weft__sprint(b, "  %6d %s\n", p[i].n, p[i].path);
            free(p[i].path);
        }
        if (np == 0)
            weft__sprint(b, "  (none)\n");
        free(p);
    }
    free(r);
}

/* snapshot - a copy of the state (invariant 1) and, for a report, the
 * stacks and weft's fds, sorted by G id. */
struct snapshot {
    struct state st;
    struct gstack *gs;
    long ng;
    struct fdinfo *fi;
    long nf;
};

static int snapshot(struct snapshot *sn, bool stacks)
{
    pthread_mutex_lock(&lc.mu);
    sn->st = lc.st;
    pthread_mutex_unlock(&lc.mu);
    sn->gs = NULL;
    sn->fi = NULL;
    sn->ng = sn->nf = 0;
    if (!stacks)
        return 0;
    sn->ng = weft__gstacks(&sn->gs);
    if (sn->ng < 0)
        return (int)sn->ng;
    qsort(sn->gs, (size_t)sn->ng, sizeof *sn->gs, gscmp);
    sn->nf = weft__fds(&sn->fi);
    if (sn->nf < 0)
        sn->nf = 0;
    return 0;
}

static void release(struct snapshot *sn)
{
    for (long i = 0; i < sn->ng; i++)
        weft__labels_unref(sn->gs[i].labels);
    free(sn->gs);
    free(sn->fi);
}

/* ------------------------------------------------------------- monitor */

static void stderrreport(int what)
{
    struct sbuf b = {0};
    struct snapshot sn;
    if (what == 2) {
        pthread_mutex_lock(&lc.mu);
        int64_t p = lc.st.period;
        pthread_mutex_unlock(&lc.mu);
        char d[32];
        weft__sprint(&b, "weft: leakcheck: no more growth for %d periods (%s); "
                   "suspicion ended\n", K, fmtdur(d, sizeof d, K * p));
    } else if (snapshot(&sn, true) == 0) {
        if (weft__dump_lock()) {
            trendblock(&b, &sn.st, sn.gs, sn.ng, sn.fi, sn.nf,
                       weft__nanotime());
            weft__dump_unlock();
        }
        release(&sn);
    }
    if (!b.oom && b.n > 0)
        (void)weft__writeall(2, b.p, b.n); /* stderr: nowhere to report */
    free(b.p);
}

/* monitor - the monitor thread; arg: its group table (TSLOTS entries,
 * allocated by start so a failure is start's error), freed here. */
static void *monitor(void *arg)
{
    struct tgroup *t = arg;
    pthread_setname_np(pthread_self(), "weft-leakcheck"); /* top -H, gdb */
    pthread_mutex_lock(&lc.mu);
    while (!lc.stop) {
        pthread_mutex_unlock(&lc.mu);
        struct sample s;
        takesample(&s, t);
        pthread_mutex_lock(&lc.mu);
        merge(&lc.st, &s, t);
        lc.st.nsamples++;
        int what = evaluate(&lc.st);
        int64_t period = lc.st.period;
        pthread_mutex_unlock(&lc.mu);
        if (what != 0)
            stderrreport(what);
        int64_t end = weft__nanotime() + period; /* CLOCK_MONOTONIC, as cv */
        struct timespec ts = {end / 1000000000, end % 1000000000};
        pthread_mutex_lock(&lc.mu);
        while (!lc.stop &&
               pthread_cond_timedwait(&lc.cv, &lc.mu, &ts) != ETIMEDOUT)
            ;
    }
    pthread_mutex_unlock(&lc.mu);
    free(t);
    return NULL;
}

WEFT_EXTERN int weft_leakcheck_start(int64_t period_ns)
{
    if (period_ns < MINPERIOD || period_ns > MAXPERIOD)
        return WEFT_EINVAL;
    if (!weft__runtime_on())
        return WEFT_ENORUNTIME;
    pthread_mutex_lock(&lc.ctl);
    if (lc.closed) {
        pthread_mutex_unlock(&lc.ctl);
        return WEFT_ENORUNTIME;
    }
    if (lc.running) {
        pthread_mutex_unlock(&lc.ctl);
        return WEFT_EBUSY;
    }
    struct tgroup *t = malloc(TSLOTS * sizeof *t);
    if (t == NULL) {
        pthread_mutex_unlock(&lc.ctl);
        return WEFT_ENOMEM;
    }
    if (!lc.cvinit) {
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&lc.cv, &ca);
        pthread_condattr_destroy(&ca);
        lc.cvinit = true;
    }
    pthread_mutex_lock(&lc.mu);
    memset(&lc.st, 0, sizeof lc.st);
    lc.st.on = true;
    lc.st.period = period_ns;
    lc.stop = false;
    pthread_mutex_unlock(&lc.mu);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* invariant 3 */
    int e = pthread_create(&lc.thread, NULL, monitor, t);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e == 0) {
        lc.running = true;
    } else {
        free(t);
        lc.st.on = false; /* nobody else touches it: not running */
    }
    pthread_mutex_unlock(&lc.ctl);
    return e == 0 ? 0 : WEFT_EAGAIN;
}

WEFT_EXTERN int weft_leakcheck_stop(void)
{
    pthread_mutex_lock(&lc.ctl);
    if (!lc.running) {
        pthread_mutex_unlock(&lc.ctl);
        return WEFT_EINVAL;
    }
    pthread_mutex_lock(&lc.mu);
    lc.stop = true;
    pthread_cond_signal(&lc.cv);
    pthread_mutex_unlock(&lc.mu);
    pthread_join(lc.thread, NULL);
    lc.running = false;
    pthread_mutex_lock(&lc.mu);
    memset(&lc.st, 0, sizeof lc.st);
    pthread_mutex_unlock(&lc.mu);
    pthread_mutex_unlock(&lc.ctl);
    return 0;
}

void weft__leakcheck_boot(void)
{
    pthread_mutex_lock(&lc.ctl);
    lc.closed = false;
    pthread_mutex_unlock(&lc.ctl);
    if (weft__debug.leakcheck <= 0)
        return;
    int e = weft_leakcheck_start((int64_t)weft__debug.leakcheck *
                                 1000000000);
    if (e < 0) {
        char msg[128];
        int n = snprintf(msg, sizeof msg,
                         "weft: WEFTDEBUG: leakcheck could not start: %s\n",
                         weft_strerror(e));
        (void)weft__writeall(2, msg, (size_t)n);
    }
}

void weft__leakcheck_exit(void)
{
    pthread_mutex_lock(&lc.ctl);
    lc.closed = true; /* before the stop: no start can slip in after it */
    pthread_mutex_unlock(&lc.ctl);
    weft_leakcheck_stop(); /* WEFT_EINVAL when off: nothing to do */
}

void weft__leakcheck_metrics(struct weft_metrics *m)
{
    int32_t kind[NKIND];
    if (fdscan(kind, NULL, NULL) < 0) {
        m->open_fds_socket = m->open_fds_pipe = -1;
        m->open_fds_file = m->open_fds_other = -1;
    } else {
        m->open_fds_socket = kind[FD_SOCKET];
        m->open_fds_pipe = kind[FD_PIPE];
        m->open_fds_file = kind[FD_FILE];
        m->open_fds_other = kind[FD_OTHER];
    }
    struct fdinfo *fi = NULL;
    long nf = weft__fds(&fi);
    m->weft_fds = nf >= 0 ? nf : -1;
    free(fi);
    pthread_mutex_lock(&lc.mu);
    int v = lc.st.verdict;
    pthread_mutex_unlock(&lc.mu);
    m->leak_suspected_socket = v == V_SOCKET;
    m->leak_suspected_coroutine = v == V_COROUTINE;
    m->leak_suspected_fd = v == V_FD;
}

/* -------------------------------------------------------------- report */

static void page(struct sbuf *b, struct snapshot *sn, int64_t now)
{
    struct state *st = &sn->st;
    char d[32];
    if (st->on)
        weft__sprint(b, "leakcheck: on, period %s, %llu samples; verdict: %s\n",
               fmtdur(d, sizeof d, st->period),
               (unsigned long long)st->nsamples, verdictname[st->verdict]);
    else
        weft__sprint(b, "leakcheck: off (weft_leakcheck_start or "
                  "WEFTDEBUG=leakcheck=SECONDS); one sample taken now\n");
    weft__sprint(b, "trend rule: floor (min of %d samples) rising over %d periods "
              "by >= max(%d, 5%%)\n\n", W, K, MINGROW);
    if (st->verdict != V_NONE) {
        trendblock(b, st, sn->gs, sn->ng, sn->fi, sn->nf, now);
        weft__sprint(b, "\n");
    }
    weft__sprint(b, "samples (oldest first):\n"
              "  %8s %10s %8s %8s %8s %8s %8s %8s\n",
           "age", "coroutines", "fds", "socket", "pipe", "file", "other",
           "weft");
    uint64_t from = st->nsamples > HIST ? st->nsamples - HIST : 0;
    for (uint64_t i = from; i < st->nsamples; i++) {
        const struct sample *s = &st->s[i % HIST];
        weft__sprint(b, "  %8s %10d %8d %8d %8d %8d %8d %8d\n",
               fmtdur(d, sizeof d, now - s->when), s->gs, s->fds,
               s->kind[FD_SOCKET], s->kind[FD_PIPE], s->kind[FD_FILE],
               s->kind[FD_OTHER], s->weftfds);
    }
    struct rankg *r;
    int n = rank(st, &r);
    weft__sprint(b, "\ncoroutine groups (count, rise, state, oldest wait, spawn "
              "site), %d in all:\n", n);
    grouplines(b, r, n, now, false, 50);
    weft__sprint(b, "\nfds opened through weft (%ld):\n", sn->nf);
    fdlines(b, sn->fi, sn->nf, sn->gs, sn->ng, NULL, 0, now, 64);
    weft__sprint(b, "\none stack per group (the largest %d):\n\n", n < 10 ? n : 10);
    for (int i = 0; i < n && i < 10; i++)
        represent(b, r[i].g, sn->gs, sn->ng, now);
    free(r);
}

WEFT_EXTERN int weft_leakcheck_write(int fd)
{
    if (fd < 0)
        return WEFT_EBADF;
    if (!weft__runtime_on())
        return WEFT_ENORUNTIME;
    struct snapshot sn;
    int e = snapshot(&sn, true);
    if (e < 0)
        return e;
    if (!sn.st.on) { /* one sample now, no trend */
        struct tgroup *t = malloc(TSLOTS * sizeof *t);
        if (t == NULL) {
            release(&sn);
            return WEFT_ENOMEM;
        }
        struct sample s;
        takesample(&s, t);
        merge(&sn.st, &s, t);
        sn.st.nsamples = 1;
        free(t);
    }
    struct sbuf b = {0};
    if (!weft__dump_lock()) {
        release(&sn);
        return WEFT_EBUSY;
    }
    page(&b, &sn, weft__nanotime());
    weft__dump_unlock();
    release(&sn);
    e = b.oom ? WEFT_ENOMEM : weft__writeall(fd, b.p, b.n);
    free(b.p);
    return e;
}
