/*
 * mutex.c - the sync objects of weft.h: mutex, rwmutex, cond, waitgroup,
 * once and the counting semaphore, after Go's sync package. Every object
 * is a few lock-free words in caller memory; every wait goes through
 * sema.c (one parking mechanism, hashed by address), so nothing here
 * parks by itself and nothing needs destruction.
 *
 * Mutex (Go's sync.Mutex). state = waiters << 3 | STARVING | WOKEN | LOCKED;
 * sema counts wake-ups. Normal mode: a woken waiter competes with new
 * arrivals (which spin briefly first, and usually win: they are on a
 * CPU); a waiter that fails is queued at the front again. Once a waiter
 * has waited more than 1 ms it sets STARVING: unlock then hands the mutex
 * to the first waiter through the semaphore (LOCKED stays clear, arrivals
 * queue at the tail without trying), until a waiter that waited less than
 * 1 ms, or the last one, switches back. WOKEN tells unlockers that a
 * woken or spinning G will look at the state, so they need not wake one.
 *
 * Deadlines. Go's Mutex has no timeouts; here a queued waiter's
 * semacquire can time out, and it must then leave the count without
 * stranding a wake-up or a hand-off (leave()). Write W for the counted
 * waiters (state >> 3), C for the Gs between their counting CAS and
 * either leaving or owning/being woken, U for normal-mode wake-up units
 * not yet taken. Invariants:
 *  1. Normal mode: W == |C| - U. An unlocker that wakes moves one G out
 *     (W - 1, U + 1, WOKEN); a unit pending implies WOKEN is set, and
 *     only the G that takes it (the WOKEN holder) may set STARVING, in
 *     the CAS that clears WOKEN. So no normal-mode unit is pending while
 *     STARVING is set, and W == |C| then.
 *  2. STARVING implies W >= 1: a starving mutex always has a counted
 *     waiter to take the next hand-off. Otherwise an unlock would hand
 *     off to nobody, the mutex would stay free but "starving" (trylock
 *     busy) until some blocking lock took the stranded unit.
 *  3. In starvation mode the mutex is free (LOCKED clear) exactly while
 *     a hand-off unit is in flight: unlock drops LOCKED, then
 *     semrelease(HANDOFF) either gives the unit to the first queued
 *     waiter or, if its claim fails (it is timing out) and nobody else
 *     is queued, adds it to the word, where the next counted waiter's
 *     semacquire takes it. Nobody barges (arrivals queue, trylock fails),
 *     so whoever takes the unit owns the mutex.
 * A leaver, by the state it sees (one CAS, so new arrivals and unlocks
 * are ordered against it):
 *  - W == 0: normal mode (inv. 2). An unlocker took it out of the count
 *    and a unit is on its way; it takes that unit and carries on as the
 *    woken waiter (WOKEN duties included), giving up only before it
 *    would queue again. Keeps inv. 1 by taking U.
 *  - W >= 1, normal mode, or starving with W >= 2: W - 1. A pending
 *    hand-off goes to one of the other counted waiters (inv. 3).
 *  - starving, W == 1, LOCKED: no hand-off in flight (inv. 3); W - 1
 *    and clear STARVING in the same CAS, so the holder's unlock is a
 *    normal one. Keeps inv. 2.
 *  - starving, W == 1, free: the hand-off in flight was granted to it
 *    (nobody else is counted). Leaving would strand it; clearing
 *    STARVING and leaving the unit in the word was the reverted fix: an
 *    arrival in normal mode then takes the unit as if it were a
 *    normal-mode wake-up and breaks the WOKEN invariant. So it takes
 *    the unit (spinning/yielding for the few instructions between the
 *    unlocker's LOCKED drop and its semrelease) and owns the mutex:
 *    lock_dl returns 0 after the deadline, as a lock granted at the
 *    deadline. If an arrival counts itself meanwhile, the state changes
 *    and the leaver re-decides (W == 2: it just leaves); if the arrival
 *    takes the unit first, the state changes to LOCKED too.
 * Trylock never takes a unit: it fails in starvation mode (inv. 3).

 * Wait-for cycles. A locked mutex records its owner's id (ids are never
 * reused; cleared by unlock, whoever calls it). Before a G first waits
 * without a deadline for a mutex, or for a read lock of an rwmutex, it
 * records, in a table keyed by id, what it waits for, then follows
 * lock -> owner -> awaited lock -> owner ... (bounded). An rwmutex's
 * owner, for a blocked reader, is the writer holding its inner mutex
 * (pending or holding the write lock: the reader waits for it either
 * way); a writer waiting for the inner mutex is a mutex wait on it.
 * Reaching itself through at least one other coroutine means a cycle: it
 * prints the cycle and waits on, as Go would. It does not fail the lock:
 * Go lets one coroutine lock and another unlock, so a third coroutine may
 * still break the cycle, and a heuristic must never change what a
 * correct program does. Not reported: a coroutine waiting for a lock it
 * holds itself (the lock-here, unlock-there pattern), waits with a
 * deadline (they end by themselves), a pending writer's wait for the
 * readers inside (a read-held rwmutex has no single owner, and recording
 * every reader would cost every RLock a table update: it is skipped, so
 * a cycle through a read-held lock is not seen), and waits whose record
 * found the table full there. The record-and-walk runs under one global
 * lock (dlock), so of two Gs closing a cycle at once exactly one sees it.

 * Contention hook: park.c reports every wait from the waiter's side
 * (obj = the word waited on, which is the object's own address for mutex,
 * cond, waitgroup and sem; unlocker NULL). For a mutex, the unlocker that
 * wakes a waiter also reports that waiter's wait with itself as unlocker
 * (Go's mutex profile), from weft__semrelease, when a hook is on.
 *
 * RWMutex (Go's sync.RWMutex). One 64-bit word holds R (readers, 24-bit
 * signed; -MAXR added while a writer is pending or holds it), W (readers
 * the pending writer still waits for) and a writer generation (era); one
 * CAS changes them together. A writer takes the inner mutex (writers
 * queue there, and see the readers already in), subtracts MAXR (new
 * readers now block, counted in R) and waits on writersem for W to
 * drain. Unlock adds MAXR back and bumps the generation in one CAS: that
 * CAS is what grants every reader that blocked in the ended era its read
 * lock; it then publishes the new era in rgen and wakes them. Blocked
 * readers futex-sleep on rgen (no units): a reader looks at gen after
 * every wake-up, so a release can never be taken by a reader of a later
 * era. (It could with a unit semaphore, which Go uses: a released reader
 * not yet running had its unit taken by a reader blocked behind the next
 * writer, which then held "its" read lock while the released one waited
 * behind that writer, past its deadline.) A reader whose deadline passes
 * checks the generation: same era -> it uncounts itself (CAS); else it
 * was released and holds the lock. A writer whose deadline passes does
 * what Unlock does, releasing only the blocked readers (R - W); if W
 * already hit 0 it owns the lock instead (the last reader's writersem
 * unit is ours: exactly one reader, the one that made W 0, released it).

 * Cond: a sequence word. wait reads it, unlocks, sleeps while it is
 * unchanged (futex discipline of sema.c); signal/broadcast bump it and
 * wake one/all. A waiter that read the word before a signal returns too
 * (Go's Wait also only promises "after a Signal or Broadcast").
 *
 * WaitGroup: one word, a 32-bit counter and a generation bumped in the
 * same CAS that brings the counter to zero; wait sleeps on the
 * generation, so it returns after a zero even if the counter went up
 * again meanwhile (as Go's wait), and the adder touches nothing of the
 * waitgroup after that CAS (a waiter may free it at once).
 *
 * Once: a done flag read with acquire, and a mutex around the slow path.
 * Sem: weft_sem_t's first word is the semaphore (FIFO hand-off).
 *
 * Rejected: a parking queue per object type (the task asks for one
 * mechanism, and sema.c gives FIFO, hand-off and deadlines once);
 * unit-counting cond (a broadcast's units could be taken by later
 * waiters, leaving earlier ones asleep).
 *
 * Mutex cost under contention (bench mutex: 4 coroutines x 1M, 2 Ps) is
 * the number of atomics per lock/unlock on the line the two Ps share, not
 * parking (about 1000 parks in 4M locks). Kept: the thread-local guess
 * for unlock's CAS (see mutex_unlock) and lock's inline second CAS.
 * Rejected: the guess kept in the mutex (needs a word struct mutex does
 * not have without moving rwmutex's word; a test reads it white-box); a
 * guess for lock's first CAS read from the mutex (a load then a CAS on a
 * remote line: 9.1 -> 8.7 ns, noise, and +0.3 ns uncontended). Floor:
 * with 1 P (no contention) weft costs ~8.0 ns per pair, Go ~5.9 ns (two
 * PLT calls, weft__getg, the owner stores; without owner and getg 6.5):
 * 0.8 x Go's contended ~9 ns is below weft's uncontended cost. The
 * benchmark's counter also sits on another line than the mutex in the C
 * binary (same line in Go's).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "weft_sem_t's initializer assumes little endian");

/* mycoro - the current G if it may block, else NULL. */
static inline struct g *mycoro(void)
{
    struct g *gp = weft__getg();
    return gp != NULL && !gp->syscallp ? gp : NULL;
}

/* ----------------------------------------------------------------- mutex */

enum {
    MUTEX_LOCKED = 1,
    MUTEX_WOKEN = 2,
    MUTEX_STARVING = 4,
    MUTEX_WAITERSHIFT = 3,
};
#define STARVATION_NS ((int64_t)1000000)

struct mutex {
    _Atomic uint32_t sema;    /* offset 0: hooks report the mutex address */
    _Atomic int32_t state;    /* atomic */
    _Atomic int64_t owner;    /* atomic: locker's id, 0 once unlocked */
};
_Static_assert(sizeof(struct mutex) <= sizeof(weft_mutex_t), "mutex size");

/* The state this thread's last locking CAS wrote, and on which mutex:
 * only a guess for mutex_unlock's CAS (see there), validated by the CAS
 * itself, so a stale value (another mutex, the coroutine moved threads,
 * the state changed) costs one failed CAS and nothing else. */
static __thread struct {
    struct mutex *m;
    int32_t state;
} tls_hint __attribute__((tls_model("initial-exec")));

/* sethint - note that this thread's CAS just left m's state at v. */
static inline void sethint(struct mutex *m, int32_t v)
{
    tls_hint.m = m;
    tls_hint.state = v;
}

/* sethint_afterpark - sethint for code that may have switched threads
 * since it began: not inlined, so the compiler cannot reuse a thread-local
 * address computed on the thread the coroutine parked on. */
static __attribute__((noinline)) void sethint_afterpark(struct mutex *m,
                                                         int32_t v)
{
    sethint(m, v);
}
_Static_assert(_Alignof(struct mutex) <= _Alignof(weft_mutex_t), "align");

/* Wait-for records: G id -> the G and the mutex it waits for. dlock
 * guards all; weft__mutex_reset empties it for a new runtime. */
#define WAITTAB 1024
#define WAITPROBE 16
#define CYCLEMAX 32
static wlock dlock;
/* What a recorded G waits for: a mutex (or an rwmutex's inner writer
 * mutex, at the rwmutex's own address: wait reason RWMutex.Lock), or a
 * read lock of an rwmutex, whose holder is the writer holding its inner
 * mutex. */
enum { WK_MUTEX, WK_RLOCK };
static struct waitrec {
    int64_t gid;
    struct g *g;
    void *obj;
    int kind;
} waittab[WAITTAB];

void weft__mutex_reset(void)
{
    memset(waittab, 0, sizeof waittab);
}

static size_t waitslot(int64_t gid)
{
    return (size_t)((uint64_t)gid * 0x9e3779b97f4a7c15ull >> 54);
}

/* findrec - the record of coroutine gid, or NULL. Caller holds dlock. */
static struct waitrec *findrec(int64_t gid)
{
    size_t i = waitslot(gid);
    for (int k = 0; k < WAITPROBE; k++, i = (i + 1) % WAITTAB)
        if (waittab[i].gid == gid)
            return &waittab[i];
    return NULL;
}

/* record - note that gp waits for obj (kind); false if the table is full there
 * (the wait then goes unrecorded: a cycle through it is not seen).
 * Caller holds dlock. */
static bool record(struct g *gp, void *obj, int kind)
{
    size_t i = waitslot(gp->id);
    for (int k = 0; k < WAITPROBE; k++, i = (i + 1) % WAITTAB) {
        if (waittab[i].gid == 0) {
            waittab[i].gid = gp->id;
            waittab[i].g = gp;
            waittab[i].obj = obj;
            waittab[i].kind = kind;
            return true;
        }
    }
    return false;
}

static void unrecord(struct g *gp)
{
    weft__lock(&dlock);
    struct waitrec *r = findrec(gp->id);
    if (r != NULL)
        memset(r, 0, sizeof *r);
    weft__unlock(&dlock);
}

static void putstr(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void putstr(char *buf, size_t cap, size_t *len, const char *fmt, ...)
{
    if (*len >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + *len, cap - *len, fmt, ap);
    va_end(ap);
    if (n > 0)
        *len += (size_t)n < cap - *len ? (size_t)n : cap - *len - 1;
}

/* waitdesc - how a report names a wait for obj (kind) by w. */
static const char *waitdesc(int kind, int reason)
{
    if (kind == WK_RLOCK)
        return "a read lock of rwmutex";
    return reason == WR_SYNC_RWMUTEX_LOCK ? "rwmutex" : "mutex";
}

/* ownerof - the id of the coroutine holding obj (kind), 0 if none is
 * known: a mutex's owner; for a read lock, the writer holding the
 * rwmutex's inner mutex (pending or holding: either way the reader
 * waits for it). Read-held rwmutexes have no single owner: not walked.
 * struct rwmutex starts with its inner mutex (see below). */
static int64_t ownerof(void *obj)
{
    return LOAD(&((struct mutex *)obj)->owner);
}

/* reportcycle - print the cycle gp -> objs[0] (held by gs[0]) -> objs[1]
 * ... -> objs[n] held by gp, on stderr with one write. kinds/reasons
 * describe each wait (index i: the wait of gp for i == 0, else of
 * gs[i - 1]). */
static void reportcycle(struct g *gp, struct g **gs, void **objs,
                        int *kinds, int *reasons, int n)
{
    char buf[4096];
    size_t len = 0;
    putstr(buf, sizeof buf, &len,
           "weft: mutex wait-for cycle of %d coroutines: unless another "
           "coroutine unlocks one of these mutexes, they wait forever\n",
           n + 1);
    for (int i = 0; i <= n; i++) {
        struct g *w = i == 0 ? gp : gs[i - 1];
        int64_t holder = i < n ? gs[i]->id : gp->id;
        const char *reason = weft__waitreason_string(reasons[i]);
        const char *name = w->name != NULL ? w->name : "";
        putstr(buf, sizeof buf, &len,
               "  coroutine %lld%s%s%s [%s]: waits for %s %p held by "
               "coroutine %lld\n",
               (long long)w->id, name[0] ? " \"" : "", name,
               name[0] ? "\"" : "", reason, waitdesc(kinds[i], reasons[i]),
               objs[i], (long long)holder);
    }
    ssize_t off = 0;
    while ((size_t)off < len) {
        ssize_t k = write(2, buf + off, len - (size_t)off);
        if (k <= 0)
            break;
        off += k;
    }
}

/* checkcycle - record that gp waits for obj (kind, shown as reason), and
 * report if that closes a wait-for cycle through other coroutines. The
 * wait goes on either way. */
static void checkcycle(void *obj, int kind, struct g *gp, int reason,
                       bool *recorded)
{
    struct g *gs[CYCLEMAX];
    void *objs[CYCLEMAX + 1];
    int kinds[CYCLEMAX + 1], reasons[CYCLEMAX + 1];
    weft__lock(&dlock);
    *recorded = record(gp, obj, kind);
    void *cur = obj;
    int n = 0;
    bool cycle = false;
    kinds[0] = kind;
    reasons[0] = reason;
    while (cur != NULL && n < CYCLEMAX) {
        int64_t oid = ownerof(cur);
        if (oid == 0)
            break;
        objs[n] = cur;
        if (oid == gp->id) {
            cycle = n > 0; /* n == 0: it holds obj itself; see top */
            break;
        }
        struct waitrec *r = findrec(oid);
        if (r == NULL)
            break; /* the owner is not waiting for a lock */
        gs[n] = r->g;
        n++;
        cur = r->obj;
        kinds[n] = r->kind;
        reasons[n] = __atomic_load_n(&r->g->waitreason, __ATOMIC_RELAXED);
    }
    weft__unlock(&dlock);
    if (cycle)
        reportcycle(gp, gs, objs, kinds, reasons, n);
}

/* clearwoken - give up the WOKEN duty (a woken G leaving). */
static void clearwoken(struct mutex *m)
{
    int32_t old = LOAD(&m->state);
    while (!atomic_compare_exchange_weak(&m->state, &old, old & ~MUTEX_WOKEN))
        ;
}

/* leave - a counted waiter of m whose semacquire timed out (no unit
 * taken) gives up its place. Returns
 *  LEAVE_GONE     uncounted: the caller returns WEFT_ETIMEDOUT;
 *  LEAVE_WOKEN    normal mode, count 0: an unlocker took us out of the
 *                 count and a wake-up unit is on its way; the caller
 *                 takes it and carries on as the woken waiter;
 *  LEAVE_HANDOFF  starvation mode, mutex free, we were the last counted
 *                 waiter: the hand-off unit was ours and we took it; the
 *                 caller owns the mutex (state still STARVING).
 * See "Deadlines" at the top for why each case is safe. */
enum { LEAVE_GONE, LEAVE_WOKEN, LEAVE_HANDOFF };
static int leave(struct mutex *m)
{
    int32_t o = LOAD(&m->state);
    for (int iter = 0;; iter++) {
        int32_t w = o >> MUTEX_WAITERSHIFT;
        if (w == 0)
            return LEAVE_WOKEN; /* never in starvation mode (inv. 2) */
        int32_t n = o - (1 << MUTEX_WAITERSHIFT);
        if ((o & MUTEX_STARVING) && w == 1) {
            if (!(o & MUTEX_LOCKED)) {
                /* The holder unlocked: its hand-off unit is in sema or
                 * a few instructions away (unlock drops LOCKED before
                 * semrelease adds the unit), and nobody else is counted
                 * to take it. An arrival may still count itself and
                 * take it first; then the state changes and we look
                 * again. */
                if (weft__cansemacquire(&m->sema))
                    return LEAVE_HANDOFF;
                if (iter < 8)
                    weft__dospin();
                else
                    weft_yield();
                o = LOAD(&m->state);
                continue;
            }
            /* Held, no hand-off in flight: back to normal mode, so the
             * holder's unlock hands to nobody. */
            n &= ~MUTEX_STARVING;
        }
        if (atomic_compare_exchange_weak(&m->state, &o, n))
            return LEAVE_GONE;
    }
}

/* lockslow - Go's lockSlow with a deadline and cycle detection. reason:
 * the wait reason shown while parked (an rwmutex writer's inner mutex
 * shows "sync.RWMutex.Lock"). */
static int lockslow(struct mutex *m, struct g *gp, int64_t deadline,
                    int reason)
{
    int64_t waitstart = 0;
    bool starving = false, awoke = false, recorded = false, checked = false;
    int iter = 0, ret = 0;
    int32_t old = LOAD(&m->state);
    for (;;) {
        if ((old & (MUTEX_LOCKED | MUTEX_STARVING)) == MUTEX_LOCKED &&
            weft__canspin(iter)) {
            /* Tell unlockers not to wake anyone: we are awake. */
            if (!awoke && !(old & MUTEX_WOKEN) &&
                (old >> MUTEX_WAITERSHIFT) != 0 &&
                atomic_compare_exchange_strong(&m->state, &old,
                                               old | MUTEX_WOKEN))
                awoke = true;
            weft__dospin();
            iter++;
            old = LOAD(&m->state);
            continue;
        }
        if (old & (MUTEX_LOCKED | MUTEX_STARVING)) {
            /* We would queue: give up first if we must. */
            if (deadline != WEFT_FOREVER && weft__nanotime() >= deadline) {
                if (awoke)
                    clearwoken(m);
                ret = WEFT_ETIMEDOUT;
                break;
            }
            if (!checked) {
                checked = true;
                if (deadline == WEFT_FOREVER) {
                    checkcycle(m, WK_MUTEX, gp, reason, &recorded);
                    old = LOAD(&m->state);
                    continue;
                }
            }
        }
        int32_t new = old;
        if (!(old & MUTEX_STARVING))
            new |= MUTEX_LOCKED; /* no barging in starvation mode */
        if (old & (MUTEX_LOCKED | MUTEX_STARVING))
            new += 1 << MUTEX_WAITERSHIFT;
        if (starving && (old & MUTEX_LOCKED))
            new |= MUTEX_STARVING;
        if (awoke) {
            if (!(new & MUTEX_WOKEN))
                weft__throw("weft: mutex - inconsistent state (woken)");
            new &= ~MUTEX_WOKEN;
        }
        if (!atomic_compare_exchange_strong(&m->state, &old, new))
            continue;
        if (!(old & (MUTEX_LOCKED | MUTEX_STARVING)))
            break; /* locked by CAS */
        bool lifo = waitstart != 0;
        if (waitstart == 0)
            waitstart = weft__nanotime();
        if (weft__semacquire(&m->sema, deadline, reason, lifo) != 0) {
            int lv = leave(m);
            if (lv == LEAVE_GONE) {
                ret = WEFT_ETIMEDOUT;
                break;
            }
            if (lv == LEAVE_WOKEN)
                weft__semacquire(&m->sema, WEFT_FOREVER, reason, true);
            /* LEAVE_HANDOFF: we took the hand-off unit; the state is
             * still STARVING and we own the mutex below. */
        }
        starving = starving || weft__nanotime() - waitstart > STARVATION_NS;
        old = LOAD(&m->state);
        if (old & MUTEX_STARVING) {
            /* Handed to us: fix the state up and own it. */
            if ((old & (MUTEX_LOCKED | MUTEX_WOKEN)) ||
                (old >> MUTEX_WAITERSHIFT) == 0)
                weft__throw("weft: mutex - inconsistent starvation state");
            int32_t delta = MUTEX_LOCKED - (1 << MUTEX_WAITERSHIFT);
            if (!starving || (old >> MUTEX_WAITERSHIFT) == 1)
                delta -= MUTEX_STARVING; /* back to normal mode */
            atomic_fetch_add(&m->state, delta);
            break;
        }
        awoke = true;
        iter = 0;
    }
    if (recorded)
        unrecord(gp);
    if (waitstart != 0) /* it queued: contended (metrics.c) */
        weft__metrics_mutexwait(weft__nanotime() - waitstart);
    if (ret == 0) {
        sethint_afterpark(m, LOAD(&m->state));
        STORE(&m->owner, gp->id);
    }
    return ret;
}

static inline int mutex_lock_r(struct mutex *m, int64_t deadline,
                               int reason)
{
    struct g *gp = mycoro();
    if (unlikely(gp == NULL))
        return WEFT_ENOTCORO;
    int32_t z = 0;
    if (likely(atomic_compare_exchange_strong(&m->state, &z, MUTEX_LOCKED)) ||
        (!(z & (MUTEX_LOCKED | MUTEX_STARVING)) &&
         atomic_compare_exchange_strong(&m->state, &z, z | MUTEX_LOCKED))) {
        /* The second CAS is lockslow's first one (a free mutex in normal
         * mode, waiters or WOKEN set), without the call and reload. */
        sethint(m, z | MUTEX_LOCKED);
        STORE(&m->owner, gp->id);
        return 0;
    }
    return lockslow(m, gp, deadline, reason);
}

static inline int mutex_lock(struct mutex *m, int64_t deadline)
{
    return mutex_lock_r(m, deadline, WR_SYNC_MUTEX_LOCK);
}

/* lockprofiler - the unlocking G to charge a mutex event to while a
 * contention hook is on, else NULL (one predictable branch). */
static inline struct g *lockprofiler(void)
{
    return unlikely(CONTENTION_HOOK() != NULL) ? weft__getg() : NULL;
}

static void unlockslow(struct mutex *m, int32_t new)
{
    struct g *unlocker = lockprofiler();
    if (new & MUTEX_STARVING) {
        /* Hand off to the first waiter and let it run now. */
        weft__semrelease(&m->sema, 1, SEMA_HANDOFF | SEMA_YIELD, unlocker);
        return;
    }
    int32_t old = new;
    for (;;) {
        /* No waiters, or someone awake/locking will see to them. */
        if ((old >> MUTEX_WAITERSHIFT) == 0 ||
            (old & (MUTEX_LOCKED | MUTEX_WOKEN | MUTEX_STARVING)))
            return;
        new = (old - (1 << MUTEX_WAITERSHIFT)) | MUTEX_WOKEN;
        if (atomic_compare_exchange_weak(&m->state, &old, new)) {
            weft__semrelease(&m->sema, 1, 0, unlocker);
            return;
        }
    }
}

/* mutex_unlock - Go's Unlock, with a CAS loop instead of its atomic add:
 * a misuse (unlocking a free mutex, or two coroutines racing to unlock
 * one lock) is refused with EPERM before it touches the state, where
 * Go's add breaks the state first and then dies. An add measured within
 * noise of this loop (10.9 vs 11.8 ns on the contended benchmark).
 * The first CAS expects the state this thread's lock left (tls_hint),
 * not a bare LOCKED: under contention the state carries waiters and
 * WOKEN for long stretches (counted in the 4 x 1M benchmark on 2 Ps:
 * 60-87% of unlocks), so expecting LOCKED failed and a second CAS
 * followed, and between the two the other P's locker took the line
 * away. Measured (20 interleaved runs, medians): 11.1 -> 8.8 ns and
 * 14.5 -> 10.9 ns on a noisier run, Go 8.1 / 13.4 ns. */
static inline int mutex_unlock(struct mutex *m)
{
    STORE(&m->owner, 0);
    int32_t old = MUTEX_LOCKED;
    if (tls_hint.m == m && (tls_hint.state & MUTEX_LOCKED))
        old = tls_hint.state;
    int32_t new = old - MUTEX_LOCKED;
    if (likely(atomic_compare_exchange_strong(&m->state, &old, new))) {
        if (new != 0)
            unlockslow(m, new);
        return 0;
    }
    do {
        if (!(old & MUTEX_LOCKED))
            return WEFT_EPERM;
        new = old - MUTEX_LOCKED;
    } while (!atomic_compare_exchange_weak(&m->state, &old, new));
    if (new != 0)
        unlockslow(m, new);
    return 0;
}

static int mutex_trylock(struct mutex *m)
{
    int32_t old = LOAD(&m->state);
    for (;;) {
        if (old & (MUTEX_LOCKED | MUTEX_STARVING))
            return WEFT_EAGAIN;
        if (atomic_compare_exchange_weak(&m->state, &old,
                                         old | MUTEX_LOCKED))
            break;
    }
    sethint(m, old | MUTEX_LOCKED);
    struct g *gp = weft__getg();
    STORE(&m->owner, gp != NULL ? gp->id : 0);
    return 0;
}

WEFT_EXTERN int weft_mutex_lock(weft_mutex_t *mu)
{
    return mu ? mutex_lock((struct mutex *)mu, WEFT_FOREVER) : WEFT_EINVAL;
}

WEFT_EXTERN int weft_mutex_lock_dl(weft_mutex_t *mu, int64_t deadline)
{
    return mu ? mutex_lock((struct mutex *)mu, deadline) : WEFT_EINVAL;
}

WEFT_EXTERN int weft_mutex_trylock(weft_mutex_t *mu)
{
    return mu ? mutex_trylock((struct mutex *)mu) : WEFT_EINVAL;
}

WEFT_EXTERN int weft_mutex_unlock(weft_mutex_t *mu)
{
    return mu ? mutex_unlock((struct mutex *)mu) : WEFT_EINVAL;
}

/* --------------------------------------------------------------- rwmutex */

#define RW_MAXR ((int32_t)1 << 22)
#define RW_WSHIFT 24
#define RW_GSHIFT 47

struct rwmutex {
    struct mutex w;               /* held while a writer is pending/holds */
    _Atomic uint64_t word;        /* atomic: gen:17 | W:23 | R:24 */
    _Atomic uint32_t writersem;   /* the pending writer's wake-up */
    _Atomic uint32_t rgen;        /* atomic: gen of the newest era that
                                   * started; blocked readers futex-sleep
                                   * on it (stored after the word's CAS) */
};
_Static_assert(sizeof(struct rwmutex) <= sizeof(weft_rwmutex_t), "size");
_Static_assert(offsetof(struct rwmutex, w) == 0, "ownerof: inner mutex");
_Static_assert(_Alignof(struct rwmutex) <= _Alignof(weft_rwmutex_t), "al");

static inline int32_t rw_r(uint64_t v)
{
    return (int32_t)((uint32_t)v << 8) >> 8;
}
static inline uint32_t rw_w(uint64_t v)
{
    return (uint32_t)(v >> RW_WSHIFT) & 0x7fffff;
}
static inline uint32_t rw_gen(uint64_t v) { return (uint32_t)(v >> RW_GSHIFT); }
static inline uint64_t rw_make(int32_t r, uint32_t w, uint32_t gen)
{
    return (uint64_t)(gen & 0x1ffff) << RW_GSHIFT |
           (uint64_t)(w & 0x7fffff) << RW_WSHIFT | ((uint32_t)r & 0xffffff);
}

static int rwait(struct rwmutex *rw, uint32_t gen, int64_t deadline);

static int rlock(struct rwmutex *rw, int64_t deadline)
{
    struct g *gp = mycoro();
    if (gp == NULL)
        return WEFT_ENOTCORO;
    uint64_t v = LOAD(&rw->word), n;
    do {
        if (rw_r(v) >= RW_MAXR - 1)
            return WEFT_EAGAIN;
        n = rw_make(rw_r(v) + 1, rw_w(v), rw_gen(v));
    } while (!atomic_compare_exchange_weak(&rw->word, &v, n));
    if (rw_r(n) > 0)
        return 0;
    /* A writer is pending: we are counted in R, and the writer's release
     * (the CAS that bumps gen) counts us in as a reader. No units: we
     * sleep while rgen still says our era and look at gen after each
     * wake-up, so a release cannot be taken by a reader of a later era
     * (with a unit semaphore it could, leaving us behind the next
     * writer and past our deadline). */
    bool recorded = false;
    if (deadline == WEFT_FOREVER)
        checkcycle(rw, WK_RLOCK, gp, WR_SYNC_RWMUTEX_RLOCK, &recorded);
    int64_t t0 = weft__nanotime();
    int rc = rwait(rw, rw_gen(n), deadline);
    weft__metrics_mutexwait(weft__nanotime() - t0);
    if (recorded)
        unrecord(gp);
    return rc;
}

/* rwait - a reader counted in R as blocked in era gen waits for the era
 * to end (0: it holds the read lock) or its deadline (WEFT_ETIMEDOUT:
 * uncounted). */
static int rwait(struct rwmutex *rw, uint32_t gen, int64_t deadline)
{
    uint64_t v, n;
    for (;;) {
        int rc = weft__futexsleep(&rw->rgen, gen, deadline,
                                  WR_SYNC_RWMUTEX_RLOCK);
        v = LOAD(&rw->word);
        if (rw_gen(v) != gen)
            return 0; /* released: we hold the read lock */
        if (rc == 0) {
            /* rgen is still the previous era's for a few instructions
             * after the CAS that started ours (releasew): look again
             * without burning the P. */
            if (LOAD(&rw->rgen) != gen)
                weft_yield();
            continue;
        }
        /* Timed out in our era: uncount ourselves, unless the release
         * comes first. */
        while (rw_gen(v) == gen) {
            n = rw_make(rw_r(v) - 1, rw_w(v), rw_gen(v));
            if (atomic_compare_exchange_weak(&rw->word, &v, n))
                return WEFT_ETIMEDOUT;
        }
        return 0;
    }
}

static int tryrlock(struct rwmutex *rw)
{
    uint64_t v = LOAD(&rw->word), n;
    do {
        if (rw_r(v) < 0 || rw_r(v) >= RW_MAXR - 1)
            return WEFT_EAGAIN;
        n = rw_make(rw_r(v) + 1, rw_w(v), rw_gen(v));
    } while (!atomic_compare_exchange_weak(&rw->word, &v, n));
    return 0;
}

static int runlock(struct rwmutex *rw)
{
    uint64_t v = LOAD(&rw->word), n;
    bool last;
    do {
        int32_t r = rw_r(v);
        if (r == 0 || r == -RW_MAXR || (r < 0 && rw_w(v) == 0))
            return WEFT_EPERM;
        uint32_t w = rw_w(v);
        last = false;
        if (r < 0) {
            w--; /* the pending writer waits for us */
            last = w == 0;
        }
        n = rw_make(r - 1, w, rw_gen(v));
    } while (!atomic_compare_exchange_weak(&rw->word, &v, n));
    if (last)
        weft__semrelease(&rw->writersem, 1, 0, lockprofiler());
    return 0;
}

/* wakereaders - after the CAS from v to n that ended a writer era:
 * publish the new era and wake the readers that blocked in the old one
 * (R - W of v; they find gen changed and hold the read lock). */
static void wakereaders(struct rwmutex *rw, uint64_t v, uint64_t n)
{
    atomic_store(&rw->rgen, rw_gen(n));
    if (rw_r(v) + RW_MAXR - (int32_t)rw_w(v) > 0)
        weft__futexwakeup(&rw->rgen, UINT32_MAX, lockprofiler());
}

/* releasew - end a writer era: R += MAXR, W = 0, gen + 1; release the
 * readers that blocked meanwhile (R - W of the old word). */
static void releasew(struct rwmutex *rw, uint64_t v)
{
    uint64_t n;
    do {
        n = rw_make(rw_r(v) + RW_MAXR, 0, rw_gen(v) + 1);
    } while (!atomic_compare_exchange_weak(&rw->word, &v, n));
    wakereaders(rw, v, n);
}

static int wlock_(struct rwmutex *rw, int64_t deadline)
{
    int ret = mutex_lock_r(&rw->w, deadline, WR_SYNC_RWMUTEX_LOCK);
    if (ret != 0)
        return ret;
    uint64_t v = LOAD(&rw->word), n;
    do {
        n = rw_make(rw_r(v) - RW_MAXR, (uint32_t)rw_r(v), rw_gen(v));
    } while (!atomic_compare_exchange_weak(&rw->word, &v, n));
    if (rw_w(n) == 0)
        return 0;
    int64_t t0 = weft__nanotime();
    int rc = weft__semacquire(&rw->writersem, deadline,
                              WR_SYNC_RWMUTEX_LOCK, false);
    weft__metrics_mutexwait(weft__nanotime() - t0);
    if (rc == 0)
        return 0;
    v = LOAD(&rw->word);
    /* Readers that were in stay in; W goes to 0 with no release. */
    for (;;) {
        if (rw_w(v) == 0) { /* the last reader left as we gave up: its
                             * unit is ours */
            weft__semacquire(&rw->writersem, WEFT_FOREVER,
                             WR_SYNC_RWMUTEX_LOCK, false);
            return 0;
        }
        n = rw_make(rw_r(v) + RW_MAXR, 0, rw_gen(v) + 1);
        if (atomic_compare_exchange_weak(&rw->word, &v, n))
            break;
    }
    wakereaders(rw, v, n);
    mutex_unlock(&rw->w);
    return WEFT_ETIMEDOUT;
}

static int trywlock(struct rwmutex *rw)
{
    int ret = mutex_trylock(&rw->w);
    if (ret != 0)
        return ret;
    uint64_t v = LOAD(&rw->word), n;
    do {
        if (rw_r(v) != 0) {
            mutex_unlock(&rw->w);
            return WEFT_EAGAIN;
        }
        n = rw_make(-RW_MAXR, 0, rw_gen(v));
    } while (!atomic_compare_exchange_weak(&rw->word, &v, n));
    return 0;
}

static int wunlock(struct rwmutex *rw)
{
    uint64_t v = LOAD(&rw->word);
    if (rw_r(v) >= 0 || rw_w(v) != 0)
        return WEFT_EPERM;
    releasew(rw, v);
    mutex_unlock(&rw->w);
    return 0;
}

#define RW(rw) ((struct rwmutex *)(rw))

WEFT_EXTERN int weft_rwmutex_rlock(weft_rwmutex_t *rw)
{
    return rw ? rlock(RW(rw), WEFT_FOREVER) : WEFT_EINVAL;
}
WEFT_EXTERN int weft_rwmutex_rlock_dl(weft_rwmutex_t *rw, int64_t deadline)
{
    return rw ? rlock(RW(rw), deadline) : WEFT_EINVAL;
}
WEFT_EXTERN int weft_rwmutex_tryrlock(weft_rwmutex_t *rw)
{
    return rw ? tryrlock(RW(rw)) : WEFT_EINVAL;
}
WEFT_EXTERN int weft_rwmutex_runlock(weft_rwmutex_t *rw)
{
    return rw ? runlock(RW(rw)) : WEFT_EINVAL;
}
WEFT_EXTERN int weft_rwmutex_lock(weft_rwmutex_t *rw)
{
    return rw ? wlock_(RW(rw), WEFT_FOREVER) : WEFT_EINVAL;
}
WEFT_EXTERN int weft_rwmutex_lock_dl(weft_rwmutex_t *rw, int64_t deadline)
{
    return rw ? wlock_(RW(rw), deadline) : WEFT_EINVAL;
}
WEFT_EXTERN int weft_rwmutex_trylock(weft_rwmutex_t *rw)
{
    return rw ? trywlock(RW(rw)) : WEFT_EINVAL;
}
WEFT_EXTERN int weft_rwmutex_unlock(weft_rwmutex_t *rw)
{
    return rw ? wunlock(RW(rw)) : WEFT_EINVAL;
}

/* ------------------------------------------------------------------ cond */

struct cond {
    _Atomic uint32_t seq; /* atomic: bumped by every signal/broadcast */
};
_Static_assert(sizeof(struct cond) <= sizeof(weft_cond_t), "cond size");

WEFT_EXTERN int weft_cond_wait_dl(weft_cond_t *cv, weft_mutex_t *mu,
                                  int64_t deadline)
{
    if (cv == NULL || mu == NULL)
        return WEFT_EINVAL;
    if (mycoro() == NULL)
        return WEFT_ENOTCORO;
    struct cond *c = (struct cond *)cv;
    uint32_t seq = atomic_load(&c->seq);
    int ret = mutex_unlock((struct mutex *)mu);
    if (ret != 0)
        return ret;
    ret = weft__futexsleep(&c->seq, seq, deadline, WR_SYNC_COND_WAIT);
    /* Without a deadline the lock always succeeds (a wait-for cycle is
     * reported and waited out, never returned). */
    mutex_lock((struct mutex *)mu, WEFT_FOREVER);
    return ret;
}

WEFT_EXTERN int weft_cond_wait(weft_cond_t *cv, weft_mutex_t *mu)
{
    return weft_cond_wait_dl(cv, mu, WEFT_FOREVER);
}

WEFT_EXTERN int weft_cond_signal(weft_cond_t *cv)
{
    if (cv == NULL)
        return WEFT_EINVAL;
    struct cond *c = (struct cond *)cv;
    atomic_fetch_add(&c->seq, 1);
    weft__futexwakeup(&c->seq, 1, NULL);
    return 0;
}

WEFT_EXTERN int weft_cond_broadcast(weft_cond_t *cv)
{
    if (cv == NULL)
        return WEFT_EINVAL;
    struct cond *c = (struct cond *)cv;
    atomic_fetch_add(&c->seq, 1);
    weft__futexwakeup(&c->seq, UINT32_MAX, NULL);
    return 0;
}

/* ------------------------------------------------------------- waitgroup */

/* One word: counter << 32 | gen. The add that brings the counter to zero
 * bumps gen in the same CAS, then wakes the sleepers of gen's half by
 * address: that wake-up reads nothing of the waitgroup, so a waiter that
 * sees zero and frees it (the common wait-then-free pattern) cannot race
 * with the adder still writing to it. */
struct waitgroup {
    union {
        _Atomic uint64_t state;
        _Atomic uint32_t half[2]; /* the futex word is gen's half */
    };
    uint64_t pad_;
};
_Static_assert(sizeof(struct waitgroup) <= sizeof(weft_waitgroup_t), "wg");
_Static_assert(_Alignof(struct waitgroup) <= _Alignof(weft_waitgroup_t), "");

#define WG_GENHALF 0 /* little-endian (asserted above): low half first */

static inline int32_t wg_count(uint64_t s) { return (int32_t)(s >> 32); }

WEFT_EXTERN int weft_waitgroup_add(weft_waitgroup_t *wgp, int64_t delta)
{
    if (wgp == NULL)
        return WEFT_EINVAL;
    struct waitgroup *wg = (struct waitgroup *)wgp;
    uint64_t s = LOAD(&wg->state), ns;
    int64_t n;
    do {
        n = wg_count(s) + delta;
        if (delta < INT32_MIN || delta > INT32_MAX || n < 0 || n > INT32_MAX)
            return WEFT_EINVAL;
        uint32_t gen = (uint32_t)s;
        if (n == 0 && delta != 0)
            gen++;
        ns = (uint64_t)(uint32_t)n << 32 | gen;
    } while (!atomic_compare_exchange_weak(&wg->state, &s, ns));
    if (n == 0 && delta != 0) /* wg may be freed by now: address only */
        weft__futexwakeup(&wg->half[WG_GENHALF], UINT32_MAX, NULL);
    return 0;
}

WEFT_EXTERN int weft_waitgroup_done(weft_waitgroup_t *wg)
{
    return weft_waitgroup_add(wg, -1);
}

WEFT_EXTERN int weft_waitgroup_wait_dl(weft_waitgroup_t *wgp,
                                       int64_t deadline)
{
    if (wgp == NULL)
        return WEFT_EINVAL;
    struct waitgroup *wg = (struct waitgroup *)wgp;
    if (mycoro() == NULL)
        return WEFT_ENOTCORO;
    uint64_t s = atomic_load(&wg->state);
    if (wg_count(s) == 0)
        return 0;
    for (;;) {
        int ret = weft__futexsleep(&wg->half[WG_GENHALF], (uint32_t)s,
                                   deadline, WR_SYNC_WAITGROUP_WAIT);
        uint64_t now = atomic_load(&wg->state);
        if ((uint32_t)now != (uint32_t)s || wg_count(now) == 0)
            return 0;
        if (ret != 0)
            return ret;
    }
}

WEFT_EXTERN int weft_waitgroup_wait(weft_waitgroup_t *wg)
{
    return weft_waitgroup_wait_dl(wg, WEFT_FOREVER);
}

/* ------------------------------------------------------------------ once */

struct once {
    _Atomic uint32_t done; /* release-stored after fn returned */
    uint32_t pad_;
    struct mutex m;
};
_Static_assert(sizeof(struct once) <= sizeof(weft_once_t), "once size");
_Static_assert(_Alignof(struct once) <= _Alignof(weft_once_t), "once al");

WEFT_EXTERN int weft_once_do(weft_once_t *op, weft_fn fn, void *arg)
{
    if (op == NULL || fn == NULL)
        return WEFT_EINVAL;
    struct once *o = (struct once *)op;
    if (likely(LOADACQ(&o->done) != 0))
        return 0;
    /* fn calling weft_once_do on the same once would wait for itself. */
    struct g *gp = mycoro();
    if (gp != NULL && LOAD(&o->m.owner) == gp->id)
        return WEFT_EDEADLK;
    int ret = mutex_lock(&o->m, WEFT_FOREVER);
    if (ret != 0)
        return ret;
    if (LOAD(&o->done) == 0) {
        fn(arg);
        STOREREL(&o->done, 1);
    }
    mutex_unlock(&o->m);
    return 0;
}

/* ------------------------------------------------------------------- sem */

struct sem {
    _Atomic uint32_t count; /* the semaphore word; WEFT_SEM_INIT sets it */
    uint32_t pad_[3];
};
_Static_assert(sizeof(struct sem) <= sizeof(weft_sem_t), "sem size");

WEFT_EXTERN int weft_sem_acquire_dl(weft_sem_t *sp, int64_t deadline)
{
    if (sp == NULL)
        return WEFT_EINVAL;
    struct sem *s = (struct sem *)sp;
    if (mycoro() == NULL)
        return WEFT_ENOTCORO;
    return weft__semacquire(&s->count, deadline, WR_SEMACQUIRE, false);
}

WEFT_EXTERN int weft_sem_acquire(weft_sem_t *s)
{
    return weft_sem_acquire_dl(s, WEFT_FOREVER);
}

WEFT_EXTERN int weft_sem_tryacquire(weft_sem_t *sp)
{
    if (sp == NULL)
        return WEFT_EINVAL;
    return weft__cansemacquire(&((struct sem *)sp)->count) ? 0 : WEFT_EAGAIN;
}

WEFT_EXTERN int weft_sem_release(weft_sem_t *sp, uint32_t n)
{
    if (sp == NULL || n == 0)
        return WEFT_EINVAL;
    struct sem *s = (struct sem *)sp;
    if (LOAD(&s->count) > UINT32_MAX - n)
        return WEFT_EINVAL; /* would overflow (racy check) */
    weft__semrelease(&s->count, n, SEMA_HANDOFF, NULL);
    return 0;
}
