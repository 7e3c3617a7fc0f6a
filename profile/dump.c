/*
 * dump.c - what the runtime prints when it dies: fatal signals (with
 * stack overflows named as such), weft__throw, and the list of every G.
 *
 * This is the minimal version that the scheduler core needs; the traceback
 * module adds unwound stacks, SIGQUIT dumps and WEFTTRACEBACK levels.
 *
 * Everything here may run in a signal handler on a sigaltstack, so it
 * writes with write(2) through a fixed buffer, takes no lock and does not
 * allocate. It reads the G registry racily: tables are never freed while the
 * runtime runs (proc.c allgadd).
 *
 * Fatal signals not caused by weft (a fault on a thread that is not an M,
 * or any fault while a previous handler was installed, like a
 * sanitizer's) are passed to the previous handler; a guard-page hit is
 * always reported by weft, since only weft knows it is a stack overflow.
 * While the runtime runs, SIGPIPE is ignored unless the program set its
 * own disposition, so fd calls report -EPIPE instead.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "runtime.h"

#define SIGSTACK_SIZE (64 * 1024)

/* ------------------------------------------------ signal-safe printing */

struct out {
    int fd;
    size_t n;
    char buf[512];
};

static void flush(struct out *o)
{
    size_t off = 0;
    while (off < o->n) {
        ssize_t w = write(o->fd, o->buf + off, o->n - off);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    o->n = 0;
}

static void puts_(struct out *o, const char *s)
{
    while (*s) {
        if (o->n == sizeof o->buf)
            flush(o);
        o->buf[o->n++] = *s++;
    }
}

static void putu(struct out *o, uint64_t v, unsigned base)
{
    char tmp[24];
    int i = 0;
    do {
        tmp[i++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    if (base == 16)
        puts_(o, "0x");
    char s[25];
    int j = 0;
    while (i)
        s[j++] = tmp[--i];
    s[j] = '\0';
    puts_(o, s);
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

/* Dumps read G fields that their owners write without a lock, on
 * purpose (a dump must not wait for a stuck M); tell TSan. */
#define RACY __attribute__((no_sanitize("thread")))

/* printg - one G, in the shape of Go's goroutine header. */
static RACY void printg(struct out *o, struct g *gp, int64_t now)
{
    uint32_t st = LOAD(&gp->status);
    if (st == G_DEAD || st == G_IDLE)
        return;
    puts_(o, "goroutine ");
    puti(o, gp->id);
    puts_(o, " [");
    if (st == G_WAITING && gp->waitreason != WR_ZERO)
        puts_(o, weft__waitreason_string(gp->waitreason));
    else
        puts_(o, weft__gstatus_string(st));
    if ((st == G_WAITING || st == G_SYSCALL) && gp->waitsince != 0) {
        int64_t min = (now - gp->waitsince) / 60000000000LL;
        if (min >= 1) {
            puts_(o, ", ");
            puti(o, min);
            puts_(o, " minutes");
        }
    }
    puts_(o, "]:\n");
    if (gp->name != NULL && gp->name[0] != '\0') {
        puts_(o, "\tname: ");
        puts_(o, gp->name);
        puts_(o, "\n");
    }
    if (gp->id != 1) {
        puts_(o, "created by ");
        putu(o, gp->spawnpc, 16);
        puts_(o, " in goroutine ");
        puti(o, gp->parentid);
        puts_(o, "\n");
    }
    puts_(o, "\n");
}

/* weft__print_gs - every live G, the current one first. */
RACY void weft__print_gs(int fd)
{
    struct out o = {.fd = fd};
    struct m *mp = weft__getm();
    struct g *cur = mp ? mp->curg : NULL;
    int64_t now = weft__nanotime();
    if (cur != NULL)
        printg(&o, cur, now);
    size_t n = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    for (size_t i = 0; chunks != NULL && i < n; i++) {
        struct g *gp = weft__allg(chunks, i);
        if (gp != cur)
            printg(&o, gp, now);
    }
    flush(&o);
}

_Noreturn void weft__throw(const char *msg)
{
    struct out o = {.fd = 2};
    puts_(&o, "fatal error: ");
    puts_(&o, msg);
    puts_(&o, "\n\n");
    flush(&o);
    weft__print_gs(2);
    signal(SIGABRT, SIG_DFL);
    abort();
}

/* weft__fatal_deadlock - Go's report when no G can ever run again. */
_Noreturn void weft__fatal_deadlock(void)
{
    struct out o = {.fd = 2};
    puts_(&o, "fatal error: all goroutines are asleep - deadlock!\n\n");
    flush(&o);
    weft__print_gs(2);
    _exit(2);
}

/* --------------------------------------------------------------- signals */

static const int fatalsigs[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
#define NFATAL (sizeof fatalsigs / sizeof fatalsigs[0])
static struct sigaction oldact[NFATAL];
static bool installed;

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
    }
    return "signal";
}

static RACY void sighandler(int sig, siginfo_t *info, void *uctx)
{
    struct m *mp = weft__getm();
    struct g *gp = mp ? mp->curg : NULL;
    uintptr_t addr = (uintptr_t)info->si_addr;
    size_t idx = 0;
    while (idx < NFATAL && fatalsigs[idx] != sig)
        idx++;

    if (gp != NULL && (sig == SIGSEGV || sig == SIGBUS) &&
        weft__stack_guard_hit(&gp->stk, addr)) {
        struct out o = {.fd = 2};
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
        weft__print_gs(2);
        _exit(2);
    }

    /* Not a weft stack overflow: defer to whoever handled it before. */
    struct sigaction *old = idx < NFATAL ? &oldact[idx] : NULL;
    if (mp == NULL ||
        (old != NULL && old->sa_handler != SIG_DFL &&
         old->sa_handler != SIG_IGN)) {
        if (old != NULL && (old->sa_flags & SA_SIGINFO) &&
            old->sa_sigaction != NULL) {
            old->sa_sigaction(sig, info, uctx);
            return;
        }
        if (old != NULL && old->sa_handler != SIG_DFL &&
            old->sa_handler != SIG_IGN) {
            old->sa_handler(sig);
            return;
        }
        signal(sig, SIG_DFL);
        return; /* the fault repeats with the default action */
    }

    struct out o = {.fd = 2};
    puts_(&o, "fatal error: unexpected signal\n[signal ");
    puts_(&o, signame(sig));
    puts_(&o, " code=");
    putu(&o, (uint64_t)(uint32_t)info->si_code, 16);
    puts_(&o, " addr=");
    putu(&o, addr, 16);
    puts_(&o, "]\n\n");
    flush(&o);
    weft__print_gs(2);
    _exit(2);
}

static struct sigaction oldpipe;
static bool pipeset;

void weft__signals_install(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = sighandler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigfillset(&sa.sa_mask);
    for (size_t i = 0; i < NFATAL; i++)
        sigaction(fatalsigs[i], &sa, &oldact[i]);
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
    installed = true;
}

void weft__signals_restore(void)
{
    if (!installed)
        return;
    for (size_t i = 0; i < NFATAL; i++)
        sigaction(fatalsigs[i], &oldact[i], NULL);
    if (pipeset)
        sigaction(SIGPIPE, &oldpipe, NULL);
    pipeset = false;
    installed = false;
}

int weft__sigstack_init(struct m *mp)
{
    mp->sigstacksize = SIGSTACK_SIZE;
    mp->sigstack = malloc(SIGSTACK_SIZE);
    return mp->sigstack ? 0 : WEFT_ENOMEM;
}

void weft__sigstack_fini(struct m *mp)
{
    free(mp->sigstack);
    mp->sigstack = NULL;
}

WEFT_EXTERN int weft_dump(int fd, int level)
{
    if (level < WEFT_DUMP_SINGLE || level > WEFT_DUMP_SYSTEM)
        return WEFT_EINVAL;
    if (!weft__runtime_on())
        return WEFT_ENORUNTIME;
    weft__print_gs(fd);
    return 0;
}
