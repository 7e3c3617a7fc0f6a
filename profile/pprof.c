/*
 * pprof.c - the profile.proto builder every profile goes through, and
 * weft__writeall, the one way profile, metric and server text reaches an
 * fd.
 *
 * A builder interns as it goes: strings (string_table[0] is ""),
 * functions by (name, file), locations by (pc, exact). A location holds
 * the inline chain at its pc, innermost first (the last Line is the
 * outermost call, as pprof reads it; weft's own inlined frames are left
 * out except in CPU profiles, as dumps hide them), and every location
 * points at the one mapping, flagged has_functions/filenames/
 * line_numbers/inline_frames so `go tool pprof` needs no binary.
 * Addresses are the pc itself where the code stood and pc-1 for a return
 * address: the call, as Go's legacy text and symbolization use.
 *
 * Invariants: ids are 1-based and dense (id k is index k-1), so every id
 * is non-zero and unique; every sample has the kind's number of values.
 * Symbolizing takes the dump lock (libdw and the symbol cache are not
 * thread-safe); nothing here runs in a signal handler.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pprof.h"
#include "runtime.h"

int weft__writeall(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w >= 0) {
            p += w;
            n -= (size_t)w;
            continue;
        }
        int e = errno;
        if (e == EINTR)
            continue;
        if (e != EAGAIN)
            return -e;
        if (weft__getg() != NULL) {
            /* WEFT_EBUSY (another coroutine waits to write fd) too: a
             * retry would spin on EAGAIN. */
            int r = weft_fd_wait(fd, WEFT_WRITE, WEFT_FOREVER);
            if (r < 0)
                return r;
        } else {
            struct pollfd pf = {.fd = fd, .events = POLLOUT};
            if (poll(&pf, 1, -1) < 0 && errno != EINTR)
                return -errno;
        }
    }
    return 0;
}

static int cmpint(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

long weft__fdlist(int **out)
{
    *out = NULL;
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL)
        return -ENOENT;
    int self = dirfd(d);
    size_t n = 0, cap = 0;
    int *v = NULL;
    for (struct dirent *e; (e = readdir(d)) != NULL;) {
        if (e->d_name[0] == '.' || atoi(e->d_name) == self)
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            int *nv = realloc(v, cap * sizeof *v);
            if (nv == NULL) {
                free(v);
                closedir(d);
                return WEFT_ENOMEM;
            }
            v = nv;
        }
        v[n++] = atoi(e->d_name);
    }
    closedir(d);
    qsort(v, n, sizeof *v, cmpint);
    *out = v;
    return (long)n;
}

void weft__fdtarget(int fd, char *buf, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(path, buf, cap - 1);
    buf[n > 0 ? n : 0] = '\0';
}

void weft__sputn(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->n + n + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void weft__sputs(struct sbuf *b, const char *s)
{
    weft__sputn(b, s, strlen(s));
}

void weft__sprint(struct sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof tmp) {
        weft__sputn(b, tmp, (size_t)n);
        return;
    }
    char *big = malloc((size_t)n + 1);
    if (big == NULL) {
        b->oom = true;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    weft__sputn(b, big, (size_t)n);
    free(big);
}

const char *weft__pprof_pseudo(uintptr_t pc)
{
    return pc == PPROF_PC_SCHED         ? "weft.scheduler"
           : pc == PPROF_PC_UNAVAILABLE ? "weft.stack_unavailable"
                                        : NULL;
}

#if !WEFT_HAVE_PPROF

struct pprof *weft__pprof_new(enum pprof_kind kind, int64_t period,
                              int64_t start, int64_t duration)
{
    return NULL;
}

int weft__pprof_add(struct pprof *b, const uintptr_t *pc, int n, bool exact,
                    const int64_t *values, const struct weft__labels *l)
{
    return -ENOSYS;
}

int weft__pprof_write(struct pprof *b, int fd) { return -ENOSYS; }
void weft__pprof_free(struct pprof *b) {}

#else

#include <zlib.h>

#include "profile.pb-c.h"

typedef Perftools__Profiles__Profile PbProfile;
typedef Perftools__Profiles__ValueType PbValueType;
typedef Perftools__Profiles__Sample PbSample;
typedef Perftools__Profiles__Label PbLabel;
typedef Perftools__Profiles__Mapping PbMapping;
typedef Perftools__Profiles__Location PbLocation;
typedef Perftools__Profiles__Line PbLine;
typedef Perftools__Profiles__Function PbFunction;

/* An open-addressing table from a 64-bit hash to a 1-based index into
 * the builder's own array; 0 marks an empty slot. */
struct itab {
    uint32_t *slot;
    uint64_t *hash;
    size_t cap; /* a power of two, kept at most half full */
    size_t n;
};

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    return h ^ (h >> 33);
}

static uint64_t strhash(const char *s, uint64_t seed)
{
    uint64_t h = 1469598103934665603ULL ^ seed;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return mix(h);
}

static bool itab_grow(struct itab *t)
{
    size_t cap = t->cap ? t->cap * 2 : 256;
    uint32_t *slot = calloc(cap, sizeof *slot);
    uint64_t *hash = calloc(cap, sizeof *hash);
    if (slot == NULL || hash == NULL) {
        free(slot);
        free(hash);
        return false;
    }
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slot[i] == 0)
            continue;
        size_t j = t->hash[i] & (cap - 1);
        while (slot[j] != 0)
            j = (j + 1) & (cap - 1);
        slot[j] = t->slot[i];
        hash[j] = t->hash[i];
    }
    free(t->slot);
    free(t->hash);
    t->slot = slot;
    t->hash = hash;
    t->cap = cap;
    return true;
}

struct pprof {
    enum pprof_kind kind;
    int nvalues;
    PbProfile p;
    PbValueType st[2], pt;
    PbMapping map;
    PbMapping *mapp;
    const char **str; /* string_table: static, the symbol cache's, the
                       * caller's labels', or exe */
    size_t nstr, capstr;
    struct itab strs;
    char *exe;        /* the executable's path (owned) */
    PbFunction *fn;
    size_t nfn, capfn;
    struct itab fns;
    PbLocation *loc;
    uintptr_t *lockey; /* pc << 1 | exact, per location */
    size_t nloc, caploc;
    struct itab locs;
    PbSample *smp;
    size_t nsmp, capsmp;
    uintptr_t lo, hi; /* the addresses seen, for the mapping's range */
    bool oom;
};

/* grow - make room for one more element in *arr (n used of *cap). */
static bool grow(void **arr, size_t n, size_t *cap, size_t size)
{
    if (n < *cap)
        return true;
    size_t nc = *cap ? *cap * 2 : 64;
    void *a = realloc(*arr, nc * size);
    if (a == NULL)
        return false;
    *arr = a;
    *cap = nc;
    return true;
}

/* intern - the string table index of s (added if new). */
static int64_t intern(struct pprof *b, const char *s)
{
    if (s == NULL || *s == '\0')
        return 0;
    if (b->strs.n * 2 >= b->strs.cap && !itab_grow(&b->strs))
        goto oom;
    uint64_t h = strhash(s, 0);
    size_t j = h & (b->strs.cap - 1);
    for (; b->strs.slot[j] != 0; j = (j + 1) & (b->strs.cap - 1))
        if (b->strs.hash[j] == h &&
            strcmp(b->str[b->strs.slot[j] - 1], s) == 0)
            return b->strs.slot[j] - 1;
    if (!grow((void **)&b->str, b->nstr, &b->capstr, sizeof *b->str))
        goto oom;
    b->str[b->nstr++] = s;
    b->strs.slot[j] = (uint32_t)b->nstr; /* index + 1 */
    b->strs.hash[j] = h;
    b->strs.n++;
    return (int64_t)b->nstr - 1;
oom:
    b->oom = true;
    return 0;
}

/* function - the id of the function (name, file). */
static uint64_t function(struct pprof *b, const char *name, const char *file)
{
    int64_t ni = intern(b, name), fi = intern(b, file);
    if (b->fns.n * 2 >= b->fns.cap && !itab_grow(&b->fns))
        goto oom;
    uint64_t h = mix((uint64_t)ni * 0x9e3779b97f4a7c15ULL ^ (uint64_t)fi);
    size_t j = h & (b->fns.cap - 1);
    for (; b->fns.slot[j] != 0; j = (j + 1) & (b->fns.cap - 1)) {
        PbFunction *f = &b->fn[b->fns.slot[j] - 1];
        if (f->name == ni && f->filename == fi)
            return f->id;
    }
    if (!grow((void **)&b->fn, b->nfn, &b->capfn, sizeof *b->fn))
        goto oom;
    PbFunction *f = &b->fn[b->nfn++];
    perftools__profiles__function__init(f);
    f->id = b->nfn;
    f->name = f->system_name = ni;
    f->filename = fi;
    b->fns.slot[j] = (uint32_t)b->nfn;
    b->fns.hash[j] = h;
    b->fns.n++;
    return f->id;
oom:
    b->oom = true;
    return 0;
}

/* fill - the lines of a new location: the inline chain at its pc. */
static void fill(struct pprof *b, PbLocation *l, uintptr_t pc, bool exact)
{
    const char *pseudo = weft__pprof_pseudo(pc);
    if (pseudo != NULL) {
        l->address = 0;
        l->line = calloc(1, sizeof *l->line);
        if (l->line == NULL)
            goto oom;
        l->line[0] = malloc(sizeof **l->line);
        if (l->line[0] == NULL)
            goto oom;
        l->n_line = 1;
        perftools__profiles__line__init(l->line[0]);
        l->line[0]->function_id = function(b, pseudo, NULL);
        return;
    }
    l->address = exact ? pc : pc - 1;
    if (b->lo == 0 || l->address < b->lo)
        b->lo = l->address;
    if (l->address >= b->hi)
        b->hi = l->address + 1;
    /* A thread already dumping (a fault inside one) gets addresses. */
    if (!weft__dump_lock())
        return;
    const struct sym *s = weft__symbolize(pc, exact);
    weft__dump_unlock();
    if (s == NULL || s->n == 0 || strcmp(s->f[s->n - 1].func, "??") == 0)
        return; /* no lines: pprof shows the address */
    /* Outside CPU profiles, weft's own code inlined into a public call
     * (a channel's recvop in weft_chan_recv) says nothing about where the
     * program waits: start at the first frame a dump would show. */
    int first = 0;
    if (b->kind != PPROF_CPU)
        while (first < s->n - 1 && s->f[first].hidden)
            first++;
    l->line = calloc((size_t)s->n, sizeof *l->line);
    if (l->line == NULL)
        goto oom;
    for (int i = first; i < s->n; i++) {
        PbLine *ln = malloc(sizeof *ln);
        if (ln == NULL)
            goto oom;
        perftools__profiles__line__init(ln);
        ln->function_id = function(b, s->f[i].func, s->f[i].file);
        ln->line = s->f[i].line;
        l->line[l->n_line++] = ln;
    }
    return;
oom:
    b->oom = true;
}

/* location - the id of the location at (pc, exact). */
static uint64_t location(struct pprof *b, uintptr_t pc, bool exact)
{
    uintptr_t key = pc << 1 | exact;
    if (b->locs.n * 2 >= b->locs.cap && !itab_grow(&b->locs))
        goto oom;
    uint64_t h = mix(key);
    size_t j = h & (b->locs.cap - 1);
    for (; b->locs.slot[j] != 0; j = (j + 1) & (b->locs.cap - 1))
        if (b->lockey[b->locs.slot[j] - 1] == key)
            return b->locs.slot[j];
    if (b->nloc == b->caploc) {
        /* Both arrays first, the capacity last: a failure leaves them
         * consistent (one larger is harmless). */
        size_t nc = b->caploc ? 2 * b->caploc : 64;
        uintptr_t *k = realloc(b->lockey, nc * sizeof *k);
        if (k == NULL)
            goto oom;
        b->lockey = k;
        PbLocation *nl = realloc(b->loc, nc * sizeof *nl);
        if (nl == NULL)
            goto oom;
        b->loc = nl;
        b->caploc = nc;
    }
    PbLocation *l = &b->loc[b->nloc];
    perftools__profiles__location__init(l);
    b->lockey[b->nloc++] = key;
    l->id = b->nloc;
    l->mapping_id = 1;
    fill(b, l, pc, exact);
    b->locs.slot[j] = (uint32_t)b->nloc;
    b->locs.hash[j] = h;
    b->locs.n++;
    return l->id;
oom:
    b->oom = true;
    return 0;
}

static const struct {
    int n;
    const char *t[2], *u[2], *pt, *pu;
} kinds[] = {
    [PPROF_CPU] = {2, {"samples", "cpu"}, {"count", "nanoseconds"},
                   "cpu", "nanoseconds"},
    [PPROF_GOROUTINE] = {1, {"goroutine"}, {"count"}, "goroutine", "count"},
    [PPROF_THREADCREATE] = {1, {"threadcreate"}, {"count"}, "threadcreate",
                            "count"},
    [PPROF_BLOCK] = {2, {"contentions", "delay"}, {"count", "nanoseconds"},
                     "contentions", "count"},
    [PPROF_MUTEX] = {2, {"contentions", "delay"}, {"count", "nanoseconds"},
                     "contentions", "count"},
};

struct pprof *weft__pprof_new(enum pprof_kind kind, int64_t period,
                              int64_t start, int64_t duration)
{
    if ((unsigned)kind >= sizeof kinds / sizeof kinds[0])
        return NULL;
    struct pprof *b = calloc(1, sizeof *b);
    if (b == NULL)
        return NULL;
    b->kind = kind;
    b->nvalues = kinds[kind].n;
    perftools__profiles__profile__init(&b->p);
    if (!grow((void **)&b->str, 0, &b->capstr, sizeof *b->str)) {
        free(b);
        return NULL;
    }
    b->str[b->nstr++] = "";
    for (int i = 0; i < b->nvalues; i++) {
        perftools__profiles__value_type__init(&b->st[i]);
        b->st[i].type = intern(b, kinds[kind].t[i]);
        b->st[i].unit = intern(b, kinds[kind].u[i]);
    }
    perftools__profiles__value_type__init(&b->pt);
    b->pt.type = intern(b, kinds[kind].pt);
    b->pt.unit = intern(b, kinds[kind].pu);
    b->p.period_type = &b->pt;
    b->p.period = period;
    b->p.time_nanos = start;
    b->p.duration_nanos = duration;

    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        b->exe = strdup(exe);
    }
    perftools__profiles__mapping__init(&b->map);
    b->map.id = 1;
    b->map.filename = intern(b, b->exe);
    b->map.has_functions = b->map.has_filenames = true;
    b->map.has_line_numbers = b->map.has_inline_frames = true;
    if (b->oom) {
        weft__pprof_free(b);
        return NULL;
    }
    return b;
}

int weft__pprof_add(struct pprof *b, const uintptr_t *pc, int n, bool exact,
                    const int64_t *values, const struct weft__labels *l)
{
    if (b->oom)
        return WEFT_ENOMEM;
    if (!grow((void **)&b->smp, b->nsmp, &b->capsmp, sizeof *b->smp))
        return WEFT_ENOMEM;
    PbSample *s = &b->smp[b->nsmp];
    perftools__profiles__sample__init(s);
    s->location_id = malloc((size_t)(n > 0 ? n : 1) * sizeof(uint64_t));
    s->value = malloc((size_t)b->nvalues * sizeof(int64_t));
    size_t nl = l != NULL ? (size_t)l->n : 0;
    s->label = nl ? calloc(nl, sizeof *s->label) : NULL;
    b->nsmp++; /* freed with the builder from here on */
    if (s->location_id == NULL || s->value == NULL ||
        (nl && s->label == NULL))
        return WEFT_ENOMEM;
    for (int i = 0; i < n; i++) {
        uint64_t id = location(b, pc[i], exact && i == 0);
        if (id != 0)
            s->location_id[s->n_location_id++] = id;
    }
    s->n_value = (size_t)b->nvalues;
    memcpy(s->value, values, s->n_value * sizeof *s->value);
    for (size_t i = 0; i < nl; i++) {
        PbLabel *lb = malloc(sizeof *lb);
        if (lb == NULL)
            return WEFT_ENOMEM;
        perftools__profiles__label__init(lb);
        lb->key = intern(b, l->kv[i].k);
        lb->str = intern(b, l->kv[i].v);
        s->label[s->n_label++] = lb;
    }
    return b->oom ? WEFT_ENOMEM : 0;
}

/* gzwrite_ - gzip (level 1, Go's BestSpeed) buf and write it to fd. */
static int gzwrite_(int fd, const uint8_t *buf, size_t n)
{
    z_stream z = {0};
    if (deflateInit2(&z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8,
                     Z_DEFAULT_STRATEGY) != Z_OK)
        return WEFT_ENOMEM;
    uint8_t out[64 * 1024];
    int r = 0;
    z.next_in = (Bytef *)buf;
    z.avail_in = (uInt)n;
    int zr;
    do {
        z.next_out = out;
        z.avail_out = sizeof out;
        zr = deflate(&z, Z_FINISH);
        if (zr == Z_STREAM_ERROR) {
            r = WEFT_ENOMEM;
            break;
        }
        r = weft__writeall(fd, out, sizeof out - z.avail_out);
    } while (r == 0 && zr != Z_STREAM_END);
    deflateEnd(&z);
    return r;
}

int weft__pprof_write(struct pprof *b, int fd)
{
    if (b == NULL)
        return WEFT_EINVAL;
    if (b->oom) {
        weft__pprof_free(b);
        return WEFT_ENOMEM;
    }
    PbValueType *st[2] = {&b->st[0], &b->st[1]};
    PbSample **smp = malloc((b->nsmp + 1) * sizeof *smp);
    PbLocation **loc = malloc((b->nloc + 1) * sizeof *loc);
    PbFunction **fn = malloc((b->nfn + 1) * sizeof *fn);
    uint8_t *buf = NULL;
    int r = WEFT_ENOMEM;
    if (smp == NULL || loc == NULL || fn == NULL)
        goto out;
    for (size_t i = 0; i < b->nsmp; i++)
        smp[i] = &b->smp[i];
    for (size_t i = 0; i < b->nloc; i++)
        loc[i] = &b->loc[i];
    for (size_t i = 0; i < b->nfn; i++)
        fn[i] = &b->fn[i];
    b->map.memory_start = b->lo & ~(uintptr_t)4095;
    b->map.memory_limit = (b->hi + 4095) & ~(uintptr_t)4095;
    b->mapp = &b->map;
    b->p.n_sample_type = (size_t)b->nvalues;
    b->p.sample_type = st;
    b->p.n_sample = b->nsmp;
    b->p.sample = smp;
    b->p.n_location = b->nloc;
    b->p.location = loc;
    b->p.n_function = b->nfn;
    b->p.function = fn;
    b->p.n_mapping = 1;
    b->p.mapping = &b->mapp;
    b->p.n_string_table = b->nstr;
    b->p.string_table = (char **)b->str;
    size_t n = perftools__profiles__profile__get_packed_size(&b->p);
    buf = malloc(n ? n : 1);
    if (buf == NULL)
        goto out;
    perftools__profiles__profile__pack(&b->p, buf);
    r = fd >= 0 ? gzwrite_(fd, buf, n) : 0;
out:
    /* The pointer arrays are ours, not the builder's: detach them. */
    b->p.sample_type = NULL;
    b->p.sample = NULL;
    b->p.location = NULL;
    b->p.function = NULL;
    b->p.mapping = NULL;
    b->p.string_table = NULL;
    free(smp);
    free(loc);
    free(fn);
    free(buf);
    weft__pprof_free(b);
    return r;
}

void weft__pprof_free(struct pprof *b)
{
    if (b == NULL)
        return;
    for (size_t i = 0; i < b->nsmp; i++) {
        PbSample *s = &b->smp[i];
        for (size_t j = 0; j < s->n_label; j++)
            free(s->label[j]);
        free(s->label);
        free(s->location_id);
        free(s->value);
    }
    for (size_t i = 0; i < b->nloc; i++) {
        for (size_t j = 0; j < b->loc[i].n_line; j++)
            free(b->loc[i].line[j]);
        free(b->loc[i].line);
    }
    free(b->smp);
    free(b->loc);
    free(b->lockey);
    free(b->fn);
    free(b->str);
    free(b->strs.slot);
    free(b->strs.hash);
    free(b->fns.slot);
    free(b->fns.hash);
    free(b->locs.slot);
    free(b->locs.hash);
    free(b->exe);
    free(b);
}

#endif /* WEFT_HAVE_PPROF */
