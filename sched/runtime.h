/*
 * runtime.h - the core types of the weft scheduler: G (coroutine), M (OS
 * thread), P (processor), and the global sched. The counterpart of Go's
 * runtime2.go; read docs/HACKING.md first.
 *
 * Who owns what:
 *  1. A G is owned by whoever holds it: the M running it, a run queue, a
 *     waiter list (timer, channel, sema, fd), or a free list. Its
 *     status says which; transitions are listed with the status values.
 *  2. A P is owned by the M whose mp->p points at it, or by the idle list
 *     (sched.lock). Only its owner touches fields marked "owner".
 *  3. G descriptors are never freed while the runtime runs (they go to free
 *     lists and are reused), so a racy read of a G pointer (sysmon, dumps)
 *     never touches freed memory; it may see a stale G.
 *  4. Code may not hold a pointer to the current M or G across a context
 *     switch: a G can resume on another M. Re-read with weft__getm().
 *
 * Locks, in the order they may nest: sched.lock > pp->timerlock >
 * sched.gflock > allglock. None is held across a context switch.
 */
#ifndef WEFT_RUNTIME_H
#define WEFT_RUNTIME_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include "sanitizer.h"
#include "weft.h"

#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define CACHELINE 64

/* Relaxed/acquire/release shorthands: every shared field is C11 atomic or
 * guarded by a lock, and these say which ordering a site needs. */
#define LOAD(p) atomic_load_explicit((p), memory_order_relaxed)
#define LOADACQ(p) atomic_load_explicit((p), memory_order_acquire)
#define STORE(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)
#define STOREREL(p, v) atomic_store_explicit((p), (v), memory_order_release)

/* ----------------------------------------------------------- small locks */

/* A futex mutex (0 free, 1 locked, 2 locked with waiters). Short critical
 * sections only; never held across a context switch. */
typedef struct wlock {
    _Atomic uint32_t key;
} wlock;

/* Inline fast paths (a CAS, an exchange): a channel round trip takes
 * eight, and the calls and the registers they clobbered cost more than
 * the atomics (callgrind: 13 and 12 instructions each out of line). */
void weft__lock_slow(wlock *l);
void weft__unlock_wake(wlock *l);

static inline void weft__lock(wlock *l)
{
    uint32_t v = 0;
    if (__builtin_expect(atomic_compare_exchange_strong_explicit(
                             &l->key, &v, 1, memory_order_acquire,
                             memory_order_relaxed),
                         1)) {
        weft__tsan_acquire(l);
        return;
    }
    weft__lock_slow(l);
}

static inline void weft__unlock(wlock *l)
{
    weft__tsan_release(l);
    if (__builtin_expect(atomic_exchange_explicit(&l->key, 0,
                                                  memory_order_release) == 2,
                         0))
        weft__unlock_wake(l);
}

/* A one-shot wakeup for parking an M (Go's note): sleep until woken. */
typedef struct note {
    _Atomic uint32_t key;
} note;

void weft__notesleep(note *n);
/* weft__notetsleep - sleep at most ns; returns true if woken. */
bool weft__notetsleep(note *n, int64_t ns);
void weft__notewakeup(note *n);

/* The thread-level futex under the lock and the note, for the runtime's
 * own waits outside them (dump.c's freeze): sleep while *addr == val, at
 * most ns (< 0: no limit); wake n sleepers. */
void weft__futexwait_os(_Atomic uint32_t *addr, uint32_t val, int64_t ns);
void weft__futexwake_os(_Atomic uint32_t *addr, int n);
static inline void weft__noteclear(note *n) { STORE(&n->key, 0); }

/* --------------------------------------------------------- status lists */

/*
 * G statuses. The number is what scheddetail prints (Go's values).
 *  IDLE      just allocated, not yet initialised.
 *  RUNNABLE  on a run queue (local ring, runnext or global); not running;
 *            its context is saved. Only the queue owner may take it.
 *  RUNNING   executing on gp->m, which holds a P. Owns its stack.
 *  SYSCALL   executing on gp->m inside weft_syscall_enter/exit; its P may
 *            be taken by sysmon. Owns its stack.
 *  WAITING   parked; context saved; on exactly one waiter structure, which
 *            moves it to RUNNABLE with weft__ready().
 *  DEAD      finished; on a free list or in allgs awaiting reuse.
 * Legal transitions: IDLE->RUNNABLE (spawn), RUNNABLE->RUNNING (execute),
 * RUNNING->RUNNABLE (yield, preempt), RUNNING->WAITING (park),
 * WAITING->RUNNABLE (ready), RUNNING<->SYSCALL, RUNNING->DEAD (exit),
 * DEAD->RUNNABLE (reuse by spawn).
 */
#define WEFT_GSTATUS_LIST(X)                                                   \
    X(G_IDLE, 0, "idle")                                                       \
    X(G_RUNNABLE, 1, "runnable")                                               \
    X(G_RUNNING, 2, "running")                                                 \
    X(G_SYSCALL, 3, "syscall")                                                 \
    X(G_WAITING, 4, "waiting")                                                 \
    X(G_DEAD, 6, "dead")

enum gstatus {
#define X(name, num, str) name = num,
    WEFT_GSTATUS_LIST(X)
#undef X
};

/* Wait reasons, with Go's strings (runtime2.go waitReasonStrings) so a dump
 * reads like Go's. Later modules add their reasons here. */
#define WEFT_WAITREASON_LIST(X)                                                \
    X(WR_ZERO, "")                                                             \
    X(WR_SELECT_NO_CASES, "select (no cases)")                                 \
    X(WR_CHAN_RECEIVE, "chan receive")                                         \
    X(WR_CHAN_SEND, "chan send")                                               \
    X(WR_SELECT, "select")                                                     \
    X(WR_SLEEP, "sleep")                                                       \
    X(WR_IO_WAIT, "IO wait")                                                   \
    X(WR_SEMACQUIRE, "semacquire")                                             \
    X(WR_SYNC_MUTEX_LOCK, "sync.Mutex.Lock")                                   \
    X(WR_SYNC_RWMUTEX_RLOCK, "sync.RWMutex.RLock")                             \
    X(WR_SYNC_RWMUTEX_LOCK, "sync.RWMutex.Lock")                               \
    X(WR_SYNC_COND_WAIT, "sync.Cond.Wait")                                     \
    X(WR_SYNC_WAITGROUP_WAIT, "sync.WaitGroup.Wait")                           \
    X(WR_PREEMPTED, "preempted")

enum waitreason {
#define X(name, str) name,
    WEFT_WAITREASON_LIST(X)
#undef X
    WR__COUNT
};

const char *weft__gstatus_string(uint32_t status);
const char *weft__waitreason_string(int reason);

/* P statuses (Go's numbering).
 *  IDLE     on sched.pidle, no M.
 *  RUNNING  owned by an M running Gs or the scheduler.
 *  SYSCALL  its M is in weft_syscall_enter; sysmon may CAS it to IDLE
 *           and hand it off; the M's exit CASes it back to RUNNING. */
#define WEFT_PSTATUS_LIST(X)                                                   \
    X(P_IDLE, 0)                                                               \
    X(P_RUNNING, 1)                                                            \
    X(P_SYSCALL, 2)

enum pstatus {
#define X(name, num) name = num,
    WEFT_PSTATUS_LIST(X)
#undef X
};

/* --------------------------------------------------------------- stacks */

/* Every stack has WEFT__GUARD bytes of guard right below lo. */
#define WEFT__GUARD ((uintptr_t)64 * 1024)

struct stack {
    uintptr_t lo; /* lowest usable byte (guard ends here); 0: no stack */
    uintptr_t hi; /* one past the highest byte; 16-aligned */
    bool slab;    /* carved from a slab (default size) vs own mapping */
};

/* Saved register context; see context_*.S. Only sp: callee-saved
 * registers are pushed on the G's own stack. */
struct ctx {
    void *sp;
};

void weft__ctx_switch(struct ctx *save, struct ctx *load);
void weft__ctx_start(void); /* entry trampoline, see context_*.S */
void weft__ctx_switch_saved(void); /* where a saved context stands */
/* Prepare ctx so switching to it calls entry(arg) on [lo, hi). */
void weft__ctx_make(struct ctx *c, uintptr_t hi, void (*entry)(void *),
                    void *arg);

/* ---------------------------------------------------------------- timers */

struct p;
struct timer;
/* f(arg, seq, now): arg and seq as they were when the timer was armed,
 * copied under the heap lock as it fires, so a timer re-armed while an
 * earlier firing is still in flight cannot confuse that firing. */
typedef void (*timer_fn)(void *arg, uint64_t seq, int64_t now);

/* A timer lives inside its owner (a G, a poll descriptor). It is on at
 * most one P's heap; fields are guarded by that P's timerlock. */
struct timer {
    int64_t when;     /* timerlock */
    timer_fn f;       /* timerlock: set by timer_add */
    void *arg;        /* timerlock: set by timer_add */
    uint64_t seq;     /* timerlock: set by timer_add */
    struct p *_Atomic pp; /* timerlock of pp: heap holding it, or NULL */
    int32_t idx;      /* timerlock: index in pp->timers, -1 if none */
};

/* ------------------------------------------------------------------- G */

#define G_NAME_MAX 32

struct m;
struct weft__labels;

struct g {
    struct ctx ctx;        /* owner: valid while not RUNNING/SYSCALL */
    struct stack stk;      /* immutable while alive */
    _Atomic uint32_t status;
    uint8_t waitreason;    /* owner writes (relaxed atomic); racy readers */
    bool syscallp;         /* owner: inside weft_syscall_enter */
    _Atomic uint32_t preempt; /* sysmon sets, the G clears */
    uint32_t idx;          /* immutable: index in the allg registry */
    uint32_t runs;         /* owner: times it was switched in; a dump's
                            * cached stack (tbcache) is good while equal.
                            * In the first line with status: execute
                            * touches both on every switch */
    int32_t waitfd;        /* owner (relaxed atomic): the fd of its last
                            * IO wait; dumps read it under WR_IO_WAIT */
    int64_t id;            /* immutable while alive; never reused */
    uintptr_t spawnpc;     /* creator's call site */
    int64_t parentid;      /* immutable while alive */
    int64_t createdat;     /* weft_now() at spawn */
    int64_t waitsince;     /* owner: when it last parked (coarse clock);
                            * dead on the global free list: -(freed at)
                            * until sysmon trims its stack, then 0 */
    weft_fn fn;
    union {
        void *arg;           /* alive: fn's argument */
        struct g *nextbatch; /* dead, heading a global free batch: the
                              * next batch (gflock) */
    };
    struct g *schedlink;   /* run queue / free list link, per owner */
    struct timer timer;    /* sleep / wait deadline timer */
    _Atomic uint64_t waitstate; /* park.c: seq << 2 | WS_* of its wait */
    void *asan_fake;       /* sanitizer fiber state */
    void *tsan_fiber;
    unsigned vg_stack;     /* valgrind stack id */
    struct gtrace *tbcache; /* dump lock: the stack the last dump read */
    char *name;            /* G_NAME_MAX bytes, allocated at the first named
                            * spawn and kept with the descriptor (dumps
                            * read it racily); "" or NULL: unnamed */
    struct weft__labels *labels; /* owner: its reference (pprof.h), NULL:
                                  * no labels */
    /* Scheduling latency (metrics.c), Go's gTrackingPeriod: a transition
     * to runnable while runs % METRICS_TRACK_PERIOD == 0 is stamped here
     * (runs does not change until execute, which records and clears it;
     * runs counts transitions already, so nothing more is kept per
     * switch). Ordered by the run queue like the G itself. */
    int64_t runnableat;    /* 0: not sampled */
};

/* ---------------------------------------------------------------- waits */

/*
 * A G waiting on a queue (Go's sudog). It lives on the waiting G's stack
 * for one wait; fields other than g/seq are guarded by the lock of the
 * queue it is on. park.c has the protocol; in short:
 *  1. The waiter calls weft__wait_prepare (new seq), queues its sudog(s)
 *     under the object's lock, and weft__wait_park()s with an unlock
 *     function that releases that lock after the switch.
 *  2. A waker, holding the lock, dequeues a sudog and calls
 *     weft__wait_claim(s): on true it owns the wake-up (fill in results,
 *     then weft__ready), on false the waiter is already woken or timing
 *     out: skip it.
 *  3. The deadline timer claims the same way; the timed-out waiter then
 *     retakes the lock and removes its sudog(s) if still queued.
 */
struct sudog {
    struct g *g;
    uint64_t seq;               /* the wait it belongs to */
    struct sudog *next, *prev;  /* queue lock */
    void *elem;                 /* chan: value to send / where to receive */
    void *obj;                  /* the object waited on (chan, sema addr) */
    int32_t idx;                /* select: case index */
    bool queued;                /* queue lock: on a waitq now */
    bool success;               /* set by the claiming waker: op done */
    uint32_t ticket;            /* free for the object's own use */
};

struct waitq {
    struct sudog *first, *last;
};

enum { WS_WAITING = 0, WS_WOKEN = 1, WS_TIMEDOUT = 2 };

static inline void weft__waitq_push(struct waitq *q, struct sudog *s)
{
    s->next = NULL;
    s->prev = q->last;
    if (q->last != NULL)
        q->last->next = s;
    else
        q->first = s;
    q->last = s;
    s->queued = true;
}

static inline void weft__waitq_remove(struct waitq *q, struct sudog *s)
{
    if (!s->queued)
        return;
    if (s->prev != NULL)
        s->prev->next = s->next;
    else
        q->first = s->next;
    if (s->next != NULL)
        s->next->prev = s->prev;
    else
        q->last = s->prev;
    s->next = s->prev = NULL;
    s->queued = false;
}

static inline struct sudog *weft__waitq_pop(struct waitq *q)
{
    struct sudog *s = q->first;
    if (s != NULL)
        weft__waitq_remove(q, s);
    return s;
}

/* park.c */
uint64_t weft__wait_prepare(struct g *gp);
int weft__wait_park(int reason, int64_t deadline, void (*unlock)(void *),
                    void *arg);
bool weft__wait_claim(struct sudog *s);
void weft__wait_arm(struct g *gp, int64_t deadline);
bool weft__wait_claim_g(struct g *gp, uint32_t seq32);

/* sema.c: the one parking mechanism of the sync objects (mutex.c).
 * Semaphore discipline: *addr counts units; futex discipline: sleep while
 * *addr == val. */
enum { SEMA_HANDOFF = 1, SEMA_YIELD = 2 };
bool weft__cansemacquire(_Atomic uint32_t *addr);
int weft__semacquire(_Atomic uint32_t *addr, int64_t deadline, int reason,
                     bool lifo);
void weft__semrelease(_Atomic uint32_t *addr, uint32_t n, int flags,
                      struct g *unlocker);
int weft__futexsleep(_Atomic uint32_t *addr, uint32_t val, int64_t deadline,
                     int reason);
void weft__futexwakeup(_Atomic uint32_t *addr, uint32_t n,
                       struct g *unlocker);
/* A new runtime forgets the wait tables of the last one (weft_main). */
void weft__sema_reset(void);
void weft__mutex_reset(void);
bool weft__canspin(int iter);
void weft__dospin(void);

/* chan.c <-> select.c: channel internals select works with, under the
 * channel locks it takes in address order (tryop takes what it needs). */
bool weft__chan_ok(weft_chan_t *c);
void weft__chan_lock(weft_chan_t *c);
void weft__chan_unlock(weft_chan_t *c);
int weft__chan_send_locked(weft_chan_t *c, const void *elem,
                           struct g **wake);
int weft__chan_recv_locked(weft_chan_t *c, void *elem, struct g **wake);
void weft__chan_prewait_locked(weft_chan_t *c, int op);
void weft__chan_unwait_locked(weft_chan_t *c, int op);
void weft__chan_enqueue_locked(weft_chan_t *c, int op, struct sudog *s);
void weft__chan_dequeue_locked(weft_chan_t *c, int op, struct sudog *s);
bool weft__chan_retry(const struct sudog *s);
int weft__chan_tryop(weft_chan_t *c, int op, void *elem);
void weft__chan_ref_locked(weft_chan_t *c);
void weft__chan_unref(weft_chan_t *c);

/* Contention hook: NULL unless a block or mutex profile is on; one
 * predictable branch per wait otherwise. unlocker: the G that released
 * a mutex the waiter wanted, NULL for other waits. */
typedef void (*weft__contention_fn)(struct g *gp, int reason, int64_t start,
                                    int64_t end, const void *obj,
                                    struct g *unlocker);
extern _Atomic(weft__contention_fn) weft__contention_hook; /* profiles.c
                                                             * sets it */
/* CONTENTION_HOOK() - the hook, for the checks on the wait paths.
 * -DWEFT_NO_CONTENTION_HOOK=1 makes it a constant NULL, so the compiler
 * drops the checks: only bench/profiling.sh's baseline build uses it, to
 * show what the checks cost with profiling off (profiles then record no
 * block or mutex events). */
#if defined(WEFT_NO_CONTENTION_HOOK) && WEFT_NO_CONTENTION_HOOK
#define CONTENTION_HOOK() ((weft__contention_fn)NULL)
#else
/* Relaxed: the hook is code, and what it records is under its own
 * locks; nothing else is ordered by this load. */
#define CONTENTION_HOOK()                                                      \
    atomic_load_explicit(&weft__contention_hook, memory_order_relaxed)
#endif
/* profiles.c: record the calling thread's stack as a thread creator
 * (newm, before the thread starts); forget the last runtime's records
 * (weft_main). */
void weft__threadcreate_record(void);
void weft__profiles_reset(void);

/* ------------------------------------------------------------- metrics */

/* Latency buckets: upper bounds 100 ns, 200 ns, 500 ns ... 1 s, then
 * +Inf (metrics.c, weft.h's WEFT_METRICS_LAT_BUCKETS). One transition to
 * runnable in METRICS_TRACK_PERIOD per G is timed. */
#define METRICS_LAT_BUCKETS 23
#define METRICS_TRACK_PERIOD 256

/* A P's counters (metrics.c sums them on read). Written by the owner P
 * only (relaxed atomic load + store: no lock prefix, no shared line),
 * except ticks, which only sysmon writes; read racily by anyone. */
struct pmetrics {
    uint64_t created;       /* owner: Gs spawned here */
    uint64_t exited;        /* owner: Gs that ended here */
    uint64_t steals;        /* owner: successful runqsteal calls */
    uint64_t mutexwait;     /* owner: ns waiters spent blocked, resumed here */
    uint64_t latsum;        /* owner: ns, sampled latencies */
    uint64_t lat[METRICS_LAT_BUCKETS]; /* owner: sampled latencies */
    uint64_t ticks;         /* sysmon: schedtick widened to 64 bits; the
                             * low 32 bits equal schedtick when written */
};

static inline void weft__pstat_add(uint64_t *f, uint64_t d)
{
    __atomic_store_n(f, __atomic_load_n(f, __ATOMIC_RELAXED) + d,
                     __ATOMIC_RELAXED);
}

struct p;
/* metrics.c: record gp's sampled latency on pp (execute, owner P) */
void weft__metrics_schedlat(struct p *pp, struct g *gp);
/* metrics.c: a contended sync-object wait of ns, on the current P */
void weft__metrics_mutexwait(int64_t ns);
/* metrics.c: widen every P's schedtick (sysmon, every busy tick) */
void weft__metrics_tick(void);
/* metrics.c: v as Go's strconv.FormatFloat(v, 'g', -1, 64) */
void weft__metrics_fmtg(char *out, size_t cap, double v);

/* ------------------------------------------------------------------- P */

#define RUNQ_SIZE 256
#define GFREE_MAX 64
#define GFREE_BATCH (GFREE_MAX / 2) /* Gs moved between a P and sched */

struct p {
    int32_t id;                    /* immutable */
    _Atomic uint32_t status;       /* enum pstatus */
    struct m *_Atomic m;           /* owner M, NULL if idle */
    struct p *link;                /* sched.lock: idle list */
    _Atomic uint32_t schedtick;    /* owner writes; incremented per execute */
    _Atomic uint32_t slicetick;    /* owner writes; per execute that starts
                                    * a time slice: not one from runnext,
                                    * which inherits its readier's (sysmon
                                    * preempts a slice 10 ms old, so a
                                    * ping-pong pair cannot starve the
                                    * rest of its P) */
    _Atomic uint32_t syscalltick;  /* owner writes; per syscall enter */
    uint32_t uringq;               /* owner: io_uring requests queued on
                                    * its ring, not yet sent (uring.c) */

    /* Run queue: owner pushes at tail, anyone CAS-pops at head. */
    _Alignas(CACHELINE) _Atomic uint32_t runqhead;
    _Atomic uint32_t runqtail;
    struct g *_Atomic runnext;
    struct g *_Atomic runq[RUNQ_SIZE];

    /* owner: dead Gs with default-size stacks, for reuse */
    _Alignas(CACHELINE) struct g *gfree;
    int32_t gfreecnt;
    int64_t goidcache, goidcacheend; /* owner: batch of fresh G ids */

    /* Timers: heap ordered by when. timer0when is the earliest, 0 if
     * none, readable without the lock. */
    wlock timerlock;
    _Atomic int64_t timer0when;
    struct timer **timers; /* timerlock */
    int32_t ntimers, timerscap;

    /* sysmon's view, touched only by sysmon */
    uint32_t sm_slicetick, sm_syscalltick;
    int64_t sm_slicewhen, sm_syscallwhen;
    struct g *sm_preempted;  /* the G it last flagged here, until settled */
    uint32_t sm_preempttick; /* schedtick when it flagged it */

    _Alignas(CACHELINE) struct pmetrics metrics;
};

/* ------------------------------------------------------------------- M */

/* M states, for shutdown: an M in a syscall cannot be joined. */
enum mstate { M_RUNNING, M_SYSCALL, M_ABANDONED, M_DONE };

struct m {
    int64_t id;                /* immutable */
    struct ctx g0ctx;          /* owner: the scheduler context */
    struct g *curg; /* owner writes (atomic store), sysmon reads: G running */
    struct p *p;               /* owner: attached P, or NULL */
    struct p *nextp;           /* P handed over by startm */
    struct p *oldp;            /* P held when the syscall began */
    _Atomic bool spinning;     /* looking for work, counted in nmspinning */
    _Atomic uint32_t state;    /* enum mstate */
    note park;                 /* stopm sleeps here */
    struct m *schedlink;       /* sched.lock: idle list */
    struct m *alllink;         /* sched.lock: all Ms, newest first */
    pthread_t thread;
    bool started;              /* its thread was created (joinable) */
    uint64_t fastrand;         /* owner */

    /* Work left for whoever runs next on this M, after a switch: see
     * "after" in proc.c. */
    int after;
    struct g *afterg;
    bool (*afterunlock)(struct g *gp, void *arg);
    void *afterarg;

    /* A dump's freeze (traceback.c): the thread id (0 until the thread
     * runs, and after it ends), the freeze generation this M answered,
     * and what its signal handler found: the interrupted sp, the Gs
     * that may own that stack, and the stack unwound from there. */
    _Atomic int32_t tid;
    _Atomic uint32_t freezeack;
    uintptr_t frozensp;
    struct g *frozeng, *frozenafter;
    struct tbuf *frozen;

    void *sigstack;            /* sigaltstack for signals (dumps too) */
    struct cpubuf *cpubuf;     /* cpuprof.c: its lock writes, SIGPROF reads */
    size_t sigstacksize;
    void *g0_asan_fake;
    void *g0_tsan_fiber;
    const void *g0_stack_bottom; /* for sanitizer fiber switches */
    size_t g0_stack_size;
};

/* --------------------------------------------------------------- sched */

struct schedt {
    wlock lock;

    struct m *midle;            /* lock: idle Ms */
    int32_t nmidle;             /* lock */
    int32_t mcount;             /* lock: Ms created */
    int64_t mnext;              /* lock: next M id */
    struct m *allm;             /* lock: every M, newest first */

    struct p *pidle;            /* lock: idle Ps */
    _Atomic int32_t npidle;
    _Atomic int32_t nmspinning;

    struct g *runqhead, *runqtail; /* lock: global run queue */
    _Atomic int32_t runqsize;

    _Atomic int64_t goidgen;    /* next batch of G ids */

    _Atomic bool exiting;       /* weft_main's fn returned */
    int mainresult;

    _Atomic int64_t lastpoll;   /* 0 while an M blocks in netpoll */
    _Atomic int64_t polluntil;  /* when the netpoll sleeper wakes */

    _Atomic int32_t extrefs;    /* weft_external_ref holders */
    _Atomic bool extwoken;      /* an outside thread readied a G */

    note sysmonnote;            /* sysmon's idle sleep */
    note exitnote;              /* weft_main sleeps here until G1 ends */
    _Atomic bool sysmonwait;

    /* Dead Gs with default stacks, shared between Ps: a stack of
     * batches of GFREE_BATCH Gs linked through schedlink, the batches
     * through their first G's nextbatch. A P takes a whole batch without
     * touching the Gs, whose lines are likely in another core's cache. */
    wlock gflock;
    struct g *gfree;            /* gflock */
    struct g *gfreenostack;     /* gflock: dead Gs that own no stack */
    _Atomic int32_t ngfree;     /* gflock writes; read unlocked as a hint */

    _Atomic uint64_t nhandoff;  /* sysmon: Ps retaken from syscalls */
};

extern struct schedt weft__sched;
extern struct p **weft__allp;   /* immutable while running */
extern int32_t weft__gomaxprocs;

/* All Gs ever allocated, for dumps and shutdown: descriptors are carved
 * in chunks of ALLG_CHUNK and never move, so the chunk table is the
 * registry. Writers hold allglock; racy readers load allglen (acquire)
 * and then the table: old tables stay allocated until shutdown. */
#define ALLG_CHUNK 64
extern wlock weft__allglock;
extern struct g **weft__allgchunks;
extern size_t weft__allglen;

static inline struct g *weft__allg(struct g **chunks, size_t i)
{
    return &chunks[i / ALLG_CHUNK][i % ALLG_CHUNK];
}

/* ------------------------------------------------------- internal calls */

/* The M of the calling thread, or NULL. Not inline on purpose: the
 * compiler must not cache a thread-local address across a switch. */
struct m *weft__getm(void);
struct g *weft__getg(void); /* current G, or NULL (on g0 or no M) */

int64_t weft__nanotime(void);
int64_t weft__walltime(void);
uint32_t weft__fastrand(struct m *mp);

/* proc.c */
typedef bool (*unlockf)(struct g *gp, void *arg);
void weft__park(unlockf f, void *arg, int reason);
void weft__ready(struct g *gp);
void weft__ready_any(struct g *gp);
void weft__wakep(void);
void weft__netpoll_inject(struct g *list);
bool weft__runtime_on(void);
void weft__startm(struct p *pp, bool spinning);
void weft__handoffp(struct p *pp);
struct g *weft__preemptone(struct p *pp);
void weft__preempt_withdraw(struct g *gp);
_Noreturn void weft__throw(const char *msg);

/* runq.c: all on a P that the caller owns unless noted. The owner's
 * put/get are inline: they are most of a context switch. */
bool weft__runqputslow(struct p *pp, struct g *gp, uint32_t h, uint32_t t);
/* weft__runqput - make gp runnable on pp. next: put it in runnext (it
 * runs next), kicking the old runnext to the tail. Owner P only. */
static inline void weft__runqput(struct p *pp, struct g *gp, bool next)
{
    if (next) {
        /* Stealers only CAS the slot to NULL: a plain exchange. */
        struct g *old = atomic_exchange_explicit(&pp->runnext, gp,
                                                 memory_order_acq_rel);
        if (old == NULL)
            return;
        gp = old;
    }
    for (;;) {
        uint32_t h = LOADACQ(&pp->runqhead);
        uint32_t t = LOAD(&pp->runqtail);
        if (t - h < RUNQ_SIZE) {
            STORE(&pp->runq[t % RUNQ_SIZE], gp);
            STOREREL(&pp->runqtail, t + 1);
            return;
        }
        if (weft__runqputslow(pp, gp, h, t))
            return;
        /* A stealer made room meanwhile; the ring has space now. */
    }
}

/* weft__runqget - next G to run from pp: runnext, then the ring head.
 * *inherit (if not NULL): it came from runnext, so it shares the time
 * slice of the G that readied it (Go's inheritTime). Owner P only. */
static inline struct g *weft__runqget(struct p *pp, bool *inherit)
{
    struct g *next = LOAD(&pp->runnext);
    /* Only the owner sets runnext, so if the CAS fails a stealer took
     * it; fall through to the ring. */
    if (next != NULL &&
        atomic_compare_exchange_strong_explicit(&pp->runnext, &next, NULL,
                                                memory_order_acquire,
                                                memory_order_relaxed)) {
        if (inherit != NULL)
            *inherit = true;
        return next;
    }
    if (inherit != NULL)
        *inherit = false;
    for (;;) {
        uint32_t h = LOADACQ(&pp->runqhead);
        uint32_t t = LOAD(&pp->runqtail);
        if (t == h)
            return NULL;
        struct g *gp = LOAD(&pp->runq[h % RUNQ_SIZE]);
        if (atomic_compare_exchange_weak_explicit(&pp->runqhead, &h, h + 1,
                                                  memory_order_release,
                                                  memory_order_relaxed))
            return gp;
    }
}

bool weft__runqempty(struct p *pp);       /* any thread, racy-safe */
uint32_t weft__runqlen(struct p *pp);     /* any thread, approximate */
struct g *weft__runqsteal(struct p *pp, struct p *victim, bool stealnext);
/* Global queue; caller holds sched.lock. */
void weft__globrunqput(struct g *gp);
void weft__globrunqputbatch(struct g *head, struct g *tail, int32_t n);
struct g *weft__globrunqget(struct p *pp, int32_t max);

/* timer.c */
void weft__timer_add(struct p *pp, struct timer *t, int64_t when, timer_fn f,
                     void *arg, uint64_t seq);
bool weft__timer_del(struct timer *t);
/* Run pp's expired timers; returns the next pending when (0: none). */
int64_t weft__checktimers(struct p *pp, int64_t now);
/* Earliest timer over every P, 0 if none. */
int64_t weft__timersleep_until(void);
void weft__timers_free(struct p *pp);

/* stack.c */
int weft__stack_alloc(struct stack *s, size_t size);
void weft__stack_free(struct stack *s);
void weft__stack_trim(struct stack *s);
void weft__stack_init(void);
void weft__stack_fini(bool unmap);
bool weft__stack_guard_hit(const struct stack *s, uintptr_t addr);
extern size_t weft__pagesize;

/* sysmon.c */
int weft__sysmon_start(void);
void weft__sysmon_stop(void);
void weft__sysmon_wake(void);

/* netpoll_epoll.c (see netpoll.h for the contract) */
#include "netpoll.h"

/* traceback.c: stacks as PCs (libunwind) and PCs as source (libdw).
 * Only dump.c calls these, holding the dump lock (weft__dump_lock). */
#define TB_MAX 101 /* frames kept; a longer stack prints elided */
struct tbuf {
    int n;
    bool cut;                /* the stack went on past TB_MAX */
    uintptr_t pc[TB_MAX];
    uintptr_t sp[TB_MAX];
    bool exact[TB_MAX];      /* pc is where it stopped, not a return
                              * address (frame 0, after a signal frame) */
};
/* A parked G's stack as the last dump read it (dump.c). */
struct gtrace {
    uint32_t runs; /* gp->runs when read */
    uint32_t n;
    uintptr_t f[];  /* n pcs, then n sps */
};
void weft__unwind_ctx(struct g *gp, struct tbuf *t);
void weft__unwind_uc(void *uc, struct tbuf *t);
/* The sp and pc a signal interrupted, from its ucontext (signal-safe). */
uintptr_t weft__ucsp(void *uc);
uintptr_t weft__ucpc(void *uc);
void weft__unwind_here(struct tbuf *t);
/* Nonzero while this thread runs an unwinder (cpuprof.c drops then). */
extern __thread volatile int weft__tb_busy
    __attribute__((tls_model("initial-exec")));
/* One source frame at a pc: an inlined call chain gives several, the
 * innermost first; only the last (the real function) has an offset. */
struct symf {
    const char *func;  /* never NULL ("??" when unknown) */
    const char *file;  /* absolute .c/.s path, or NULL: print "??:0" */
    int line;
    bool hidden;       /* weft's own code: shown at WEFT_DUMP_SYSTEM */
};
struct sym {
    uintptr_t key;
    uintptr_t off;     /* pc - the function's entry */
    int n;
    struct symf f[];
};
const struct sym *weft__symbolize(uintptr_t pc, bool exact);
const struct sym *weft__symbolize_peek(uintptr_t pc, bool exact, bool *owned);

/* dump.c */
/* The dump lock also guards the symbol cache: hold it around
 * weft__symbolize outside a dump. false: this thread holds it already
 * (a fault inside a dump), or another did not let go within 5 s. */
bool weft__dump_lock(void);
void weft__dump_unlock(void);
void weft__signals_install(void);
void weft__signals_restore(void);
int weft__sigstack_init(struct m *mp);
void weft__sigstack_fini(struct m *mp);
void weft__freeze_self(struct m *mp);
/* cpuprof.c: an M's thread arms its profiling timer before it runs
 * anything and deletes it before it ends; shutdown ends a profile. */
void weft__cpuprof_mstart(struct m *mp);
void weft__cpuprof_mexit(struct m *mp);
void weft__cpuprof_shutdown(void);
int64_t weft__cpuprof_lost(void); /* samples the last profile lost */
_Noreturn void weft__fatal_deadlock(void);
/* A live G's stack as weft__gstacks copied it (profiles.c). */
struct gstack {
    int64_t id, parentid;
    uintptr_t spawnpc;           /* the creator's call site */
    int64_t waitsince;           /* g->waitsince (coarse clock) */
    uint32_t status;             /* G_* */
    uint8_t waitreason;          /* WR_*, meaningful when G_WAITING */
    int32_t waitfd;              /* the fd, when waitreason is WR_IO_WAIT */
    bool self;                   /* the caller's own G */
    struct weft__labels *labels; /* a reference the caller drops, or NULL */
    bool exact;                  /* pc[0] is where it stood (never ran) */
    uint32_t n;
    const uintptr_t *pc;         /* n pcs, leaf first */
};
/* weft__gstacks - freeze every M, copy each live G's stack and take a
 * reference to its labels, thaw (dump.c invariant 1: nothing allocated
 * while frozen). Returns the number of Gs with *out a malloc'd block
 * (the array and the pcs: one free), or WEFT_ENOMEM, WEFT_EBUSY (another
 * dump holds the lock). A G running on an M that did not answer the
 * freeze has n == 0. Not from a signal handler. */
long weft__gstacks(struct gstack **out);
size_t weft__gstack_text(const struct gstack *gs, int level, char *buf,
                         size_t cap); /* dump.c: see there */
/* leaktest.c: fds weft's own symbolizer and unwinder opened for the
 * process's life (libdw's ELF and debug files, libunwind's pipe), which a
 * leak check never reports. Bracket code that may open them with begin
 * and end, under the dump lock; fds open at end and not at begin are
 * recorded (with their identity: a number reused later is not excused). */
void weft__selffd_begin(void);
void weft__selffd_end(void);
/* One unwind of the caller's stack inside such a bracket: libunwind's
 * one-time set-up (its pipe) before a feature that unwinds in a signal
 * handler or a hook, where no bracket can be. Not under the dump lock. */
void weft__unwind_warm(void);
bool weft__selffd_is(int fd); /* any thread; after the runtime too */

/* debugserver.c: release what the debug server's abandoned coroutines
 * held. Runtime teardown only (no M running). */
void weft__debug_fini(void);

/* debugvars.c: WEFTDEBUG and WEFTTRACEBACK, parsed once by weft_main
 * before anything can print. Read racily afterwards (set before any M). */
enum { TB_NONE, TB_SINGLE, TB_ALL, TB_SYSTEM, TB_CRASH };
struct debugvars {
    int32_t schedtrace;   /* WEFTDEBUG schedtrace=ms; 0: off */
    bool scheddetail;     /* scheddetail=1 */
    bool sigquitcontinue; /* sigquitdump=continue: dump, then run on */
    int traceback;        /* WEFTTRACEBACK: TB_*, default TB_SINGLE */
    int32_t leakcheck;    /* leakcheck=SECONDS: leak monitor period; 0 off */
    bool nouring;         /* iouring=0: no io_uring (netpoll/uring.c) */
};
extern struct debugvars weft__debug;
void weft__debug_parse(void);

/* leakcheck.c: weft_main starts the monitor of WEFTDEBUG=leakcheck once
 * the runtime runs, and stops it (joins its thread) when the main
 * coroutine has returned, before any M is joined. */
void weft__leakcheck_boot(void);
void weft__leakcheck_exit(void);
/* leakcheck.c: the /metrics figures (open fds by kind, suspicion). */
void weft__leakcheck_metrics(struct weft_metrics *m);

/* schedtrace.c: one schedtrace report to stderr (detail: scheddetail's
 * P, M and G lines too). sysmon calls it every schedtrace ms. */
void weft__schedtrace(bool detail);
/* Forget the first call's time: the next report is "SCHED 0ms" again
 * (weft__debug_parse calls it, so each runtime counts from its start). */
void weft__schedtrace_reset(void);

#endif /* WEFT_RUNTIME_H */
