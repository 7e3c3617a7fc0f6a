/*
 * schedtrace.c - WEFTDEBUG=schedtrace=MS[,scheddetail=1]: Go's scheduler
 * trace (proc.go schedtrace), the same lines on stderr, so tools and eyes
 * trained on Go read it unchanged. sysmon calls weft__schedtrace every MS
 * milliseconds (sysmon.c); a dump may call it too.
 *
 * The shape is Go 1.20-1.25's (shared/go-formats.md section 1):
 *
 *   SCHED 200ms: gomaxprocs=2 idleprocs=0 threads=3 spinningthreads=0 needspinning=0 idlethreads=1 runqueue=0 [1 0]
 *
 * and with scheddetail=1 the first line ends, instead of the run-queue
 * list, with " gcwaiting=false nmidlelocked=0 stopwait=0 sysmonwait=false",
 * followed by "  P<i>: ..." for every P, "  M<id>: ..." for every M (allm,
 * newest first) and "  G<id>: ..." for every G in the registry, dead ones
 * included. Missing links print as "nil" and flags as false/true, as the
 * Go versions that print needspinning do (1.19 printed -1 and 0/1).
 *
 * What the figures mean in weft:
 *  - SCHED Nms: milliseconds since this runtime's first report.
 *  - threads: Ms created (sched.mcount); sysmon and weft_main's thread are
 *    not Ms and not counted (Go counts its sysmon M). idlethreads: Ms
 *    parked on the idle list. spinningthreads: Ms looking for work.
 *  - runqueue: the global queue. [a b]: each P's queued Gs, runnext
 *    included (Go prints the ring alone, so an idle P's runnext G is
 *    invisible there): at a quiescent moment runqueue plus the list is
 *    the number of runnable Gs.
 *  - needspinning: weft has no such flag. It prints 1 when Gs are queued
 *    while a P idles and no M spins: the moment Go's flag exists for
 *    (work that a spinning M should pick up), and the stranded work
 *    sysmon hands to a new spinner on its next tick (sysmon.c retake).
 *  - gcwaiting=false, nmidlelocked=0, stopwait=0: weft has no GC and no
 *    locked threads. sysmonwait: sysmon sleeps with every P idle (always
 *    false when sysmon itself prints).
 *  - P: status 0 idle, 1 running, 2 syscall (Go's numbers), schedtick,
 *    syscalltick, m (its M), runqsize (ring + runnext, as above),
 *    gfreecnt (dead Gs cached for reuse), timerslen (its timer heap).
 *  - M: p (the P it holds, if that P also names it), curg (the G it
 *    runs), spinning, blocked (it holds no P, runs no G and is not
 *    spinning: parked, or asleep in the poller). mallocing, throwing,
 *    locks, dying are 0, preemptoff empty and lockedg nil: weft has none
 *    of those.
 *  - G: status (Go's numbers: 1 runnable, 2 running, 3 syscall,
 *    4 waiting, 6 dead), then the wait reason in parentheses, which, as
 *    in Go, is the last one set and may be stale for a G that is not
 *    waiting; m (the M running it), lockedm nil.
 *
 * Invariants:
 *  1. Safe anywhere: in sysmon, on a G, in a signal handler while an M is
 *     stuck holding any lock. So: no locks, no malloc, no stdio; each line
 *     is built in a stack buffer and written with one write(2) to fd 2.
 *     A line longer than the buffer (only a summary with over ~1000 Ps)
 *     would take two writes.
 *  2. Everything is read racily, as dump.c does (functions marked RACY
 *     for TSan): Ps are immutable while the runtime runs, M descriptors
 *     are never freed before every M is joined, G descriptors never
 *     while the runtime runs (runtime.h, invariant 3), so a stale read
 *     prints a stale figure, never faults. Counters are loaded once and
 *     the per-P counts are snapshotted first, so a line agrees with
 *     itself (needspinning, the list and the P lines use one snapshot).
 *  3. Nothing printed here changes scheduler state.
 *
 * Rejected: taking sched.lock as Go does. Go's print holds it while
 * writing; a stderr pipe nobody drains would then stop the scheduler,
 * and a dump from a signal handler on an M holding the lock would
 * deadlock. The figures that live under the lock are single words,
 * read with relaxed atomic loads.
 */
#include <unistd.h>

#include "runtime.h"

/* Readers of fields that owners write without a lock, on purpose (see
 * invariant 2); tell TSan. As in dump.c. */
#define RACY __attribute__((no_sanitize("thread")))

/* A summary line: the prefix (~180 bytes) and " 257" per P at most. */
#define LINE_BYTES (256 + 4 * WEFT_MAXPROCS_LIMIT)

static _Atomic int64_t starttime; /* first report's weft__nanotime, 0: none */

void weft__schedtrace_reset(void)
{
    STORE(&starttime, 0);
}

/* ------------------------------------------------------- line building */

struct line {
    size_t n;
    char buf[LINE_BYTES];
};

static void flush(struct line *l)
{
    size_t off = 0;
    while (off < l->n) {
        ssize_t w = write(2, l->buf + off, l->n - off);
        if (w <= 0)
            break; /* EINTR included: a lost trace line beats a loop */
        off += (size_t)w;
    }
    l->n = 0;
}

static void puts_(struct line *l, const char *s)
{
    while (*s != '\0') {
        if (l->n == sizeof l->buf)
            flush(l);
        l->buf[l->n++] = *s++;
    }
}

static void putu(struct line *l, uint64_t v)
{
    char tmp[24];
    int i = sizeof tmp - 1;
    tmp[i] = '\0';
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    puts_(l, tmp + i);
}

static void puti(struct line *l, int64_t v)
{
    if (v < 0) {
        puts_(l, "-");
        putu(l, (uint64_t)0 - (uint64_t)v);
    } else {
        putu(l, (uint64_t)v);
    }
}

static void putb(struct line *l, bool b)
{
    puts_(l, b ? "true" : "false");
}

static void endline(struct line *l)
{
    puts_(l, "\n");
    flush(l);
}

/* ------------------------------------------------------------- reading */

/* runqcount - pp's queued Gs, runnext included. Any thread, racy: a
 * tail that moved between the reads, or an impossible length (head and
 * tail from different moments), is read again, as runqempty does; after
 * a few tries the owner is too busy to pin down and the ring is clamped. */
static uint32_t runqcount(struct p *pp)
{
    for (int tries = 0;; tries++) {
        uint32_t h = LOADACQ(&pp->runqhead);
        uint32_t t = LOADACQ(&pp->runqtail);
        struct g *next = LOADACQ(&pp->runnext);
        uint32_t n = t - h;
        if ((LOADACQ(&pp->runqtail) == t && n <= RUNQ_SIZE) || tries == 8) {
            if (n > RUNQ_SIZE)
                n = RUNQ_SIZE;
            return n + (next != NULL);
        }
    }
}

/* pm_id - the id of the M that pp names as its owner, -1 if none. */
static RACY int64_t pm_id(struct p *pp)
{
    struct m *mp = LOADACQ(&pp->m);
    return mp != NULL ? mp->id : -1;
}

/* A failed thread creation leaves its M on allm, done and never started
 * (proc.c newm): it is not a thread. */
static RACY bool m_real(struct m *mp)
{
    return mp->started || LOAD(&mp->state) != M_DONE;
}

static void put_id_or_nil(struct line *l, int64_t id)
{
    if (id < 0)
        puts_(l, "nil");
    else
        puti(l, id);
}

/* g_mid - the M running gp (its curg), -1 if none. Only a running G or
 * one in a syscall has one; the walk is over allm, a short list. */
static RACY int64_t g_mid(struct g *gp, uint32_t status)
{
    if (status != G_RUNNING && status != G_SYSCALL)
        return -1;
    struct m *mp = __atomic_load_n(&weft__sched.allm, __ATOMIC_ACQUIRE);
    for (; mp != NULL; mp = mp->alllink)
        if (__atomic_load_n(&mp->curg, __ATOMIC_RELAXED) == gp)
            return mp->id;
    return -1;
}

/* ---------------------------------------------------------- the report */

static RACY void print_ps(struct line *l, struct p *const *allp,
                          int32_t nprocs, const uint16_t *counts)
{
    for (int32_t i = 0; i < nprocs; i++) {
        struct p *pp = allp[i];
        puts_(l, "  P");
        puti(l, i);
        puts_(l, ": status=");
        putu(l, LOAD(&pp->status));
        puts_(l, " schedtick=");
        putu(l, LOAD(&pp->schedtick));
        puts_(l, " syscalltick=");
        putu(l, LOAD(&pp->syscalltick));
        puts_(l, " m=");
        put_id_or_nil(l, pm_id(pp));
        puts_(l, " runqsize=");
        putu(l, counts[i]);
        puts_(l, " gfreecnt=");
        puti(l, __atomic_load_n(&pp->gfreecnt, __ATOMIC_RELAXED));
        puts_(l, " timerslen=");
        puti(l, __atomic_load_n(&pp->ntimers, __ATOMIC_RELAXED));
        endline(l);
    }
}

static RACY void print_ms(struct line *l)
{
    struct m *mp = __atomic_load_n(&weft__sched.allm, __ATOMIC_ACQUIRE);
    for (; mp != NULL; mp = mp->alllink) {
        if (!m_real(mp))
            continue;
        struct p *pp = __atomic_load_n(&mp->p, __ATOMIC_RELAXED);
        struct g *gp = __atomic_load_n(&mp->curg, __ATOMIC_RELAXED);
        /* An M in a syscall keeps mp->p after sysmon retook the P;
         * it holds the P only while the P still names it. */
        int64_t pid = pp != NULL && LOADACQ(&pp->m) == mp ? pp->id : -1;
        puts_(l, "  M");
        puti(l, mp->id);
        puts_(l, ": p=");
        put_id_or_nil(l, pid);
        puts_(l, " curg=");
        put_id_or_nil(l, gp != NULL ? gp->id : -1);
        puts_(l, " mallocing=0 throwing=0 preemptoff= locks=0 dying=0 "
                 "spinning=");
        putb(l, LOAD(&mp->spinning));
        puts_(l, " blocked=");
        putb(l, pp == NULL && gp == NULL && !LOAD(&mp->spinning));
        puts_(l, " lockedg=nil");
        endline(l);
    }
}

static RACY void print_gs(struct line *l)
{
    size_t n = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    for (size_t i = 0; chunks != NULL && i < n; i++) {
        /* weft__allg by hand: an out-of-line copy of it (-O0) would be
         * instrumented, and TSan, blind to our acquire of allglen, would
         * see the chunk table's writes race with it. */
        struct g *gp = &chunks[i / ALLG_CHUNK][i % ALLG_CHUNK];
        int64_t id = gp->id;
        if (id == 0) /* a descriptor no spawn has used yet */
            continue;
        uint32_t st = LOAD(&gp->status);
        int reason = __atomic_load_n(&gp->waitreason, __ATOMIC_RELAXED);
        puts_(l, "  G");
        puti(l, id);
        puts_(l, ": status=");
        putu(l, st);
        puts_(l, "(");
        puts_(l, weft__waitreason_string(reason));
        puts_(l, ") m=");
        put_id_or_nil(l, g_mid(gp, st));
        puts_(l, " lockedm=nil");
        endline(l);
    }
}

/* weft__schedtrace - one report on stderr: the summary line, or with
 * detail the detailed line and the P, M and G lines. Any thread, any
 * time while a runtime runs (invariant 1); prints nothing otherwise. */
RACY void weft__schedtrace(bool detail)
{
    struct p *const *allp = __atomic_load_n(&weft__allp, __ATOMIC_ACQUIRE);
    int32_t nprocs = weft__gomaxprocs;
    if (allp == NULL || nprocs <= 0 || nprocs > WEFT_MAXPROCS_LIMIT)
        return;
    int64_t now = weft__nanotime();
    int64_t start = 0;
    /* The first report sets the origin; a racing second one reads it. */
    if (atomic_compare_exchange_strong(&starttime, &start, now))
        start = now;
    else if (now < start)
        now = start;

    /* Invariant 2: the scheduler's words first, then each P's count,
     * all before anything is printed from them. */
    int32_t npidle = LOAD(&weft__sched.npidle);
    int32_t nmspinning = LOAD(&weft__sched.nmspinning);
    int32_t mcount = __atomic_load_n(&weft__sched.mcount, __ATOMIC_RELAXED);
    int32_t nmidle = __atomic_load_n(&weft__sched.nmidle, __ATOMIC_RELAXED);
    int32_t runqsize = LOAD(&weft__sched.runqsize);
    bool sysmonwait = LOAD(&weft__sched.sysmonwait);
    uint16_t counts[WEFT_MAXPROCS_LIMIT];
    bool queued = runqsize > 0;
    for (int32_t i = 0; i < nprocs; i++) {
        counts[i] = (uint16_t)runqcount(allp[i]);
        queued |= counts[i] != 0;
    }
    bool needspinning = queued && npidle > 0 && nmspinning == 0;

    struct line l;
    l.n = 0;
    puts_(&l, "SCHED ");
    puti(&l, (now - start) / 1000000);
    puts_(&l, "ms: gomaxprocs=");
    puti(&l, nprocs);
    puts_(&l, " idleprocs=");
    puti(&l, npidle);
    puts_(&l, " threads=");
    puti(&l, mcount);
    puts_(&l, " spinningthreads=");
    puti(&l, nmspinning);
    puts_(&l, " needspinning=");
    putu(&l, needspinning);
    puts_(&l, " idlethreads=");
    puti(&l, nmidle);
    puts_(&l, " runqueue=");
    puti(&l, runqsize);
    if (!detail) {
        for (int32_t i = 0; i < nprocs; i++) {
            puts_(&l, i == 0 ? " [" : " ");
            putu(&l, counts[i]);
        }
        puts_(&l, "]");
        endline(&l);
        return;
    }
    puts_(&l, " gcwaiting=false nmidlelocked=0 stopwait=0 sysmonwait=");
    putb(&l, sysmonwait);
    endline(&l);
    print_ps(&l, allp, nprocs, counts);
    print_ms(&l);
    print_gs(&l);
}
