/*
 * profiles.c - the goroutine, threadcreate, block and mutex profiles
 * (weft_profile_write/count), the block and mutex rates, and coroutine
 * labels: Go's runtime/pprof count and contention profiles, written as
 * profile.proto through pprof.c's builder or as Go's legacy text.
 *
 * Concepts:
 *  - goroutine: a snapshot of every live G (dump.c's freeze, through
 *    weft__gstacks), aggregated by (stack, labels).
 *  - threadcreate: the stack that created each M of this runtime
 *    (weft__threadcreate_record from newm), aggregated by stack.
 *  - block/mutex: buckets keyed by stack, filled by the contention hook
 *    (park.c and sema.c call it). A waiter reports its own wait after it
 *    wakes (block profile, its stack is the current one); an unlocker
 *    that woke a mutex waiter reports the waiter's delay with itself as
 *    unlocker (mutex profile, charged to the unlocker's stack, as Go's
 *    mutexevent). Sampling follows Go 1.19's blockevent/mutexevent.
 *  - Every stack is written with its leading weft-internal frames dropped
 *    (those weft__symbolize marks hidden; public weft_* calls stay), as
 *    Go hides runtime.gopark, and its trailing ones (the coroutine entry
 *    trampoline, Go's runtime.goexit). Stacks equal after the trim merge.
 *
 * Invariants:
 *  1. A label set is immutable once published. g->labels is written only
 *     by its own G (weft_label_set, spawn for the child before it is
 *     queued, exit) and always as: store the new pointer, then drop the
 *     old reference. So a reader that interrupts the G on its own thread
 *     (the CPU profiler's signal handler) or froze it (weft__gstacks)
 *     finds a set whose reference is still held, and may take one with a
 *     single atomic increment.
 *  2. weft__contention_hook is non-NULL exactly while the block rate or
 *     the mutex fraction is non-zero (ratelock orders the setters); the
 *     hook re-reads the rates, so a stale call after switching off
 *     records nothing.
 *  3. Bucket tables only grow while the process lives (Go keeps its
 *     profiles for the process's life too); their lock is never held
 *     while Ms are frozen or across a switch. Threadcreate records are
 *     per runtime: weft_main forgets the last runtime's.
 *
 * Netpoll waits (fd.c parks with its own commit, not weft__wait_park)
 * are not in the block profile, as Go's block profile leaves out network
 * waits: a server's idle connections would bury every real contention
 * under hours of "blocked" reads. Sleeps are left out too (Go's).
 *
 * threadcreate stacks are walked by frame pointers (fpwalk), not by
 * libunwind, which keeps a pipe open once used: Ms are created by every
 * runtime, profiled or not.
 *
 * Block and mutex stacks are walked by frame pointers first (fpwalk,
 * ~100x cheaper than libunwind), and by libunwind only when a frame
 * without one cut the chain short of the coroutine's entry: code built
 * without frame pointers still gets whole stacks, at libunwind's price.
 * The hook runs only while a profile is on, off any lock (sema.c reports
 * after its bucket lock is dropped).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pprof.h"
#include "runtime.h"

/* ------------------------------------------------------------------ labels */

void weft__labels_ref(struct weft__labels *l)
{
    if (l != NULL)
        atomic_fetch_add_explicit(&l->ref, 1, memory_order_relaxed);
}

/* Racy readers (weft__labels_read_begin): while any is in, a set whose
 * count drops to 0 is parked on deferred instead of freed; the last
 * reader out frees them. An owner stores a G's new set before dropping
 * the old one, and both sides meet under readlock, so a reader that
 * entered can only load a set that is alive or parked. */
static wlock readlock;
static int32_t nreaders;                 /* readlock */
static struct weft__labels *deferred;    /* readlock */

void weft__labels_unref(struct weft__labels *l)
{
    if (l == NULL ||
        atomic_fetch_sub_explicit(&l->ref, 1, memory_order_acq_rel) != 1)
        return;
    weft__lock(&readlock);
    bool park = nreaders > 0;
    if (park) {
        l->next = deferred;
        deferred = l;
    }
    weft__unlock(&readlock);
    if (!park)
        free(l);
}

struct weft__labels *weft__labels_tryref(struct weft__labels *l)
{
    if (l == NULL)
        return NULL;
    int32_t r = atomic_load_explicit(&l->ref, memory_order_relaxed);
    while (r > 0)
        if (atomic_compare_exchange_weak_explicit(&l->ref, &r, r + 1,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
            return l;
    return NULL;
}

struct weft__labels *weft__labels_of(struct g *gp)
{
    /* A set that just died was replaced first (store, then unref): its
     * successor is in the field now, so look again while it moves. */
    struct weft__labels *l = __atomic_load_n(&gp->labels, __ATOMIC_ACQUIRE);
    for (int i = 0; i < 8; i++) {
        struct weft__labels *r = weft__labels_tryref(l);
        if (r != NULL || l == NULL)
            return r;
        struct weft__labels *again =
            __atomic_load_n(&gp->labels, __ATOMIC_ACQUIRE);
        if (again == l)
            return NULL;
        l = again;
    }
    return NULL;
}

void weft__labels_read_begin(void)
{
    weft__lock(&readlock);
    nreaders++;
    weft__unlock(&readlock);
}

void weft__labels_read_end(void)
{
    weft__lock(&readlock);
    struct weft__labels *l = --nreaders == 0 ? deferred : NULL;
    if (nreaders == 0)
        deferred = NULL;
    weft__unlock(&readlock);
    while (l != NULL) {
        struct weft__labels *next = l->next;
        free(l);
        l = next;
    }
}

/* find - the index of key in l, or where it would go (*found false). */
static int find(const struct weft__labels *l, const char *key, bool *found)
{
    int lo = 0, hi = l != NULL ? l->n : 0;
    *found = false;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(l->kv[mid].k, key);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* putkv - append k=v to l under construction, the strings at s;
 * returns where the next strings go. */
static char *putkv(struct weft__labels *l, char *s, const char *k,
                   const char *v)
{
    size_t kl = strlen(k) + 1, vl = strlen(v) + 1;
    l->kv[l->n].k = memcpy(s, k, kl);
    l->kv[l->n].v = memcpy(s + kl, v, vl);
    l->n++;
    return s + kl + vl;
}

WEFT_EXTERN int weft_label_set(const char *key, const char *value)
{
    if (key == NULL || *key == '\0' || strlen(key) > LABEL_LEN ||
        (value != NULL && strlen(value) > LABEL_LEN))
        return WEFT_EINVAL;
    struct g *gp = weft__getg();
    if (gp == NULL)
        return WEFT_ENOTCORO;
    struct weft__labels *old = gp->labels;
    bool found;
    int at = find(old, key, &found);
    int n = old != NULL ? old->n : 0;
    if (value == NULL && !found)
        return 0;
    int nn = value == NULL ? n - 1 : found ? n : n + 1;
    if (nn > LABEL_MAX)
        return WEFT_EINVAL;
    struct weft__labels *l = NULL;
    if (nn > 0) {
        size_t bytes = sizeof *l + (size_t)nn * sizeof l->kv[0];
        for (int i = 0; i < n; i++)
            if (i != at || !found)
                bytes += strlen(old->kv[i].k) + strlen(old->kv[i].v) + 2;
        if (value != NULL)
            bytes += strlen(key) + strlen(value) + 2;
        l = malloc(bytes);
        if (l == NULL)
            return WEFT_ENOMEM;
        atomic_init(&l->ref, 1);
        l->n = 0;
        char *s = (char *)&l->kv[nn];
        for (int i = 0; i <= n; i++) {
            if (i == at && value != NULL)
                s = putkv(l, s, key, value);
            if (i < n && !(i == at && found))
                s = putkv(l, s, old->kv[i].k, old->kv[i].v);
        }
    }
    __atomic_store_n(&gp->labels, l, __ATOMIC_RELEASE); /* invariant 1 */
    weft__labels_unref(old);
    return 0;
}

WEFT_EXTERN int weft_label_get(const char *key, char *buf, size_t n)
{
    if (key == NULL || (buf == NULL && n > 0))
        return WEFT_EINVAL;
    struct g *gp = weft__getg();
    if (gp == NULL)
        return WEFT_ENOTCORO;
    bool found;
    int at = find(gp->labels, key, &found);
    if (!found)
        return WEFT_ENOENT;
    const char *v = gp->labels->kv[at].v;
    size_t len = strlen(v);
    if (n > 0) {
        size_t c = len < n - 1 ? len : n - 1;
        memcpy(buf, v, c);
        buf[c] = '\0';
    }
    return (int)len;
}

/* ------------------------------------------------------ contention events */

#define NBUCKET 1024

struct bucket {
    struct bucket *next; /* btab lock: hash chain */
    uint64_t hash;
    double count;        /* Go's float count: a sampled short wait counts
                          * rate/delay events */
    int64_t delay;       /* ns */
    int n;
    uintptr_t pc[];      /* raw, as unwound in the hook */
};

struct btab {
    wlock lock;
    struct bucket *tab[NBUCKET]; /* lock */
    _Atomic int64_t nrec;        /* buckets, for weft_profile_count */
};

static struct btab blocktab, mutextab;
static wlock ratelock;               /* orders the rate setters */
static _Atomic int64_t blockrate;    /* ns; <= 0: off */
static _Atomic int32_t mutexrate;    /* 1 in rate; 0: off */
static _Atomic int32_t mutexperiod;  /* the last non-zero mutexrate */

/* The hook's unwind buffer: the hook runs on a coroutine that cannot
 * switch while it runs, so one per thread suffices, and the coroutine's
 * own stack (16 KiB at least) is spared 1.7 KiB. */
static __thread struct tbuf hooktb;

static uint64_t rand64(void)
{
    struct m *mp = weft__getm();
    if (mp == NULL) {
        static _Atomic uint64_t seq;
        uint64_t x = atomic_fetch_add(&seq, 0x9e3779b97f4a7c15ULL);
        x ^= x >> 31;
        return x * 0xbf58476d1ce4e5b9ULL;
    }
    return (uint64_t)weft__fastrand(mp) << 32 | weft__fastrand(mp);
}

static uint64_t stackhash(const uintptr_t *pc, int n)
{
    uint64_t h = 1469598103934665603ULL;
    for (int i = 0; i < n; i++)
        h = (h ^ pc[i]) * 1099511628211ULL;
    return h ^ (h >> 29);
}

/* fpwalk - the calling thread's return addresses by frame pointers
 * (weft builds with -fno-omit-frame-pointer), within the current stack's
 * bounds; stops at the first frame without one. *complete: the chain
 * ended at a saved frame pointer of 0, as a coroutine's entry frame has
 * (context_*.S starts it with one), or filled max; false when a frame
 * without a frame pointer cut it. Not libunwind, for the threadcreate
 * stacks (its address validation opens a pipe for the process's life,
 * and every runtime creates Ms) and first for block and mutex events
 * (libunwind costs ~8 us a stack, 16 sigprocmask calls: recording every
 * event of a channel ping-pong made it 70x slower). The bounds keep a
 * bad chain inside the stack, and ASan must not see those reads. */
__attribute__((no_sanitize_address)) static int fpwalk(uintptr_t *pc,
                                                       int max,
                                                       bool *complete)
{
    uintptr_t fp = (uintptr_t)__builtin_frame_address(0), lo = 0, hi = 0;
    struct g *gp = weft__getg();
    struct m *mp = weft__getm();
    if (gp != NULL && fp >= gp->stk.lo && fp < gp->stk.hi) {
        lo = gp->stk.lo;
        hi = gp->stk.hi;
    } else if (mp != NULL && mp->g0_stack_size != 0) {
        /* An M's own stack: g0init read its bounds once. */
        lo = (uintptr_t)mp->g0_stack_bottom;
        hi = lo + mp->g0_stack_size;
    } else {
        /* weft_main's thread (it starts the first M): pthread_getattr_np
         * reads /proc/self/maps for the main thread, but only here. */
        pthread_attr_t a;
        void *addr;
        size_t size;
        if (pthread_getattr_np(pthread_self(), &a) != 0)
            return 0;
        if (pthread_attr_getstack(&a, &addr, &size) == 0) {
            lo = (uintptr_t)addr;
            hi = lo + size;
        }
        pthread_attr_destroy(&a);
    }
    int n = 0;
    *complete = false;
    while (n < max && fp >= lo && fp + 2 * sizeof(uintptr_t) <= hi &&
           (fp & (sizeof(uintptr_t) - 1)) == 0) {
        uintptr_t next = ((uintptr_t *)fp)[0], ret = ((uintptr_t *)fp)[1];
        if (ret == 0)
            break;
        pc[n++] = ret;
        if (next == 0 || n == max) {
            *complete = true;
            break;
        }
        if (next <= fp)
            break;
        fp = next;
    }
    return n;
}

/* record - add one event (count, delay) at the calling stack to bt. */
static void record(struct btab *bt, double count, int64_t delay)
{
    struct tbuf *t = &hooktb;
    bool complete;
    t->n = fpwalk(t->pc, TB_MAX, &complete);
    if (!complete) /* code without frame pointers on the stack */
        weft__unwind_here(t);
    uint64_t h = stackhash(t->pc, t->n);
    struct bucket **slot = &bt->tab[h % NBUCKET];
    weft__lock(&bt->lock);
    struct bucket *b = *slot;
    for (; b != NULL; b = b->next)
        if (b->hash == h && b->n == t->n &&
            memcmp(b->pc, t->pc, (size_t)t->n * sizeof t->pc[0]) == 0)
            break;
    if (b == NULL) {
        b = malloc(sizeof *b + (size_t)t->n * sizeof t->pc[0]);
        if (b == NULL) {
            weft__unlock(&bt->lock); /* the event is lost, not the run */
            return;
        }
        b->hash = h;
        b->count = 0;
        b->delay = 0;
        b->n = t->n;
        memcpy(b->pc, t->pc, (size_t)t->n * sizeof t->pc[0]);
        b->next = *slot;
        *slot = b;
        atomic_fetch_add(&bt->nrec, 1);
    }
    b->count += count;
    b->delay += delay;
    weft__unlock(&bt->lock);
}

/* blockevent - Go 1.19's blockevent/blocksampled/saveblockevent, with
 * ns for cycles: every wait of at least rate ns is recorded as it is;
 * a shorter one with probability delay/rate, then as rate ns and
 * rate/delay events, which keeps both totals unbiased. */
static void blockevent(int64_t delay, int reason)
{
    if (reason == WR_SLEEP || reason == WR_IO_WAIT)
        return;
    if (delay <= 0)
        delay = 1;
    int64_t rate = LOAD(&blockrate);
    if (rate <= 0)
        return;
    if (rate > delay && (int64_t)(rand64() % (uint64_t)rate) > delay)
        return;
    if (delay < rate)
        record(&blocktab, (double)rate / (double)delay, rate);
    else
        record(&blocktab, 1, delay);
}

/* mutexevent - Go's mutexevent: 1 in rate unlocks that woke a waiter
 * are charged the waiter's delay, at the unlocker's stack. */
static void mutexevent(int64_t delay)
{
    if (delay < 0)
        delay = 0;
    int32_t rate = LOAD(&mutexrate);
    if (rate > 0 && rand64() % (uint64_t)rate == 0)
        record(&mutextab, 1, delay);
}

static void contention(struct g *gp, int reason, int64_t start, int64_t end,
                       const void *obj, struct g *unlocker)
{
    (void)gp;
    (void)obj;
    if (unlocker == NULL)
        blockevent(end - start, reason);
    else
        mutexevent(end - start);
}

/* sethook - invariant 2. Caller holds ratelock. */
static void sethook(void)
{
    bool on = LOAD(&blockrate) > 0 || LOAD(&mutexrate) > 0;
    atomic_store(&weft__contention_hook, on ? contention : NULL);
}

WEFT_EXTERN int64_t weft_set_block_profile_rate(int64_t rate)
{
    if (rate < 0)
        rate = 0;
    if (rate > 0)
        weft__unwind_warm(); /* the hook unwinds: libunwind's set-up now */
    weft__lock(&ratelock);
    int64_t prev = atomic_exchange(&blockrate, rate);
    sethook();
    weft__unlock(&ratelock);
    return prev;
}

WEFT_EXTERN int weft_set_mutex_profile_fraction(int rate)
{
    if (rate < 0)
        return LOAD(&mutexrate);
    if (rate > 0)
        weft__unwind_warm();
    weft__lock(&ratelock);
    int prev = atomic_exchange(&mutexrate, rate);
    if (rate > 0)
        STORE(&mutexperiod, rate);
    sethook();
    weft__unlock(&ratelock);
    return prev;
}

/* ------------------------------------------------------------ threadcreate */

struct tcrec {
    struct tcrec *next;
    int n;
    uintptr_t pc[];
};

static wlock tclock;
static struct tcrec *tchead;     /* tclock */
static _Atomic int64_t tccount;  /* records on tchead */


/* weft__threadcreate_record - see runtime.h. May run on a coroutine (a
 * wakep that starts an M). */
void weft__threadcreate_record(void)
{
    uintptr_t pc[64];
    bool complete; /* no libunwind fallback here: its pipe */
    int n = fpwalk(pc, 64, &complete);
    struct tcrec *r = malloc(sizeof *r + (size_t)n * sizeof r->pc[0]);
    if (r == NULL)
        return;
    r->n = n;
    memcpy(r->pc, pc, (size_t)n * sizeof r->pc[0]);
    weft__lock(&tclock);
    r->next = tchead;
    tchead = r;
    atomic_fetch_add(&tccount, 1);
    weft__unlock(&tclock);
}

/* weft__profiles_reset - see runtime.h. No M runs. */
void weft__profiles_reset(void)
{
    weft__lock(&tclock);
    struct tcrec *r = tchead;
    tchead = NULL;
    STORE(&tccount, 0);
    weft__unlock(&tclock);
    while (r != NULL) {
        struct tcrec *next = r->next;
        free(r);
        r = next;
    }
}

/* ------------------------------------------------------------- records */

/* One line of output before aggregation: a stack (pointing into the
 * collector's copy), its labels, its values. */
struct rec {
    const uintptr_t *pc;
    int n;
    bool exact;                     /* pc[0] is not a return address */
    const struct weft__labels *l;
    double v[2];                    /* count (, delay ns) */
    char *key;                      /* text: "@ 0x.. 0x..[\n# labels: ..]" */
};

static bool allhidden(uintptr_t pc, bool exact)
{
    if (weft__pprof_pseudo(pc) != NULL)
        return false;
    const struct sym *s = weft__symbolize(pc, exact);
    if (s == NULL || s->n == 0)
        return false;
    for (int i = 0; i < s->n; i++)
        if (!s->f[i].hidden)
            return false;
    return true;
}

/* trim - drop the leading and trailing weft-internal frames of every
 * record (a stack with nothing else stays whole). */
static void trim(struct rec *r, size_t n)
{
    if (!weft__dump_lock())
        return; /* another dump is stuck: untrimmed, not wrong */
    for (size_t i = 0; i < n; i++) {
        int a = 0, z = r[i].n;
        while (a < z && allhidden(r[i].pc[a], r[i].exact && a == 0))
            a++;
        while (z > a && allhidden(r[i].pc[z - 1], r[i].exact && z == 1))
            z--;
        if (a == z)
            continue;
        r[i].exact = r[i].exact && a == 0;
        r[i].pc += a;
        r[i].n = z - a;
    }
    weft__dump_unlock();
}

static int labelscmp(const struct weft__labels *a,
                     const struct weft__labels *b)
{
    int na = a ? a->n : 0, nb = b ? b->n : 0;
    if (na != nb)
        return na < nb ? -1 : 1;
    for (int i = 0; i < na; i++) {
        int c = strcmp(a->kv[i].k, b->kv[i].k);
        if (c == 0)
            c = strcmp(a->kv[i].v, b->kv[i].v);
        if (c != 0)
            return c;
    }
    return 0;
}

static int reccmp(const void *pa, const void *pb)
{
    const struct rec *a = pa, *b = pb;
    if (a->n != b->n)
        return a->n < b->n ? -1 : 1;
    for (int i = 0; i < a->n; i++)
        if (a->pc[i] != b->pc[i])
            return a->pc[i] < b->pc[i] ? -1 : 1;
    if (a->exact != b->exact)
        return a->exact ? 1 : -1;
    return labelscmp(a->l, b->l);
}

/* merge - sum the values of records equal in stack and labels; returns
 * the new count. */
static size_t merge(struct rec *r, size_t n)
{
    if (n == 0)
        return 0;
    qsort(r, n, sizeof *r, reccmp);
    size_t k = 0;
    for (size_t i = 1; i < n; i++) {
        if (reccmp(&r[k], &r[i]) == 0) {
            r[k].v[0] += r[i].v[0];
            r[k].v[1] += r[i].v[1];
        } else {
            r[++k] = r[i];
        }
    }
    return k + 1;
}

/* ---------------------------------------------------------------- text */

/* gostr - s as Go's %q writes it (ASCII escapes; other bytes as they
 * are, which is Go's output for valid UTF-8). */
static void gostr(struct sbuf *b, const char *s)
{
    weft__sputs(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        static const char esc[] = "\a\b\f\n\r\t\v", name[] = "abfnrtv";
        const char *e = c != 0 ? strchr(esc, c) : NULL;
        if (c == '"' || c == '\\') {
            char t[2] = {'\\', (char)c};
            weft__sputn(b, t, 2);
        } else if (e != NULL) {
            char t[2] = {'\\', name[e - esc]};
            weft__sputn(b, t, 2);
        } else if (c < 0x20 || c == 0x7f) {
            weft__sprint(b, "\\x%02x", c);
        } else {
            weft__sputn(b, (const char *)&c, 1);
        }
    }
    weft__sputs(b, "\"");
}

static int strpcmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* labelstr - Go's labelMap.String: {"k":"v", ...}, sorted as strings. */
static void labelstr(struct sbuf *b, const struct weft__labels *l)
{
    char *kv[LABEL_MAX];
    int n = 0;
    for (int i = 0; i < l->n; i++) {
        struct sbuf t = {0};
        gostr(&t, l->kv[i].k);
        weft__sputs(&t, ":");
        gostr(&t, l->kv[i].v);
        if (t.oom) {
            free(t.p);
            b->oom = true;
            continue;
        }
        kv[n++] = t.p;
    }
    qsort(kv, (size_t)n, sizeof kv[0], strpcmp);
    weft__sputs(b, "{");
    for (int i = 0; i < n; i++) {
        if (i > 0)
            weft__sputs(b, ", ");
        weft__sputs(b, kv[i]);
        free(kv[i]);
    }
    weft__sputs(b, "}");
}

/* A "#" line's cells, for the tabwriter: "#", pc, func+off (absent for
 * an unknown function), then the last cell, file:line. */
struct tline {
    int ncell; /* 2: "#", pc; 4: "#", pc, func+off, file:line */
    char cell[4][320];
};

/* frames - the "#" lines of one stack, TAB-aligned as Go's tabwriter
 * (minwidth 1, tabwidth 8, padding 1, padchar TAB) aligns them: a column
 * is as wide as its widest cell + 1, rounded up to a multiple of 8, over
 * each run of consecutive lines that have that column; a cell is padded
 * with ceil((width - len) / 8) TABs. Caller holds the dump lock. */
static void frames(struct sbuf *b, const uintptr_t *pc, int n, bool exact,
                   bool all)
{
    size_t cap = 16, nl = 0;
    struct tline *ln = malloc(cap * sizeof *ln);
    if (ln == NULL) {
        b->oom = true;
        return;
    }
    for (int i = 0; i < n || (n == 0 && nl == 0); i++) {
        bool ex = exact && i == 0;
        uintptr_t addr = n == 0 ? 0 : ex ? pc[i] : pc[i] - 1;
        const char *pseudo = n == 0 ? NULL : weft__pprof_pseudo(pc[i]);
        const struct sym *s = n == 0 || pseudo != NULL
                                  ? NULL
                                  : weft__symbolize(pc[i], ex);
        int nf = s != NULL && strcmp(s->f[s->n - 1].func, "??") != 0 ? s->n
                                                                      : 0;
        for (int k = 0; k < (nf ? nf : 1); k++) {
            /* The weft-internal frames inlined at the leaf pc: hidden,
             * as Go's printStackRecord hides leading runtime.* frames. */
            if (!all && nf > 0 && s->f[k].hidden)
                continue;
            all = true;
            if (nl == cap) {
                struct tline *t = realloc(ln, 2 * cap * sizeof *ln);
                if (t == NULL) {
                    free(ln);
                    b->oom = true;
                    return;
                }
                ln = t;
                cap *= 2;
            }
            struct tline *t = &ln[nl++];
            strcpy(t->cell[0], "#");
            snprintf(t->cell[1], sizeof t->cell[1], "%#" PRIxPTR, addr);
            if (addr == 0)
                strcpy(t->cell[1], "0x0");
            t->ncell = 2;
            if (pseudo != NULL) {
                snprintf(t->cell[2], sizeof t->cell[2], "%s+0x0", pseudo);
                t->ncell = 3;
            }
            if (nf == 0)
                continue;
            const struct symf *f = &s->f[k];
            uintptr_t off = s->off >= (ex ? 0u : 1u) ? s->off - !ex : 0;
            snprintf(t->cell[2], sizeof t->cell[2], "%s+%#" PRIxPTR, f->func,
                     off);
            if (off == 0)
                snprintf(t->cell[2], sizeof t->cell[2], "%s+0x0", f->func);
            snprintf(t->cell[3], sizeof t->cell[3], "%s:%d",
                     f->file ? f->file : "??", f->file ? f->line : 0);
            t->ncell = 4;
        }
        if (n == 0)
            break;
    }
    if (nl == 0) { /* every frame hidden: show them all, as Go does */
        free(ln);
        frames(b, pc, n, exact, true);
        return;
    }
    for (size_t i = 0; i < nl; i++) {
        for (int c = 0; c < ln[i].ncell - 1; c++) {
            size_t lo = i, hi = i, w = 1;
            while (lo > 0 && ln[lo - 1].ncell - 1 > c)
                lo--;
            while (hi + 1 < nl && ln[hi + 1].ncell - 1 > c)
                hi++;
            for (size_t j = lo; j <= hi; j++)
                if (strlen(ln[j].cell[c]) + 1 > w)
                    w = strlen(ln[j].cell[c]) + 1;
            w = (w + 7) / 8 * 8;
            size_t len = strlen(ln[i].cell[c]);
            weft__sputs(b, ln[i].cell[c]);
            for (size_t tabs = (w - len + 7) / 8; tabs > 0; tabs--)
                weft__sputs(b, "\t");
        }
        weft__sputs(b, ln[i].cell[ln[i].ncell - 1]);
        weft__sputs(b, "\n");
    }
    weft__sputs(b, "\n");
    free(ln);
}

/* stackkey - "@ 0x.. 0x..": return PCs, as Go's lists hold (an exact
 * pc, a coroutine that never ran, is written +1, as Go writes a new
 * goroutine's entry). */
static void stackkey(struct sbuf *b, const struct rec *r)
{
    weft__sputs(b, "@");
    for (int i = 0; i < r->n; i++)
        weft__sprint(b, " %#" PRIxPTR, r->pc[i] + (r->exact && i == 0));
}

static int countcmp(const void *pa, const void *pb)
{
    const struct rec *a = pa, *b = pb;
    if (a->v[0] != b->v[0])
        return a->v[0] > b->v[0] ? -1 : 1;
    return strcmp(a->key ? a->key : "", b->key ? b->key : "");
}

static int delaycmp(const void *pa, const void *pb)
{
    const struct rec *a = pa, *b = pb;
    if ((int64_t)a->v[1] != (int64_t)b->v[1])
        return (int64_t)a->v[1] > (int64_t)b->v[1] ? -1 : 1;
    return 0;
}

/* counttext - Go's printCountProfile at debug=1 into b. */
static void counttext(struct sbuf *b, const char *name, struct rec *r,
                      size_t n, int64_t total)
{
    for (size_t i = 0; i < n; i++) {
        struct sbuf k = {0};
        stackkey(&k, &r[i]);
        if (r[i].l != NULL) {
            weft__sputs(&k, "\n# labels: ");
            labelstr(&k, r[i].l);
        }
        if (k.oom)
            b->oom = true;
        r[i].key = k.p;
    }
    qsort(r, n, sizeof *r, countcmp);
    weft__sprint(b, "%s profile: total %" PRId64 "\n", name, total);
    if (!weft__dump_lock())
        b->oom = true; /* cannot symbolize: fail rather than lie */
    else {
        for (size_t i = 0; i < n; i++) {
            weft__sprint(b, "%" PRId64 " %s\n", (int64_t)r[i].v[0],
                   r[i].key ? r[i].key : "@");
            frames(b, r[i].pc, r[i].n, r[i].exact, false);
        }
        weft__dump_unlock();
    }
    for (size_t i = 0; i < n; i++)
        free(r[i].key);
}

/* contentiontext - Go's writeProfileInternal text for block/mutex. */
static void contentiontext(struct sbuf *b, bool mutex, int32_t period,
                           struct rec *r, size_t n)
{
    qsort(r, n, sizeof *r, delaycmp);
    weft__sputs(b, mutex ? "--- mutex:\n" : "--- contention:\n");
    weft__sputs(b, "cycles/second=1000000000\n");
    if (mutex)
        weft__sprint(b, "sampling period=%" PRId32 "\n", period);
    if (!weft__dump_lock()) {
        b->oom = true;
        return;
    }
    for (size_t i = 0; i < n; i++) {
        weft__sprint(b, "%" PRId64 " %" PRId64 " ", (int64_t)r[i].v[1],
               (int64_t)r[i].v[0]);
        stackkey(b, &r[i]);
        weft__sputs(b, "\n");
        frames(b, r[i].pc, r[i].n, r[i].exact, false);
    }
    weft__dump_unlock();
}

/* --------------------------------------------------------------- output */

/* emit - write records r[0..n) as kind: proto (debug 0) or text. */
static int emit(enum pprof_kind kind, const char *name, int fd, int debug,
                struct rec *r, size_t n, int64_t total, int32_t period)
{
    if (debug == 0) {
        struct pprof *pb = weft__pprof_new(kind, 1, weft__walltime(), 0);
        if (pb == NULL)
            return WEFT_ENOMEM;
        /* Go scales the mutex profile by its sampling period (Go 1.19
         * scaleMutexProfile); the block profile is unsampled already. */
        double scale = kind == PPROF_MUTEX ? period : 1;
        for (size_t i = 0; i < n; i++) {
            int64_t v[2] = {(int64_t)r[i].v[0] * (int64_t)scale,
                            (int64_t)(r[i].v[1] * scale)};
            int e = weft__pprof_add(pb, r[i].pc, r[i].n, r[i].exact, v,
                                    r[i].l);
            if (e < 0) {
                weft__pprof_free(pb);
                return e;
            }
        }
        return weft__pprof_write(pb, fd);
    }
    struct sbuf b = {0};
    if (kind == PPROF_GOROUTINE || kind == PPROF_THREADCREATE)
        counttext(&b, name, r, n, total);
    else
        contentiontext(&b, kind == PPROF_MUTEX, period, r, n);
    int e = b.oom ? WEFT_ENOMEM : weft__writeall(fd, b.p, b.n);
    free(b.p);
    return e;
}

static int goroutines(int fd, int debug)
{
    struct gstack *gs;
    long ng = weft__gstacks(&gs);
    if (ng < 0)
        return (int)ng;
    /* A G whose stack could not be read gets a named frame: with none,
     * pprof counts it in the total and under no node. */
    static const uintptr_t unavailable[1] = {PPROF_PC_UNAVAILABLE};
    struct rec *r = calloc((size_t)ng + 1, sizeof *r);
    int e = WEFT_ENOMEM;
    if (r != NULL) {
        for (long i = 0; i < ng; i++) {
            bool none = gs[i].n == 0;
            r[i] = (struct rec){.pc = none ? unavailable : gs[i].pc,
                                .n = none ? 1 : (int)gs[i].n,
                                .exact = none || gs[i].exact,
                                .l = gs[i].labels,
                                .v = {1, 0}};
        }
        trim(r, (size_t)ng);
        size_t n = merge(r, (size_t)ng);
        e = emit(PPROF_GOROUTINE, "goroutine", fd, debug, r, n, ng, 1);
        free(r);
    }
    for (long i = 0; i < ng; i++)
        weft__labels_unref(gs[i].labels);
    free(gs);
    return e;
}

static int threadcreate(int fd, int debug)
{
    /* Records are only prepended, and freed only by a new runtime (no M
     * running, so no caller here): a snapshot of the head is stable. */
    weft__lock(&tclock);
    struct tcrec *head = tchead;
    int64_t total = LOAD(&tccount);
    weft__unlock(&tclock);
    struct rec *r = calloc((size_t)total + 1, sizeof *r);
    if (r == NULL)
        return WEFT_ENOMEM;
    size_t n = 0;
    for (struct tcrec *t = head; t != NULL && (int64_t)n < total; t = t->next)
        r[n++] = (struct rec){.pc = t->pc, .n = t->n, .v = {1, 0}};
    trim(r, n);
    n = merge(r, n);
    int e = emit(PPROF_THREADCREATE, "threadcreate", fd, debug, r, n, total,
                 1);
    free(r);
    return e;
}

static int contentions(bool mutex, int fd, int debug)
{
    struct btab *bt = mutex ? &mutextab : &blocktab;
    /* Copy the buckets out (counts change under the lock); their pcs
     * never change and they are never freed, so point at them. */
    size_t cap = (size_t)LOAD(&bt->nrec) + 16, n = 0;
    struct rec *r = calloc(cap, sizeof *r);
    if (r == NULL)
        return WEFT_ENOMEM;
    weft__lock(&bt->lock);
    for (int i = 0; i < NBUCKET; i++)
        for (struct bucket *b = bt->tab[i]; b != NULL && n < cap; b = b->next)
            r[n++] = (struct rec){.pc = b->pc,
                                  .n = b->n,
                                  .v = {b->count, (double)b->delay}};
    weft__unlock(&bt->lock);
    for (size_t i = 0; i < n; i++)
        r[i].v[0] = (double)(int64_t)r[i].v[0]; /* Go's int64(b.count) */
    trim(r, n);
    n = merge(r, n);
    int32_t period = LOAD(&mutexrate);
    if (period <= 0)
        period = LOAD(&mutexperiod);
    if (period <= 0)
        period = 1; /* nothing was ever sampled */
    int e = emit(mutex ? PPROF_MUTEX : PPROF_BLOCK, mutex ? "mutex" : "block",
                 fd, debug, r, n, 0, period);
    free(r);
    return e;
}

enum { P_GOROUTINE, P_THREADCREATE, P_BLOCK, P_MUTEX };

static int lookup(const char *name)
{
    static const char *const names[] = {"goroutine", "threadcreate", "block",
                                        "mutex"};
    for (int i = 0; name != NULL && i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

WEFT_EXTERN int weft_profile_write(const char *name, int fd, int debug)
{
    int p = lookup(name);
    if (p < 0 || debug < 0 || debug > 2)
        return WEFT_EINVAL;
    if (fd < 0 || fcntl(fd, F_GETFD) < 0)
        return WEFT_EBADF;
    if (p == P_GOROUTINE && !weft__runtime_on())
        return WEFT_ENORUNTIME;
#if !WEFT_HAVE_PPROF
    if (debug == 0)
        return -ENOSYS;
#endif
    switch (p) {
    case P_GOROUTINE:
        if (debug == 2)
            return weft_dump(fd, WEFT_DUMP_ALL);
        return goroutines(fd, debug);
    case P_THREADCREATE:
        return threadcreate(fd, debug ? 1 : 0);
    default:
        return contentions(p == P_MUTEX, fd, debug ? 1 : 0);
    }
}

WEFT_EXTERN int64_t weft_profile_count(const char *name)
{
    int p = lookup(name);
    if (p < 0)
        return WEFT_EINVAL;
    switch (p) {
    case P_GOROUTINE: {
        if (!weft__runtime_on())
            return WEFT_ENORUNTIME;
        size_t ng = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
        struct g **chunks =
            __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
        int64_t live = 0;
        for (size_t i = 0; chunks != NULL && i < ng; i++) {
            uint32_t st = LOAD(&weft__allg(chunks, i)->status);
            live += st != G_DEAD && st != G_IDLE;
        }
        return live;
    }
    case P_THREADCREATE:
        return LOAD(&tccount);
    case P_BLOCK:
        return LOAD(&blocktab.nrec);
    default:
        return LOAD(&mutextab.nrec);
    }
}
