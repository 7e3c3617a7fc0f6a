/*
 * traceback.c - the stack of any G as a list of PCs (libunwind), and a PC
 * as function, file:line and offset (libdw), for dump.c.
 *
 * Unwinding. A parked G's registers are on its own stack: its saved sp
 * points at the frame weft__ctx_switch pushed. It is unwound as if it
 * stood at weft__ctx_switch_saved (the instruction after the sp is
 * saved) with that sp: the switch's CFI then restores the callee-saved
 * registers and the return address from the stack, and libunwind walks
 * on from there with each function's CFI (no frame pointers needed). A
 * G that is running is unwound by its own M, in the signal handler of a
 * dump's freeze (dump.c), from the interrupted context. Unwinding stops
 * at weft__ctx_start, whose CFI marks the return address undefined.
 *
 * libunwind is set to cache per thread: the global cache takes a lock,
 * and a frozen M may have been stopped inside libunwind holding it.
 *
 * Symbols. One Dwfl over /proc/self/maps, built at the first dump (and
 * again when a PC falls outside every known module: a dlopen since).
 * Every PC is resolved once and kept in a hash table for good, so a
 * second dump costs no DWARF work. Inlined calls are expanded from the
 * DWARF scopes at the PC, as Go prints them: the inlined functions
 * first, each at the line it stands on, then the real function at the
 * call site. Paths are made absolute and "dir/../" is folded; a file
 * that is not .c or .s (a header, .S assembly) prints as "??", which
 * panicparse accepts where it would reject the real name.
 *
 * Invariants:
 *  1. Everything here runs under dump.c's dump lock: one dump at a time,
 *     so the Dwfl, the cache and the scratch buffers are single-threaded.
 *     The unwinders alone also run in frozen Ms' signal handlers, each on
 *     its own tbuf, and they take no lock.
 *  2. The cache only grows; entries are never freed while the process
 *     lives (a dump may come from a signal handler at any time).
 *  3. Reads of G stacks happen only while every M that could resume the
 *     G is frozen (dump.c), so the stack cannot change under libunwind.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <ucontext.h>

#include "runtime.h"

#if WEFT_HAVE_LIBUNWIND
#define UNW_LOCAL_ONLY
#include <libunwind.h>
#endif
#if WEFT_HAVE_LIBDW
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#endif

/* A frozen M's handler writes its tbuf and publishes it with a release
 * store the dumper acquires (dump.c); TSan does not see that order across
 * a signal handler, so the tbuf writers are not instrumented. */
#define RACY __attribute__((no_sanitize("thread")))

#ifndef WEFT_SRCDIR
#define WEFT_SRCDIR ""
#endif

/* ------------------------------------------------------------- unwinding */

/* Nonzero while this thread is inside one of the unwinders below: the
 * per-thread libunwind cache is not reentrant, so a CPU-profiling signal
 * that lands meanwhile (cpuprof.c) drops its sample instead of unwinding.
 * Only the thread itself writes it, so volatile is enough. */
__thread volatile int weft__tb_busy
    __attribute__((tls_model("initial-exec")));

/* The sp and pc a signal interrupted (signal-safe). */
uintptr_t weft__ucsp(void *ucv)
{
    ucontext_t *uc = ucv;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.sp;
#endif
}

uintptr_t weft__ucpc(void *ucv)
{
    ucontext_t *uc = ucv;
#if defined(__x86_64__)
    return (uintptr_t)uc->uc_mcontext.gregs[REG_RIP];
#elif defined(__aarch64__)
    return (uintptr_t)uc->uc_mcontext.pc;
#endif
}

#if WEFT_HAVE_LIBUNWIND

static RACY void walk(unw_cursor_t *c, struct tbuf *t, bool exact0)
{
    static _Atomic bool policy;
    if (!atomic_exchange(&policy, true))
        unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
    t->n = 0;
    t->cut = false;
    bool exact = exact0;
    for (;;) {
        unw_word_t ip = 0, sp = 0;
        if (unw_get_reg(c, UNW_REG_IP, &ip) < 0 || ip == 0)
            break;
        unw_get_reg(c, UNW_REG_SP, &sp);
        if (t->n == TB_MAX) {
            t->cut = true;
            break;
        }
        t->pc[t->n] = (uintptr_t)ip;
        t->sp[t->n] = (uintptr_t)sp;
        t->exact[t->n] = exact;
        t->n++;
        /* A coroutine's first frame: nothing above it. Stopping here
         * also spares libunwind's probe past the undefined return
         * address (a mincore and a pipe write per stack). */
        if ((uintptr_t)ip - (uintptr_t)weft__ctx_start < 16)
            break;
        /* The frame after a signal frame stopped where it was. */
        exact = unw_is_signal_frame(c) > 0;
        if (unw_step(c) <= 0)
            break;
    }
}

RACY void weft__unwind_ctx(struct g *gp, struct tbuf *t)
{
    t->n = 0;
    t->cut = false;
    uintptr_t sp = (uintptr_t)gp->ctx.sp;
    if (sp < gp->stk.lo || sp >= gp->stk.hi)
        return; /* never switched out (or torn): nothing to read */
    /* A G that never ran stands at its entry: weft__ctx_make's frame
     * returns into weft__ctx_start. Show its function, as Go does. */
#if defined(__x86_64__)
    uintptr_t ret = ((uintptr_t *)sp)[6];
#elif defined(__aarch64__)
    uintptr_t ret = ((uintptr_t *)sp)[11];
#endif
    if (ret == (uintptr_t)weft__ctx_start) {
        t->pc[0] = (uintptr_t)gp->fn;
        t->sp[0] = sp;
        t->exact[0] = true;
        t->n = 1;
        return;
    }
    unw_context_t uc;
    memset(&uc, 0, sizeof uc);
#if defined(__x86_64__)
    uc.uc_mcontext.gregs[REG_RIP] = (greg_t)(uintptr_t)weft__ctx_switch_saved;
    uc.uc_mcontext.gregs[REG_RSP] = (greg_t)sp;
#elif defined(__aarch64__)
    uc.uc_mcontext.pc = (uintptr_t)weft__ctx_switch_saved;
    uc.uc_mcontext.sp = sp;
#endif
    unw_cursor_t c;
    weft__tb_busy++;
    if (unw_init_local(&c, &uc) >= 0)
        walk(&c, t, true);
    weft__tb_busy--;
}

RACY void weft__unwind_uc(void *uc, struct tbuf *t)
{
    unw_cursor_t c;
    t->n = 0;
    weft__tb_busy++;
    if (unw_init_local2(&c, (unw_context_t *)uc, UNW_INIT_SIGNAL_FRAME) >= 0)
        walk(&c, t, true);
    weft__tb_busy--;
}

__attribute__((noinline)) void weft__unwind_here(struct tbuf *t)
{
    unw_context_t uc;
    unw_cursor_t c;
    t->n = 0;
    weft__tb_busy++;
    if (unw_getcontext(&uc) >= 0 && unw_init_local(&c, &uc) >= 0)
        walk(&c, t, false);
    weft__tb_busy--;
}

#else /* no libunwind: headers, entry functions and creators only */

/* A parked G shows its entry function, so every G has a frame line. */
void weft__unwind_ctx(struct g *gp, struct tbuf *t)
{
    t->pc[0] = (uintptr_t)gp->fn;
    t->sp[0] = (uintptr_t)gp->ctx.sp;
    t->exact[0] = true;
    t->n = 1;
    t->cut = false;
}
void weft__unwind_uc(void *uc, struct tbuf *t) { t->n = 0; }
void weft__unwind_here(struct tbuf *t) { t->n = 0; }

#endif

/* ---------------------------------------------------------------- cache */

static struct sym **symtab;
static size_t symcap, symlen;

static inline size_t slot(uintptr_t key, size_t mask)
{
    uint64_t h = (uint64_t)key * 0x9e3779b97f4a7c15ull;
    return (size_t)(h >> 17) & mask;
}

static bool cacheput(struct sym *s)
{
    if (2 * (symlen + 1) > symcap) {
        size_t ncap = symcap ? 2 * symcap : 1024;
        struct sym **nt = calloc(ncap, sizeof *nt);
        if (nt == NULL)
            return false;
        for (size_t i = 0; i < symcap; i++) {
            if (symtab[i] == NULL)
                continue;
            size_t j = slot(symtab[i]->key, ncap - 1);
            while (nt[j] != NULL)
                j = (j + 1) & (ncap - 1);
            nt[j] = symtab[i];
        }
        free(symtab); /* invariant 1: nobody else reads it */
        symtab = nt;
        symcap = ncap;
    }
    size_t j = slot(s->key, symcap - 1);
    while (symtab[j] != NULL)
        j = (j + 1) & (symcap - 1);
    symtab[j] = s;
    symlen++;
    return true;
}

static struct sym *cacheget(uintptr_t key)
{
    if (symcap == 0)
        return NULL;
    for (size_t j = slot(key, symcap - 1); symtab[j] != NULL;
         j = (j + 1) & (symcap - 1))
        if (symtab[j]->key == key)
            return symtab[j];
    return NULL;
}

/* --------------------------------------------------------------- names */

/* Interned strings: the cache's entries point into these, never freed. */
static const char *intern(const char *s)
{
    static struct istr {
        struct istr *next;
        char s[];
    } *tab[512];
    size_t h = 5381;
    for (const char *p = s; *p; p++)
        h = h * 33 + (unsigned char)*p;
    h %= 512;
    for (struct istr *e = tab[h]; e; e = e->next)
        if (strcmp(e->s, s) == 0)
            return e->s;
    size_t n = strlen(s) + 1;
    struct istr *e = malloc(sizeof *e + n);
    if (e == NULL)
        return "??";
    memcpy(e->s, s, n);
    e->next = tab[h];
    tab[h] = e;
    return e->s;
}

/* normpath - s as an absolute path with "." and "dir/.." folded, in out;
 * dir resolves a relative s. */
static void normpath(const char *dir, const char *s, char *out, size_t cap)
{
    char tmp[1024];
    if (s[0] != '/' && dir != NULL)
        snprintf(tmp, sizeof tmp, "%s/%s", dir, s);
    else
        snprintf(tmp, sizeof tmp, "%s", s);
    size_t n = 0;
    const char *p = tmp;
    while (*p) {
        while (*p == '/')
            p++;
        const char *e = p;
        while (*e && *e != '/')
            e++;
        size_t len = (size_t)(e - p);
        if (len == 0)
            break;
        if (len == 1 && p[0] == '.') {
            /* skip */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (n > 0 && out[n - 1] != '/')
                n--;
            if (n > 0)
                n--;
        } else if (n + 1 + len + 1 < cap) {
            out[n++] = '/';
            memcpy(out + n, p, len);
            n += len;
        }
        p = e;
    }
    if (n == 0)
        out[n++] = '/';
    out[n] = '\0';
}

/* panicparse reads a frame's file only if it ends in .c, .s or .go. */
static bool parsable(const char *f)
{
    size_t n = strlen(f);
    return n > 2 && f[n - 2] == '.' && (f[n - 1] == 'c' || f[n - 1] == 's');
}

/* weft's own code: weft__* names, and static functions in its source
 * directories; the public weft_* calls stay visible, as Go shows
 * time.Sleep but not runtime.gopark. */
static bool runtimeframe(const char *func, const char *file)
{
    if (strncmp(func, "weft_", 5) == 0)
        return func[5] == '_';
    static const char *const dirs[] = {"/sched/", "/netpoll/", "/profile/"};
    size_t sl = strlen(WEFT_SRCDIR);
    if (file == NULL || sl == 0 || strncmp(file, WEFT_SRCDIR, sl) != 0)
        return false;
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++)
        if (strncmp(file + sl, dirs[i], strlen(dirs[i])) == 0)
            return true;
    return false;
}

/* -------------------------------------------------------------- symbols */

#define MAXINL 16

struct rawf {
    const char *func, *file;
    int line;
};

static struct sym *mksym(uintptr_t key, uintptr_t off, struct rawf *f, int n)
{
    struct sym *s = malloc(sizeof *s + (size_t)n * sizeof s->f[0]);
    if (s == NULL)
        return NULL;
    s->key = key;
    s->off = off;
    s->n = n;
    for (int i = 0; i < n; i++) {
        const char *file = NULL;
        char buf[1024];
        if (f[i].file != NULL) {
            normpath(NULL, f[i].file, buf, sizeof buf);
            file = intern(buf);
        }
        s->f[i].func = intern(f[i].func ? f[i].func : "??");
        s->f[i].hidden = runtimeframe(s->f[i].func, file);
        s->f[i].file = file != NULL && parsable(file) ? file : NULL;
        s->f[i].line = s->f[i].file ? f[i].line : 0;
    }
    return s;
}

#if WEFT_HAVE_LIBDW

static Dwfl *dwfl;
static char *debugpath;

/* No network from a dump: separate debug files only from the disk, by
 * build id (/usr/lib/debug/.build-id, where Debian's -dbgsym packages put
 * them). Not dwfl_standard_find_debuginfo: for a library with no local
 * debug file it starts a debuginfod client (whatever DEBUGINFOD_URLS
 * says), which opens a socketpair for the life of the process. */
static int finddebug(Dwfl_Module *mod, void **ud, const char *name,
                     Dwarf_Addr base, const char *file, const char *dlink,
                     GElf_Word crc, char **dname)
{
    return dwfl_build_id_find_debuginfo(mod, ud, name, base, file, dlink,
                                        crc, dname);
}

static const Dwfl_Callbacks callbacks = {
    .find_elf = dwfl_linux_proc_find_elf,
    .find_debuginfo = finddebug,
    .debuginfo_path = &debugpath,
};

static bool report(void)
{
    if (dwfl == NULL && (dwfl = dwfl_begin(&callbacks)) == NULL)
        return false;
    dwfl_report_begin(dwfl);
    int r = dwfl_linux_proc_report(dwfl, getpid());
    dwfl_report_end(dwfl, NULL, NULL);
    return r == 0;
}

static const char *diename(Dwarf_Die *d)
{
    Dwarf_Attribute a;
    const char *s = dwarf_formstring(
        dwarf_attr_integrate(d, DW_AT_linkage_name, &a));
    if (s == NULL)
        s = dwarf_formstring(dwarf_attr_integrate(d, DW_AT_name, &a));
    return s;
}

/* inlined - the inline chain at pc (scopes from the CU): f[0] is the
 * innermost function; returns how many, 0 if DWARF has no say. */
static int inlined(Dwfl_Module *mod, Dwarf_Addr pc, struct rawf *f)
{
    Dwarf_Addr bias = 0;
    Dwarf_Die *cu = dwfl_module_addrdie(mod, pc, &bias);
    if (cu == NULL)
        return 0;
    /* dwarf_getscopes stops at the innermost inlined call; the DIE
     * nesting above it (dwarf_getscopes_die) holds its callers. */
    Dwarf_Die *scopes = NULL, *chain = NULL;
    int ns = dwarf_getscopes(cu, pc - bias, &scopes);
    int first = 0;
    while (first < ns && dwarf_tag(&scopes[first]) != DW_TAG_subprogram &&
           dwarf_tag(&scopes[first]) != DW_TAG_inlined_subroutine)
        first++;
    if (first < ns &&
        dwarf_tag(&scopes[first]) == DW_TAG_inlined_subroutine) {
        int nc = dwarf_getscopes_die(&scopes[first], &chain);
        if (nc > 0) {
            free(scopes);
            scopes = chain;
            ns = nc;
        }
    }
    if (ns <= 0) {
        free(scopes);
        return 0;
    }
    Dwarf_Files *files = NULL;
    size_t nfiles = 0;
    dwarf_getsrcfiles(cu, &files, &nfiles);
    const char *compdir = dwarf_formstring(
        dwarf_attr(cu, DW_AT_comp_dir, &(Dwarf_Attribute){0}));
    static char pathbuf[MAXINL][1024];
    int n = 0;
    for (int i = 0; i < ns && n < MAXINL; i++) {
        int tag = dwarf_tag(&scopes[i]);
        if (tag != DW_TAG_inlined_subroutine && tag != DW_TAG_subprogram)
            continue;
        f[n].func = diename(&scopes[i]);
        /* f[n].file/line are where f[n] stands: for n 0 the line table
         * (filled by the caller), else the call site recorded in the
         * inlined scope below it. */
        n++;
        if (tag == DW_TAG_subprogram)
            break;
        Dwarf_Attribute a;
        Dwarf_Word fidx = 0, line = 0;
        if (n < MAXINL && files != NULL &&
            dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_file, &a),
                            &fidx) == 0 &&
            dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_line, &a),
                            &line) == 0) {
            const char *src = dwarf_filesrc(files, fidx, NULL, NULL);
            if (src != NULL) {
                normpath(compdir, src, pathbuf[n], sizeof pathbuf[n]);
                f[n].file = pathbuf[n];
            } else {
                f[n].file = NULL;
            }
            f[n].line = (int)line;
        } else if (n < MAXINL) {
            f[n].file = NULL;
            f[n].line = 0;
        }
    }
    free(scopes);
    return n;
}

static struct sym *resolve(uintptr_t pc, bool exact)
{
    static bool reported;
    uintptr_t look = exact ? pc : pc - 1; /* a return address: the call */
    Dwfl_Module *mod = NULL;
    if (dwfl != NULL)
        mod = dwfl_addrmodule(dwfl, look);
    if (mod == NULL && !reported) {
        reported = true; /* once per process for a miss: a dlopen */
        if (report())
            mod = dwfl_addrmodule(dwfl, look);
    }
    struct rawf f[MAXINL];
    int n = 0;
    uintptr_t off = 0;
    const char *elfname = NULL;
    if (mod != NULL) {
        GElf_Sym es;
        GElf_Off eoff = 0;
        elfname = dwfl_module_addrinfo(mod, look, &eoff, &es, NULL, NULL,
                                       NULL);
        if (elfname != NULL)
            off = pc - (look - eoff);
        n = inlined(mod, look, f);
        Dwfl_Line *l = dwfl_module_getsrc(mod, look);
        int line = 0;
        const char *file = l ? dwfl_lineinfo(l, NULL, &line, NULL, NULL,
                                             NULL)
                             : NULL;
        char buf[1024];
        if (file != NULL) {
            const char *cd = NULL;
            if (file[0] != '/')
                cd = dwfl_line_comp_dir(l);
            normpath(cd, file, buf, sizeof buf);
            file = buf;
        }
        if (n == 0) {
            f[0].func = elfname;
            n = 1;
        } else if (f[n - 1].func == NULL) {
            f[n - 1].func = elfname;
        }
        f[0].file = file;
        f[0].line = line;
        /* GCC may describe a function's body as itself inlined into
         * itself (a clone, one level of recursion): one frame, at the
         * line the pc is on, says it. */
        while (n >= 2 && f[n - 1].func != NULL && f[n - 2].func != NULL &&
               strcmp(f[n - 1].func, f[n - 2].func) == 0)
            n--;
        return mksym(pc << 1 | exact, off, f, n);
    }
    f[0] = (struct rawf){NULL, NULL, 0};
    return mksym(pc << 1 | exact, 0, f, 1);
}

#else /* no libdw: names from the dynamic symbol table only */

#include <dlfcn.h>

static struct sym *resolve(uintptr_t pc, bool exact)
{
    Dl_info di;
    struct rawf f = {NULL, NULL, 0};
    uintptr_t off = 0;
    if (dladdr((void *)(exact ? pc : pc - 1), &di) != 0 &&
        di.dli_sname != NULL) {
        f.func = di.dli_sname;
        off = pc - (uintptr_t)di.dli_saddr;
    }
    return mksym(pc << 1 | exact, off, &f, 1);
}

#endif

/* lookup - resolve pc, not cached yet, into a new block. libdw opens
 * files here that it keeps (leaktest.c must not call them leaks); a miss
 * costs DWARF work anyway. */
static struct sym *lookup(uintptr_t pc, bool exact)
{
    weft__selffd_begin();
#if WEFT_HAVE_LIBDW
    static bool first = true;
    if (first) {
        first = false;
        report();
    }
#endif
    struct sym *s = resolve(pc, exact);
    weft__selffd_end();
    return s;
}

/* weft__symbolize_peek - as weft__symbolize, but a pc not cached yet is
 * resolved into a block the caller frees (*owned) instead of joining the
 * cache, which never shrinks: for pcs that come from outside the process
 * (the debug server's symbol endpoint), where anyone could grow it. */
const struct sym *weft__symbolize_peek(uintptr_t pc, bool exact, bool *owned)
{
    const struct sym *s = cacheget(pc << 1 | exact);
    *owned = s == NULL;
    return s != NULL ? s : lookup(pc, exact);
}

const struct sym *weft__symbolize(uintptr_t pc, bool exact)
{
    struct sym *s = cacheget(pc << 1 | exact);
    if (s != NULL)
        return s;
    s = lookup(pc, exact);
    if (s != NULL && !cacheput(s)) {
        free(s);
        return NULL;
    }
    return s;
}
