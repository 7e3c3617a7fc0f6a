/*
 * cpuprof.c - the CPU profiler: a CPU-time timer per M, a SIGPROF handler
 * that unwinds into a per-M ring, and a collector thread that turns the
 * rings into a (stack, labels) -> count table, written as a pprof CPU
 * profile at weft_cpuprofile_stop.
 *
 * Sampling. Every M (a thread that runs coroutines) gets its own POSIX
 * timer on its own CPU-time clock, delivering SIGPROF to that thread
 * (SIGEV_THREAD_ID), as Go does on Linux since 1.18. Each busy thread is
 * sampled at hz per second of its CPU time however many there are, and
 * the signal lands on the thread that spent the time. An M that starts
 * during a profile arms its own timer before it runs anything; an M
 * whose thread ends deletes its timer first. sysmon, the collector and
 * the program's own threads are never sampled.
 *
 * The handler (profhandler) unwinds the interrupted context with
 * libunwind into the next slot of its M's ring. If the M's current G owns
 * the interrupted stack, the sample takes a reference on that G's labels
 * (an atomic increment: the set cannot die meanwhile, see pprof.h); if
 * the M was on its own thread stack (g0: the scheduler), the root frame
 * PPROF_PC_SCHED is appended, so scheduler time shows as
 * "weft.scheduler". The collector drains every ring each 100 ms into a
 * hash table; stop drains once more and builds the profile.
 *
 * Invariants:
 *  1. The handler allocates nothing, takes no lock and calls no stdio:
 *     libunwind (signal-safe for local unwinding), its own M's ring, a
 *     few atomics.
 *  2. A ring has one producer (the handler, on the M's own thread; it
 *     cannot nest: SIGPROF is blocked while it runs) and one consumer
 *     (the collector, then stop after joining it). The producer fills a
 *     slot, then publishes it with a release store of head the consumer
 *     acquires; the consumer frees it with a release store of tail the
 *     producer acquires. A full ring drops the sample (counted).
 *  3. A cpubuf lives from the first arming of its M in a profile until
 *     stop (or shutdown) frees it. Every handler counts itself in
 *     inflight before it reads `on`, and stop clears `on` before it waits
 *     for inflight to reach 0: a Dekker pair (both seq-cst), so a handler
 *     either sees `on` false and touches no cpubuf, or stop waits for it.
 *  4. cp.lock (a pthread mutex: never taken by the handler) orders start,
 *     stop, and the M start/exit hooks: whoever arms an M does it under
 *     the lock and only if mp->cpubuf is NULL, so an M racing with start
 *     is armed exactly once. An M's thread is alive while its tid is
 *     nonzero under the lock (it deletes its timer under the lock before
 *     it clears tid).
 *  5. Re-entrancy: a SIGPROF that lands while its thread is inside an
 *     unwinder (a dump's freeze handler, a dump or profile run by a
 *     coroutine on this M: traceback.c's weft__tb_busy) or on the M's
 *     signal stack (a dump's frozen M) drops the sample: libunwind's
 *     per-thread cache is not reentrant. SIGURG (the freeze) is blocked
 *     while the handler runs, so a freeze never interrupts our unwind; it
 *     is answered as soon as the handler returns.
 *
 * SIGPROF's disposition: start refuses with WEFT_EBUSY when the program
 * has installed its own handler (SIG_DFL and SIG_IGN are taken over), and
 * stop puts back what was there, after passing through SIG_IGN: setting
 * SIG_IGN discards a SIGPROF still pending on any thread (a deleted
 * timer's last signal may be queued), which the default action would
 * otherwise turn into a process exit.
 *
 * Rejected: setitimer(ITIMER_PROF) (one process-wide timer: the kernel
 * delivers to whichever thread, and undercounts above ~250 signals/s on
 * a busy multi-threaded process, Go issue 35057); perf_event_open (not
 * always permitted); a lock around the rings (a handler must not wait).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "pprof.h"
#include "runtime.h"

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

#define HZ_DEFAULT 100
#define HZ_MAX 1000
#define RING 512   /* slots per M (a power of 2): 512 ms of a 1000 Hz M,
                    * five drain periods, before a sample is lost */
#define DEPTH 64   /* frames kept per sample, the root one included */
#define DRAIN_NS (100 * 1000 * 1000LL)

struct slot {
    int32_t n;
    struct weft__labels *labels; /* one reference, or NULL */
    uintptr_t pc[DEPTH];         /* leaf first; pc[0] exact */
};

struct cpubuf {
    timer_t timer;               /* cp.lock */
    bool armed;                  /* cp.lock: timer exists */
    _Atomic uint64_t head;       /* handler stores (release) */
    _Atomic uint64_t tail;       /* consumer stores (release) */
    _Atomic int64_t drops;       /* handler: full ring, re-entrancy */
    struct slot slot[RING];
};

/* A (stack, labels) pair and how many samples it got. */
struct entry {
    uint64_t hash;
    int32_t n;
    struct weft__labels *labels; /* one reference */
    int64_t count;               /* 0: empty slot */
    uintptr_t *pc;
};

struct table {
    struct entry *e;
    size_t cap, n; /* cap a power of two, at most half full */
    int64_t lost;  /* samples dropped for want of memory */
};

static struct {
    pthread_mutex_t lock;
    bool active;               /* lock: between start and stop */
    int64_t period;            /* lock: ns of CPU time per sample */
    int64_t t0, wall0;         /* lock: monotonic and wall start */
    struct sigaction old;      /* lock: SIGPROF's disposition before */
    pthread_t collector;       /* lock */
    _Atomic uint32_t quit;     /* the collector's stop word */
    struct table tab;          /* the collector's, then stop's */
    int64_t lost;              /* lock: samples the last profile lost */
} cp = {.lock = PTHREAD_MUTEX_INITIALIZER};

static _Atomic bool on;          /* handlers sample (invariant 3) */
static _Atomic int32_t inflight; /* handlers past their check of on */

/* ------------------------------------------------------------- handler */

static bool within(uintptr_t sp, const void *base, size_t size)
{
    return base != NULL && sp >= (uintptr_t)base &&
           sp < (uintptr_t)base + size;
}

/*
 * sample - unwind uc into b's next slot (invariants 1, 2, 5). Runs in
 * the handler on mp's own thread.
 */
static void sample(struct m *mp, struct cpubuf *b, void *uc)
{
    uintptr_t sp = weft__ucsp(uc);
    if (weft__tb_busy || within(sp, mp->sigstack, mp->sigstacksize)) {
        atomic_fetch_add_explicit(&b->drops, 1, memory_order_relaxed);
        return;
    }
    uint64_t h = LOAD(&b->head);
    if (h - LOADACQ(&b->tail) >= RING) {
        atomic_fetch_add_explicit(&b->drops, 1, memory_order_relaxed);
        return;
    }
    struct slot *s = &b->slot[h & (RING - 1)];
    struct tbuf t; /* 1.7 KiB of the 256 KiB signal stack */
    weft__unwind_uc(uc, &t);
    int n = t.n < DEPTH - 1 ? t.n : DEPTH - 1;
    memcpy(s->pc, t.pc, (size_t)n * sizeof s->pc[0]);
    if (n == 0) /* no libunwind, or no CFI at the pc */
        s->pc[n++] = weft__ucpc(uc);
    s->labels = NULL;
    struct g *gp = __atomic_load_n(&mp->curg, __ATOMIC_RELAXED);
    if (gp != NULL && sp >= gp->stk.lo && sp < gp->stk.hi) {
        s->labels = gp->labels;
        weft__labels_ref(s->labels);
    } else if (within(sp, mp->g0_stack_bottom, mp->g0_stack_size)) {
        s->pc[n++] = PPROF_PC_SCHED;
    }
    s->n = n;
    STOREREL(&b->head, h + 1);
}

static void profhandler(int sig, siginfo_t *info, void *uc)
{
    (void)sig;
    (void)info;
    int saved = errno;
    struct m *mp = weft__getm();
    if (mp != NULL) {
        atomic_fetch_add(&inflight, 1); /* seq-cst: Dekker with stop */
        struct cpubuf *b =
            atomic_load(&on) ? __atomic_load_n(&mp->cpubuf, __ATOMIC_ACQUIRE)
                             : NULL;
        if (b != NULL)
            sample(mp, b, uc);
        atomic_fetch_sub(&inflight, 1);
    }
    errno = saved;
}

/* ---------------------------------------------------------------- table */

static uint64_t stackhash(const uintptr_t *pc, int n,
                          const struct weft__labels *l)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)(uintptr_t)l;
    for (int i = 0; i < n; i++) {
        h ^= (uint64_t)pc[i];
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 32;
    }
    return h ^ (uint64_t)n;
}

static bool table_grow(struct table *t)
{
    size_t cap = t->cap ? t->cap * 2 : 1024;
    struct entry *e = calloc(cap, sizeof *e);
    if (e == NULL)
        return false;
    for (size_t i = 0; i < t->cap; i++) {
        if (t->e[i].count == 0)
            continue;
        size_t j = t->e[i].hash & (cap - 1);
        while (e[j].count != 0)
            j = (j + 1) & (cap - 1);
        e[j] = t->e[i];
    }
    free(t->e);
    t->e = e;
    t->cap = cap;
    return true;
}

/* table_add - count one sample; takes over its labels reference. */
static void table_add(struct table *t, const uintptr_t *pc, int n,
                      struct weft__labels *l)
{
    uint64_t h = stackhash(pc, n, l);
    if (t->n + 1 > t->cap / 2 && !table_grow(t))
        goto lost;
    size_t j = h & (t->cap - 1);
    for (; t->e[j].count != 0; j = (j + 1) & (t->cap - 1)) {
        struct entry *e = &t->e[j];
        if (e->hash == h && e->n == n && e->labels == l &&
            memcmp(e->pc, pc, (size_t)n * sizeof *pc) == 0) {
            e->count++;
            weft__labels_unref(l); /* the entry holds one already */
            return;
        }
    }
    uintptr_t *copy = malloc((size_t)n * sizeof *pc);
    if (copy == NULL)
        goto lost;
    memcpy(copy, pc, (size_t)n * sizeof *pc);
    t->e[j] = (struct entry){h, n, l, 1, copy};
    t->n++;
    return;
lost:
    t->lost++;
    weft__labels_unref(l);
}

static void table_free(struct table *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        if (t->e[i].count != 0) {
            weft__labels_unref(t->e[i].labels);
            free(t->e[i].pc);
        }
    }
    free(t->e);
    memset(t, 0, sizeof *t);
}

/* ------------------------------------------------------------ collector */

/* allm - the newest M. Ms are never freed while the runtime runs and a
 * published M's alllink never changes, so the list can be walked from
 * here without the lock, which orders us after the Ms' set-up. */
static struct m *allm(void)
{
    weft__lock(&weft__sched.lock);
    struct m *head = weft__sched.allm;
    weft__unlock(&weft__sched.lock);
    return head;
}

/* drain - move every published slot of every M's ring into t. The one
 * consumer (invariant 2): the collector, or stop once it is joined. */
static void drain(struct table *t)
{
    struct m *head = allm();
    for (struct m *mp = head; mp != NULL; mp = mp->alllink) {
        struct cpubuf *b = __atomic_load_n(&mp->cpubuf, __ATOMIC_ACQUIRE);
        if (b == NULL)
            continue;
        uint64_t tl = LOAD(&b->tail), hd = LOADACQ(&b->head);
        for (; tl != hd; tl++) {
            struct slot *s = &b->slot[tl & (RING - 1)];
            table_add(t, s->pc, s->n, s->labels);
        }
        STOREREL(&b->tail, tl);
    }
}

static void *collector(void *arg)
{
    (void)arg;
    while (atomic_load(&cp.quit) == 0) {
        weft__futexwait_os(&cp.quit, 0, DRAIN_NS);
        drain(&cp.tab);
    }
    return NULL;
}

/* ---------------------------------------------------------------- arming */

/*
 * arm - give mp a ring and a timer on its thread's CPU clock that sends
 * SIGPROF to that thread every cp.period ns of its CPU time. self: mp is
 * the calling thread. Caller holds cp.lock; mp's tid is set (invariant
 * 4). A failure leaves mp unsampled: the profile goes on without it.
 */
static void arm(struct m *mp, bool self)
{
    pid_t tid = atomic_load(&mp->tid);
    if (tid == 0 || mp->cpubuf != NULL)
        return;
    struct cpubuf *b = calloc(1, sizeof *b);
    if (b == NULL)
        return;
    /* The thread's CPU clock from its tid, as glibc's
     * pthread_getcpuclockid computes it: mp->thread is written by
     * pthread_create in the creating thread, with no order against tid. */
    clockid_t clk = self ? CLOCK_THREAD_CPUTIME_ID
                         : (clockid_t)((~(unsigned)tid << 3) | 6);
    struct sigevent sev;
    memset(&sev, 0, sizeof sev);
    sev.sigev_notify = SIGEV_THREAD_ID;
    sev.sigev_signo = SIGPROF;
    sev.sigev_notify_thread_id = tid;
    if (timer_create(clk, &sev, &b->timer) < 0) {
        free(b);
        return;
    }
    b->armed = true;
    __atomic_store_n(&mp->cpubuf, b, __ATOMIC_RELEASE);
    struct itimerspec its;
    its.it_interval.tv_sec = cp.period / 1000000000;
    its.it_interval.tv_nsec = cp.period % 1000000000;
    its.it_value = its.it_interval;
    timer_settime(b->timer, 0, &its, NULL);
}

static void disarm(struct cpubuf *b)
{
    if (b->armed) {
        timer_delete(b->timer);
        b->armed = false;
    }
}

void weft__cpuprof_mstart(struct m *mp)
{
    /* Dekker with start: our tid store (mstart) and this load against
     * its store of on and its load of our tid; both seq-cst. */
    if (!atomic_load(&on))
        return;
    pthread_mutex_lock(&cp.lock);
    if (atomic_load(&on))
        arm(mp, true);
    pthread_mutex_unlock(&cp.lock);
}

void weft__cpuprof_mexit(struct m *mp)
{
    pthread_mutex_lock(&cp.lock);
    if (mp->cpubuf != NULL)
        disarm(mp->cpubuf); /* its samples wait in the ring for stop */
    pthread_mutex_unlock(&cp.lock);
}

/* --------------------------------------------------------- start / stop */

static bool prog_handler(const struct sigaction *sa)
{
    if (sa->sa_flags & SA_SIGINFO)
        return sa->sa_sigaction != NULL && sa->sa_sigaction != profhandler;
    return sa->sa_handler != SIG_DFL && sa->sa_handler != SIG_IGN;
}

/*
 * end - stop sampling and hand over the collected table (invariant 3):
 * no handler touches a cpubuf once it returns, and every cpubuf is
 * freed. Caller holds cp.lock; a profile is active.
 */
static void end(struct table *out)
{
    atomic_store(&on, false); /* seq-cst: Dekker with the handlers */
    atomic_store(&cp.quit, 1);
    weft__futexwake_os(&cp.quit, 1);
    pthread_join(cp.collector, NULL);
    struct m *head = allm();
    for (struct m *mp = head; mp != NULL; mp = mp->alllink)
        if (mp->cpubuf != NULL)
            disarm(mp->cpubuf);
    while (atomic_load(&inflight) != 0)
        sched_yield();
    struct sigaction ign;
    memset(&ign, 0, sizeof ign);
    ign.sa_handler = SIG_IGN;
    sigaction(SIGPROF, &ign, NULL);
    sigaction(SIGPROF, &cp.old, NULL);
    drain(&cp.tab);
    cp.lost = cp.tab.lost;
    for (struct m *mp = head; mp != NULL; mp = mp->alllink) {
        struct cpubuf *b = mp->cpubuf;
        if (b == NULL)
            continue;
        cp.lost += LOAD(&b->drops);
        __atomic_store_n(&mp->cpubuf, NULL, __ATOMIC_RELEASE);
        free(b);
    }
    *out = cp.tab;
    memset(&cp.tab, 0, sizeof cp.tab);
    cp.active = false;
}

WEFT_EXTERN int weft_cpuprofile_start(int hz)
{
#if !WEFT_HAVE_PPROF
    /* Without protobuf-c and zlib there is no profile to write at stop. */
    return -ENOSYS;
#endif
    if (hz < 0 || hz > HZ_MAX)
        return WEFT_EINVAL;
    if (hz == 0)
        hz = HZ_DEFAULT;
    if (!weft__runtime_on())
        return WEFT_ENORUNTIME;
    pthread_mutex_lock(&cp.lock);
    int err = WEFT_EBUSY;
    struct sigaction old;
    if (cp.active || sigaction(SIGPROF, NULL, &old) < 0 || prog_handler(&old))
        goto out;
    /* libunwind's one-time set-up (the caching policy, its tables, its
     * pipe) here, not in the first handler. */
    weft__unwind_warm();

    cp.old = old;
    cp.period = 1000000000LL / hz;
    memset(&cp.tab, 0, sizeof cp.tab);
    atomic_store(&cp.quit, 0);
    /* The collector takes no signal: they are for the Ms and the dumper. */
    sigset_t all, prev;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &prev);
    int e = pthread_create(&cp.collector, NULL, collector, NULL);
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    if (e != 0) {
        err = -e;
        goto out;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = profhandler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaddset(&sa.sa_mask, SIGURG); /* invariant 5: no freeze inside */
    sigaction(SIGPROF, &sa, NULL);

    cp.wall0 = weft__walltime();
    cp.t0 = weft__nanotime();
    cp.active = true;
    atomic_store(&on, true); /* seq-cst: Dekker with weft__cpuprof_mstart */
    struct m *head = allm();
    struct m *self = weft__getm();
    for (struct m *mp = head; mp != NULL; mp = mp->alllink)
        arm(mp, mp == self);
    err = 0;
out:
    pthread_mutex_unlock(&cp.lock);
    return err;
}

WEFT_EXTERN int weft_cpuprofile_stop(int fd)
{
    pthread_mutex_lock(&cp.lock);
    if (!cp.active) {
        pthread_mutex_unlock(&cp.lock);
        return WEFT_EINVAL;
    }
    struct table t;
    end(&t);
    int64_t period = cp.period, wall0 = cp.wall0;
    int64_t duration = weft__nanotime() - cp.t0;
    pthread_mutex_unlock(&cp.lock);

    /* Built outside the lock: symbolizing may take a while, and a new M
     * must not wait for it in weft__cpuprof_mstart. Discarded: nothing
     * to build (the debug server's client went away). */
    int r = 0;
    if (fd < 0)
        goto out;
    struct pprof *b = weft__pprof_new(PPROF_CPU, period, wall0, duration);
    if (b == NULL) {
        r = WEFT_ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < t.cap && r == 0; i++) {
        const struct entry *e = &t.e[i];
        if (e->count == 0)
            continue;
        int64_t v[2] = {e->count, e->count * period};
        r = weft__pprof_add(b, e->pc, e->n, true, v, e->labels);
    }
    if (r == 0)
        r = weft__pprof_write(b, fd);
    else
        weft__pprof_free(b);
out:
    table_free(&t);
    return r;
}

void weft__cpuprof_shutdown(void)
{
    pthread_mutex_lock(&cp.lock);
    struct table t = {0};
    if (cp.active)
        end(&t);
    pthread_mutex_unlock(&cp.lock);
    table_free(&t);
}

/* weft__cpuprof_lost - the samples the last finished profile lost:
 * handler drops (full ring, re-entrancy) and table allocation failures.
 * For tests. */
int64_t weft__cpuprof_lost(void)
{
    pthread_mutex_lock(&cp.lock);
    int64_t n = cp.lost;
    pthread_mutex_unlock(&cp.lock);
    return n;
}
