/*
 * dump.c - Go's goroutine traceback for every G: weft_dump, SIGQUIT,
 * fatal signals (a guard-page hit named as a stack overflow), weft__throw
 * and the deadlock report, at the levels of WEFTTRACEBACK.
 *
 * A dump freezes the world first, as Go does: every M that has a thread
 * gets SIGURG, and its handler records what it was running (the
 * interrupted sp, the stack unwound from there) and waits on a futex
 * until the dump is over. A G is then printed from whichever frozen M's
 * sp lies in its stack, or else from its saved context, which no frozen M
 * can change. An M that does not answer within FREEZE_WAIT leaves its Gs
 * "running on other thread; stack unavailable". An M whose thread starts
 * during a freeze freezes itself before it runs anything (weft__freeze_
 * self: its tid store and the dumper's generation store are a Dekker
 * pair, so one of them sees the other). sysmon and weft_main's thread
 * run no Gs and are left alone.
 *
 * Invariants:
 *  1. One dump at a time (dumplock, owned by a thread id). A dump never
 *     takes a runtime lock, so a stuck M cannot hang it, and allocates
 *     nothing while Ms are frozen (a frozen M may hold the allocator's
 *     lock): it copies every G into an mmap'd snapshot, thaws, and only
 *     then symbolizes (libdw allocates) and prints. A crash inside malloc
 *     itself may still hang the report.
 *  2. Output goes through one static buffer with write(2): signal handlers
 *     may dump, stdio may be locked by the thread that crashed.
 *  3. A frozen M's handler touches only its own struct m and the freeze
 *     words; it returns only after thaw (or when the process exits).
 *  4. A G read racily (status, wait reason) may be stale by the time it
 *     prints; its stack is not (see traceback.c invariant 3).
 *
 * Fatal signals not caused by weft (a fault on a thread that is not an M,
 * or any fault while a previous handler was installed, like a
 * sanitizer's) are passed to the previous handler; a guard-page hit is
 * always reported by weft, since only weft knows it is a stack overflow.
 * SIGQUIT is taken unless the program has its own handler. While the
 * runtime runs, SIGPIPE is ignored unless the program set its own
 * disposition, so fd calls report -EPIPE instead.
 */
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "pprof.h"
#include "runtime.h"

#define SIGSTACK_SIZE (256 * 1024) /* libunwind + libdw; untouched: free */
#define FREEZE_SIG SIGURG
#define FREEZE_WAIT (100 * 1000 * 1000LL)
#define LOCK_WAIT (5 * 1000 * 1000 * 1000LL)

/* Dumps read G and M fields that their owners write without a lock, on
 * purpose (a dump must not wait for a stuck M); tell TSan. */
#define RACY __attribute__((no_sanitize("thread")))

static pid_t gettid_(void) { return (pid_t)syscall(SYS_gettid); }

static void sleepns(long ns)
{
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* ------------------------------------------------ signal-safe printing */

struct out {
    int fd;
    int err;      /* the errno of the first failed write, 0 */
    size_t n;
    char *buf;
    size_t cap;
    size_t total; /* fd < 0: bytes put, kept or not */
};

static char bigbuf[64 * 1024]; /* the dump lock's holder only */

static void flush(struct out *o)
{
    if (o->fd < 0) /* weft__gstack_text's memory buffer: nowhere to go */
        return;
    size_t off = 0;
    while (off < o->n && o->err == 0) {
        ssize_t w = write(o->fd, o->buf + off, o->n - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            o->err = w < 0 ? errno : EIO;
            break;
        }
        off += (size_t)w;
    }
    o->n = 0;
}

static void putn(struct out *o, const char *s, size_t n)
{
    if (o->fd < 0) { /* into memory (weft__gstack_text): keep what fits */
        size_t k = o->cap - o->n < n ? o->cap - o->n : n;
        if (k > 0)
            memcpy(o->buf + o->n, s, k);
        o->n += k;
        o->total += n;
        return;
    }
    while (n > 0) {
        if (o->n == o->cap)
            flush(o);
        size_t k = o->cap - o->n < n ? o->cap - o->n : n;
        memcpy(o->buf + o->n, s, k);
        o->n += k;
        s += k;
        n -= k;
    }
}

static void puts_(struct out *o, const char *s) { putn(o, s, strlen(s)); }

static void putu(struct out *o, uint64_t v, unsigned base)
{
    char s[24];
    int i = sizeof s;
    do {
        s[--i] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (base == 16)
        puts_(o, "0x");
    putn(o, s + i, sizeof s - (size_t)i);
}

static void puti(struct out *o, int64_t v)
{
    if (v < 0) {
        puts_(o, "-");
        putu(o, (uint64_t)-v, 10);
    } else {
        putu(o, (uint64_t)v, 10);
    }
}

/* ------------------------------------------------------------ dump lock */

static _Atomic pid_t dumper;

/* dumplock - take the dump lock: true, or false if this very thread is
 * already dumping (a fault inside the dump) or another one did not
 * finish within LOCK_WAIT (the caller then prints what needs no lock). */
static bool dumplock(void)
{
    pid_t me = gettid_();
    int64_t end = weft__nanotime() + LOCK_WAIT;
    for (;;) {
        pid_t z = 0;
        if (atomic_compare_exchange_strong(&dumper, &z, me))
            return true;
        if (z == me || weft__nanotime() > end)
            return false;
        sleepns(1000 * 1000);
    }
}

static void dumpunlock(void) { atomic_store(&dumper, 0); }

bool weft__dump_lock(void) { return dumplock(); }
void weft__dump_unlock(void) { dumpunlock(); }

/* ---------------------------------------------------------------- freeze */

static _Atomic uint32_t freezegen;  /* nonzero while a dump freezes */
static _Atomic uint32_t thawgen;    /* the last generation thawed */
static uint32_t lastgen;            /* dump lock */


/* thawwait - a frozen M's wait until generation gen is thawed. */
static void thawwait(uint32_t gen)
{
    for (;;) {
        uint32_t t = atomic_load(&thawgen);
        if (t == gen || atomic_load(&freezegen) != gen)
            return;
        weft__futexwait_os(&thawgen, t, 100 * 1000 * 1000);
    }
}

/* weft__freeze_self - called by an M's thread once it has published its
 * tid and before it runs anything: joins a freeze in progress. */
void weft__freeze_self(struct m *mp)
{
    uint32_t gen = atomic_load(&freezegen);
    if (gen == 0)
        return;
    mp->frozeng = mp->frozenafter = NULL;
    mp->frozensp = 0;
    mp->frozen->n = 0;
    atomic_store_explicit(&mp->freezeack, gen, memory_order_release);
    thawwait(gen);
}

static struct sigaction oldurg;

static RACY void freezehandler(int sig, siginfo_t *info, void *uc)
{
    int saved = errno;
    struct m *mp = weft__getm();
    uint32_t gen = atomic_load(&freezegen);
    if (mp != NULL && gen != 0 &&
        atomic_load_explicit(&mp->freezeack, memory_order_relaxed) != gen) {
        mp->frozensp = weft__ucsp(uc);
        mp->frozeng = __atomic_load_n(&mp->curg, __ATOMIC_RELAXED);
        mp->frozenafter = mp->afterg;
        weft__unwind_uc(uc, mp->frozen);
        atomic_store_explicit(&mp->freezeack, gen, memory_order_release);
        thawwait(gen);
    } else if (oldurg.sa_flags & SA_SIGINFO) {
        if (oldurg.sa_sigaction != NULL)
            oldurg.sa_sigaction(sig, info, uc);
    } else if (oldurg.sa_handler != SIG_DFL && oldurg.sa_handler != SIG_IGN) {
        oldurg.sa_handler(sig);
    }
    errno = saved;
}

/* freeze - stop every other M (invariant 3 of traceback.c); returns the
 * generation. *all is set when every signalled M answered in time. */
static RACY uint32_t freeze(struct m *self, bool *all)
{
    uint32_t gen = ++lastgen;
    if (gen == 0)
        gen = ++lastgen;
    atomic_store(&freezegen, gen); /* seq-cst: Dekker with M tid */
    struct m *head = __atomic_load_n(&weft__sched.allm, __ATOMIC_ACQUIRE);
    pid_t pid = getpid();
    for (struct m *mp = head; mp != NULL; mp = mp->alllink) {
        int32_t tid = atomic_load(&mp->tid);
        if (mp == self || tid == 0)
            continue;
        if (syscall(SYS_tgkill, pid, tid, FREEZE_SIG) < 0)
            STORE(&mp->tid, 0); /* gone */
    }
    int64_t end = weft__nanotime() + FREEZE_WAIT;
    *all = true;
    for (struct m *mp = head; mp != NULL; mp = mp->alllink) {
        if (mp == self)
            continue;
        while (atomic_load(&mp->tid) != 0 &&
               atomic_load_explicit(&mp->freezeack, memory_order_acquire) !=
                   gen) {
            if (weft__nanotime() > end) {
                *all = false;
                break;
            }
            sleepns(50 * 1000);
        }
    }
    return gen;
}

static void thaw(uint32_t gen)
{
    atomic_store(&thawgen, gen);
    weft__futexwake_os(&thawgen, INT32_MAX);
    atomic_store(&freezegen, 0);
}

/* ------------------------------------------------------------- printing */

/* onstack - whether sp is on gp's stack, its guard included (an
 * overflowing G's sp may already be in it). */
static RACY bool onstack(struct g *gp, uintptr_t sp)
{
    return gp != NULL && gp->stk.lo != 0 &&
           sp >= gp->stk.lo - WEFT__GUARD && sp < gp->stk.hi;
}

/*
 * A G as the freeze saw it. Everything a dump prints is copied here while
 * the Ms are frozen, and printed after the thaw: symbolizing allocates,
 * and a frozen M may hold the allocator's lock (invariant 1). The array
 * and its frame pool are mmap'd, not malloc'd, for the same reason.
 */
struct snap {
    struct g *g;
    int64_t id, parentid, waitsince;
    uintptr_t spawnpc;
    uint32_t status, runs;
    uint8_t wr;
    int32_t fd;       /* wr == WR_IO_WAIT: the fd */
    bool unavailable; /* running on an M that did not answer */
    bool cut;         /* more frames than TB_MAX */
    bool fresh;       /* unwound now: cache it after the thaw */
    uint32_t nf;
    size_t off;       /* first frame in the pool */
    char name[G_NAME_MAX];
};

struct snapframe {
    uintptr_t pc, sp;
    bool exact;
};

/* header - Go's "goroutine N [status, M minutes]:" line. */
static void header(struct out *o, const struct snap *sn, int64_t now)
{
    uint32_t st = sn->status;
    int wr = sn->wr;
    puts_(o, "goroutine ");
    puti(o, sn->id);
    puts_(o, " [");
    if (st == G_WAITING && wr != WR_ZERO)
        puts_(o, weft__waitreason_string(wr));
    else
        puts_(o, weft__gstatus_string(st));
    int64_t since = sn->waitsince;
    if ((st == G_WAITING || st == G_SYSCALL) && since > 0) {
        int64_t min = (now - since) / 60000000000LL;
        if (min >= 1) {
            puts_(o, ", ");
            puti(o, min);
            puts_(o, " minutes");
        }
    }
    /* The fd of an IO wait and a name ride as more bracket items, which
     * panicparse skips (Go shows no fd: which of a server's sockets a
     * goroutine waits on is what a stuck server's dump needs). In a
     * name, characters that would end the item or the header are
     * replaced. */
    if (st == G_WAITING && wr == WR_IO_WAIT) {
        puts_(o, ", fd ");
        puti(o, sn->fd);
    }
    if (sn->name[0] != '\0') {
        char nm[G_NAME_MAX];
        size_t i = 0;
        for (; i + 1 < sizeof nm && sn->name[i]; i++) {
            char c = sn->name[i];
            nm[i] = (c == ']' || c == ',' || c == '\n' || c < ' ') ? '_' : c;
        }
        nm[i] = '\0';
        puts_(o, ", name=");
        puts_(o, nm);
    }
    puts_(o, "]:\n");
}

/* srcline - TAB file:line of frame f ("??:0" when unknown). */
static void srcline(struct out *o, const struct symf *f)
{
    puts_(o, "\t");
    puts_(o, f->file ? f->file : "??");
    puts_(o, ":");
    puti(o, f->file ? f->line : 0);
}

/* frames - the stack t as Go prints it: runtime frames hidden below
 * TB_SYSTEM (unless that hides them all), fp/sp/pc at TB_SYSTEM. */
static RACY void frames(struct out *o, const struct tbuf *t, int level)
{
    bool sys = level >= TB_SYSTEM;
    bool any = false;
    for (int pass = 0; pass < 2 && !any; pass++) {
        bool all = sys || pass == 1;
        int printed = 0;
        for (int i = 0; i < t->n; i++) {
            const struct sym *s = weft__symbolize(t->pc[i], t->exact[i]);
            if (s == NULL)
                continue;
            for (int k = 0; k < s->n; k++) {
                const struct symf *f = &s->f[k];
                if (f->hidden && !all)
                    continue;
                if (printed == 100) {
                    puts_(o, "...additional frames elided...\n");
                    return;
                }
                any = true;
                printed++;
                puts_(o, f->func);
                puts_(o, "(...)\n");
                srcline(o, f);
                if (k == s->n - 1) { /* the real function, not inlined */
                    if (s->off > 0) {
                        puts_(o, " +");
                        putu(o, s->off, 16);
                    }
                    if (sys) {
                        uintptr_t fp = i + 1 < t->n ? t->sp[i + 1] : 0;
                        puts_(o, " fp=");
                        putu(o, fp, 16);
                        puts_(o, " sp=");
                        putu(o, t->sp[i], 16);
                        puts_(o, " pc=");
                        putu(o, t->pc[i], 16);
                    }
                }
                puts_(o, "\n");
            }
        }
        if (t->cut && any)
            puts_(o, "...additional frames elided...\n");
    }
}

/* creator - "created by F in goroutine P" and the spawn site. */
static void creator(struct out *o, const struct snap *sn)
{
    if (sn->parentid == 0 || sn->spawnpc == 0)
        return;
    const struct sym *s = weft__symbolize(sn->spawnpc, false);
    puts_(o, "created by ");
    puts_(o, s ? s->f[0].func : "??");
    puts_(o, " in goroutine ");
    puti(o, sn->parentid);
    puts_(o, "\n");
    if (s != NULL) {
        srcline(o, &s->f[0]);
        if (s->off > 0 && s->n == 1) {
            puts_(o, " +");
            putu(o, s->off, 16);
        }
        puts_(o, "\n");
    } else {
        puts_(o, "\t??:0\n");
    }
}

enum {
    DUMP_G0 = 1,    /* print this thread's own stack as "goroutine 0
                     * [idle]" when it is not on a G's (SIGQUIT: Go
                     * prints the signalled M's g0) */
    DUMP_FATAL = 2, /* no current G: print them all (Go does so for a
                     * failure outside any goroutine) */
};

/* What the dump knows about each frozen M (invariant 3 of the header). */
struct frozenm {
    struct g *g; /* the G whose stack its sp is on, or NULL (g0) */
    const struct tbuf *t;
};

#define MAXM 1024

struct dump {
    struct out o;
    int level;
    bool allfrozen;
    int nm;
    struct frozenm ms[MAXM];
    struct tbuf scratch;
    int64_t now;
    struct snap *snaps;
    struct snapframe *pool;
    size_t nsnap, capsnap, nframe;
};

static struct dump dumpst; /* dump lock */

/* owner - of the two Gs an M may be between (its current G, and the one
 * it is switching away from), the one whose stack holds sp. */
static RACY struct g *owner(struct g *a, struct g *b, uintptr_t sp)
{
    if (onstack(a, sp))
        return a;
    if (onstack(b, sp))
        return b;
    return NULL;
}

/* frozenms - into d->ms, every M that answered freeze generation gen,
 * with the G whose stack it stood on (NULL: its own, g0). */
static RACY void frozenms(struct dump *d, struct m *self, uint32_t gen)
{
    struct m *head = __atomic_load_n(&weft__sched.allm, __ATOMIC_ACQUIRE);
    for (struct m *mp = head; mp != NULL && d->nm < MAXM; mp = mp->alllink) {
        if (mp == self ||
            atomic_load_explicit(&mp->freezeack, memory_order_acquire) != gen)
            continue;
        struct g *gp = mp->frozen->n > 0
                           ? owner(mp->frozeng, mp->frozenafter, mp->frozensp)
                           : NULL;
        d->ms[d->nm++] = (struct frozenm){gp, mp->frozen};
    }
}

/* take - snapshot gp (frozen) with stack t, or its parked stack: from its
 * cache if it has not run since the last dump read it (a parked G's
 * stack cannot change), else unwound now. */
static RACY void take(struct dump *d, struct g *gp, const struct tbuf *t)
{
    uint32_t st = LOAD(&gp->status);
    if (st == G_DEAD || st == G_IDLE || d->nsnap == d->capsnap)
        return;
    struct snap *sn = &d->snaps[d->nsnap++];
    *sn = (struct snap){
        .g = gp,
        .id = gp->id,
        .parentid = gp->parentid,
        .waitsince = gp->waitsince,
        .spawnpc = gp->spawnpc,
        .status = st,
        .runs = __atomic_load_n(&gp->runs, __ATOMIC_RELAXED),
        .wr = __atomic_load_n(&gp->waitreason, __ATOMIC_RELAXED),
        .fd = __atomic_load_n(&gp->waitfd, __ATOMIC_RELAXED),
        .off = d->nframe,
    };
    if (gp->name != NULL)
        for (size_t i = 0; i + 1 < sizeof sn->name && gp->name[i]; i++)
            sn->name[i] = gp->name[i];
    struct snapframe *f = d->pool + d->nframe;
    if (t == NULL) {
        for (int i = 0; i < d->nm; i++)
            if (d->ms[i].g == gp)
                t = d->ms[i].t;
    }
    if (t == NULL && (st == G_RUNNING || st == G_SYSCALL) && !d->allfrozen) {
        sn->unavailable = true;
        return;
    }
    struct gtrace *c = gp->tbcache;
    if (t == NULL && c != NULL && c->runs == sn->runs) {
        for (uint32_t i = 0; i < c->n; i++)
            f[i] = (struct snapframe){c->f[i], c->f[c->n + i], i == 0};
        sn->nf = c->n;
    } else {
        if (t == NULL) {
            weft__unwind_ctx(gp, &d->scratch);
            t = &d->scratch;
            sn->fresh = !t->cut && t->n > 0;
        }
        for (int i = 0; i < t->n; i++)
            f[i] = (struct snapframe){t->pc[i], t->sp[i], t->exact[i]};
        sn->nf = (uint32_t)t->n;
        sn->cut = t->cut;
    }
    d->nframe += sn->nf;
}

/* keep - after the thaw: a freshly unwound parked stack becomes the G's
 * cache (tbcache), valid while the G's run count stays sn->runs. */
static RACY void keep(struct dump *d, const struct snap *sn)
{
    if (!sn->fresh)
        return;
    struct g *gp = sn->g;
    struct gtrace *c = gp->tbcache;
    if (c == NULL || c->n < sn->nf) {
        free(c);
        c = malloc(sizeof *c + 2 * (size_t)sn->nf * sizeof c->f[0]);
        gp->tbcache = c;
        if (c == NULL)
            return;
    }
    c->runs = sn->runs;
    c->n = sn->nf;
    for (uint32_t i = 0; i < sn->nf; i++) {
        c->f[i] = d->pool[sn->off + i].pc;
        c->f[c->n + i] = d->pool[sn->off + i].sp;
    }
}

static void printsnap(struct dump *d, const struct snap *sn)
{
    header(&d->o, sn, d->now);
    if (sn->unavailable) {
        puts_(&d->o,
              "\tgoroutine running on other thread; stack unavailable\n");
    } else {
        struct tbuf *t = &d->scratch;
        t->n = (int)sn->nf;
        t->cut = sn->cut;
        for (uint32_t i = 0; i < sn->nf; i++) {
            t->pc[i] = d->pool[sn->off + i].pc;
            t->sp[i] = d->pool[sn->off + i].sp;
            t->exact[i] = d->pool[sn->off + i].exact;
        }
        frames(&d->o, t, d->level);
    }
    creator(&d->o, sn);
    puts_(&d->o, "\n");
}

/*
 * dumpall - the dump proper, under the dump lock. uc: the context this
 * thread was interrupted in (a signal), or NULL to unwind from here.
 * Three steps: freeze and copy every G's stack (no allocation), thaw,
 * then print and symbolize from the copy.
 */
static RACY int dumpall(int fd, int level, void *uc, int flags,
                        struct m *self)
{
    struct dump *d = &dumpst;
    d->o = (struct out){.fd = fd, .buf = bigbuf, .cap = sizeof bigbuf};
    d->level = level;
    d->nm = 0;
    d->nsnap = d->nframe = 0;
    d->now = weft__nanotime();
    if (level == TB_NONE)
        return 0;

    /* This thread's own stack, and the G it belongs to. */
    static struct tbuf selft;
    uintptr_t sp;
    if (uc != NULL) {
        weft__unwind_uc(uc, &selft);
        sp = weft__ucsp(uc);
    } else {
        weft__unwind_here(&selft);
        sp = (uintptr_t)__builtin_frame_address(0);
    }
    struct g *cur = NULL;
    if (self != NULL)
        cur = owner(self->curg, self->afterg, sp);
    if (cur == NULL && (flags & DUMP_FATAL) && level == TB_SINGLE)
        level = d->level = TB_ALL;

    /* Room for every G (Gs created during the freeze: none, no M runs;
     * a few spare for those created since allglen was read). */
    size_t n = level >= TB_ALL
                   ? __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE) + 64
                   : 1;
    size_t snapbytes = n * sizeof *d->snaps;
    size_t poolbytes = n * TB_MAX * sizeof *d->pool;
    void *mem = mmap(NULL, snapbytes + poolbytes, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        static const char msg[] = "weft: no memory for a dump\n";
        return write(fd, msg, sizeof msg - 1) < 0 ? -errno : WEFT_ENOMEM;
    }
    d->snaps = mem;
    d->pool = (struct snapframe *)((char *)mem + snapbytes);
    d->capsnap = n;

    /* One G needs nobody stopped; all of them need all Ms frozen. */
    uint32_t gen = 0;
    d->allfrozen = true;
    if (level >= TB_ALL)
        gen = freeze(self, &d->allfrozen);
    frozenms(d, self, gen);
    if (cur != NULL)
        take(d, cur, &selft);
    if (level >= TB_ALL) {
        size_t ng = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
        struct g **chunks =
            __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
        for (size_t i = 0; chunks != NULL && i < ng; i++) {
            struct g *gp = weft__allg(chunks, i);
            if (gp != cur)
                take(d, gp, NULL);
        }
    }
    if (gen != 0)
        thaw(gen);

    size_t i = 0;
    if (cur != NULL && d->nsnap > 0)
        printsnap(d, &d->snaps[i++]);
    if (cur == NULL && (flags & DUMP_G0) && level >= TB_SYSTEM) {
        puts_(&d->o, "goroutine 0 [idle]:\n");
        frames(&d->o, &selft, level);
        puts_(&d->o, "\n");
    }
    for (; i < d->nsnap; i++)
        printsnap(d, &d->snaps[i]);
    for (i = 0; i < d->nsnap; i++)
        keep(d, &d->snaps[i]);
    flush(&d->o);
    munmap(mem, snapbytes + poolbytes);
    return -d->o.err;
}

/*
 * weft__gstacks - the goroutine profile's snapshot: dumpall's freeze and
 * copy, plus a reference to each G's labels, taken while frozen with a
 * CAS (tryref). An M that did not answer may run a G that replaces its
 * labels meanwhile: inside weft__labels_read_begin/end (entered before
 * the freeze: it locks) no set is freed, so the worst is a set that just
 * died and is skipped. See runtime.h.
 */
RACY long weft__gstacks(struct gstack **out)
{
    *out = NULL;
    if (!dumplock())
        return WEFT_EBUSY;
    weft__selffd_begin(); /* the unwinders may open fds: leaktest.c */
    struct dump *d = &dumpst;
    struct m *self = weft__getm();
    d->nm = 0;
    d->nsnap = d->nframe = 0;
    static struct tbuf selft; /* dump lock */
    weft__unwind_here(&selft);
    uintptr_t sp = (uintptr_t)__builtin_frame_address(0);
    struct g *cur = self != NULL ? owner(self->curg, self->afterg, sp) : NULL;
    size_t n = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE) + 64;
    size_t snapbytes = n * sizeof *d->snaps;
    size_t poolbytes = n * TB_MAX * sizeof *d->pool;
    size_t lblbytes = n * sizeof(struct weft__labels *);
    void *mem = mmap(NULL, snapbytes + poolbytes + lblbytes,
                     PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) {
        weft__selffd_end();
        dumpunlock();
        return WEFT_ENOMEM;
    }
    d->snaps = mem;
    d->pool = (struct snapframe *)((char *)mem + snapbytes);
    struct weft__labels **lbl =
        (struct weft__labels **)((char *)mem + snapbytes + poolbytes);
    d->capsnap = n;

    weft__labels_read_begin();
    uint32_t gen = freeze(self, &d->allfrozen);
    frozenms(d, self, gen);
    size_t ng = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    for (size_t i = 0; chunks != NULL && i < ng; i++) {
        /* By hand, as schedtrace.c: an out-of-line weft__allg (-O0)
         * is instrumented, and TSan cannot see our acquire of allglen
         * (found by the leak monitor, which calls this from a thread). */
        struct g *gp = &chunks[i / ALLG_CHUNK][i % ALLG_CHUNK];
        size_t before = d->nsnap;
        take(d, gp, gp == cur ? &selft : NULL);
        if (d->nsnap == before)
            continue;
        lbl[before] = weft__labels_of(gp);
    }
    thaw(gen);
    weft__labels_read_end();
    weft__selffd_end();

    for (size_t i = 0; i < d->nsnap; i++)
        keep(d, &d->snaps[i]);
    long r = (long)d->nsnap;
    struct gstack *gs = malloc(d->nsnap * sizeof *gs +
                               d->nframe * sizeof(uintptr_t) + 1);
    if (gs == NULL) {
        for (size_t i = 0; i < d->nsnap; i++)
            weft__labels_unref(lbl[i]);
        r = WEFT_ENOMEM;
    } else {
        uintptr_t *pcs = (uintptr_t *)(gs + d->nsnap);
        for (size_t i = 0; i < d->nframe; i++)
            pcs[i] = d->pool[i].pc;
        for (size_t i = 0; i < d->nsnap; i++) {
            const struct snap *sn = &d->snaps[i];
            gs[i] = (struct gstack){
                .id = sn->id,
                .parentid = sn->parentid,
                .spawnpc = sn->spawnpc,
                .waitsince = sn->waitsince,
                .status = sn->status,
                .waitreason = sn->wr,
                .waitfd = sn->fd,
                .self = sn->g == cur,
                .labels = lbl[i],
                .exact = sn->nf > 0 && d->pool[sn->off].exact,
                .n = sn->unavailable ? 0 : sn->nf,
                .pc = pcs + sn->off,
            };
        }
        *out = gs;
    }
    munmap(mem, snapbytes + poolbytes + lblbytes);
    dumpunlock();
    return r;
}

/* weft__gstack_text - gs as a dump at level prints it (header, frames,
 * "created by", no blank line after), into buf: at most cap bytes, not
 * NUL-terminated. Returns the whole text's length (more than cap: cut).
 * For leaktest.c's report. Caller holds the dump lock (symbolizes). */
size_t weft__gstack_text(const struct gstack *gs, int level, char *buf,
                         size_t cap)
{
    static struct tbuf t; /* dump lock */
    struct out o = {.fd = -1, .buf = buf, .cap = cap};
    struct snap sn = {.id = gs->id, .parentid = gs->parentid,
                      .waitsince = gs->waitsince, .spawnpc = gs->spawnpc,
                      .status = gs->status, .wr = gs->waitreason,
                      .fd = gs->waitfd};
    header(&o, &sn, weft__nanotime());
    uint32_t n = gs->n < TB_MAX ? gs->n : TB_MAX;
    t.n = (int)n;
    t.cut = gs->n > TB_MAX;
    for (uint32_t i = 0; i < n; i++) {
        t.pc[i] = gs->pc[i];
        t.sp[i] = 0;
        t.exact[i] = i == 0 && gs->exact;
    }
    if (n == 0)
        puts_(&o, "\tgoroutine running on other thread; stack unavailable\n");
    else
        frames(&o, &t, level);
    creator(&o, &sn);
    return o.total;
}

/* lockeddump - dumpall under the dump lock; without the lock (a fault
 * inside a dump), only a note. */
static int lockeddump(int fd, int level, void *uc, int flags, struct m *self)
{
    if (!dumplock()) {
        static const char msg[] =
            "weft: another dump is in progress or faulted; no traceback\n";
        if (write(fd, msg, sizeof msg - 1) < 0)
            return -errno;
        return 0;
    }
    /* Not in a signal handler (listing fds allocates): see leaktest.c. */
    if (uc == NULL)
        weft__selffd_begin();
    int r = dumpall(fd, level, uc, flags, self);
    if (uc == NULL)
        weft__selffd_end();
    dumpunlock();
    return r;
}

/*
 * The dumper thread: a signal handler (SIGQUIT, a fault) does not dump
 * itself but hands the dump to this thread and waits, so symbolizing
 * (libdw allocates) runs on a plain thread with a full-size stack, not
 * inside a handler on a sigaltstack. The handler's context stays valid
 * while it waits, and the dump unwinds the handler's thread from it.
 */
static struct {
    pthread_t thread;
    bool started;
    _Atomic int32_t tid;
    _Atomic uint32_t req, done; /* futex words: req != done: work */
    bool quit;
    int fd, level, flags, result;
    void *uc;
    struct m *self;
} dt;

static void *dumperthread(void *arg)
{
    atomic_store(&dt.tid, (int32_t)gettid_());
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    pthread_sigmask(SIG_SETMASK, &all, NULL); /* not a SIGQUIT target */
    for (;;) {
        uint32_t r = atomic_load(&dt.req);
        if (r == atomic_load(&dt.done)) {
            if (__atomic_load_n(&dt.quit, __ATOMIC_ACQUIRE))
                return NULL;
            weft__futexwait_os(&dt.req, r, 1000 * 1000 * 1000);
            continue;
        }
        dt.result = lockeddump(dt.fd, dt.level, dt.uc, dt.flags, dt.self);
        atomic_store(&dt.done, r);
        weft__futexwake_os(&dt.done, INT32_MAX);
    }
}

/* dump - write the dump. From a signal handler (uc set) it runs on the
 * dumper thread, one request at a time (the dump lock orders them), unless
 * that thread is the one that faulted or does not exist. */
static int dump(int fd, int level, void *uc, int flags)
{
    struct m *self = weft__getm();
    if (uc == NULL || !dt.started || atomic_load(&dt.tid) == gettid_())
        return lockeddump(fd, level, uc, flags, self);
    static _Atomic int32_t slot; /* one handler at a time posts */
    int64_t end = weft__nanotime() + LOCK_WAIT;
    int32_t z = 0;
    while (!atomic_compare_exchange_strong(&slot, &z, 1)) {
        if (weft__nanotime() > end)
            return lockeddump(fd, level, uc, flags, self);
        z = 0;
        sleepns(1000 * 1000);
    }
    dt.fd = fd;
    dt.level = level;
    dt.flags = flags;
    dt.uc = uc;
    dt.self = self;
    uint32_t r = atomic_load(&dt.req) + 1;
    atomic_store(&dt.req, r);
    weft__futexwake_os(&dt.req, 1);
    uint32_t d;
    while ((d = atomic_load(&dt.done)) != r)
        weft__futexwait_os(&dt.done, d, 100 * 1000 * 1000);
    int res = dt.result;
    atomic_store(&slot, 0);
    return res;
}

WEFT_EXTERN int weft_dump(int fd, int level)
{
    if (level < WEFT_DUMP_SINGLE || level > WEFT_DUMP_SYSTEM)
        return WEFT_EINVAL;
    if (!weft__runtime_on())
        return WEFT_ENORUNTIME;
    if (fd < 0)
        return WEFT_EBADF;
    return dump(fd, level, NULL, 0);
}

/* ---------------------------------------------------------- fatal paths */

/* fatalexit - after a fatal report: WEFTTRACEBACK=crash aborts (for a
 * core dump), anything else exits with status 2, as Go. */
static _Noreturn void fatalexit(void)
{
    if (weft__debug.traceback == TB_CRASH) {
        signal(SIGABRT, SIG_DFL);
        sigset_t s;
        sigemptyset(&s);
        sigaddset(&s, SIGABRT);
        sigprocmask(SIG_UNBLOCK, &s, NULL);
        abort();
    }
    _exit(2);
}

static void schedtrace_on_fatal(void)
{
    if (weft__debug.schedtrace > 0 || weft__debug.scheddetail)
        weft__schedtrace(true);
}

/* A runtime invariant broke: Go's throw prints every goroutine with its
 * runtime frames (unless WEFTTRACEBACK=none). */
_Noreturn void weft__throw(const char *msg)
{
    struct out o = {.fd = 2, .buf = (char[256]){0}, .cap = 256};
    puts_(&o, "fatal error: ");
    puts_(&o, msg);
    puts_(&o, "\n\n");
    flush(&o);
    schedtrace_on_fatal();
    if (weft__debug.traceback != TB_NONE)
        dump(2, weft__debug.traceback < TB_SYSTEM ? TB_SYSTEM
                                                  : weft__debug.traceback,
             NULL, DUMP_FATAL);
    fatalexit();
}

/* weft__fatal_deadlock - Go's report when no G can ever run again: every
 * G with user frames (Go's deadlock throw shows no runtime frames). */
_Noreturn void weft__fatal_deadlock(void)
{
    struct out o = {.fd = 2, .buf = (char[128]){0}, .cap = 128};
    puts_(&o, "fatal error: all goroutines are asleep - deadlock!\n\n");
    flush(&o);
    if (weft__debug.traceback != TB_NONE)
        dump(2, weft__debug.traceback < TB_ALL ? TB_ALL
                                               : weft__debug.traceback,
             NULL, DUMP_FATAL);
    fatalexit();
}

/* --------------------------------------------------------------- signals */

static const int fatalsigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT};
#define NFATAL (sizeof fatalsigs / sizeof fatalsigs[0])
static struct sigaction oldact[NFATAL];
static struct sigaction oldquit, oldpipe;
static bool installed, quitset, pipeset, urgset;

static const char *signame(int sig)
{
    switch (sig) {
    case SIGSEGV:
        return "SIGSEGV: segmentation violation";
    case SIGBUS:
        return "SIGBUS: bus error";
    case SIGFPE:
        return "SIGFPE: floating-point exception";
    case SIGILL:
        return "SIGILL: illegal instruction";
    case SIGABRT:
        return "SIGABRT: abort";
    case SIGQUIT:
        return "SIGQUIT: quit";
    }
    return "signal";
}

/* regs - Go's register dump after a signal report. */
static void regs(void *ucv)
{
    struct out o = {.fd = 2, .buf = (char[2048]){0}, .cap = 2048};
    ucontext_t *uc = ucv;
#if defined(__x86_64__)
    static const struct {
        const char *name;
        int reg;
    } r[] = {{"rax    ", REG_RAX}, {"rbx    ", REG_RBX}, {"rcx    ", REG_RCX},
             {"rdx    ", REG_RDX}, {"rdi    ", REG_RDI}, {"rsi    ", REG_RSI},
             {"rbp    ", REG_RBP}, {"rsp    ", REG_RSP}, {"r8     ", REG_R8},
             {"r9     ", REG_R9},  {"r10    ", REG_R10}, {"r11    ", REG_R11},
             {"r12    ", REG_R12}, {"r13    ", REG_R13}, {"r14    ", REG_R14},
             {"r15    ", REG_R15}, {"rip    ", REG_RIP}, {"rflags ", REG_EFL}};
    for (size_t i = 0; i < sizeof r / sizeof r[0]; i++) {
        puts_(&o, r[i].name);
        putu(&o, (uint64_t)uc->uc_mcontext.gregs[r[i].reg], 16);
        puts_(&o, "\n");
    }
    uint64_t csgsfs = (uint64_t)uc->uc_mcontext.gregs[REG_CSGSFS];
    puts_(&o, "cs     ");
    putu(&o, csgsfs & 0xffff, 16);
    puts_(&o, "\nfs     ");
    putu(&o, (csgsfs >> 32) & 0xffff, 16);
    puts_(&o, "\ngs     ");
    putu(&o, (csgsfs >> 16) & 0xffff, 16);
    puts_(&o, "\n");
#elif defined(__aarch64__)
    for (int i = 0; i < 31; i++) {
        char name[8] = "r";
        int k = 1;
        if (i >= 10)
            name[k++] = (char)('0' + i / 10);
        name[k++] = (char)('0' + i % 10);
        while (k < 7)
            name[k++] = ' ';
        name[k] = '\0';
        puts_(&o, name);
        putu(&o, uc->uc_mcontext.regs[i], 16);
        puts_(&o, "\n");
    }
    puts_(&o, "sp     ");
    putu(&o, uc->uc_mcontext.sp, 16);
    puts_(&o, "\npc     ");
    putu(&o, uc->uc_mcontext.pc, 16);
    puts_(&o, "\n");
#endif
    flush(&o);
}

/* preamble - "SIGQUIT: quit" / "PC=0x… m=N sigcode=N". */
static RACY void preamble(struct out *o, int sig, siginfo_t *info, void *uc)
{
    struct m *mp = weft__getm();
    puts_(o, signame(sig));
    puts_(o, "\nPC=");
    putu(o, weft__ucpc(uc), 16);
    puts_(o, " m=");
    puti(o, mp ? mp->id : -1);
    puts_(o, " sigcode=");
    puti(o, info->si_code);
    if (sig == SIGSEGV || sig == SIGBUS) {
        puts_(o, " addr=");
        putu(o, (uintptr_t)info->si_addr, 16);
    }
    puts_(o, "\n\n");
}

static RACY void quithandler(int sig, siginfo_t *info, void *uc)
{
    int saved = errno;
    struct out o = {.fd = 2, .buf = (char[256]){0}, .cap = 256};
    preamble(&o, sig, info, uc);
    flush(&o);
    /* As in Go, SIGQUIT shows everything whatever WEFTTRACEBACK says. */
    dump(2, TB_SYSTEM, uc, DUMP_G0);
    if (weft__debug.sigquitcontinue) {
        errno = saved;
        return;
    }
    regs(uc);
    fatalexit();
}

static RACY void sighandler(int sig, siginfo_t *info, void *uc)
{
    struct m *mp = weft__getm();
    struct g *gp = mp ? mp->curg : NULL;
    uintptr_t addr = (uintptr_t)info->si_addr;
    size_t idx = 0;
    while (idx < NFATAL && fatalsigs[idx] != sig)
        idx++;

    if (gp != NULL && (sig == SIGSEGV || sig == SIGBUS) &&
        weft__stack_guard_hit(&gp->stk, addr)) {
        struct out o = {.fd = 2, .buf = (char[512]){0}, .cap = 512};
        puts_(&o, "runtime: goroutine ");
        puti(&o, gp->id);
        puts_(&o, " stack overflow: stack size ");
        putu(&o, gp->stk.hi - gp->stk.lo, 10);
        puts_(&o, " bytes\nruntime: addr=");
        putu(&o, addr, 16);
        puts_(&o, " stack=[");
        putu(&o, gp->stk.lo, 16);
        puts_(&o, ", ");
        putu(&o, gp->stk.hi, 16);
        puts_(&o, "]\nfatal error: stack overflow\n\n");
        puts_(&o, "goroutine ");
        puti(&o, gp->id);
        puts_(&o, " stack overflow: stack size ");
        putu(&o, gp->stk.hi - gp->stk.lo, 10);
        puts_(&o, " bytes\n\n");
        flush(&o);
        /* Go prints a runtime fault with every goroutine. */
        int level = weft__debug.traceback;
        if (level != TB_NONE)
            dump(2, level < TB_ALL ? TB_ALL : level, uc, DUMP_FATAL);
        fatalexit();
    }

    /* Not a weft stack overflow: defer to whoever handled it before,
     * and off the Ms to the default action (re-raised: blocked until we
     * return, then it kills, whether the signal was a fault or a kill). */
    struct sigaction *old = &oldact[idx < NFATAL ? idx : 0];
    bool prev = (old->sa_flags & SA_SIGINFO) ? old->sa_sigaction != NULL
                                             : (old->sa_handler != SIG_DFL &&
                                                old->sa_handler != SIG_IGN);
    if (prev) {
        if (old->sa_flags & SA_SIGINFO)
            old->sa_sigaction(sig, info, uc);
        else
            old->sa_handler(sig);
        return;
    }
    if (mp == NULL) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }

    struct out o = {.fd = 2, .buf = (char[512]){0}, .cap = 512};
    puts_(&o, "fatal error: unexpected signal\n\n[signal ");
    puts_(&o, signame(sig));
    puts_(&o, " code=");
    putu(&o, (uint64_t)(uint32_t)info->si_code, 16);
    puts_(&o, " addr=");
    putu(&o, addr, 16);
    puts_(&o, " pc=");
    putu(&o, weft__ucpc(uc), 16);
    puts_(&o, "]\n\n");
    flush(&o);
    schedtrace_on_fatal();
    dump(2, weft__debug.traceback, uc, DUMP_FATAL);
    if (weft__debug.traceback >= TB_SYSTEM)
        regs(uc);
    fatalexit();
}

void weft__signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = sighandler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigfillset(&sa.sa_mask);
    for (size_t i = 0; i < NFATAL; i++)
        sigaction(fatalsigs[i], &sa, &oldact[i]);

    /* SIGURG freezes Ms for a dump; it restarts what it interrupts. */
    struct sigaction fz;
    memset(&fz, 0, sizeof fz);
    fz.sa_sigaction = freezehandler;
    fz.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&fz.sa_mask);
    urgset = sigaction(FREEZE_SIG, &fz, &oldurg) == 0;

    /* Ctrl+\ dumps, unless the program has its own handler for SIGQUIT.
     * An inherited SIG_IGN is overridden, as Go does (a shell starts
     * background jobs with SIGQUIT ignored). */
    sigaction(SIGQUIT, NULL, &oldquit);
    if (!(oldquit.sa_flags & SA_SIGINFO) &&
        (oldquit.sa_handler == SIG_DFL || oldquit.sa_handler == SIG_IGN)) {
        struct sigaction q;
        memset(&q, 0, sizeof q);
        q.sa_sigaction = quithandler;
        q.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
        sigfillset(&q.sa_mask);
        sigdelset(&q.sa_mask, SIGSEGV);
        sigdelset(&q.sa_mask, SIGBUS);
        quitset = sigaction(SIGQUIT, &q, NULL) == 0;
    }

    /* A write to a dead peer is an error (-EPIPE), not a process exit,
     * as in Go; a handler the program installed itself is left alone. */
    sigaction(SIGPIPE, NULL, &oldpipe);
    if (oldpipe.sa_handler == SIG_DFL && !(oldpipe.sa_flags & SA_SIGINFO)) {
        struct sigaction ign;
        memset(&ign, 0, sizeof ign);
        ign.sa_handler = SIG_IGN;
        sigaction(SIGPIPE, &ign, NULL);
        pipeset = true;
    }
    __atomic_store_n(&dt.quit, false, __ATOMIC_RELEASE);
    atomic_store(&dt.tid, 0);
    dt.started = pthread_create(&dt.thread, NULL, dumperthread, NULL) == 0;
    installed = true;
}

void weft__signals_restore(void)
{
    if (!installed)
        return;
    if (dt.started) {
        __atomic_store_n(&dt.quit, true, __ATOMIC_RELEASE);
        weft__futexwake_os(&dt.req, 1);
        pthread_join(dt.thread, NULL);
        dt.started = false;
    }
    for (size_t i = 0; i < NFATAL; i++)
        sigaction(fatalsigs[i], &oldact[i], NULL);
    if (urgset)
        sigaction(FREEZE_SIG, &oldurg, NULL);
    if (quitset)
        sigaction(SIGQUIT, &oldquit, NULL);
    if (pipeset)
        sigaction(SIGPIPE, &oldpipe, NULL);
    urgset = quitset = pipeset = false;
    installed = false;
}

int weft__sigstack_init(struct m *mp)
{
    void *p = mmap(NULL, SIGSTACK_SIZE, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        return WEFT_ENOMEM;
    mp->frozen = malloc(sizeof *mp->frozen);
    if (mp->frozen == NULL) {
        munmap(p, SIGSTACK_SIZE);
        return WEFT_ENOMEM;
    }
    mp->frozen->n = 0;
    mp->sigstack = p;
    mp->sigstacksize = SIGSTACK_SIZE;
    return 0;
}

void weft__sigstack_fini(struct m *mp)
{
    if (mp->sigstack != NULL)
        munmap(mp->sigstack, mp->sigstacksize);
    free(mp->frozen);
    mp->sigstack = NULL;
    mp->frozen = NULL;
}
