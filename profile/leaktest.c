/*
 * leaktest.c - leak regression tests (weft_leak_snapshot/verify), in the
 * spirit of Go's uber-go/goleak: the coroutines and fds a test leaves
 * behind, reported as goleak reports goroutines; and the registry of fds
 * weft's own symbolizer keeps, which are never leaks.
 *
 * A snapshot holds the ids of the live coroutines (sorted) and the
 * identity (number, device, inode) of every fd in /proc/self/fd. A verify
 * looks, and looks again after sleeps of 1 us doubling to a cap (goleak's
 * retry: 20 retries, 100 ms cap), until nothing new is alive or the
 * retries are spent; only what survives every look is reported.
 *
 * Invariants:
 *  1. A look that finds no new coroutine in the G registry (a racy read,
 *     as dumps do) does not freeze the world: a clean verify costs one
 *     registry walk and one /proc/self/fd listing. Stacks (weft__gstacks)
 *     are read only when a new coroutine may be a leak, since the ignore
 *     lists match on frames.
 *  2. An fd is new if its number was not open at the snapshot or now
 *     names another file (dev, inode): a number closed and reused counts.
 *  3. Symbolizing, the registry of weft's own fds and the report text
 *     (dump.c's formatter) are used under the dump lock, which guards the
 *     symbol cache; nothing here takes a runtime lock.
 *  4. weft's own fds: the symbol cache's miss path (traceback.c), a
 *     dump's or goroutine profile's freeze (dump.c: libunwind opens its
 *     pipe at its first unwind), and the unwinder warm-up before CPU,
 *     block or mutex profiling (whose unwinds run in signal handlers and
 *     hooks, where nothing can be listed) are bracketed by weft__selffd_begin and
 *     _end, which record the fds that appeared between them. A raw fd
 *     another thread opens inside such a bracket is excused too (the
 *     bracket is short, and fds weft opened for a coroutine never are).
 *
 * Rejected: comparing fd counts (a leak and a close cancel out); excusing
 * every file mapped into the process, or the first pipe (tests did, and
 * a leaked pipe or library handle then passes); parsing weft_dump's text
 * back as goleak parses runtime.Stack (the stacks are already PCs here).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pprof.h"
#include "runtime.h"

#define DEF_RETRIES 20
#define DEF_MAXSLEEP (100 * 1000 * 1000LL)
#define SELF_MAX 256

struct fdid {
    int fd;
    dev_t dev;
    ino_t ino;
};

struct weft_leak_snapshot {
    int64_t *ids; /* sorted */
    size_t nids;
    struct fdid *fds; /* in fd order */
    size_t nfds;
};

/* ------------------------------------------------------------ fd lists */

static int cmpfd(const void *a, const void *b)
{
    int x = ((const struct fdid *)a)->fd, y = ((const struct fdid *)b)->fd;
    return (x > y) - (x < y);
}

/* fdstat - fd's identity through its /proc link, not fstat: a listing
 * races with other threads' closes by nature, and fstat on an fd being
 * closed is a use TSan reports; stat(2) of the link names the same file
 * (a socket's or pipe's inode too), or fails once it is closed. */
static int fdstat(int fd, struct stat *st)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return stat(path, st);
}

/* listfds - the fds open now with their identity, sorted; count or
 * WEFT_ENOMEM, 0 without /proc (no fd check then). */
static long listfds(struct fdid **out)
{
    *out = NULL;
    int *fds;
    long nfd = weft__fdlist(&fds);
    if (nfd < 0)
        return nfd == WEFT_ENOMEM ? nfd : 0;
    struct fdid *v = malloc(((size_t)nfd + 1) * sizeof *v);
    if (v == NULL) {
        free(fds);
        return WEFT_ENOMEM;
    }
    size_t n = 0;
    for (long i = 0; i < nfd; i++) {
        struct stat st;
        if (fdstat(fds[i], &st) == 0) /* else closed meanwhile */
            v[n++] = (struct fdid){fds[i], st.st_dev, st.st_ino};
    }
    free(fds);
    *out = v;
    return (long)n;
}

static bool fdknown(const struct fdid *v, size_t n, const struct fdid *f)
{
    const struct fdid *h = bsearch(f, v, n, sizeof *v, cmpfd);
    return h != NULL && h->dev == f->dev && h->ino == f->ino;
}

/* ------------------------------------------------------- weft's own fds */

static struct fdid selffds[SELF_MAX]; /* dump lock */
static size_t nself;                  /* dump lock */
static struct fdid *bracket;          /* dump lock: begin's listing */
static long nbracket;
static int depth;                     /* dump lock: brackets nest (a dump
                                       * symbolizes); the outer one lists */

void weft__selffd_begin(void)
{
    if (depth++ > 0)
        return;
    free(bracket);
    nbracket = listfds(&bracket);
}

void weft__selffd_end(void)
{
    if (depth == 0 || --depth > 0 || nbracket < 0)
        return;
    struct fdid *now;
    long n = listfds(&now);
    for (long i = 0; i < n; i++) {
        if (fdknown(bracket, (size_t)nbracket, &now[i]))
            continue;
        size_t k = 0; /* a reused number replaces its old identity */
        while (k < nself && selffds[k].fd != now[i].fd)
            k++;
        if (k < SELF_MAX) {
            selffds[k] = now[i];
            if (k == nself)
                nself++;
        }
    }
    free(now);
    free(bracket);
    bracket = NULL;
    nbracket = 0;
}

void weft__unwind_warm(void)
{
    static struct tbuf t; /* dump lock */
    if (!weft__dump_lock()) {
        weft__unwind_here(&t); /* still warm, not recorded */
        return;
    }
    weft__selffd_begin();
    weft__unwind_here(&t);
    weft__selffd_end();
    weft__dump_unlock();
}

static bool selffd(const struct fdid *f)
{
    for (size_t k = 0; k < nself; k++)
        if (selffds[k].fd == f->fd && selffds[k].dev == f->dev &&
            selffds[k].ino == f->ino)
            return true;
    return false;
}

/* weft__selffd_is - whether fd is one of weft's own (still the same file). */
bool weft__selffd_is(int fd)
{
    struct stat st;
    if (fdstat(fd, &st) < 0 || !weft__dump_lock())
        return false;
    struct fdid f = {fd, st.st_dev, st.st_ino};
    bool r = selffd(&f);
    weft__dump_unlock();
    return r;
}

/* ------------------------------------------------------------ snapshot */

static int cmpid(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static bool idin(const int64_t *v, size_t n, int64_t id)
{
    return bsearch(&id, v, n, sizeof *v, cmpid) != NULL;
}

static int precheck(void)
{
    if (!weft__runtime_on())
        return WEFT_ENORUNTIME;
    if (weft__getg() == NULL)
        return WEFT_ENOTCORO;
    return 0;
}

WEFT_EXTERN int weft_leak_snapshot(weft_leak_snapshot_t **out)
{
    if (out == NULL)
        return WEFT_EINVAL;
    *out = NULL;
    int r = precheck();
    if (r < 0)
        return r;
    struct weft_leak_snapshot *s = calloc(1, sizeof *s);
    if (s == NULL)
        return WEFT_ENOMEM;
    size_t ng = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    s->ids = malloc((ng + 1) * sizeof *s->ids);
    if (s->ids == NULL) {
        free(s);
        return WEFT_ENOMEM;
    }
    for (size_t i = 0; chunks != NULL && i < ng; i++) {
        struct g *gp = weft__allg(chunks, i);
        uint32_t st = atomic_load(&gp->status);
        if (st != G_DEAD && st != G_IDLE)
            s->ids[s->nids++] = __atomic_load_n(&gp->id, __ATOMIC_RELAXED);
    }
    qsort(s->ids, s->nids, sizeof *s->ids, cmpid);
    long n = listfds(&s->fds);
    if (n < 0) {
        weft_leak_snapshot_free(s);
        return (int)n;
    }
    s->nfds = (size_t)n;
    *out = s;
    return 0;
}

WEFT_EXTERN void weft_leak_snapshot_free(weft_leak_snapshot_t *s)
{
    if (s == NULL)
        return;
    free(s->ids);
    free(s->fds);
    free(s);
}

/* -------------------------------------------------------------- verify */

static void sbint(struct sbuf *b, int64_t v)
{
    char s[24];
    int i = sizeof s;
    s[--i] = '\0';
    uint64_t u = v < 0 ? (uint64_t)-v : (uint64_t)v;
    do {
        s[--i] = (char)('0' + u % 10);
        u /= 10;
    } while (u);
    if (v < 0)
        s[--i] = '-';
    weft__sputs(b, s + i);
}

static bool inlist(const char *const *l, const char *name)
{
    for (; l != NULL && *l != NULL; l++)
        if (strcmp(*l, name) == 0)
            return true;
    return false;
}

/* top - the first frame a dump prints for gs (frames() in dump.c: the
 * first one not hidden, or the first of all if all are). Dump lock. */
static const char *top(const struct gstack *gs)
{
    const char *first = NULL;
    for (uint32_t i = 0; i < gs->n; i++) {
        const struct sym *s = weft__symbolize(gs->pc[i], i == 0 && gs->exact);
        for (int k = 0; s != NULL && k < s->n; k++) {
            if (!s->f[k].hidden)
                return s->f[k].func;
            if (first == NULL)
                first = s->f[k].func;
        }
    }
    return first != NULL ? first : "??";
}

/* ignored - whether opts excuse gs (its frames, its creator). Dump lock. */
static bool ignored(const struct gstack *gs, const struct weft_leak_opts *o)
{
    for (size_t i = 0; i < o->nignore_ids; i++)
        if (o->ignore_ids[i] == gs->id)
            return true;
    if (o->ignore_top != NULL && inlist(o->ignore_top, top(gs)))
        return true;
    if (o->ignore_any != NULL)
        for (uint32_t i = 0; i < gs->n; i++) {
            const struct sym *s =
                weft__symbolize(gs->pc[i], i == 0 && gs->exact);
            for (int k = 0; s != NULL && k < s->n; k++)
                if (inlist(o->ignore_any, s->f[k].func))
                    return true;
        }
    if (o->ignore_created_by != NULL && gs->spawnpc != 0) {
        const struct sym *s = weft__symbolize(gs->spawnpc, false);
        for (int k = 0; s != NULL && k < s->n; k++)
            if (inlist(o->ignore_created_by, s->f[k].func))
                return true;
    }
    return false;
}

/* newgs - how many live coroutines the snapshot does not excuse, from the
 * registry without stopping anything (invariant 1). */
static size_t newgs(const struct weft_leak_snapshot *s, unsigned flags,
                    int64_t self)
{
    size_t ng = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    size_t k = 0;
    for (size_t i = 0; chunks != NULL && i < ng; i++) {
        struct g *gp = weft__allg(chunks, i);
        uint32_t st = atomic_load(&gp->status);
        int64_t id = __atomic_load_n(&gp->id, __ATOMIC_RELAXED);
        if (st == G_DEAD || st == G_IDLE || id == self)
            continue;
        if ((flags & WEFT_LEAK_ALL) || !idin(s->ids, s->nids, id))
            k++;
    }
    return k;
}

struct look {
    struct gstack *gs; /* weft__gstacks' block, or NULL */
    long ngs;
    size_t *leak;      /* indexes into gs of the leaked */
    size_t nleak;
    struct fdid *fds;  /* the fds open now */
    long nfds;
    size_t *fdleak;    /* indexes into fds */
    size_t nfdleak;
};

static void lookfree(struct look *l)
{
    for (long i = 0; l->gs != NULL && i < l->ngs; i++)
        weft__labels_unref(l->gs[i].labels);
    free(l->gs);
    free(l->leak);
    free(l->fds);
    free(l->fdleak);
    *l = (struct look){0};
}

/* look - one look at what leaked; 0 or an error. */
static int look(struct look *l, const struct weft_leak_snapshot *s,
                const struct weft_leak_opts *o, int64_t self)
{
    if (!(o->flags & WEFT_LEAK_NO_COROUTINES) &&
        newgs(s, o->flags, self) > 0) {
        l->ngs = weft__gstacks(&l->gs);
        if (l->ngs < 0) {
            int r = (int)l->ngs;
            l->ngs = 0;
            return r;
        }
        l->leak = malloc(((size_t)l->ngs + 1) * sizeof *l->leak);
        if (l->leak == NULL)
            return WEFT_ENOMEM;
        if (!weft__dump_lock())
            return WEFT_EBUSY;
        for (long i = 0; i < l->ngs; i++) {
            const struct gstack *g = &l->gs[i];
            if (g->self || g->id == self ||
                (!(o->flags & WEFT_LEAK_ALL) && idin(s->ids, s->nids, g->id)))
                continue;
            if (!ignored(g, o))
                l->leak[l->nleak++] = (size_t)i;
        }
        weft__dump_unlock();
    }
    if (!(o->flags & WEFT_LEAK_NO_FDS)) {
        l->nfds = listfds(&l->fds);
        if (l->nfds < 0) {
            int r = (int)l->nfds;
            l->nfds = 0;
            return r;
        }
        l->fdleak = malloc(((size_t)l->nfds + 1) * sizeof *l->fdleak);
        if (l->fdleak == NULL)
            return WEFT_ENOMEM;
        bool locked = false;
        for (long i = 0; i < l->nfds; i++) {
            if (fdknown(s->fds, s->nfds, &l->fds[i]))
                continue;
            if (!locked && !(locked = weft__dump_lock()))
                return WEFT_EBUSY;
            if (!selffd(&l->fds[i]))
                l->fdleak[l->nfdleak++] = (size_t)i;
        }
        if (locked)
            weft__dump_unlock();
    }
    return 0;
}

/* fdtext - "fd N (target) opened in goroutine G by F\n\tfile:line" for
 * l's leaked fds; wf: weft__fds' list. Dump lock. */
static void fdtext(struct sbuf *b, const struct look *l,
                   const struct fdinfo *wf, long nwf)
{
    weft__sputs(b, "found unexpected file descriptors:\n");
    for (size_t i = 0; i < l->nfdleak; i++) {
        int fd = l->fds[l->fdleak[i]].fd;
        char target[512];
        weft__fdtarget(fd, target, sizeof target);
        weft__sputs(b, "fd ");
        sbint(b, fd);
        weft__sputs(b, " (");
        weft__sputs(b, target[0] != '\0' ? target : "?");
        weft__sputs(b, ")");
        const struct fdinfo *w = NULL;
        for (long k = 0; k < nwf && w == NULL; k++)
            if (wf[k].fd == fd)
                w = &wf[k];
        if (w == NULL || (w->openerid == 0 && w->openpc == 0)) {
            weft__sputs(b, w == NULL ? " not opened through weft\n"
                               : " opened through weft outside a "
                                 "coroutine\n");
            continue;
        }
        const struct sym *s =
            w->openpc != 0 ? weft__symbolize(w->openpc, false) : NULL;
        if (w->openerid != 0) {
            weft__sputs(b, " opened in goroutine ");
            sbint(b, w->openerid);
        } else {
            weft__sputs(b, " opened outside a coroutine");
        }
        if (s == NULL) {
            weft__sputs(b, "\n");
            continue;
        }
        const struct symf *f = &s->f[0];
        weft__sputs(b, " by ");
        weft__sputs(b, f->func);
        weft__sputs(b, "\n\t");
        weft__sputs(b, f->file ? f->file : "??");
        weft__sputs(b, ":");
        sbint(b, f->file ? f->line : 0);
        if (s->off > 0 && s->n == 1) {
            char hex[24];
            snprintf(hex, sizeof hex, " +0x%lx", (unsigned long)s->off);
            weft__sputs(b, hex);
        }
        weft__sputs(b, "\n");
    }
}

/* gtext - goleak's text for l's leaked coroutines. Dump lock. */
static void gtext(struct sbuf *b, const struct look *l)
{
    weft__sputs(b, "found unexpected goroutines:\n[");
    for (size_t i = 0; i < l->nleak; i++) {
        const struct gstack *g = &l->gs[l->leak[i]];
        size_t need = weft__gstack_text(g, WEFT_DUMP_ALL, NULL, 0);
        char *t = malloc(need + 1);
        if (t == NULL) {
            b->oom = true;
            return;
        }
        weft__gstack_text(g, WEFT_DUMP_ALL, t, need);
        t[need] = '\0';
        /* "goroutine N [state]:\n" becomes goleak's line. */
        char *open = strchr(t, '['), *nl = strchr(t, '\n');
        char *close = nl != NULL ? nl : t + need;
        while (close > t && *close != ']')
            close--;
        if (i > 0)
            weft__sputs(b, " ");
        weft__sputs(b, "Goroutine ");
        sbint(b, g->id);
        weft__sputs(b, " in state ");
        if (open != NULL && close > open) {
            *close = '\0';
            weft__sputs(b, open + 1);
        }
        weft__sputs(b, ", with ");
        weft__sputs(b, top(g));
        weft__sputs(b, " on top of the stack:\n");
        weft__sputs(b, nl != NULL ? nl + 1 : "");
        free(t);
    }
    weft__sputs(b, "]\n");
}

static int badopts(const struct weft_leak_opts *o)
{
    const unsigned all =
        WEFT_LEAK_ALL | WEFT_LEAK_NO_FDS | WEFT_LEAK_NO_COROUTINES;
    if ((o->flags & ~all) != 0 ||
        (o->flags & (WEFT_LEAK_NO_FDS | WEFT_LEAK_NO_COROUTINES)) ==
            (WEFT_LEAK_NO_FDS | WEFT_LEAK_NO_COROUTINES) ||
        o->retries < 0 || o->max_sleep < 0 ||
        (o->buf == NULL && o->bufsize > 0) ||
        (o->ignore_ids == NULL && o->nignore_ids > 0))
        return WEFT_EINVAL;
    if (o->fd < 0)
        return WEFT_EBADF;
    return 0;
}

WEFT_EXTERN int weft_leak_verify(const weft_leak_snapshot_t *s,
                                 const struct weft_leak_opts *opts)
{
    static const struct weft_leak_opts none;
    const struct weft_leak_opts *o = opts != NULL ? opts : &none;
    if (s == NULL)
        return WEFT_EINVAL;
    int r = badopts(o);
    if (r < 0)
        return r;
    if ((r = precheck()) < 0)
        return r;
    if (o->buf != NULL && o->bufsize > 0)
        o->buf[0] = '\0';
    int retries = o->retries > 0 ? o->retries : DEF_RETRIES;
    int64_t cap = o->max_sleep > 0 ? o->max_sleep : DEF_MAXSLEEP;
    int64_t self = weft_self();
    struct look l = {0};
    for (int i = 0;; i++) {
        lookfree(&l);
        if ((r = look(&l, s, o, self)) < 0) {
            lookfree(&l);
            return r;
        }
        if (l.nleak + l.nfdleak == 0) {
            lookfree(&l);
            return 0;
        }
        if (i >= retries)
            break;
        int64_t ns = i < 40 ? (int64_t)1000 << i : cap;
        weft_sleep(ns < cap ? ns : cap);
    }

    /* weft__fds takes the fd table's locks: not under the dump lock. */
    struct fdinfo *wf = NULL;
    long nwf = l.nfdleak > 0 ? weft__fds(&wf) : 0;
    struct sbuf b = {0};
    if (!weft__dump_lock()) {
        free(wf);
        lookfree(&l);
        return WEFT_EBUSY;
    }
    if (l.nleak > 0)
        gtext(&b, &l);
    if (l.nfdleak > 0)
        fdtext(&b, &l, wf, nwf < 0 ? 0 : nwf);
    weft__dump_unlock();
    free(wf);
    int n = (int)(l.nleak + l.nfdleak);
    lookfree(&l);
    if (b.oom) {
        free(b.p);
        return WEFT_ENOMEM;
    }
    if (o->buf != NULL && o->bufsize > 0) {
        size_t k = b.n < o->bufsize - 1 ? b.n : o->bufsize - 1;
        memcpy(o->buf, b.p, k);
        o->buf[k] = '\0';
    }
    r = o->fd > 0 ? weft__writeall(o->fd, b.p, b.n) : 0;
    free(b.p);
    return r < 0 ? r : n;
}
