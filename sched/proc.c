/*
 * proc.c - the scheduler: Gs, Ms and Ps, after Go's runtime/proc.go.
 *
 * A G is a coroutine, an M an OS thread, a P the right to run Gs (there
 * are gomaxprocs of them). An M must hold a P to run Gs; an M without one
 * is idle (parked on its note) or in a system call. Each P has a local run
 * queue (runq.c) and a timer heap (timer.c); a global run queue takes the
 * overflow and Gs whose M lost its P.
 *
 * Finding work (findrunnable, on the M's scheduler stack "g0"): timers
 * due, every 61st tick the global queue first (so it cannot starve), the
 * local queue, the global queue, then stealing half of a random victim's
 * queue and running other Ps' expired timers. An M that finds nothing
 * gives up its P and parks; the last one to do so, if any timer is
 * pending, sleeps in the netpoller until the earliest one instead.
 *
 * Spinning: an M looking for work to steal is "spinning" (nmspinning).
 * When work appears (a G readied or spawned) and some P is idle while no
 * M spins, wakep() starts one spinning M. A spinning M that finds work
 * stops spinning and, if it was the last, wakes another, so the system
 * fans out without a thundering herd. At most half the busy Ps' worth of
 * Ms spin. The race between an M giving up and work being submitted is
 * closed as in Go:
 *   1. The submitter makes the G visible (runqput, store-release), then
 *      reads nmspinning in wakep().
 *   2. The spinning M decrements nmspinning (seq-cst), then rechecks
 *      every P's queue before parking.
 * Either the submitter sees a spinning M, which will find the G, or the M
 * sees the G in its recheck. Step 1 has no store-load fence (it would
 * cost every ready), so on x86 both sides can miss each other; the G is
 * not lost, it waits on its submitter's queue, and sysmon's stranded-work
 * check starts a spinner within a tick.
 *
 * Switching (the "after" protocol): a G that yields, parks or exits
 * switches directly to the next G from its P's queue when there is one
 * (a single stack switch, like Go's runnext hand-off but without passing
 * through g0), else to g0, which runs findrunnable. The leaving G's last
 * transition (put it on a queue, run its park unlock function, free it)
 * must happen only once its registers are saved, so it is recorded in
 * mp->after and carried out by whatever runs next on that M: the next G
 * right after its switch returns (or in gentry on its first run), or g0.
 * This is Go's mcall(park_m) without the second switch.
 *
 * Invariants:
 *  1. A G's context is saved before any other M can see it runnable:
 *     runqput / unlock of a parked G happens in runafter(), after the
 *     switch away from it.
 *  2. mp->after is NONE whenever a G or g0 runs user or scheduler code
 *     other than runafter().
 *  3. G ids come from per-P batches of 16 out of sched.goidgen, start at
 *     1 (the main G) and are never reused.
 *  4. Shutdown: sched.exiting is set once, under no lock, then idle Ms
 *     are woken under sched.lock; stopm and newm check exiting under the
 *     same lock, so no M parks or starts after the wake-up sweep.
 */
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pprof.h"
#include "runtime.h"
#include "sanitizer.h"

struct schedt weft__sched;
struct p **weft__allp;
int32_t weft__gomaxprocs;
wlock weft__allglock;
struct g **weft__allgchunks;
size_t weft__allglen;
static size_t chunkcap;   /* allglock: slots in weft__allgchunks */
static void **oldtables;  /* allglock: earlier chunk tables, for readers */
static size_t noldtables;

WEFT_EXTERN uint32_t weft__attention;
#define ATTN_EXITING 0x80000000u

_Atomic int64_t weft__coarsenow;
static _Atomic bool running;
static bool mainstarted;
static bool abandoned; /* some M was left in a syscall at shutdown */

/* initial-exec: a fixed offset from the thread pointer, no
 * __tls_get_addr call, even in the shared library. */
static __thread struct m *tls_m __attribute__((tls_model("initial-exec")));

enum after {
    AFTER_NONE,
    AFTER_YIELD,       /* local queue tail */
    AFTER_PREEMPT,     /* global queue */
    AFTER_PARK,        /* run the unlock function */
    AFTER_EXIT,        /* free list */
    AFTER_EXITSYSCALL, /* find a P for it or queue it globally */
};

static void schedule_loop(struct m *mp);

/* ------------------------------------------------------------ accessors */

#if defined(__clang__)
#define NOCACHE __attribute__((noinline))
#else
#define NOCACHE __attribute__((noinline, noipa))
#endif

NOCACHE struct m *weft__getm(void) { return tls_m; }

NOCACHE struct g *weft__getg(void)
{
    struct m *mp = tls_m;
    return mp ? mp->curg : NULL;
}

static inline void attention_add(int32_t d)
{
    __atomic_fetch_add(&weft__attention, (uint32_t)d, __ATOMIC_RELAXED);
}

static inline uint32_t attention(void)
{
    return __atomic_load_n(&weft__attention, __ATOMIC_RELAXED);
}

/* ------------------------------------------------------------ switching */

/* switchto - save the current context in save and resume load. fake is
 * where ASan keeps the leaving context's fake stack, NULL if the leaving
 * context never resumes (a dead G). bottom/size/fiber describe load. */
static inline __attribute__((always_inline)) void switchto(struct ctx *save, void **fake, struct ctx *load,
                            const void *bottom, size_t size, void *fiber)
{
    if (unlikely(weft__san_on)) {
        if (__sanitizer_start_switch_fiber)
            __sanitizer_start_switch_fiber(fake, bottom, size);
        if (__tsan_switch_to_fiber)
            __tsan_switch_to_fiber(fiber, 0);
    }
    weft__ctx_switch(save, load);
    if (unlikely(weft__san_on) && __sanitizer_finish_switch_fiber)
        __sanitizer_finish_switch_fiber(fake ? *fake : NULL, NULL, NULL);
}

/* execute - make gp the running G of mp. Caller switches to it next.
 * inherit: gp came from runnext and continues its readier's slice. */
static inline __attribute__((always_inline)) void
execute(struct m *mp, struct g *gp, bool inherit)
{
    struct p *pp = mp->p;
    __atomic_store_n(&mp->curg, gp, __ATOMIC_RELAXED);
    STORE(&gp->status, G_RUNNING);
    uint32_t runs = gp->runs;
    __atomic_store_n(&gp->runs, runs + 1, __ATOMIC_RELAXED);
    STORE(&pp->schedtick, LOAD(&pp->schedtick) + 1);
    if (!inherit)
        STORE(&pp->slicetick, LOAD(&pp->slicetick) + 1);
    if (unlikely(LOAD(&gp->preempt)) &&
        atomic_exchange_explicit(&gp->preempt, 0, memory_order_relaxed))
        attention_add(-1);
    if (unlikely(runs % METRICS_TRACK_PERIOD == 0))
        weft__metrics_schedlat(pp, gp);
}

/* trackrunnable - gp becomes runnable: time one transition in
 * METRICS_TRACK_PERIOD until execute (Go's gTrackingPeriod; our switch
 * costs a fifth of a clock read, so the period is longer than Go's 8).
 * A load and a test: runs is what execute bumps anyway. */
static inline __attribute__((always_inline)) void trackrunnable(struct g *gp)
{
    if (unlikely(gp->runs % METRICS_TRACK_PERIOD == 0))
        gp->runnableat = weft__nanotime();
}

/* Switch from G gp to G next on mp; returns when gp runs again. */
static inline __attribute__((always_inline)) void
gswitch(struct m *mp, struct g *gp, struct g *next, bool inherit, bool dying)
{
    execute(mp, next, inherit);
    switchto(&gp->ctx, dying ? NULL : &gp->asan_fake, &next->ctx,
             (void *)next->stk.lo, next->stk.hi - next->stk.lo,
             next->tsan_fiber);
}

/* Switch from G gp to mp's g0; returns when gp runs again. */
static inline void g0switch(struct m *mp, struct g *gp, bool dying)
{
    __atomic_store_n(&mp->curg, NULL, __ATOMIC_RELAXED);
    switchto(&gp->ctx, dying ? NULL : &gp->asan_fake, &mp->g0ctx,
             mp->g0_stack_bottom, mp->g0_stack_size, mp->g0_tsan_fiber);
}

static void gfput(struct p *pp, struct g *gp);
static void runafter_slow(struct m *mp);
static struct p *pidleget(void);

/* runafter - complete the transition of the G this M just left
 * (invariant 1). Runs on the next G's stack or on g0. */
static inline __attribute__((always_inline)) void runafter(struct m *mp)
{
    if (likely(mp->after == AFTER_NONE))
        return;
    if (likely(mp->after == AFTER_YIELD)) {
        /* The common case, inline: to the tail of the ring. */
        weft__runqput(mp->p, mp->afterg, false);
        mp->after = AFTER_NONE;
        return;
    }
    runafter_slow(mp);
}

static void runafter_slow(struct m *mp)
{
    struct g *gp = mp->afterg;
    switch (mp->after) {
    case AFTER_NONE:
    case AFTER_YIELD: /* runafter's inline case */
        return;
    case AFTER_PREEMPT:
        weft__lock(&weft__sched.lock);
        weft__globrunqput(gp);
        weft__unlock(&weft__sched.lock);
        break;
    case AFTER_PARK:
        if (mp->afterunlock != NULL &&
            !mp->afterunlock(gp, mp->afterarg)) {
            /* Changed its mind: the condition it waited for holds. */
            STORE(&gp->status, G_RUNNABLE);
            trackrunnable(gp);
            weft__runqput(mp->p, gp, true);
        }
        break;
    case AFTER_EXIT:
        gfput(mp->p, gp);
        break;
    case AFTER_EXITSYSCALL:
        /* Handled by schedule_loop, which may have to park this M. */
        return;
    }
    mp->after = AFTER_NONE;
    mp->afterg = NULL;
}

/* timersdue - whether pp may have a timer due, cheaply: the coarse clock
 * (sysmon's, ~tick-accurate) always, the real clock (28 ns here) every
 * 64th tick. A false "due" only costs a trip through g0, which checks
 * with the real clock, so timers never fire early; a missed one is late
 * by at most 64 switches or a sysmon tick. (Every 16th tick cost a lone
 * 5 ns yielder on the P holding a timer 1.8x its speed.) */
static inline bool timersdue(struct p *pp)
{
    int64_t t0 = LOAD(&pp->timer0when);
    if (t0 == 0)
        return false;
    if (t0 <= LOAD(&weft__coarsenow))
        return true;
    return (LOAD(&pp->schedtick) & 63) == 0 && t0 <= weft__nanotime();
}

/* uringdue - whether pp's queued io_uring requests should go now, on
 * every 16th schedule (findrunnable sends them). */
static inline bool uringdue(struct p *pp)
{
    return pp->uringq != 0 && (LOAD(&pp->schedtick) & 15) == 0;
}

/* g0due - whether the next switch must go through g0 and findrunnable:
 * global queue fairness, timers due, io_uring requests to send, or
 * sysmon's attention (shutdown, preemption). */
static inline bool g0due(struct p *pp)
{
    return unlikely(attention() != 0) ||
           (unlikely(LOAD(&pp->schedtick) % 61 == 0) &&
            LOAD(&weft__sched.runqsize) > 0) || /* shared line: last */
           unlikely(timersdue(pp)) || unlikely(uringdue(pp));
}

/* fastnext - a G to switch to directly from a G, or NULL when g0 must
 * decide (g0due, or an empty queue). *inherit: see weft__runqget. */
static inline struct g *fastnext(struct p *pp, bool *inherit)
{
    return g0due(pp) ? NULL : weft__runqget(pp, inherit);
}

/* leave - the one way a G gives up its M: set its new status, record how
 * its transition completes (after), and switch to next (inherit: from
 * fastnext), or to g0 when next is NULL. Returns when gp runs again
 * (never if status is DEAD). */
static inline __attribute__((always_inline)) void
leave(struct m *mp, struct g *gp, uint32_t status, int after, struct g *next,
      bool inherit)
{
    bool dying = status == G_DEAD;
    STORE(&gp->status, status);
    if (status == G_RUNNABLE)
        trackrunnable(gp);
    /* A flag sysmon set is honoured by leaving: clear it, or the global
     * attention word would send every switch through g0 until gp runs
     * again. */
    if (unlikely(LOAD(&gp->preempt)) &&
        atomic_exchange_explicit(&gp->preempt, 0, memory_order_relaxed))
        attention_add(-1);
    mp->after = after;
    mp->afterg = gp;
    if (next != NULL)
        gswitch(mp, gp, next, inherit, dying);
    else
        g0switch(mp, gp, dying);
    runafter(weft__getm());
}

/* --------------------------------------------------------------- G life */

static void gentry(void *arg);

/* allocg - a zeroed G descriptor, registered for dumps and shutdown.
 * Carved from chunks of ALLG_CHUNK, which saves a malloc header per G
 * (1M parked Gs) and makes the chunk table the registry. */
static struct g *allocg(void)
{
    weft__lock(&weft__allglock);
    size_t n = weft__allglen;
    if (n % ALLG_CHUNK == 0) {
        size_t c = n / ALLG_CHUNK;
        if (c == chunkcap) {
            size_t cap = chunkcap ? chunkcap * 2 : 64;
            struct g **nt = calloc(cap, sizeof *nt);
            void **no = realloc(oldtables, (noldtables + 1) * sizeof *no);
            if (no != NULL)
                oldtables = no;
            if (nt == NULL || no == NULL) {
                free(nt);
                weft__unlock(&weft__allglock);
                return NULL;
            }
            if (weft__allgchunks != NULL) {
                memcpy(nt, weft__allgchunks, c * sizeof *nt);
                oldtables[noldtables++] = weft__allgchunks;
            }
            __atomic_store_n(&weft__allgchunks, nt, __ATOMIC_RELEASE);
            chunkcap = cap;
        }
        struct g *chunk = calloc(ALLG_CHUNK, sizeof *chunk);
        if (chunk == NULL) {
            weft__unlock(&weft__allglock);
            return NULL;
        }
        weft__allgchunks[c] = chunk;
    }
    struct g *gp = weft__allg(weft__allgchunks, n);
    gp->idx = (uint32_t)n;
    __atomic_store_n(&weft__allglen, n + 1, __ATOMIC_RELEASE);
    weft__unlock(&weft__allglock);
    return gp;
}

/* gfput_nostack / gfget_nostack - dead Gs without a stack (their custom
 * stack was unmapped, or none could be had), for custom-size spawns. */
static void gfput_nostack(struct g *gp)
{
    weft__lock(&weft__sched.gflock);
    gp->schedlink = weft__sched.gfreenostack;
    weft__sched.gfreenostack = gp;
    weft__unlock(&weft__sched.gflock);
}

static struct g *gfget_nostack(void)
{
    weft__lock(&weft__sched.gflock);
    struct g *gp = weft__sched.gfreenostack;
    if (gp != NULL)
        weft__sched.gfreenostack = gp->schedlink;
    weft__unlock(&weft__sched.gflock);
    return gp;
}

/* malg - a G descriptor with a stack of size bytes: a stackless dead one
 * if there is one, else a new one. */
static struct g *malg(size_t size, int *err)
{
    struct g *gp = gfget_nostack();
    if (gp == NULL) {
        gp = allocg();
        if (gp == NULL) {
            *err = WEFT_ENOMEM;
            return NULL;
        }
        gp->timer.idx = -1;
        STORE(&gp->status, G_DEAD);
        if (__tsan_create_fiber)
            gp->tsan_fiber = __tsan_create_fiber(0);
    }
    *err = weft__stack_alloc(&gp->stk, size);
    if (*err < 0) {
        gfput_nostack(gp); /* reused by a later spawn */
        return NULL;
    }
    if (weft__vg_on)
        gp->vg_stack = weft__vg_stack_register((void *)gp->stk.lo,
                                               (void *)gp->stk.hi);
    return gp;
}

/* gfput - put dead gp on pp's free list, moving one batch to the global
 * list when full. Gs with custom stacks give the stack back now. */
static void gfput(struct p *pp, struct g *gp)
{
    if (!gp->stk.slab) {
        if (weft__vg_on)
            weft__vg_stack_deregister(gp->vg_stack);
        weft__stack_free(&gp->stk);
        gfput_nostack(gp);
        return;
    }
    gp->schedlink = pp->gfree;
    pp->gfree = gp;
    if (++pp->gfreecnt < GFREE_MAX)
        return;
    /* The Gs just freed here are hot in this core's cache: walk them. */
    int64_t now = LOAD(&weft__coarsenow);
    struct g *head = pp->gfree, *tail = head;
    tail->waitsince = -now; /* freed at, not trimmed (sysmon.c) */
    for (int i = 1; i < GFREE_BATCH; i++) {
        tail = tail->schedlink;
        tail->waitsince = -now;
    }
    pp->gfree = tail->schedlink;
    pp->gfreecnt -= GFREE_BATCH;
    tail->schedlink = NULL;
    weft__lock(&weft__sched.gflock);
    head->nextbatch = weft__sched.gfree;
    weft__sched.gfree = head;
    STORE(&weft__sched.ngfree, LOAD(&weft__sched.ngfree) + GFREE_BATCH);
    weft__unlock(&weft__sched.gflock);
}

/* gfget - a dead G with a default-size stack, from pp's list or a batch
 * of the global one, or NULL. */
static struct g *gfget(struct p *pp)
{
    if (pp->gfree == NULL && LOAD(&weft__sched.ngfree) > 0) {
        weft__lock(&weft__sched.gflock);
        struct g *b = weft__sched.gfree;
        if (b != NULL) {
            weft__sched.gfree = b->nextbatch;
            STORE(&weft__sched.ngfree,
                  LOAD(&weft__sched.ngfree) - GFREE_BATCH);
        }
        weft__unlock(&weft__sched.gflock);
        if (b != NULL) {
            pp->gfree = b;
            pp->gfreecnt = GFREE_BATCH;
        }
    }
    struct g *gp = pp->gfree;
    if (gp == NULL)
        return NULL;
    pp->gfree = gp->schedlink;
    pp->gfreecnt--;
    return gp; /* free lists hold only slab-stack Gs (gfput) */
}

/* setname - copy name (NULL: none) into gp's buffer, which is allocated
 * once and never freed while the runtime runs: a dump reading it racily
 * may see a torn name, never freed memory. */
static void setname(struct g *gp, const char *name)
{
    if (name != NULL && gp->name == NULL)
        gp->name = malloc(G_NAME_MAX); /* NULL: the G stays unnamed */
    if (gp->name == NULL)
        return;
    size_t n = name ? strnlen(name, G_NAME_MAX - 1) : 0;
    if (n > 0)
        memcpy(gp->name, name, n);
    __atomic_store_n(&gp->name[n], '\0', __ATOMIC_RELAXED);
}

/* newproc - create a runnable G on pp running fn(arg). */
static int64_t newproc(struct p *pp, int64_t parentid, weft_fn fn, void *arg,
                       size_t stacksize, const char *name, uintptr_t pc,
                       struct weft__labels *labels)
{
    struct g *gp = NULL;
    int err = WEFT_ENOMEM;
    if (stacksize == WEFT_STACK_DEFAULT)
        gp = gfget(pp);
    if (gp == NULL && (gp = malg(stacksize, &err)) == NULL)
        return err;
    if (pp->goidcache == pp->goidcacheend) {
        pp->goidcache = atomic_fetch_add(&weft__sched.goidgen, 16);
        pp->goidcacheend = pp->goidcache + 16;
    }
    int64_t id = pp->goidcache++;
    gp->id = id;
    gp->parentid = parentid;
    gp->spawnpc = pc;
    gp->fn = fn;
    gp->arg = arg;
    gp->createdat = LOAD(&weft__coarsenow);
    __atomic_store_n(&gp->waitsince, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&gp->waitreason, WR_ZERO, __ATOMIC_RELAXED);
    gp->syscallp = false;
    /* The child inherits the spawner's labels (profiles.c invariant 1:
     * set before anyone can see the child). */
    if (unlikely(labels != NULL)) /* most programs set none: no call */
        weft__labels_ref(labels);
    __atomic_store_n(&gp->labels, labels, __ATOMIC_RELEASE);
    if (unlikely(name != NULL || gp->name != NULL))
        setname(gp, name);
    if (unlikely(weft__san_on) && __asan_unpoison_memory_region)
        __asan_unpoison_memory_region((void *)gp->stk.lo,
                                      gp->stk.hi - gp->stk.lo);
    weft__ctx_make(&gp->ctx, gp->stk.hi, gentry, gp);
    STORE(&gp->status, G_RUNNABLE);
    trackrunnable(gp);
    weft__pstat_add(&pp->metrics.created, 1);
    weft__runqput(pp, gp, true);
    if (mainstarted)
        weft__wakep();
    return id; /* not gp->id: once queued, gp may run, die and be reused */
}

static void honourpreempt(struct m *mp, struct g *gp);

static int64_t spawn(weft_fn fn, void *arg, const weft_go_opts_t *opts,
                     uintptr_t pc)
{
    size_t size = WEFT_STACK_DEFAULT;
    const char *name = NULL;
    if (fn == NULL)
        return WEFT_EINVAL;
    if (opts != NULL) {
        if (opts->stack_size != 0) {
            if (opts->stack_size < WEFT_STACK_MIN ||
                opts->stack_size > WEFT_STACK_MAX)
                return WEFT_EINVAL;
            size = (opts->stack_size + weft__pagesize - 1) &
                   ~(weft__pagesize - 1);
        }
        name = opts->name;
    }
    struct m *mp = weft__getm();
    struct g *gp = mp ? mp->curg : NULL;
    if (gp == NULL || gp->syscallp)
        return WEFT_ENOTCORO;
    struct p *pp = mp->p;
    int64_t id = newproc(pp, gp->id, fn, arg, size, name, pc, gp->labels);
    if (unlikely(attention() != 0)) {
        honourpreempt(mp, gp);
    } else if (unlikely(LOAD(&pp->runqtail) - LOAD(&pp->runqhead) >=
                        RUNQ_SIZE - 1)) {
        /* Back-pressure: a full ring means this G spawns faster than
         * its children finish. Let them run (and give their stacks back
         * to this P's cache) before spawning more, instead of building
         * an unbounded backlog of fresh stacks in the global queue. */
        leave(mp, gp, G_RUNNABLE, AFTER_PREEMPT, NULL, false);
    }
    return id;
}

WEFT_EXTERN int64_t weft_go(weft_fn fn, void *arg)
{
    return spawn(fn, arg, NULL, (uintptr_t)__builtin_return_address(0));
}

WEFT_EXTERN int64_t weft_go_opts(weft_fn fn, void *arg,
                                 const weft_go_opts_t *opts)
{
    return spawn(fn, arg, opts, (uintptr_t)__builtin_return_address(0));
}

static _Noreturn void goexit(void)
{
    struct m *mp = weft__getm();
    struct g *gp = mp->curg;
    weft__pstat_add(&mp->p->metrics.exited, 1);
    struct weft__labels *l = gp->labels;
    if (unlikely(l != NULL)) {
        __atomic_store_n(&gp->labels, NULL, __ATOMIC_RELAXED);
        weft__labels_unref(l);
    }
    bool inherit = false;
    struct g *next = fastnext(mp->p, &inherit);
    leave(mp, gp, G_DEAD, AFTER_EXIT, next, inherit);
    weft__throw("weft: goexit - dead G resumed");
}

/* gentry - first code run on a new G's stack (via weft__ctx_start). */
static void gentry(void *arg)
{
    struct g *gp = arg;
    if (unlikely(weft__san_on) && __sanitizer_finish_switch_fiber)
        __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
    runafter(weft__getm());
    gp->fn(gp->arg);
    if (unlikely(gp->syscallp))
        weft_syscall_exit(); /* returned inside weft_syscall_enter */
    goexit();
}

/* ------------------------------------------------------- park and ready */

/* weft__park - park the current G with reason. f(gp, arg), if not NULL,
 * runs once gp's context is saved (invariant 1): release the lock that
 * protects the wait queue gp is on, or arm the timer that wakes it. If f
 * returns false gp is made runnable again at once. */
void weft__park(unlockf f, void *arg, int reason)
{
    struct m *mp = weft__getm();
    struct g *gp = mp->curg;
    /* Read racily by dumps and the mutex cycle report: relaxed atomics. */
    __atomic_store_n(&gp->waitreason, (uint8_t)reason, __ATOMIC_RELAXED);
    __atomic_store_n(&gp->waitsince, LOAD(&weft__coarsenow),
                     __ATOMIC_RELAXED);
    mp->afterunlock = f;
    mp->afterarg = arg;
    bool inherit = false;
    struct g *next = fastnext(mp->p, &inherit);
    leave(mp, gp, G_WAITING, AFTER_PARK, next, inherit);
}

/* weft__ready - make parked gp runnable on the current P, next in line.
 * Caller runs on an M holding a P. */
void weft__ready(struct g *gp)
{
    uint32_t st = G_WAITING;
    if (!atomic_compare_exchange_strong(&gp->status, &st, G_RUNNABLE))
        weft__throw("weft: ready - G is not waiting");
    trackrunnable(gp);
    weft__runqput(weft__getm()->p, gp, true);
    weft__wakep();
}

/* globready - make a list of parked Gs (linked through schedlink)
 * runnable from a thread with no P: queue them globally and take an idle
 * P for each under the same lock (Go's injectglist), starting an M on it:
 * wakep alone can see a spinning M that has already done its last check
 * of the global queue and is about to park. external: woken from outside
 * the runtime (ends deadlock detection, see checkdead). */
static void globready(struct g *list, bool external)
{
    struct p *ps[8];
    int np = 0;
    weft__lock(&weft__sched.lock);
    if (external)
        STORE(&weft__sched.extwoken, true);
    while (list != NULL) {
        struct g *gp = list;
        list = gp->schedlink;
        uint32_t st = G_WAITING;
        if (!atomic_compare_exchange_strong(&gp->status, &st, G_RUNNABLE))
            weft__throw("weft: ready - G is not waiting");
        trackrunnable(gp);
        weft__globrunqput(gp);
        if (np < 8 && !LOAD(&weft__sched.exiting) &&
            (ps[np] = pidleget()) != NULL)
            np++;
    }
    weft__unlock(&weft__sched.lock);
    for (int i = 0; i < np; i++)
        weft__startm(ps[i], false);
}

/* weft__ready_any - weft__ready from any thread: a thread with no P (not
 * an M, or an M in a syscall) queues gp globally and wakes an M. Such a
 * wake-up also ends deadlock detection (checkdead). */
void weft__ready_any(struct g *gp)
{
    struct m *mp = weft__getm();
    /* An M in a syscall still points at the P it may have lost. */
    if (mp != NULL && mp->p != NULL &&
        !(mp->curg != NULL && mp->curg->syscallp)) {
        weft__ready(gp);
        return;
    }
    gp->schedlink = NULL;
    globready(gp, true);
}

/* weft__runtime_on - whether a runtime is up (for calls that work from
 * any thread but need the runtime's poller). */
bool weft__runtime_on(void)
{
    return LOAD(&running);
}

WEFT_EXTERN int weft_external_ref(void)
{
    if (!LOAD(&running))
        return WEFT_ENORUNTIME;
    atomic_fetch_add(&weft__sched.extrefs, 1);
    return 0;
}

WEFT_EXTERN int weft_external_unref(void)
{
    if (!LOAD(&running))
        return WEFT_ENORUNTIME;
    int32_t n = LOAD(&weft__sched.extrefs);
    do {
        if (n <= 0)
            return WEFT_EINVAL;
    } while (!atomic_compare_exchange_weak(&weft__sched.extrefs, &n, n - 1));
    return 0;
}

WEFT_EXTERN int weft_yield(void)
{
    struct m *mp = weft__getm();
    struct g *gp = mp ? mp->curg : NULL;
    if (gp == NULL || gp->syscallp)
        return WEFT_ENOTCORO;
    struct p *pp = mp->p;
    bool inherit = false;
    bool due = g0due(pp);
    struct g *next = due ? NULL : weft__runqget(pp, &inherit);
    if (next == NULL && !due && LOAD(&weft__sched.runqsize) == 0) {
        /* Nobody else to run here. Count a tick all the same, as Go's
         * Gosched does: a frozen schedtick would keep timersdue() on its
         * every-16th real clock read for every yield of a lone yielder. */
        STORE(&pp->schedtick, LOAD(&pp->schedtick) + 1);
        return 0;
    }
    leave(mp, gp, G_RUNNABLE, AFTER_YIELD, next, inherit);
    return 0;
}

/* honourpreempt - yield to the global queue if sysmon flagged gp, or go
 * to the scheduler if the runtime is shutting down. */
static void honourpreempt(struct m *mp, struct g *gp)
{
    bool flagged = LOAD(&gp->preempt) &&
                   atomic_exchange_explicit(&gp->preempt, 0,
                                            memory_order_relaxed);
    if (flagged)
        attention_add(-1);
    if (!flagged && !(attention() & ATTN_EXITING))
        return;
    __atomic_store_n(&gp->waitreason, WR_PREEMPTED, __ATOMIC_RELAXED);
    leave(mp, gp, G_RUNNABLE, AFTER_PREEMPT, NULL, false);
}

WEFT_EXTERN void weft__checkpoint_slow(void)
{
    struct m *mp = weft__getm();
    struct g *gp = mp ? mp->curg : NULL;
    if (gp != NULL && !gp->syscallp)
        honourpreempt(mp, gp);
}

/* weft__preemptone - ask the G running on pp to yield; returns the G
 * flagged, or NULL. sysmon only; the G read may be stale (G descriptors
 * are never freed): it may already have left, and then its flag would
 * hold weft__attention up until it ran again, so sysmon withdraws the
 * flag once pp has switched (weft__preempt_withdraw). */
struct g *weft__preemptone(struct p *pp)
{
    struct m *mp = LOADACQ(&pp->m);
    struct g *gp = mp ? __atomic_load_n(&mp->curg, __ATOMIC_RELAXED) : NULL;
    if (gp == NULL)
        return NULL;
    if (!atomic_exchange_explicit(&gp->preempt, 1, memory_order_relaxed))
        attention_add(1);
    return gp;
}

/* weft__preempt_withdraw - clear gp's flag if nobody consumed it (a G
 * that left before the flag landed). The exchange decides, so the flag
 * is counted down once whoever clears it. */
void weft__preempt_withdraw(struct g *gp)
{
    if (LOAD(&gp->preempt) &&
        atomic_exchange_explicit(&gp->preempt, 0, memory_order_relaxed))
        attention_add(-1);
}

WEFT_EXTERN int64_t weft_self(void)
{
    struct g *gp = weft__getg();
    return gp ? gp->id : 0;
}

WEFT_EXTERN int weft_procs(void)
{
    return LOAD(&running) ? weft__gomaxprocs : 0;
}

WEFT_EXTERN int64_t weft_now(void) { return weft__nanotime(); }

/* ------------------------------------------------------------------ Ps */

static void acquirep(struct m *mp, struct p *pp)
{
    mp->p = pp;
    STOREREL(&pp->m, mp); /* sysmon reads mp->curg through it */
    STORE(&pp->status, P_RUNNING);
}

static struct p *releasep(struct m *mp)
{
    struct p *pp = mp->p;
    STORE(&pp->m, NULL);
    STORE(&pp->status, P_IDLE);
    mp->p = NULL;
    return pp;
}

/* Caller holds sched.lock. */
static void pidleput(struct p *pp)
{
    if (!weft__runqempty(pp) && !LOAD(&weft__sched.exiting))
        weft__throw("weft: pidleput - P with non-empty run queue");
    pp->link = weft__sched.pidle;
    weft__sched.pidle = pp;
    atomic_fetch_add(&weft__sched.npidle, 1);
}

/* Caller holds sched.lock. */
static struct p *pidleget(void)
{
    struct p *pp = weft__sched.pidle;
    if (pp != NULL) {
        weft__sched.pidle = pp->link;
        atomic_fetch_sub(&weft__sched.npidle, 1);
        if (LOAD(&weft__sched.sysmonwait))
            weft__sysmon_wake();
    }
    return pp;
}

/* ------------------------------------------------------------------ Ms */

static void *mstart(void *arg);

static struct m *allocm(void)
{
    struct m *mp = calloc(1, sizeof *mp);
    if (mp == NULL)
        return NULL;
    if (weft__sigstack_init(mp) < 0) {
        free(mp);
        return NULL;
    }
    mp->fastrand = (uint64_t)(uintptr_t)mp ^ (uint64_t)weft__nanotime();
    return mp;
}

/* pidleput_drain - give back a P that no M will run: its queued Gs go to
 * the global queue first. Caller holds sched.lock and owns pp. */
static void pidleput_drain(struct p *pp)
{
    for (struct g *gp; (gp = weft__runqget(pp, NULL)) != NULL;)
        weft__globrunqput(gp);
    pidleput(pp);
}

/* newm - start a thread that runs with pp. Returns false if it could not:
 * pp then goes back to the idle list (its Gs to the global queue) and the
 * work waits for a running M. The M is registered under sched.lock but
 * its thread is created outside it. */
static bool newm(struct p *pp, bool spinning)
{
    struct m *mp = allocm();
    bool registered = false;
    if (mp != NULL) {
        weft__lock(&weft__sched.lock);
        if (!LOAD(&weft__sched.exiting)) {
            mp->id = weft__sched.mnext++;
            mp->alllink = weft__sched.allm;
            weft__sched.allm = mp;
            weft__sched.mcount++;
            registered = true;
        }
        weft__unlock(&weft__sched.lock);
    }
    if (registered) {
        weft__threadcreate_record(); /* the threadcreate profile */
        mp->nextp = pp;
        STORE(&mp->spinning, spinning);
        STORE(&mp->state, M_RUNNING);
        mp->started = true; /* before the thread can reach M_DONE */
        int err = pthread_create(&mp->thread, NULL, mstart, mp);
        if (err == 0)
            return true;
        mp->started = false;
        static _Atomic bool warned;
        if (!atomic_exchange(&warned, true))
            fprintf(stderr, "weft: cannot create thread: %s\n",
                    strerror(err));
        /* Stays on allm (joinall may hold it) as a finished M. */
        weft__lock(&weft__sched.lock);
        weft__sched.mcount--;
        weft__unlock(&weft__sched.lock);
        STOREREL(&mp->state, M_DONE);
    } else if (mp != NULL) {
        weft__sigstack_fini(mp);
        free(mp);
    }
    weft__lock(&weft__sched.lock);
    pidleput_drain(pp);
    weft__unlock(&weft__sched.lock);
    if (spinning)
        atomic_fetch_sub(&weft__sched.nmspinning, 1);
    return false;
}

/* weft__startm - get an M running pp (or any idle P if pp is NULL). With
 * spinning, the caller has already counted the M in nmspinning. */
void weft__startm(struct p *pp, bool spinning)
{
    weft__lock(&weft__sched.lock);
    if (pp == NULL) {
        pp = pidleget();
        if (pp == NULL) {
            weft__unlock(&weft__sched.lock);
            if (spinning)
                atomic_fetch_sub(&weft__sched.nmspinning, 1);
            return;
        }
    }
    struct m *nmp = weft__sched.midle;
    if (nmp != NULL) {
        weft__sched.midle = nmp->schedlink;
        weft__sched.nmidle--;
    }
    weft__unlock(&weft__sched.lock);
    if (nmp == NULL) {
        newm(pp, spinning);
        return;
    }
    STORE(&nmp->spinning, spinning);
    nmp->nextp = pp;
    weft__notewakeup(&nmp->park);
}

/* checkdead - Go's deadlock check, run as an M goes idle: if every M is
 * idle (none runs a G, none is in a syscall, none sleeps in the poller)
 * and no G is queued, no timer is pending and nobody waits for I/O, then
 * nothing inside the runtime can ever make a G runnable again. Parked Gs
 * are stuck for good: report them all and exit, as Go does. Threads
 * outside the runtime could still wake one: they announce themselves
 * with weft_external_ref(), and once one has woken a G (ready_any) the
 * check is off for good. Caller holds sched.lock. */
static void checkdead(void)
{
    if (!mainstarted || LOAD(&weft__sched.exiting) ||
        LOAD(&weft__sched.extrefs) > 0 || LOAD(&weft__sched.extwoken) ||
        weft__sched.nmidle != weft__sched.mcount ||
        LOAD(&weft__sched.runqsize) > 0 || weft__netpoll_waiters())
        return;
    for (int32_t i = 0; i < weft__gomaxprocs; i++) {
        struct p *pp = weft__allp[i];
        if (!weft__runqempty(pp) || LOAD(&pp->timer0when) != 0)
            return;
    }
    weft__fatal_deadlock();
}

/* stopm - park the current M until startm hands it a P (or shutdown). */
static void stopm(struct m *mp)
{
    weft__lock(&weft__sched.lock);
    if (LOAD(&weft__sched.exiting)) {
        weft__unlock(&weft__sched.lock);
        return;
    }
    mp->schedlink = weft__sched.midle;
    weft__sched.midle = mp;
    weft__sched.nmidle++;
    checkdead();
    weft__unlock(&weft__sched.lock);
    weft__notesleep(&mp->park);
    weft__noteclear(&mp->park);
    STORE(&weft__coarsenow, weft__nanotime());
    if (mp->nextp != NULL) {
        acquirep(mp, mp->nextp);
        mp->nextp = NULL;
    }
}

void weft__wakep(void)
{
    if (LOAD(&weft__sched.npidle) == 0 || LOAD(&weft__sched.nmspinning) != 0)
        return;
    int32_t zero = 0;
    if (!atomic_compare_exchange_strong(&weft__sched.nmspinning, &zero, 1))
        return;
    weft__startm(NULL, true);
}

static void resetspinning(struct m *mp)
{
    STORE(&mp->spinning, false);
    if (atomic_fetch_sub(&weft__sched.nmspinning, 1) == 1 &&
        LOAD(&weft__sched.npidle) > 0)
        weft__wakep();
}

/* weft__handoffp - find an M for pp, whose M blocked (syscall) or left.
 * pp is not owned by any M; called by sysmon or an M. */
void weft__handoffp(struct p *pp)
{
    if (!weft__runqempty(pp) || LOAD(&weft__sched.runqsize) > 0) {
        weft__startm(pp, false);
        return;
    }
    /* No spinning or idle M: one more P's worth of work may appear. */
    int32_t zero = 0;
    if (LOAD(&weft__sched.nmspinning) + LOAD(&weft__sched.npidle) == 0 &&
        atomic_compare_exchange_strong(&weft__sched.nmspinning, &zero, 1)) {
        weft__startm(pp, true);
        return;
    }
    weft__lock(&weft__sched.lock);
    if (LOAD(&weft__sched.runqsize) > 0 && !LOAD(&weft__sched.exiting)) {
        weft__unlock(&weft__sched.lock);
        weft__startm(pp, false);
        return;
    }
    /* The last P going idle while nobody sleeps in the poller: someone
     * must watch the timers. */
    if (LOAD(&weft__sched.npidle) == weft__gomaxprocs - 1 &&
        LOAD(&weft__sched.lastpoll) != 0 && !LOAD(&weft__sched.exiting)) {
        weft__unlock(&weft__sched.lock);
        weft__startm(pp, false);
        return;
    }
    int64_t when = LOAD(&pp->timer0when);
    pidleput(pp);
    weft__unlock(&weft__sched.lock);
    if (when != 0 && LOAD(&weft__sched.lastpoll) == 0) {
        int64_t until = LOAD(&weft__sched.polluntil);
        if (until == 0 || until > when)
            weft__netpoll_break();
    }
}

/* --------------------------------------------------------- findrunnable */

/* injectglist - make a list of ready Gs (from netpoll) runnable on mp,
 * which holds a P: the first is returned for mp to run, the rest go to
 * its P, and an idle P gets an M to share them. */
static struct g *injectglist(struct m *mp, struct g *list)
{
    if (list == NULL)
        return NULL;
    struct g *first = list;
    list = list->schedlink;
    STORE(&first->status, G_RUNNABLE);
    trackrunnable(first);
    if (list == NULL)
        return first;
    while (list != NULL) {
        struct g *gp = list;
        list = list->schedlink;
        STORE(&gp->status, G_RUNNABLE);
        trackrunnable(gp);
        weft__runqput(mp->p, gp, false);
    }
    weft__wakep();
    return first;
}

/* weft__netpoll_inject - make Gs woken by netpoll runnable from a thread
 * without a P (sysmon's poll, a poller that found no P). */
void weft__netpoll_inject(struct g *list)
{
    globready(list, false);
}

/* stealwork - try to steal Gs, and run expired timers, from other Ps. */
static struct g *stealwork(struct m *mp, struct p *pp, int64_t now,
                           bool *ranTimers)
{
    int32_t n = weft__gomaxprocs;
    for (int i = 0; i < 4; i++) {
        bool last = i == 3;
        uint32_t start = weft__fastrand(mp) % (uint32_t)n;
        for (int32_t k = 0; k < n; k++) {
            if (LOAD(&weft__sched.exiting))
                return NULL;
            struct p *p2 = weft__allp[(start + (uint32_t)k) % (uint32_t)n];
            if (p2 == pp)
                continue;
            if (last) {
                int64_t w = LOAD(&p2->timer0when);
                if (w != 0 && w <= now) {
                    weft__checktimers(p2, now);
                    *ranTimers = true;
                    struct g *gp = weft__runqget(pp, NULL);
                    if (gp != NULL)
                        return gp;
                }
            }
            if (!weft__runqempty(p2)) {
                struct g *gp = weft__runqsteal(pp, p2, last);
                if (gp != NULL) {
                    weft__pstat_add(&pp->metrics.steals, 1);
                    return gp;
                }
            }
        }
    }
    return NULL;
}

/* findrunnable - a G to run on mp, blocking until there is one; NULL
 * when the runtime is shutting down. *inherit: see weft__runqget (only
 * a G from this P's runnext inherits). Runs on g0. */
static struct g *findrunnable(struct m *mp, bool *inherit)
{
    struct g *gp;
top:
    if (LOAD(&weft__sched.exiting))
        return NULL;
    if (mp->p == NULL) {
        stopm(mp);
        goto top;
    }
    struct p *pp = mp->p;
    int64_t now = weft__nanotime();
    weft__checktimers(pp, now);

    if (LOAD(&pp->schedtick) % 61 == 0 && LOAD(&weft__sched.runqsize) > 0) {
        weft__lock(&weft__sched.lock);
        gp = weft__globrunqget(pp, 1);
        weft__unlock(&weft__sched.lock);
        if (gp != NULL)
            return gp;
    }
    /* io_uring requests wait for the P to run dry, so one enter carries
     * a round's worth; every 16th schedule sends them anyway. What they
     * complete is taken when the P runs dry, or by sysmon's poll, as Go
     * takes network readiness: taking it here too put a never-dry P's
     * completions ahead of its global queue (1000-connection echo: p99
     * 10 ms -> 107 ms). */
    if (uringdue(pp))
        weft__uring_flush(pp);
    if ((gp = weft__runqget(pp, inherit)) != NULL)
        return gp;
    if (LOAD(&weft__sched.runqsize) > 0) {
        weft__lock(&weft__sched.lock);
        gp = weft__globrunqget(pp, 0);
        weft__unlock(&weft__sched.lock);
        if (gp != NULL)
            return gp;
    }
    if (weft__uring_on) {
        weft__uring_flush(pp);
        if ((gp = injectglist(mp, weft__uring_reap(pp->id, NULL))) != NULL)
            return gp;
    }
    if (weft__netpoll_waiters() && LOAD(&weft__sched.lastpoll) != 0) {
        if ((gp = injectglist(mp, weft__netpoll(0))) != NULL)
            return gp;
    }

    int32_t busy = weft__gomaxprocs - LOAD(&weft__sched.npidle);
    if (LOAD(&mp->spinning) || 2 * LOAD(&weft__sched.nmspinning) < busy) {
        if (!LOAD(&mp->spinning)) {
            STORE(&mp->spinning, true);
            atomic_fetch_add(&weft__sched.nmspinning, 1);
        }
        bool ranTimers = false;
        if ((gp = stealwork(mp, pp, now, &ranTimers)) != NULL)
            return gp;
        if (ranTimers)
            goto top;
    }

    /* Nothing: give up the P. */
    weft__lock(&weft__sched.lock);
    if (LOAD(&weft__sched.exiting)) {
        weft__unlock(&weft__sched.lock);
        return NULL;
    }
    if (LOAD(&weft__sched.runqsize) > 0) {
        gp = weft__globrunqget(pp, 0);
        weft__unlock(&weft__sched.lock);
        return gp;
    }
    releasep(mp);
    pidleput(pp);
    weft__unlock(&weft__sched.lock);

    if (LOAD(&mp->spinning)) {
        /* Decrement first, then recheck (see the top comment). */
        STORE(&mp->spinning, false);
        atomic_fetch_sub(&weft__sched.nmspinning, 1);
        bool global = LOAD(&weft__sched.runqsize) > 0;
        for (int32_t i = 0; i < weft__gomaxprocs; i++) {
            if (global || !weft__runqempty(weft__allp[i])) {
                weft__lock(&weft__sched.lock);
                struct p *np = pidleget();
                weft__unlock(&weft__sched.lock);
                if (np != NULL) {
                    acquirep(mp, np);
                    STORE(&mp->spinning, true);
                    atomic_fetch_add(&weft__sched.nmspinning, 1);
                    goto top;
                }
                break;
            }
        }
    }

    /* Sleep in the poller until the earliest timer, if we are the one. */
    int64_t until = weft__timersleep_until();
    if ((until != 0 || weft__netpoll_waiters()) &&
        atomic_exchange(&weft__sched.lastpoll, 0) != 0) {
        STORE(&weft__sched.polluntil, until);
        int64_t delay = -1;
        if (until != 0) {
            delay = until - weft__nanotime();
            if (delay < 0)
                delay = 0;
        }
        struct g *list = weft__netpoll(delay);
        now = weft__nanotime();
        STORE(&weft__sched.polluntil, 0);
        STORE(&weft__sched.lastpoll, now);
        STORE(&weft__coarsenow, now);
        weft__lock(&weft__sched.lock);
        struct p *np = LOAD(&weft__sched.exiting) ? NULL : pidleget();
        weft__unlock(&weft__sched.lock);
        if (np == NULL) {
            weft__netpoll_inject(list); /* all of it: no P to run one */
            goto top; /* exiting, or stopm via mp->p == NULL */
        }
        acquirep(mp, np);
        if ((gp = injectglist(mp, list)) != NULL)
            return gp;
        goto top;
    }
    /* Someone else sleeps in the poller. If our earliest timer is before
     * its wake-up (added since it went to sleep), break its sleep so it
     * recomputes: otherwise that timer fires only when it wakes. */
    if (until != 0) {
        int64_t pu = LOAD(&weft__sched.polluntil);
        if (pu == 0 || pu > until)
            weft__netpoll_break();
    }
    stopm(mp);
    goto top;
}

/* ------------------------------------------------------------- schedule */

/* exitsyscall0 - g0 side of a syscall exit that found no P: run gp if a P
 * is free now, else queue it globally and park this M. */
static struct g *exitsyscall0(struct m *mp, struct g *gp)
{
    weft__lock(&weft__sched.lock);
    struct p *pp = LOAD(&weft__sched.exiting) ? NULL : pidleget();
    if (pp == NULL)
        weft__globrunqput(gp);
    weft__unlock(&weft__sched.lock);
    if (pp == NULL)
        return NULL;
    acquirep(mp, pp);
    return gp;
}

/* schedule_loop - the g0 loop of an M: find a G, run it until it comes
 * back here, repeat. Returns at shutdown. */
static void schedule_loop(struct m *mp)
{
    for (;;) {
        struct g *gp = NULL;
        if (mp->after == AFTER_EXITSYSCALL) {
            struct g *sg = mp->afterg;
            mp->after = AFTER_NONE;
            mp->afterg = NULL;
            gp = exitsyscall0(mp, sg);
        } else {
            runafter(mp);
        }
        bool inherit = false;
        if (gp == NULL) {
            gp = findrunnable(mp, &inherit);
            if (gp == NULL)
                return;
            if (LOAD(&mp->spinning))
                resetspinning(mp);
        }
        execute(mp, gp, inherit);
        switchto(&mp->g0ctx, &mp->g0_asan_fake, &gp->ctx,
                 (void *)gp->stk.lo, gp->stk.hi - gp->stk.lo,
                 gp->tsan_fiber);
    }
}

static void g0init(struct m *mp)
{
    tls_m = mp;
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        void *addr;
        size_t size;
        if (pthread_attr_getstack(&attr, &addr, &size) == 0) {
            mp->g0_stack_bottom = addr;
            mp->g0_stack_size = size;
        }
        pthread_attr_destroy(&attr);
    }
    if (__tsan_get_current_fiber)
        mp->g0_tsan_fiber = __tsan_get_current_fiber();
}

static void *mstart(void *arg)
{
    struct m *mp = arg;
    g0init(mp);
    stack_t ss = {.ss_sp = mp->sigstack, .ss_size = mp->sigstacksize};
    sigaltstack(&ss, NULL);
    /* Visible to dumps from here; a dump already freezing is joined
     * before this M runs anything (dump.c). */
    atomic_store(&mp->tid, (int32_t)gettid());
    weft__freeze_self(mp);
    weft__cpuprof_mstart(mp);
    if (mp->nextp != NULL) {
        acquirep(mp, mp->nextp);
        mp->nextp = NULL;
    }
    schedule_loop(mp);
    if (mp->p != NULL) {
        weft__lock(&weft__sched.lock);
        struct p *pp = releasep(mp);
        (void)pp; /* Ps are freed by weft_main after every M is gone */
        weft__unlock(&weft__sched.lock);
    }
    weft__cpuprof_mexit(mp);
    atomic_store(&mp->tid, 0);
    ss.ss_flags = SS_DISABLE;
    sigaltstack(&ss, NULL);
    tls_m = NULL;
    STOREREL(&mp->state, M_DONE);
    return NULL;
}

/* ------------------------------------------------------------- syscalls */

WEFT_EXTERN int weft_syscall_enter(void)
{
    struct m *mp = weft__getm();
    struct g *gp = mp ? mp->curg : NULL;
    if (gp == NULL)
        return WEFT_ENOTCORO;
    if (gp->syscallp)
        return WEFT_EINVAL;
    struct p *pp = mp->p;
    /* The P may sit idle while this M blocks: its queued io_uring
     * requests go now. */
    if (pp->uringq != 0)
        weft__uring_flush(pp);
    gp->syscallp = true;
    STORE(&gp->status, G_SYSCALL);
    mp->oldp = pp;
    STORE(&pp->syscalltick, LOAD(&pp->syscalltick) + 1);
    STOREREL(&pp->status, P_SYSCALL);
    /* Last: from here shutdown may abandon this M (joinall). */
    atomic_store(&mp->state, M_SYSCALL);
    return 0;
}

WEFT_EXTERN int weft_syscall_exit(void)
{
    struct m *mp = weft__getm();
    struct g *gp = mp ? mp->curg : NULL;
    if (gp == NULL)
        return WEFT_ENOTCORO;
    if (!gp->syscallp)
        return WEFT_EINVAL;
    uint32_t st = M_SYSCALL;
    if (!atomic_compare_exchange_strong(&mp->state, &st, M_RUNNING)) {
        /* The runtime shut down while we were blocked (weft_main). Our
         * memory was left alone; never touch the runtime again. */
        for (;;)
            pause();
    }
    gp->syscallp = false;
    struct p *pp = mp->oldp;
    mp->oldp = NULL;
    uint32_t ps = P_SYSCALL;
    if (atomic_compare_exchange_strong(&pp->status, &ps, P_RUNNING)) {
        /* The P may have been retaken and re-entered a syscall under
         * another M meanwhile (ABA): it is ours now either way. */
        STOREREL(&pp->m, mp);
        STORE(&gp->status, G_RUNNING);
        if (unlikely(attention() != 0))
            honourpreempt(mp, gp);
        return 0;
    }
    /* sysmon handed our P to another M. */
    mp->p = NULL;
    weft__lock(&weft__sched.lock);
    struct p *np = LOAD(&weft__sched.exiting) ? NULL : pidleget();
    weft__unlock(&weft__sched.lock);
    if (np != NULL) {
        acquirep(mp, np);
        STORE(&gp->status, G_RUNNING);
        return 0;
    }
    leave(mp, gp, G_RUNNABLE, AFTER_EXITSYSCALL, NULL, false);
    return 0;
}

WEFT_EXTERN intptr_t weft_blocking(intptr_t (*fn)(void *arg), void *arg)
{
    if (fn == NULL)
        return WEFT_EINVAL;
    bool in = weft_syscall_enter() == 0;
    intptr_t r = fn(arg);
    if (in)
        weft_syscall_exit();
    return r;
}

/* -------------------------------------------------------------- startup */

static int32_t parsemaxprocs(void)
{
    cpu_set_t set;
    int32_t ncpu = 1;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        ncpu = CPU_COUNT(&set);
    if (ncpu < 1)
        ncpu = 1;
    if (ncpu > WEFT_MAXPROCS_LIMIT)
        ncpu = WEFT_MAXPROCS_LIMIT;
    const char *s = getenv("WEFTMAXPROCS");
    if (s == NULL)
        return ncpu;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (*s == '\0' || *end != '\0' || errno != 0 || v < 1 ||
        v > WEFT_MAXPROCS_LIMIT) {
        fprintf(stderr,
                "weft: WEFTMAXPROCS=\"%s\" is not a number in 1..%d; "
                "using %d\n",
                s, WEFT_MAXPROCS_LIMIT, ncpu);
        return ncpu;
    }
    return (int32_t)v;
}

struct mainarg {
    weft_main_fn fn;
    void *arg;
};

/* startexit - begin shutdown (invariant 4). */
static void startexit(void)
{
    STORE(&weft__sched.exiting, true);
    __atomic_fetch_or(&weft__attention, ATTN_EXITING, __ATOMIC_SEQ_CST);
    weft__lock(&weft__sched.lock);
    while (weft__sched.midle != NULL) {
        struct m *mp = weft__sched.midle;
        weft__sched.midle = mp->schedlink;
        weft__sched.nmidle--;
        mp->nextp = NULL;
        weft__notewakeup(&mp->park);
    }
    weft__unlock(&weft__sched.lock);
    weft__netpoll_break();
    weft__sysmon_wake();
    weft__notewakeup(&weft__sched.exitnote); /* weft_main joins the Ms */
}

static void runmain(void *arg)
{
    struct mainarg *ma = arg;
    weft__sched.mainresult = ma->fn(ma->arg);
    startexit();
}

static void freeall(void)
{
    /* Every other M is done or abandoned; nothing runs Gs any more. The
     * heaps point into the Gs' embedded timers: drop them first. */
    for (int32_t i = 0; i < weft__gomaxprocs; i++)
        weft__timers_free(weft__allp[i]);
    /* A G abandoned in a syscall may still be returned into: then its
     * chunk, and the slabs, stay mapped for good. */
    for (size_t i = 0; !abandoned && i < weft__allglen; i++) {
        struct g *gp = weft__allg(weft__allgchunks, i);
        if (weft__vg_on && gp->stk.lo != 0)
            weft__vg_stack_deregister(gp->vg_stack);
        if (gp->tsan_fiber != NULL && __tsan_destroy_fiber)
            __tsan_destroy_fiber(gp->tsan_fiber);
        weft__stack_free(&gp->stk);
        free(gp->name);
        free(gp->tbcache);
        weft__labels_unref(gp->labels); /* Gs still parked at the end */
        gp->labels = NULL;
    }
    for (size_t c = 0; !abandoned && c * ALLG_CHUNK < weft__allglen; c++)
        free(weft__allgchunks[c]);
    free(weft__allgchunks);
    for (size_t i = 0; i < noldtables; i++)
        free(oldtables[i]);
    free(oldtables);
    weft__allgchunks = NULL;
    oldtables = NULL;
    weft__allglen = chunkcap = noldtables = 0;
    for (int32_t i = 0; i < weft__gomaxprocs; i++)
        free(weft__allp[i]);
    free(weft__allp);
    weft__allp = NULL;
    struct m *mp = weft__sched.allm;
    while (mp != NULL) {
        struct m *next = mp->alllink;
        if (LOAD(&mp->state) != M_ABANDONED) {
            weft__sigstack_fini(mp);
            free(mp);
        }
        mp = next;
    }
    weft__stack_fini(!abandoned);
}

/* joinall - wait for every M to finish (or abandon it if it is blocked
 * in a syscall). Runs on weft_main's thread after exitnote. */
static void joinall(void)
{
    weft__lock(&weft__sched.lock);
    struct m *all = weft__sched.allm;
    weft__unlock(&weft__sched.lock);
    for (struct m *mp = all; mp != NULL; mp = mp->alllink) {
        for (;;) {
            uint32_t st = LOADACQ(&mp->state);
            if (st == M_DONE) {
                if (mp->started)
                    pthread_join(mp->thread, NULL);
                break;
            }
            if (st == M_SYSCALL &&
                atomic_compare_exchange_strong(&mp->state, &st,
                                               M_ABANDONED)) {
                pthread_detach(mp->thread);
                abandoned = true;
                break;
            }
            /* Running a G that has not reached a weft call yet, or
             * on its way out. */
            weft__netpoll_break();
            usleep(50);
        }
    }
}

/* teardown - free the runtime. No M or sysmon may be running. */
static void teardown(void)
{
    weft__cpuprof_shutdown();
    weft__debug_fini();
    weft__signals_restore();
    weft__netpoll_close(); /* its io_uring rings before the stacks */
    freeall();
    weft__pd_fini();
    STORE(&running, false);
}

/*
 * weft_main's own thread does not run coroutines: it starts the first M
 * with P0 and G1, then sleeps until G1 returns and joins the rest. So it
 * can always return, even while every M is stuck in a system call (Go's
 * main thread can simply exit the process instead).
 */
WEFT_EXTERN int weft_main(weft_main_fn fn, void *arg)
{
    if (fn == NULL)
        return WEFT_EINVAL;
    if (weft__getm() != NULL)
        return WEFT_EBUSY;
    bool f = false;
    if (!atomic_compare_exchange_strong(&running, &f, true))
        return WEFT_EBUSY;

    memset(&weft__sched, 0, sizeof weft__sched);
    weft__sema_reset();
    weft__mutex_reset();
    weft__profiles_reset();
    __atomic_store_n(&weft__attention, 0, __ATOMIC_SEQ_CST);
    abandoned = false;
    mainstarted = false;
    weft__debug_parse();
    weft__san_init();
    weft__stack_init();
    weft__gomaxprocs = parsemaxprocs();
    STORE(&weft__sched.goidgen, 1);
    STORE(&weft__sched.lastpoll, weft__nanotime());
    STORE(&weft__coarsenow, weft__nanotime());

    int err = WEFT_ENOMEM;
    weft__allp = calloc((size_t)weft__gomaxprocs, sizeof *weft__allp);
    if (weft__allp == NULL)
        goto fail;
    for (int32_t i = 0; i < weft__gomaxprocs; i++) {
        struct p *pp = aligned_alloc(CACHELINE, sizeof(struct p));
        if (pp == NULL)
            goto fail;
        memset(pp, 0, sizeof *pp);
        pp->id = i;
        weft__allp[i] = pp;
    }
    if ((err = weft__netpoll_init()) < 0)
        goto fail;
    weft__pd_init();
    weft__signals_install();

    weft__lock(&weft__sched.lock);
    for (int32_t i = weft__gomaxprocs - 1; i > 0; i--)
        pidleput(weft__allp[i]);
    weft__unlock(&weft__sched.lock);

    struct mainarg ma = {fn, arg};
    int64_t id = newproc(weft__allp[0], 0, runmain, &ma, WEFT_STACK_DEFAULT,
                         NULL, (uintptr_t)__builtin_return_address(0), NULL);
    if (id < 0 || (err = weft__sysmon_start()) < 0) {
        teardown();
        return id < 0 ? (int)id : err;
    }
    mainstarted = true;
    weft__leakcheck_boot(); /* before G1 runs: it may ask for the monitor */
    if (!newm(weft__allp[0], false)) {
        weft__leakcheck_exit();
        weft__sysmon_stop();
        teardown();
        return WEFT_EAGAIN;
    }
    weft__notesleep(&weft__sched.exitnote);
    weft__leakcheck_exit();
    joinall();
    weft__sysmon_stop();
    int result = weft__sched.mainresult;
    teardown();
    return result;

fail:
    weft__signals_restore(); /* each of these undoes only what was done */
    weft__netpoll_close();
    weft__pd_fini();
    if (weft__allp != NULL) {
        for (int32_t i = 0; i < weft__gomaxprocs; i++)
            free(weft__allp[i]);
        free(weft__allp);
        weft__allp = NULL;
    }
    weft__stack_fini(true);
    STORE(&running, false);
    return err;
}
