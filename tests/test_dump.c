/*
 * test_dump.c - tests of weft's tracebacks (profile/dump.c, traceback.c):
 * weft_dump in-process, and the fatal-signal, stack-overflow, SIGQUIT and
 * WEFTTRACEBACK reports of a subprocess (dumpprog.c).
 *
 * In-process (each test its own weft_main; a dump goes to a memfd and is
 * read back and parsed):
 *  - one coroutine parked in each wait reason weft can reach through its
 *    API, each in a function of its own: header, wait reason, that
 *    function at the file:line of its blocking call, the public weft call
 *    above it, "created by F in goroutine N"; weft's own frames hidden at
 *    WEFT_DUMP_ALL and shown with fp=/sp=/pc= at WEFT_DUMP_SYSTEM;
 *  - WEFT_DUMP_SINGLE, bad levels, bad fds, no runtime, a plain thread;
 *  - coroutines running on other Ms (with and without weft_checkpoint in
 *    their loop) shown [running] with their frames, and one blocked in a
 *    raw read() inside weft_syscall_enter/exit shown [syscall];
 *  - 100,000 parked coroutines (20,000 under sanitizers): each listed
 *    exactly once; the first and the second dump are timed (printed,
 *    not asserted);
 *  - dumps from a coroutine and from a plain thread, 20 each, while
 *    coroutines ping-pong on channels and spawn and exit: no hang, no
 *    crash, no id twice in a dump, every parked-for-good coroutine in
 *    every dump;
 *  - every dump is checked line by line against the shape panicparse
 *    parses (go-formats.md section 3), with POSIX regexes, and one is fed
 *    to the real panicparse, which must group identical stacks.
 *
 * Subprocess (dumpprog, path from $DUMPPROG or next to this binary): a
 * segfault ("fatal error: unexpected signal", the [signal ...] line, the
 * faulting coroutine's trace, exit 2; a sanitizer may report it first),
 * a stack overflow, the five WEFTTRACEBACK levels on a fault (SIGILL from
 * __builtin_trap, which no sanitizer takes over), and SIGQUIT: the
 * preamble, every coroutine, the register dump, exit 2; with
 * WEFTDEBUG=sigquitdump=continue the process runs on (and dumps again).
 *
 * Under TSan a signal reaches a thread only at an intercepted call, so a
 * pure C spinner's M may not answer a freeze: there, and only there, its
 * "stack unavailable" is accepted.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <regex.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weft_test.h"
#include "runtime.h"


/* A function a dump must name: not inlined, not cloned (a clone would
 * print as name.constprop.0). */
#define NAMED __attribute__((noinline, noclone))

#define THIS_FILE "/tests/test_dump.c"

/* ----------------------------------------------------- capturing a dump */

/* dump_to_string - weft_dump(level) into a memfd, returned as a malloc'd
 * NUL-terminated string; *rc gets weft_dump's result, *ns (if not NULL)
 * how long weft_dump took. Any thread. */
static NAMED char *dump_timed(int level, int *rc, int64_t *ns)
{
    int fd = memfd_create("weft-dump", MFD_CLOEXEC);
    if (fd < 0)
        FAIL("memfd_create: %s", strerror(errno));
    int64_t t0 = weft_now();
    *rc = weft_dump(fd, level);
    if (ns != NULL)
        *ns = weft_now() - t0;
    off_t n = lseek(fd, 0, SEEK_END);
    char *s = malloc((size_t)n + 1);
    ASSERT(s != NULL);
    size_t got = 0;
    while (got < (size_t)n) {
        ssize_t r = pread(fd, s + got, (size_t)n - got, (off_t)got);
        if (r <= 0)
            FAIL("pread: %s", r < 0 ? strerror(errno) : "EOF");
        got += (size_t)r;
    }
    s[n] = '\0';
    close(fd);
    return s;
}

static NAMED char *dump_to_string(int level, int *rc)
{
    return dump_timed(level, rc, NULL);
}

/* dump_ok - dump_to_string that must succeed. */
static char *dump_ok(int level)
{
    int rc = 0;
    char *s = dump_to_string(level, &rc);
    if (rc != 0)
        FAIL("weft_dump(level %d) returned %d (%s); output:\n%s", level, rc,
             weft_err_name(rc), s);
    return s;
}

/* ------------------------------------------------------ parsing a dump */

/* One goroutine of a dump: its header's id and bracket text, and its
 * lines up to the blank line (a copy, NUL-terminated). */
struct gd {
    int64_t id;
    char state[128];
    char *body;
};

struct doc {
    int n;
    struct gd *g;
};

static bool is_header(const char *line, size_t len, int64_t *id,
                      char *state, size_t cap)
{
    static const char pre[] = "goroutine ";
    if (len < sizeof pre + 3 || strncmp(line, pre, sizeof pre - 1) != 0 ||
        line[len - 1] != ':' || line[len - 2] != ']')
        return false;
    char *end;
    long long v = strtoll(line + sizeof pre - 1, &end, 10);
    if (end == line + sizeof pre - 1 || end[0] != ' ' || end[1] != '[')
        return false;
    const char *st = end + 2;
    size_t sl = (size_t)(line + len - 2 - st);
    if (sl >= cap)
        sl = cap - 1;
    memcpy(state, st, sl);
    state[sl] = '\0';
    *id = v;
    return true;
}

/* parse - the goroutines of text[0..len) (lines before the first header
 * and after the last goroutine are ignored). */
static struct doc parse(const char *text, size_t len)
{
    struct doc d = {0, NULL};
    int cap = 0;
    const char *p = text, *end = text + len;
    struct gd *cur = NULL;
    const char *bstart = NULL;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t ll = nl ? (size_t)(nl - p) : (size_t)(end - p);
        int64_t id;
        char st[128];
        if (cur == NULL && is_header(p, ll, &id, st, sizeof st)) {
            if (d.n == cap) {
                cap = cap ? 2 * cap : 64;
                d.g = realloc(d.g, (size_t)cap * sizeof *d.g);
                ASSERT(d.g != NULL);
            }
            cur = &d.g[d.n++];
            cur->id = id;
            snprintf(cur->state, sizeof cur->state, "%s", st);
            cur->body = NULL;
            bstart = nl ? nl + 1 : end;
        } else if (cur != NULL && ll == 0) {
            size_t bl = (size_t)(p - bstart);
            cur->body = malloc(bl + 1);
            ASSERT(cur->body != NULL);
            memcpy(cur->body, bstart, bl);
            cur->body[bl] = '\0';
            cur = NULL;
        }
        p = nl ? nl + 1 : end;
    }
    if (cur != NULL) { /* cut short: keep what there is */
        size_t bl = (size_t)(end - bstart);
        cur->body = malloc(bl + 1);
        ASSERT(cur->body != NULL);
        memcpy(cur->body, bstart, bl);
        cur->body[bl] = '\0';
    }
    return d;
}

static void doc_free(struct doc *d)
{
    for (int i = 0; i < d->n; i++)
        free(d->g[i].body);
    free(d->g);
    d->g = NULL;
    d->n = 0;
}

/* doc_count - how many goroutines of d have id. */
static int doc_count(const struct doc *d, int64_t id)
{
    int k = 0;
    for (int i = 0; i < d->n; i++)
        k += d->g[i].id == id;
    return k;
}

/* doc_find - the goroutine with id (fails if it is there more than
 * once), or NULL. */
static const struct gd *doc_find(const struct doc *d, int64_t id)
{
    const struct gd *r = NULL;
    for (int i = 0; i < d->n; i++) {
        if (d->g[i].id != id)
            continue;
        if (r != NULL)
            FAIL("goroutine %lld is listed twice", (long long)id);
        r = &d->g[i];
    }
    return r;
}

/* One frame of a goroutine: the function line and the file line under it
 * (the frames, then "created by" as one more with creator set). */
struct frame {
    char func[128];
    char file[512];
    int line;
    bool fpsppc;
    bool creator;
    int64_t parent;
};

#define MAXFRAMES 256

/* scopy - src into dst[cap], cut to fit. */
static void scopy(char *dst, size_t cap, const char *src)
{
    size_t n = strlen(src);
    if (n >= cap)
        n = cap - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

/* frames - the frames of g into f (at most MAXFRAMES); returns how many. */
static int frames(const struct gd *g, struct frame *f)
{
    int n = 0;
    const char *p = g->body;
    while (*p && n < MAXFRAMES) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        const char *next = nl ? nl + 1 : p + ll;
        if (ll == 0 || p[0] == '\t' || p[0] == '.') {
            p = next;
            continue;
        }
        struct frame *fr = &f[n];
        memset(fr, 0, sizeof *fr);
        char line[1024];
        snprintf(line, sizeof line, "%.*s", (int)ll, p);
        if (strncmp(line, "created by ", 11) == 0) {
            fr->creator = true;
            char *in = strstr(line, " in goroutine ");
            if (in != NULL) {
                fr->parent = strtoll(in + 14, NULL, 10);
                *in = '\0';
            }
            scopy(fr->func, sizeof fr->func, line + 11);
        } else {
            char *paren = strchr(line, '(');
            if (paren != NULL)
                *paren = '\0';
            scopy(fr->func, sizeof fr->func, line);
        }
        /* The file line. */
        if (*next == '\t') {
            const char *fl = next + 1;
            const char *fe = strchr(fl, '\n');
            size_t fll = fe ? (size_t)(fe - fl) : strlen(fl);
            char fline[1024];
            snprintf(fline, sizeof fline, "%.*s", (int)fll, fl);
            fr->fpsppc = strstr(fline, " fp=0x") != NULL;
            char *sp = strchr(fline, ' ');
            if (sp != NULL)
                *sp = '\0';
            char *colon = strrchr(fline, ':');
            if (colon != NULL) {
                *colon = '\0';
                fr->line = atoi(colon + 1);
            }
            scopy(fr->file, sizeof fr->file, fline);
            next = fe ? fe + 1 : fl + fll;
        }
        n++;
        p = next;
    }
    return n;
}

/* frame_index - the index of the first frame (not the creator) named
 * func, or -1. */
static int frame_index(const struct frame *f, int n, const char *func)
{
    for (int i = 0; i < n; i++)
        if (!f[i].creator && strcmp(f[i].func, func) == 0)
            return i;
    return -1;
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

/* ------------------------------------------------------ shape (regexes) */

/* What panicparse's line state machine accepts (go-formats.md 3), with
 * weft's `name(...)` argument list: any name (C, or the C++ of a
 * sanitizer's runtime) not starting with white space; a name with a '/'
 * must have a '.' after the last one (name_ok). */
#define RE_HEADER "^goroutine [0-9]+ \\[[^]]+\\]:$"
#define RE_FUNC "^[^\t ].*\\(\\.\\.\\.\\)$"
#define RE_FILE                                                              \
    "^\t(\\?\\?|.+\\.(c|s)):[0-9]+( \\+0x[0-9a-f]+)?"                       \
    "( fp=0x[0-9a-f]+ sp=0x[0-9a-f]+ pc=0x[0-9a-f]+)?$"
#define RE_CREATED "^created by [^\t ].* in goroutine [0-9]+$"
#define RE_OTHER "^\tgoroutine running on other thread; stack unavailable$"
#define RE_ELIDED "^\\.\\.\\.additional frames elided\\.\\.\\.$"

enum { R_HEADER, R_FUNC, R_FILE, R_CREATED, R_OTHER, R_ELIDED, R_N };
static regex_t res[R_N];

static void compile_res_once(void)
{
    const char *src[R_N] = {RE_HEADER, RE_FUNC,  RE_FILE,
                            RE_CREATED, RE_OTHER, RE_ELIDED};
    for (int i = 0; i < R_N; i++) {
        int r = regcomp(&res[i], src[i], REG_EXTENDED | REG_NOSUB);
        if (r != 0) {
            char e[256];
            regerror(r, &res[i], e, sizeof e);
            FAIL("regcomp(%s): %s", src[i], e);
        }
    }
}

/* compile_res - the regexes, compiled once (dumps are checked from
 * several threads at once). */
static void compile_res(void)
{
    static pthread_once_t once_res = PTHREAD_ONCE_INIT;
    pthread_once(&once_res, compile_res_once);
}

static bool rematch(int which, const char *line)
{
    return regexec(&res[which], line, 0, NULL, 0) == 0;
}

/* name_ok - panicparse's Func.Init: a function name holding a '/' must
 * have a '.' after the last one ("bad function reference"). line is a
 * function line or a creator line. */
static bool name_ok(const char *line)
{
    const char *name = strncmp(line, "created by ", 11) == 0 ? line + 11
                                                             : line;
    const char *end = strchr(name, '(');
    if (strncmp(line, "created by ", 11) == 0)
        end = strstr(name, " in goroutine ");
    const char *slash = NULL;
    for (const char *p = name; p < end; p++)
        if (*p == '/')
            slash = p;
    return slash == NULL || memchr(slash, '.', (size_t)(end - slash));
}

/* check_shape - text[0..len) must be goroutines only, each a header, a
 * function or "running on other thread" line, function lines each with
 * a TAB file line, an optional creator with its file line, and one blank
 * line after it. system: frames carry fp=/sp=/pc= (at least one must);
 * else none may. Returns the number of goroutines; fails with the line. */
static int check_shape(const char *text, size_t len, bool system)
{
    compile_res();
    enum { S_TOP, S_HDR, S_FUNC, S_FILE, S_ELIDED, S_CREATED, S_CFILE,
           S_OTHER } s = S_TOP;
    static const char *const sname[] = {
        "a header (or the end)", "a function or 'running on other thread'",
        "a file line", "a function, 'created by', elision or a blank line",
        "'created by' or a blank line", "the creator's file line",
        "a blank line", "'created by' or a blank line"};
    int n = 0, fps = 0, lineno = 0;
    const char *p = text, *end = text + len;
    char line[2048];
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            FAIL("dump line %d does not end with a newline: \"%.*s\"",
                 lineno + 1, (int)(end - p), p);
        size_t ll = (size_t)(nl - p);
        snprintf(line, sizeof line, "%.*s", (int)ll, p);
        lineno++;
        p = nl + 1;
        bool ok = false;
        bool blank = ll == 0;
        switch (s) {
        case S_TOP:
            if ((ok = rematch(R_HEADER, line)))
                s = S_HDR, n++;
            break;
        case S_HDR:
            if ((ok = rematch(R_FUNC, line)))
                s = S_FUNC;
            else if ((ok = rematch(R_OTHER, line)))
                s = S_OTHER;
            break;
        case S_FUNC:
        case S_CREATED:
            if ((ok = rematch(R_FILE, line))) {
                bool fp = strstr(line, " fp=0x") != NULL;
                if (s == S_CREATED && fp)
                    FAIL("dump line %d: fp= on a creator's line: %s",
                         lineno, line);
                if (fp && !system)
                    FAIL("dump line %d: fp=/sp=/pc= below "
                         "WEFT_DUMP_SYSTEM: %s", lineno, line);
                fps += fp;
                s = s == S_FUNC ? S_FILE : S_CFILE;
            }
            break;
        case S_FILE:
            if ((ok = rematch(R_FUNC, line)))
                s = S_FUNC;
            else if ((ok = rematch(R_CREATED, line)))
                s = S_CREATED;
            else if ((ok = rematch(R_ELIDED, line)))
                s = S_ELIDED;
            else if ((ok = blank))
                s = S_TOP;
            break;
        case S_ELIDED:
        case S_OTHER:
            if ((ok = rematch(R_CREATED, line)))
                s = S_CREATED;
            else if ((ok = blank))
                s = S_TOP;
            break;
        case S_CFILE:
            if ((ok = blank))
                s = S_TOP;
            break;
        }
        if (!ok)
            FAIL("dump line %d: expected %s, got \"%s\"", lineno, sname[s],
                 line);
        if ((s == S_FUNC || s == S_CREATED) && !name_ok(line))
            FAIL("dump line %d: panicparse rejects the name (a '/' with no "
                 "'.' after it): \"%s\"", lineno, line);
    }
    if (s != S_TOP)
        FAIL("the dump ends inside a goroutine (expected %s)", sname[s]);
    if (system && n > 0 && fps == 0)
        FAIL("WEFT_DUMP_SYSTEM printed no fp=/sp=/pc=");
    return n;
}

/* ------------------------------------------------------ white-box peeks */

/* g_status - the status of coroutine id, or -1 if it is not live. */
static int g_status(int64_t id)
{
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    size_t n = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
    for (size_t i = 0; i < n; i++) {
        struct g *gp = weft__allg(chunks, i);
        if (gp->id == id) {
            int st = (int)atomic_load(&gp->status);
            return st == G_DEAD ? -1 : st;
        }
    }
    return -1;
}

/* live_count - coroutines that are not dead (what a dump lists). */
static int live_count(void)
{
    struct g **chunks = __atomic_load_n(&weft__allgchunks, __ATOMIC_ACQUIRE);
    size_t n = __atomic_load_n(&weft__allglen, __ATOMIC_ACQUIRE);
    int k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t st = atomic_load(&weft__allg(chunks, i)->status);
        k += st != G_DEAD && st != G_IDLE;
    }
    return k;
}

static void wait_status(int64_t id, int status)
{
    int64_t end = weft_now() + (int64_t)(5000 * MS * slow());
    while (g_status(id) != status) {
        if (weft_now() > end)
            FAIL("coroutine %lld never reached status %d (it is %d)",
                 (long long)id, status, g_status(id));
        weft_sleep(50 * US);
    }
}

/* ------------------------------------------------ one per wait reason */

/*
 * Each parker parks for good in a function of its own, at a line it
 * records (BLOCK keeps the call on the macro's line). Go's "chan receive
 * (nil chan)" and "chan send (nil chan)" have no weft counterpart: a NULL
 * channel gets WEFT_EINVAL at once (weft.h), which nil_chan_is_einval
 * checks instead. WR_PREEMPTED is only ever set on a runnable G, whose
 * header says "runnable".
 */
struct parker {
    const char *func;  /* the function it parks in */
    const char *state; /* the header's bracket text */
    const char *api;   /* the frame right above func */
    const char *below; /* the frame right below func, or NULL: func is the
                        * coroutine's first user frame */
    int reason;
    weft_fn fn;
    int64_t id;
    _Atomic int line;  /* the line of the blocking call */
    int r;
};

#define BLOCK(pk, call)                                                      \
    do {                                                                     \
        atomic_store(&(pk)->line, __LINE__);                                 \
        (pk)->r = (int)(call);                                               \
    } while (0)

static weft_chan_t *ch_recv, *ch_send, *ch_full, *ch_sel1, *ch_sel2,
    *ch_once;
static int sv_read[2], sv_wait[2], lfd = -1;
static weft_mutex_t mu = WEFT_MUTEX_INIT, cmu = WEFT_MUTEX_INIT;
static weft_rwmutex_t rw_rheld = WEFT_RWMUTEX_INIT,
                      rw_wheld = WEFT_RWMUTEX_INIT;
static weft_cond_t cv = WEFT_COND_INIT;
static weft_waitgroup_t wg = WEFT_WAITGROUP_INIT;
static weft_sem_t sem = WEFT_SEM_INIT(0);
static weft_once_t once = WEFT_ONCE_INIT;

static NAMED void park_chan_recv(void *arg)
{
    struct parker *pk = arg;
    int v;
    BLOCK(pk, weft_chan_recv(ch_recv, &v));
}

static NAMED void park_chan_send(void *arg)
{
    struct parker *pk = arg;
    int v = 1;
    BLOCK(pk, weft_chan_send(ch_send, &v));
}

static NAMED void park_chan_send_full(void *arg)
{
    struct parker *pk = arg;
    int v = 2;
    BLOCK(pk, weft_chan_send(ch_full, &v));
}

static NAMED void park_select(void *arg)
{
    struct parker *pk = arg;
    int a, b;
    weft_select_case_t c[2] = {{ch_sel1, WEFT_RECV, &a, 0},
                               {ch_sel2, WEFT_RECV, &b, 0}};
    BLOCK(pk, weft_select(c, 2));
}

static NAMED void park_select_nil(void *arg)
{
    struct parker *pk = arg;
    int a;
    weft_select_case_t c[2] = {{NULL, WEFT_RECV, &a, 0},
                               {NULL, WEFT_SEND, &a, 0}};
    BLOCK(pk, weft_select(c, 2));
}

static NAMED void park_select_none(void *arg)
{
    struct parker *pk = arg;
    BLOCK(pk, weft_select(NULL, 0));
}

static NAMED void park_sleep_forever(void *arg)
{
    struct parker *pk = arg;
    BLOCK(pk, weft_sleep_until(WEFT_FOREVER));
}

static NAMED void park_sleep_hour(void *arg)
{
    struct parker *pk = arg;
    BLOCK(pk, weft_sleep(3600 * 1000 * MS));
}

static NAMED void park_read(void *arg)
{
    struct parker *pk = arg;
    char b;
    BLOCK(pk, weft_read(sv_read[0], &b, 1));
}

static NAMED void park_accept(void *arg)
{
    struct parker *pk = arg;
    int fd;
    BLOCK(pk, fd = weft_accept(lfd, NULL, NULL));
    if (fd >= 0)
        weft_close(fd);
}

static NAMED void park_fd_wait(void *arg)
{
    struct parker *pk = arg;
    BLOCK(pk, weft_fd_wait(sv_wait[0], WEFT_READ, WEFT_FOREVER));
}

static NAMED void park_mutex(void *arg)
{
    struct parker *pk = arg;
    BLOCK(pk, weft_mutex_lock(&mu));
}

static NAMED void park_rwmutex_lock(void *arg)
{
    struct parker *pk = arg;
    BLOCK(pk, weft_rwmutex_lock(&rw_rheld));
}

static NAMED void park_rwmutex_rlock(void *arg)
{
    struct parker *pk = arg;
    BLOCK(pk, weft_rwmutex_rlock(&rw_wheld));
}

static NAMED void park_cond(void *arg)
{
    struct parker *pk = arg;
    EXPECT_OK(weft_mutex_lock(&cmu));
    BLOCK(pk, weft_cond_wait(&cv, &cmu));
}

static NAMED void park_waitgroup(void *arg)
{
    struct parker *pk = arg;
    BLOCK(pk, weft_waitgroup_wait(&wg));
}

static NAMED void park_sem(void *arg)
{
    struct parker *pk = arg;
    BLOCK(pk, weft_sem_acquire(&sem));
}

/* The once: the first caller runs once_body, which parks on a channel;
 * the second waits for it (Go 1.20+: sync.Mutex.Lock). */
static NAMED void once_body(void *arg)
{
    struct parker *pk = arg;
    int v;
    BLOCK(pk, weft_chan_recv(ch_once, &v));
}

static NAMED void park_once_runner(void *arg)
{
    weft_once_do(&once, once_body, arg);
}

static NAMED void park_once_waiter(void *arg)
{
    struct parker *pk = arg;
    BLOCK(pk, weft_once_do(&once, once_body, NULL));
}

#define P(fn, state, api, below, reason)                                     \
    {#fn, state, api, below, reason, fn, 0, 0, 0}
static struct parker parkers[] = {
    P(park_chan_recv, "chan receive", "weft_chan_recv", NULL,
      WR_CHAN_RECEIVE),
    P(park_chan_send, "chan send", "weft_chan_send", NULL, WR_CHAN_SEND),
    P(park_chan_send_full, "chan send", "weft_chan_send", NULL,
      WR_CHAN_SEND),
    P(park_select, "select", "weft_select", NULL, WR_SELECT),
    P(park_select_nil, "select", "weft_select", NULL, WR_SELECT),
    P(park_select_none, "select (no cases)", "weft_select", NULL,
      WR_SELECT_NO_CASES),
    P(park_sleep_forever, "sleep", "weft_sleep_until", NULL, WR_SLEEP),
    P(park_sleep_hour, "sleep", "weft_sleep", NULL, WR_SLEEP),
    P(park_read, "IO wait", "weft_read", NULL, WR_IO_WAIT),
    P(park_accept, "IO wait", "weft_accept", NULL, WR_IO_WAIT),
    P(park_fd_wait, "IO wait", "weft_fd_wait", NULL, WR_IO_WAIT),
    P(park_mutex, "sync.Mutex.Lock", "weft_mutex_lock", NULL,
      WR_SYNC_MUTEX_LOCK),
    P(park_rwmutex_lock, "sync.RWMutex.Lock", "weft_rwmutex_lock", NULL,
      WR_SYNC_RWMUTEX_LOCK),
    P(park_rwmutex_rlock, "sync.RWMutex.RLock", "weft_rwmutex_rlock", NULL,
      WR_SYNC_RWMUTEX_RLOCK),
    P(park_cond, "sync.Cond.Wait", "weft_cond_wait", NULL,
      WR_SYNC_COND_WAIT),
    P(park_waitgroup, "sync.WaitGroup.Wait", "weft_waitgroup_wait", NULL,
      WR_SYNC_WAITGROUP_WAIT),
    P(park_sem, "semacquire", "weft_sem_acquire", NULL, WR_SEMACQUIRE),
    /* Runs once_body: the frames read once_body, weft_once_do,
     * park_once_runner. */
    {"once_body", "chan receive", "weft_chan_recv", "weft_once_do",
     WR_CHAN_RECEIVE, park_once_runner, 0, 0, 0},
    P(park_once_waiter, "sync.Mutex.Lock", "weft_once_do", NULL,
      WR_SYNC_MUTEX_LOCK),
};
#undef P
#define NPARKERS ((int)(sizeof parkers / sizeof parkers[0]))

static _Atomic int spawn_line;

/* spawn_parkers - start every parker and wait until each is parked with
 * its reason. The "created by" of each names this function. */
static NAMED void spawn_parkers(void)
{
    for (int i = 0; i < NPARKERS; i++) {
        struct parker *pk = &parkers[i];
        atomic_store(&spawn_line, __LINE__ + 1);
        pk->id = weft_go(pk->fn, pk);
        ASSERT_GT(pk->id, 0);
        wait_parked(pk->id, pk->reason, 1);
    }
}

static void setup_parkers(void)
{
    int one = 1;
    EXPECT_OK(weft_chan_new(&ch_recv, sizeof(int), 0));
    EXPECT_OK(weft_chan_new(&ch_send, sizeof(int), 0));
    EXPECT_OK(weft_chan_new(&ch_full, sizeof(int), 1));
    EXPECT_OK(weft_chan_trysend(ch_full, &one));
    EXPECT_OK(weft_chan_new(&ch_sel1, sizeof(int), 0));
    EXPECT_OK(weft_chan_new(&ch_sel2, sizeof(int), 0));
    EXPECT_OK(weft_chan_new(&ch_once, sizeof(int), 0));
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv_read),
              0);
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv_wait),
              0);
    lfd = weft_listen("tcp4", "127.0.0.1:0", 0);
    EXPECT_OK(lfd);
    EXPECT_OK(weft_mutex_lock(&mu));
    EXPECT_OK(weft_rwmutex_rlock(&rw_rheld));
    EXPECT_OK(weft_rwmutex_lock(&rw_wheld));
    EXPECT_OK(weft_waitgroup_add(&wg, 1));
    spawn_parkers();
}

/* teardown_parkers - wake the IO parkers (weft_close: WEFT_ECLOSED) so
 * no fd outlives the test; the others are abandoned by shutdown. */
static void teardown_parkers(void)
{
    for (int i = 0; i < 2; i++) {
        weft_close(sv_read[i]);
        weft_close(sv_wait[i]);
    }
    weft_close(lfd);
}

/* check_parker - pk's goroutine in d, dumped at WEFT_DUMP_ALL (system
 * false) or WEFT_DUMP_SYSTEM. */
static void check_parker(const struct doc *d, const struct parker *pk,
                         int64_t mainid, bool system)
{
    const struct gd *g = doc_find(d, pk->id);
    if (g == NULL)
        FAIL("%s: goroutine %lld is not in the dump", pk->func,
             (long long)pk->id);
    /* An IO wait names its fd: [IO wait, fd N]. */
    char want[64];
    int fd = pk->fn == park_read     ? sv_read[0]
             : pk->fn == park_accept ? lfd
             : pk->fn == park_fd_wait ? sv_wait[0]
                                      : -1;
    snprintf(want, sizeof want, "%s", pk->state);
    if (fd >= 0)
        snprintf(want, sizeof want, "%s, fd %d", pk->state, fd);
    if (strcmp(g->state, want) != 0)
        FAIL("%s: goroutine %lld [%s], expected [%s]", pk->func,
             (long long)pk->id, g->state, want);
    static struct frame f[MAXFRAMES];
    int n = frames(g, f);
    int i = frame_index(f, n, pk->func);
    if (i < 0)
        FAIL("%s: goroutine %lld has no frame %s:\n%s", pk->func,
             (long long)pk->id, pk->func, g->body);
    if (f[i].file[0] != '/' || !ends_with(f[i].file, THIS_FILE) ||
        f[i].line != atomic_load(&pk->line))
        FAIL("%s: frame at %s:%d, expected ...%s:%d:\n%s", pk->func,
             f[i].file, f[i].line, THIS_FILE, atomic_load(&pk->line),
             g->body);
    /* The public call it waits in, as Go shows time.Sleep. */
    if (system) {
        int a = frame_index(f, n, pk->api);
        if (a < 0 || a >= i)
            FAIL("%s: no %s frame above it:\n%s", pk->func, pk->api,
                 g->body);
    } else if (i == 0 || strcmp(f[i - 1].func, pk->api) != 0) {
        FAIL("%s: the frame above it is not %s:\n%s", pk->func, pk->api,
             g->body);
    }
    int last = i; /* the last user frame */
    if (pk->below != NULL) {
        if (i + 1 >= n || strcmp(f[i + 1].func, pk->below) != 0)
            FAIL("%s: the frame below it is not %s:\n%s", pk->func,
                 pk->below, g->body);
        last = frame_index(f, n, "park_once_runner");
        if (last <= i + 1)
            FAIL("%s: no park_once_runner below %s:\n%s", pk->func,
                 pk->below, g->body);
    }
    /* created by spawn_parkers in goroutine <main>, at the weft_go. */
    const struct frame *c = &f[n - 1];
    if (!c->creator || strcmp(c->func, "spawn_parkers") != 0 ||
        c->parent != mainid || !ends_with(c->file, THIS_FILE) ||
        c->line != atomic_load(&spawn_line))
        FAIL("%s: expected \"created by spawn_parkers in goroutine %lld\" "
             "at ...%s:%d:\n%s",
             pk->func, (long long)mainid, THIS_FILE,
             atomic_load(&spawn_line), g->body);
    for (int k = 0; k < n - 1; k++) {
        bool runtime = strncmp(f[k].func, "weft__", 6) == 0 ||
                       strcmp(f[k].func, "gentry") == 0;
        if (!system && runtime)
            FAIL("%s: WEFT_DUMP_ALL shows runtime frame %s:\n%s", pk->func,
                 f[k].func, g->body);
    }
    if (!system) {
        /* Nothing between the first user frame and the creator. */
        if (last != n - 2)
            FAIL("%s: frames below %s at WEFT_DUMP_ALL:\n%s", pk->func,
                 f[last].func, g->body);
        return;
    }
    /* System: the switch on top, gentry and weft__ctx_start below the
     * user frames, every real frame with fp/sp/pc (the parker's own at
     * least: it is never inlined). */
    if (strncmp(f[0].func, "weft__", 6) != 0)
        FAIL("%s: the top frame is not weft's switch:\n%s", pk->func,
             g->body);
    int ge = frame_index(f, n, "gentry");
    if (ge <= last || strcmp(f[n - 2].func, "weft__ctx_start") != 0)
        FAIL("%s: expected gentry then weft__ctx_start below the user "
             "frames:\n%s", pk->func, g->body);
    if (!f[i].fpsppc || !f[ge].fpsppc || !f[n - 2].fpsppc)
        FAIL("%s: frames without fp=/sp=/pc= at WEFT_DUMP_SYSTEM:\n%s",
             pk->func, g->body);
}

/* check_caller - the first goroutine of d is the caller, running, with
 * weft_dump and then dump_timed on top. */
static void check_caller(const struct doc *d, int64_t self, bool system)
{
    ASSERT_GT(d->n, 0);
    const struct gd *g = &d->g[0];
    if (g->id != self || strcmp(g->state, "running") != 0)
        FAIL("the first goroutine is %lld [%s], expected the caller %lld "
             "[running]", (long long)g->id, g->state, (long long)self);
    static struct frame f[MAXFRAMES];
    int n = frames(g, f);
    int w = frame_index(f, n, "weft_dump");
    int s = frame_index(f, n, "dump_timed");
    if (w < 0 || s != w + 1 || (!system && w != 0))
        FAIL("the caller's frames do not start with weft_dump, "
             "dump_timed:\n%s", g->body);
}

static int reasons_main(void *arg)
{
    int64_t self = weft_self();
    setup_parkers();

    char *all = dump_ok(WEFT_DUMP_ALL);
    char *sys = dump_ok(WEFT_DUMP_SYSTEM);
    char *one = dump_ok(WEFT_DUMP_SINGLE);
    printf("--- WEFT_DUMP_ALL:\n%s--- WEFT_DUMP_SYSTEM:\n%s"
           "--- WEFT_DUMP_SINGLE:\n%s---\n", all, sys, one);

    struct doc da = parse(all, strlen(all));
    struct doc ds = parse(sys, strlen(sys));
    struct doc d1 = parse(one, strlen(one));
    ASSERT_EQ(check_shape(all, strlen(all), false), da.n);
    ASSERT_EQ(check_shape(sys, strlen(sys), true), ds.n);
    ASSERT_EQ(check_shape(one, strlen(one), false), 1);

    /* Every live coroutine once: main and the parkers. */
    ASSERT_EQ(da.n, 1 + NPARKERS);
    ASSERT_EQ(ds.n, 1 + NPARKERS);
    check_caller(&da, self, false);
    check_caller(&ds, self, true);
    check_caller(&d1, self, false);
    for (int i = 0; i < NPARKERS; i++) {
        check_parker(&da, &parkers[i], self, false);
        check_parker(&ds, &parkers[i], self, true);
    }
    doc_free(&da);
    doc_free(&ds);
    doc_free(&d1);
    free(all);
    free(sys);
    free(one);
    teardown_parkers();
    return 0;
}

TEST(dump_wait_reasons)
{
    /* The body parks coroutines for good, for the dump to show; the
     * runtime's end reclaims them. Fds are still gated. */
    gate_opts = &gate_fds_only;
    run(2, reasons_main, NULL);
}

/* Go parks forever on a nil channel; weft has no nil channel to park on
 * (weft.h: NULL gets WEFT_EINVAL), hence no "(nil chan)" reasons. */
static int nilchan_main(void *arg)
{
    int v = 0;
    EXPECT_ERR(weft_chan_recv(NULL, &v), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_send(NULL, &v), WEFT_EINVAL);
    return 0;
}

TEST(nil_chan_is_einval)
{
    run(1, nilchan_main, NULL);
}

/* ------------------------------------------------- levels, bad input */

static void *plain_dump_single(void *arg)
{
    int *rc = arg;
    char *s = dump_to_string(WEFT_DUMP_SINGLE, rc);
    /* No coroutine calls: nothing to print. */
    if (s[0] != '\0')
        FAIL("WEFT_DUMP_SINGLE from a plain thread printed:\n%s", s);
    free(s);
    return NULL;
}

struct plainall {
    int rc;
    char *s;
};

static void *plain_dump_all(void *arg)
{
    struct plainall *pa = arg;
    pa->s = dump_to_string(WEFT_DUMP_ALL, &pa->rc);
    return NULL;
}

/* join_thread - pthread_join(*(pthread_t *)arg), for weft_blocking. */
static intptr_t join_thread(void *arg)
{
    return pthread_join(*(pthread_t *)arg, NULL);
}

static NAMED void sleeper_forever(void *arg)
{
    weft_sleep_until(WEFT_FOREVER);
}

static int levels_main(void *arg)
{
    int64_t self = weft_self();
    int64_t kid = weft_go(sleeper_forever, NULL);
    ASSERT_GT(kid, 0);
    wait_parked(kid, WR_SLEEP, 1);

    /* Bad levels: nothing written. */
    int fd = memfd_create("lvl", MFD_CLOEXEC);
    ASSERT_GE(fd, 0);
    const int bad[] = {0, -1, 4, 100, INT32_MIN, INT32_MAX};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        EXPECT_ERR(weft_dump(fd, bad[i]), WEFT_EINVAL);
    ASSERT_EQ(lseek(fd, 0, SEEK_END), 0);
    close(fd);

    /* Bad fds: an error, no crash, and the next dump works (the dump
     * lock and the freeze were released). */
    EXPECT_ERR(weft_dump(-1, WEFT_DUMP_ALL), WEFT_EBADF);
    EXPECT_ERR(weft_dump(-5, WEFT_DUMP_SINGLE), WEFT_EBADF);
    int closed = dup(0);
    ASSERT_GE(closed, 0);
    close(closed);
    EXPECT_ERR(weft_dump(closed, WEFT_DUMP_ALL), WEFT_EBADF);
    EXPECT_ERR(weft_dump(closed, WEFT_DUMP_SYSTEM), WEFT_EBADF);
    int pfd[2];
    ASSERT_EQ(pipe2(pfd, O_CLOEXEC), 0);
    /* The read end cannot be written. */
    EXPECT_ERR(weft_dump(pfd[0], WEFT_DUMP_ALL), WEFT_EBADF);
    /* No reader: -EPIPE, not a SIGPIPE death (the runtime ignores it). */
    close(pfd[0]);
    EXPECT_ERR(weft_dump(pfd[1], WEFT_DUMP_ALL), -EPIPE);
    close(pfd[1]);

    /* SINGLE from a coroutine: the caller only. */
    char *one = dump_ok(WEFT_DUMP_SINGLE);
    struct doc d1 = parse(one, strlen(one));
    ASSERT_EQ(check_shape(one, strlen(one), false), 1);
    ASSERT_EQ(d1.n, 1);
    check_caller(&d1, self, false);
    ASSERT_EQ(doc_count(&d1, kid), 0);
    doc_free(&d1);
    free(one);

    /* ALL still works after the failures. */
    char *all = dump_ok(WEFT_DUMP_ALL);
    struct doc da = parse(all, strlen(all));
    ASSERT_EQ(check_shape(all, strlen(all), false), 2);
    ASSERT_EQ(doc_count(&da, self), 1);
    ASSERT_EQ(doc_count(&da, kid), 1);
    doc_free(&da);
    free(all);

    /* From a plain thread: SINGLE prints nothing, ALL every coroutine
     * (no caller to put first), including main, which is running (it
     * waits in pthread_join inside weft_blocking: [syscall]). */
    pthread_t t;
    int rc = 1;
    ASSERT_EQ(pthread_create(&t, NULL, plain_dump_single, &rc), 0);
    ASSERT_EQ(weft_blocking(join_thread, &t), 0);
    EXPECT_OK(rc);
    struct plainall pa = {1, NULL};
    ASSERT_EQ(pthread_create(&t, NULL, plain_dump_all, &pa), 0);
    ASSERT_EQ(weft_blocking(join_thread, &t), 0);
    EXPECT_OK(pa.rc);
    printf("--- WEFT_DUMP_ALL from a plain thread:\n%s---\n", pa.s);
    da = parse(pa.s, strlen(pa.s));
    ASSERT_EQ(check_shape(pa.s, strlen(pa.s), false), 2);
    ASSERT_EQ(doc_count(&da, self), 1);
    ASSERT_EQ(doc_count(&da, kid), 1);
    const struct gd *k = doc_find(&da, kid);
    ASSERT_STR_EQ(k->state, "sleep");
    static struct frame f[MAXFRAMES];
    int n = frames(k, f);
    ASSERT_GE(frame_index(f, n, "sleeper_forever"), 0);
    doc_free(&da);
    free(pa.s);
    return 0;
}

TEST(dump_levels_and_bad_input)
{
    /* The body parks coroutines for good, for the dump to show; the
     * runtime's end reclaims them. Fds are still gated. */
    gate_opts = &gate_fds_only;
    run(2, levels_main, NULL);
    /* No runtime: nothing to dump. */
    EXPECT_ERR(weft_dump(1, WEFT_DUMP_ALL), WEFT_ENORUNTIME);
    EXPECT_ERR(weft_dump(1, WEFT_DUMP_SINGLE), WEFT_ENORUNTIME);
    EXPECT_ERR(weft_dump(1, WEFT_DUMP_SYSTEM), WEFT_ENORUNTIME);
    /* A bad level is reported first, runtime or not. */
    EXPECT_ERR(weft_dump(1, 0), WEFT_EINVAL);
}

/* ------------------------------------------- running on other Ms */

static _Atomic int spin_stop, spin_in_pure, spin_in_ckpt;
static _Atomic uint64_t spin_sink;

/* spin_pure - a plain C loop: no weft call, no checkpoint. */
static NAMED void spin_pure(void *arg)
{
    atomic_store(&spin_in_pure, 1);
    uint64_t x = 0;
    while (!atomic_load_explicit(&spin_stop, memory_order_relaxed))
        x = x * 6364136223846793005ull + 1442695040888963407ull;
    atomic_store(&spin_sink, x);
}

/* spin_checkpoint - the loop a well-behaved CPU-bound coroutine runs. */
static NAMED void spin_checkpoint(void *arg)
{
    atomic_store(&spin_in_ckpt, 1);
    uint64_t x = 0;
    while (!atomic_load_explicit(&spin_stop, memory_order_relaxed)) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        weft_checkpoint();
    }
    atomic_store(&spin_sink, x);
}

static int sys_pipe[2];
static _Atomic int sys_done;

/* block_in_syscall - a raw blocking read() inside
 * weft_syscall_enter/exit; the pipe's writer is the test, later. */
static NAMED void block_in_syscall(void *arg)
{
    char c;
    EXPECT_OK(weft_syscall_enter());
    ssize_t r = read(sys_pipe[0], &c, 1);
    EXPECT_OK(weft_syscall_exit());
    ASSERT_EQ(r, 1);
    atomic_store(&sys_done, 1);
}

/* check_running - goroutine id is [want] (or one of "a|b") with func
 * among its frames.
 * Under TSan only, a running G's stack may be missing or wrong: TSan
 * holds an async signal until its thread reaches an intercepted call, so
 * the M of a pure C loop, or of a raw read() (TSan's read interceptor
 * does not count as blocking), may never answer the freeze ("stack
 * unavailable"), and one that answers does so from inside TSan's runtime
 * with the context of when the signal came, which its stack has since
 * left: the unwind stops in TSan or libc frames. */
static bool state_is(const char *state, const char *want)
{
    size_t n = strlen(state);
    for (const char *w = want; w != NULL;
         w = strchr(w, '|') ? strchr(w, '|') + 1 : NULL)
        if (strncmp(w, state, n) == 0 && (w[n] == '\0' || w[n] == '|'))
            return true;
    return false;
}

static void check_running(const struct doc *d, int64_t id, const char *want,
                          const char *func, const char *file,
                          bool tsan_may_miss)
{
    const struct gd *g = doc_find(d, id);
    if (g == NULL)
        FAIL("%s: goroutine %lld is not in the dump", func, (long long)id);
    if (!state_is(g->state, want))
        FAIL("%s: goroutine %lld [%s], expected [%s]:\n%s", func,
             (long long)id, g->state, want, g->body);
    static struct frame f[MAXFRAMES];
    int n = frames(g, f);
    int i = frame_index(f, n, func);
    if (i >= 0 && ends_with(f[i].file, file))
        return;
    if (tsan_may_miss && TSAN) {
        printf("# TSan: %s's stack is not there:\n%s", func, g->body);
        return;
    }
    FAIL("%s: goroutine %lld [%s] has no frame %s in %s:\n%s", func,
         (long long)id, g->state, func, file, g->body);
}

static int running_main(void *arg)
{
    int64_t self = weft_self();
    ASSERT_EQ(pipe2(sys_pipe, O_CLOEXEC), 0);
    int64_t pure = weft_go(spin_pure, NULL);
    int64_t ckpt = weft_go(spin_checkpoint, NULL);
    int64_t sys = weft_go(block_in_syscall, NULL);
    ASSERT_GT(pure, 0);
    ASSERT_GT(ckpt, 0);
    ASSERT_GT(sys, 0);
    while (!atomic_load(&spin_in_pure) || !atomic_load(&spin_in_ckpt))
        weft_sleep(100 * US);
    wait_status(sys, G_SYSCALL);
    /* Let sysmon take the syscall's P and flag the spinners: the states
     * a dump meets in a real program. */
    weft_sleep(30 * MS);
    for (int level = WEFT_DUMP_ALL; level <= WEFT_DUMP_SYSTEM; level++) {
        for (int rep = 0; rep < 3; rep++) {
            char *s = dump_ok(level);
            if (rep == 0)
                printf("--- level %d:\n%s---\n", level, s);
            struct doc d = parse(s, strlen(s));
            ASSERT_EQ(check_shape(s, strlen(s), level == WEFT_DUMP_SYSTEM),
                      d.n);
            ASSERT_EQ(d.n, 4);
            check_caller(&d, self, level == WEFT_DUMP_SYSTEM);
            check_running(&d, pure, "running", "spin_pure", THIS_FILE,
                          true);
            /* Honouring sysmon's 10 ms preemption, it is runnable for
             * the instant between leaving its M and running again. */
            check_running(&d, ckpt, "running|runnable", "spin_checkpoint",
                          THIS_FILE, true);
            check_running(&d, sys, "syscall", "block_in_syscall", THIS_FILE,
                          true);
            if (level == WEFT_DUMP_SYSTEM) {
                /* The syscall's frames go down to read() itself. */
                const struct gd *g = doc_find(&d, sys);
                static struct frame f[MAXFRAMES];
                int n = frames(g, f);
                int b = frame_index(f, n, "block_in_syscall");
                if (b < 1 && !(TSAN && strstr(g->body, "unavailable")))
                    FAIL("no frame above block_in_syscall:\n%s", g->body);
            }
            doc_free(&d);
            free(s);
        }
    }
    atomic_store(&spin_stop, 1);
    char c = 'x';
    ASSERT_EQ(write(sys_pipe[1], &c, 1), 1);
    while (!atomic_load(&sys_done))
        weft_sleep(100 * US);
    close(sys_pipe[0]);
    close(sys_pipe[1]);
    return 0;
}

TEST(dump_running_and_syscall)
{
    run(4, running_main, NULL);
}

/* ----------------------------------------------------- 100k coroutines */

static weft_chan_t *big_ch;

static NAMED void big_parked(void *arg)
{
    int v;
    weft_chan_recv(big_ch, &v);
}

/* doc_ids - the header ids of d, sorted; fails on a duplicate. */
static int64_t *doc_ids(const struct doc *d)
{
    int64_t *ids = malloc(((size_t)d->n + 1) * sizeof *ids);
    ASSERT(ids != NULL);
    for (int i = 0; i < d->n; i++)
        ids[i] = d->g[i].id;
    qsort(ids, (size_t)d->n, sizeof *ids, cmp_i64);
    for (int i = 1; i < d->n; i++)
        if (ids[i] == ids[i - 1])
            FAIL("goroutine %lld is listed twice in one dump",
                 (long long)ids[i]);
    return ids;
}

static bool has_id(const int64_t *sorted, int n, int64_t id)
{
    return bsearch(&id, sorted, (size_t)n, sizeof id, cmp_i64) != NULL;
}

static int big_main(void *arg)
{
    int n = (int)(intptr_t)arg;
    int64_t self = weft_self();
    int64_t *ids = malloc((size_t)n * sizeof *ids);
    ASSERT(ids != NULL);
    EXPECT_OK(weft_chan_new(&big_ch, sizeof(int), 0));
    int64_t t0 = weft_now();
    for (int i = 0; i < n; i++) {
        ids[i] = weft_go(big_parked, NULL);
        ASSERT_GT(ids[i], 0);
    }
    wait_parked(0, WR_CHAN_RECEIVE, n);
    printf("spawned and parked %d coroutines in %.1f ms\n", n,
           (double)(weft_now() - t0) / 1e6);
    ASSERT_EQ(live_count(), n + 1);

    const int levels[] = {WEFT_DUMP_ALL, WEFT_DUMP_ALL, WEFT_DUMP_SYSTEM};
    const char *what[] = {"first", "second", "system"};
    for (int k = 0; k < 3; k++) {
        int rc;
        int64_t ns;
        char *s = dump_timed(levels[k], &rc, &ns);
        EXPECT_OK(rc);
        size_t len = strlen(s);
        printf("%s dump (level %d) of %d coroutines: %.1f ms, %zu bytes\n",
               what[k], levels[k], n + 1, (double)ns / 1e6, len);
        struct doc d = parse(s, len);
        ASSERT_EQ(check_shape(s, len, levels[k] == WEFT_DUMP_SYSTEM), d.n);
        /* Every live coroutine exactly once: main and the n. */
        ASSERT_EQ(d.n, n + 1);
        int64_t *got = doc_ids(&d);
        ASSERT(has_id(got, d.n, self));
        for (int i = 0; i < n; i++)
            if (!has_id(got, d.n, ids[i]))
                FAIL("%s dump: coroutine %lld (spawn %d) is missing",
                     what[k], (long long)ids[i], i);
        for (int i = 0; i < d.n; i++) {
            if (d.g[i].id == self)
                continue;
            if (strcmp(d.g[i].state, "chan receive") != 0 ||
                strstr(d.g[i].body, "\nbig_parked(...)\n") == NULL)
                FAIL("%s dump: goroutine %lld [%s]:\n%s", what[k],
                     (long long)d.g[i].id, d.g[i].state, d.g[i].body);
        }
        free(got);
        doc_free(&d);
        free(s);
    }
    free(ids);
    return 0; /* shutdown abandons the parked n */
}

TEST_TIMEOUT(dump_100k, 180)
{
    /* The body parks coroutines for good, for the dump to show; the
     * runtime's end reclaims them. Fds are still gated. */
    gate_opts = &gate_fds_only;
    /* Sanitizers multiply each G's cost: 20,000 under ASan still needs
     * the registry's many chunks and the cache's growth. Under TSan each
     * G is a TSan fiber, which counts against its limit of 8128 threads
     * ("Thread limit exceeded. Dying."): 7,000 there. */
    int n = TSAN ? 7000 : SANITIZED ? 20000 : 100000;
    run(2, big_main, (void *)(intptr_t)n);
}

/* ------------------------------------------------------- busy runtime */

#define BUSY_PAIRS 8
#define BUSY_PARKED 16
#define BUSY_DUMPS 20

static _Atomic int busy_stop;
static _Atomic int64_t busy_spawned, busy_pingpongs, busy_unavail;
static weft_chan_t *busy_never;
static int64_t busy_parked_ids[BUSY_PARKED];
static weft_waitgroup_t busy_wg = WEFT_WAITGROUP_INIT;
static weft_waitgroup_t dumper_wg = WEFT_WAITGROUP_INIT;

static NAMED void parked_for_good(void *arg)
{
    int v;
    weft_chan_recv(busy_never, &v);
}

struct pair {
    weft_chan_t *ping, *pong;
};

static NAMED void ponger(void *arg)
{
    struct pair *p = arg;
    int v;
    while (weft_chan_recv(p->ping, &v) == 0)
        if (weft_chan_send(p->pong, &v) != 0)
            break;
}

static NAMED void pinger(void *arg)
{
    struct pair *p = arg;
    for (int v = 0; !atomic_load(&busy_stop); v++) {
        EXPECT_OK(weft_chan_send(p->ping, &v));
        int w;
        EXPECT_OK(weft_chan_recv(p->pong, &w));
        ASSERT_EQ(w, v);
        atomic_fetch_add(&busy_pingpongs, 1);
        /* A pair handing its P back and forth through runnext shares
         * one time slice (Go's inheritTime), so the spawner queued
         * behind it would run only at sysmon's 10 ms preemptions: yield
         * now and then, for a busier mix. */
        if (v % 64 == 63)
            weft_yield();
    }
    weft_chan_close(p->ping);
    weft_waitgroup_done(&busy_wg);
}

static NAMED void shortlived(void *arg)
{
    uintptr_t k = (uintptr_t)arg;
    if (k % 3 == 0)
        weft_yield();
    else if (k % 3 == 1)
        weft_sleep((int64_t)(k % 50) * US);
}

static NAMED void spawner(void *arg)
{
    for (uintptr_t k = 0; !atomic_load(&busy_stop); k++) {
        if (weft_go(shortlived, (void *)k) > 0)
            atomic_fetch_add(&busy_spawned, 1);
        if (k % 256 == 255)
            weft_sleep(50 * US);
        else
            weft_yield();
    }
    weft_waitgroup_done(&busy_wg);
}

/* check_busy_dump - one dump taken while the runtime is busy: the
 * shape, no id twice, the parked-for-good coroutines exactly once. */
static void check_busy_dump(const char *who, int i, int level)
{
    int rc;
    char *s = dump_to_string(level, &rc);
    if (rc != 0)
        FAIL("%s dump %d: weft_dump returned %d (%s)", who, i, rc,
             weft_err_name(rc));
    size_t len = strlen(s);
    struct doc d = parse(s, len);
    ASSERT_EQ(check_shape(s, len, level == WEFT_DUMP_SYSTEM), d.n);
    int64_t *ids = doc_ids(&d);
    for (int k = 0; k < BUSY_PARKED; k++) {
        const struct gd *g = doc_find(&d, busy_parked_ids[k]);
        if (g == NULL)
            FAIL("%s dump %d: parked coroutine %lld is missing", who, i,
                 (long long)busy_parked_ids[k]);
        if (strcmp(g->state, "chan receive") != 0 ||
            strstr(g->body, "parked_for_good(...)\n") == NULL)
            FAIL("%s dump %d: goroutine %lld [%s]:\n%s", who, i,
                 (long long)g->id, g->state, g->body);
    }
    int64_t un = 0;
    for (const char *p = s; (p = strstr(p, "stack unavailable")); p++)
        un++;
    atomic_fetch_add(&busy_unavail, un);
    free(ids);
    doc_free(&d);
    free(s);
}

static NAMED void dumper_coroutine(void *arg)
{
    for (int i = 0; i < BUSY_DUMPS; i++)
        check_busy_dump("coroutine", i,
                        i % 2 ? WEFT_DUMP_SYSTEM : WEFT_DUMP_ALL);
    weft_waitgroup_done(&dumper_wg);
}

static void *dumper_thread(void *arg)
{
    for (int i = 0; i < BUSY_DUMPS; i++)
        check_busy_dump("thread", i,
                        i % 2 ? WEFT_DUMP_ALL : WEFT_DUMP_SYSTEM);
    return NULL;
}

static int busy_main(void *arg)
{
    EXPECT_OK(weft_chan_new(&busy_never, sizeof(int), 0));
    for (int k = 0; k < BUSY_PARKED; k++) {
        busy_parked_ids[k] = weft_go(parked_for_good, NULL);
        ASSERT_GT(busy_parked_ids[k], 0);
    }
    wait_parked(0, WR_CHAN_RECEIVE, BUSY_PARKED);
    static struct pair pairs[BUSY_PAIRS];
    EXPECT_OK(weft_waitgroup_add(&busy_wg, BUSY_PAIRS + 1));
    EXPECT_OK(weft_waitgroup_add(&dumper_wg, 1));
    for (int k = 0; k < BUSY_PAIRS; k++) {
        EXPECT_OK(weft_chan_new(&pairs[k].ping, sizeof(int), 0));
        EXPECT_OK(weft_chan_new(&pairs[k].pong, sizeof(int), 0));
        ASSERT_GT(weft_go(ponger, &pairs[k]), 0);
        ASSERT_GT(weft_go(pinger, &pairs[k]), 0);
    }
    ASSERT_GT(weft_go(spawner, NULL), 0);
    weft_sleep(20 * MS); /* busy before the first dump */

    int64_t t0 = weft_now();
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, dumper_thread, NULL), 0);
    ASSERT_GT(weft_go(dumper_coroutine, NULL), 0);
    ASSERT_EQ(weft_blocking(join_thread, &t), 0);
    EXPECT_OK(weft_waitgroup_wait(&dumper_wg));
    atomic_store(&busy_stop, 1);
    EXPECT_OK(weft_waitgroup_wait(&busy_wg));
    printf("%d + %d dumps in %.1f ms while %lld ping-pongs and %lld "
           "spawns ran; %lld \"stack unavailable\" lines\n",
           BUSY_DUMPS, BUSY_DUMPS, (double)(weft_now() - t0) / 1e6,
           (long long)atomic_load(&busy_pingpongs),
           (long long)atomic_load(&busy_spawned),
           (long long)atomic_load(&busy_unavail));
    ASSERT_GT(atomic_load(&busy_pingpongs), 0);
    ASSERT_GT(atomic_load(&busy_spawned), 0);
    for (int k = 0; k < BUSY_PAIRS; k++) {
        weft_chan_free(pairs[k].ping);
        weft_chan_free(pairs[k].pong);
    }
    return 0;
}

TEST_TIMEOUT(dump_busy_runtime, 120)
{
    /* The body parks coroutines for good, for the dump to show; the
     * runtime's end reclaims them. Fds are still gated. */
    gate_opts = &gate_fds_only;
    run(4, busy_main, NULL);
}

/* ------------------------------------------------- panicparse, in-process */

#define GROUPED 6

static char *pp_all, *pp_sys;

static NAMED void grouped_waiter(void *arg)
{
    int v;
    weft_chan_recv(ch_recv, &v);
}

static int panicparse_main(void *arg)
{
    EXPECT_OK(weft_chan_new(&ch_recv, sizeof(int), 0));
    for (int i = 0; i < GROUPED; i++)
        ASSERT_GT(weft_go(grouped_waiter, NULL), 0);
    ASSERT_GT(weft_go(sleeper_forever, NULL), 0);
    wait_parked(0, WR_CHAN_RECEIVE, GROUPED);
    wait_parked(0, WR_SLEEP, 1);
    pp_all = dump_ok(WEFT_DUMP_ALL);
    pp_sys = dump_ok(WEFT_DUMP_SYSTEM);
    return 0;
}

/* group_sum - the sum of panicparse's "N: state ..." group counts in
 * out; *maxn gets the largest N and *maxline that line. */
static int group_sum(const char *out, int *maxn, char *maxline, size_t cap)
{
    int sum = 0;
    *maxn = 0;
    for (const char *p = out; *p;) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        char *end;
        long n = strtol(p, &end, 10);
        if (end != p && p[0] >= '0' && p[0] <= '9' && end[0] == ':' &&
            end[1] == ' ') {
            sum += (int)n;
            if (n > *maxn) {
                *maxn = (int)n;
                snprintf(maxline, cap, "%.*s", (int)ll, p);
            }
        }
        p = nl ? nl + 1 : p + ll;
    }
    return sum;
}

static char pp_out[256 * 1024], pp_err[64 * 1024];

/* panicparse - run the real panicparse on text (from a file); returns
 * its stdout in pp_out. Fails if it is missing or does not exit 0. */
static const char *panicparse(const char *text)
{
    char path[] = "/tmp/weft-dump-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    size_t len = strlen(text);
    ASSERT_EQ(write(fd, text, len), (ssize_t)len);
    close(fd);
    const char *const argv[] = {"panicparse", "-no-color", "-parse=false",
                                path, NULL};
    int status = 0;
    int r = harness_run(argv, NULL, pp_out, sizeof pp_out, pp_err,
                        sizeof pp_err, &status);
    unlink(path);
    if (r < 0)
        FAIL("running panicparse: %s", strerror(-r));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        FAIL("panicparse is not installed (Debian package panicparse; "
             "scripts/deps.sh installs it): %s", pp_err);
    char st[96];
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        FAIL("panicparse: %s\nstderr:\n%s\nstdout:\n%s\ninput:\n%s",
             harness_status_str(status, st, sizeof st), pp_err, pp_out,
             text);
    return pp_out;
}

/* check_panicparse - panicparse accounts for every goroutine of text and
 * groups the GROUPED identical waiters: all of them at WEFT_DUMP_ALL; at
 * WEFT_DUMP_SYSTEM weft's own frames may differ between them (a G parked
 * through a direct switch or through g0), so at least two. */
static void check_panicparse(const char *text, const char *what, bool all)
{
    const char *out = panicparse(text);
    printf("--- the %s dump:\n%s--- panicparse of it:\n%s---\n", what,
           text, out);
    struct doc d = parse(text, strlen(text));
    int maxn;
    char maxline[256] = "";
    int sum = group_sum(out, &maxn, maxline, sizeof maxline);
    if (sum != d.n)
        FAIL("%s: panicparse's groups count %d goroutines, the dump has "
             "%d:\n%s", what, sum, d.n, out);
    char want[64];
    snprintf(want, sizeof want, "%d: chan receive", maxn);
    if ((all ? maxn != GROUPED : maxn < 2) ||
        strncmp(maxline, want, strlen(want)) != 0)
        FAIL("%s: expected a group of %s%d \"chan receive\", the largest "
             "is \"%s\":\n%s", what, all ? "" : "at least ",
             all ? GROUPED : 2, maxline, out);
    if (strstr(out, "grouped_waiter(") == NULL)
        FAIL("%s: panicparse does not show grouped_waiter:\n%s", what, out);
    doc_free(&d);
}

TEST(panicparse_groups_identical_stacks)
{
    /* The body parks coroutines for good, for the dump to show; the
     * runtime's end reclaims them. Fds are still gated. */
    gate_opts = &gate_fds_only;
    run(2, panicparse_main, NULL);
    /* 1 main + GROUPED waiters + 1 sleeper, in Go's shape. */
    ASSERT_EQ(check_shape(pp_all, strlen(pp_all), false), GROUPED + 2);
    ASSERT_EQ(check_shape(pp_sys, strlen(pp_sys), true), GROUPED + 2);
    check_panicparse(pp_all, "WEFT_DUMP_ALL", true);
    check_panicparse(pp_sys, "WEFT_DUMP_SYSTEM", false);
    free(pp_all);
    free(pp_sys);
}

/* ============================================== subprocess: dumpprog */

static const char *dumpprog(void)
{
    return harness_sibling("DUMPPROG", "dumpprog");
}

/* A running dumpprog: its stdin to write, its stdout and stderr read
 * into out/err as they come. */
struct child {
    pid_t pid;
    int in, outfd, errfd;
    char out[64 * 1024], err[1024 * 1024];
    size_t olen, elen;
};

static struct child kid;

/* child_start - run `dumpprog scenario` with env (NAME=value entries;
 * a bare NAME unsets it) on top of ours; WEFTTRACEBACK and WEFTDEBUG are
 * unset unless env sets them. */
static void child_start(struct child *c, const char *scenario,
                        const char *const env[])
{
    int pi[2], po[2], pe[2];
    ASSERT_EQ(pipe2(pi, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(po, O_CLOEXEC), 0);
    ASSERT_EQ(pipe2(pe, O_CLOEXEC), 0);
    const char *prog = dumpprog();
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(pi[0], 0);
        dup2(po[1], 1);
        dup2(pe[1], 2);
        unsetenv("WEFTTRACEBACK");
        unsetenv("WEFTDEBUG");
        unsetenv("WEFTMAXPROCS");
        for (size_t i = 0; env != NULL && env[i] != NULL; i++) {
            const char *eq = strchr(env[i], '=');
            if (eq == NULL) {
                unsetenv(env[i]);
                continue;
            }
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)(eq - env[i]), env[i]);
            setenv(name, eq + 1, 1);
        }
        execl(prog, prog, scenario, (char *)NULL);
        dprintf(2, "exec %s: %s\n", prog, strerror(errno));
        _exit(127);
    }
    close(pi[0]);
    close(po[1]);
    close(pe[1]);
    c->pid = pid;
    c->in = pi[1];
    c->outfd = po[0];
    c->errfd = pe[0];
    c->olen = c->elen = 0;
    c->out[0] = c->err[0] = '\0';
}

/* child_pump - read what is there (waiting at most ms); false once both
 * outputs are at EOF. */
static bool child_pump(struct child *c, int ms)
{
    struct pollfd pf[2];
    int n = 0;
    if (c->outfd >= 0)
        pf[n++] = (struct pollfd){.fd = c->outfd, .events = POLLIN};
    if (c->errfd >= 0)
        pf[n++] = (struct pollfd){.fd = c->errfd, .events = POLLIN};
    if (n == 0)
        return false;
    if (poll(pf, (nfds_t)n, ms) <= 0)
        return true;
    for (int i = 0; i < n; i++) {
        if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        bool isout = pf[i].fd == c->outfd;
        char *buf = isout ? c->out : c->err;
        size_t *len = isout ? &c->olen : &c->elen;
        size_t cap = isout ? sizeof c->out : sizeof c->err;
        char tmp[65536];
        ssize_t r = read(pf[i].fd, tmp, sizeof tmp);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) {
            close(pf[i].fd);
            if (isout)
                c->outfd = -1;
            else
                c->errfd = -1;
            continue;
        }
        size_t k = (size_t)r < cap - 1 - *len ? (size_t)r : cap - 1 - *len;
        memcpy(buf + *len, tmp, k);
        *len += k;
        buf[*len] = '\0';
    }
    return true;
}

/* child_await - pump until on (out or err) holds needle count times;
 * fails after secs (times HARNESS_TIMEOUT_SCALE). */
static void child_await(struct child *c, bool inerr, const char *needle,
                        int count, double secs)
{
    double end = harness_mono() + secs * harness_timeout_scale();
    for (;;) {
        int k = 0;
        for (const char *p = inerr ? c->err : c->out;
             (p = strstr(p, needle)) != NULL; p++)
            k++;
        if (k >= count)
            return;
        if (harness_mono() > end || !child_pump(c, 50))
            FAIL("dumpprog: \"%s\" x%d never came on %s\n--- stdout:\n%s"
                 "--- stderr:\n%s---", needle, count,
                 inerr ? "stderr" : "stdout", c->out, c->err);
    }
}

/* child_end - read its outputs to EOF and reap it (SIGKILL after secs
 * times HARNESS_TIMEOUT_SCALE); returns the wait status. Its stdin is closed first if
 * closein, else after it ended (a signalled child must not see EOF on
 * stdin, its cue to exit 0, before the signal's report is out). */
static int child_end(struct child *c, double secs, bool closein)
{
    if (closein && c->in >= 0) {
        close(c->in);
        c->in = -1;
    }
    double end = harness_mono() + secs * harness_timeout_scale();
    bool killed = false;
    while (child_pump(c, 50)) {
        if (!killed && harness_mono() > end) {
            kill(c->pid, SIGKILL);
            killed = true;
        }
    }
    int st = 0;
    while (waitpid(c->pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (c->in >= 0) {
        close(c->in);
        c->in = -1;
    }
    char s[96];
    printf("dumpprog: %s%s\n--- stdout:\n%s--- stderr:\n%s---\n",
           harness_status_str(st, s, sizeof s),
           killed ? " (killed: it did not end in time)" : "", c->out,
           c->err);
    if (killed)
        FAIL("dumpprog did not end within %.0f s",
             secs * harness_timeout_scale());
    return st;
}

/* child_ids - the ids dumpprog announced as "<what> N" on stdout. */
static int child_ids(const struct child *c, const char *what, int64_t *ids,
                     int max)
{
    int n = 0;
    size_t wl = strlen(what);
    for (const char *p = c->out; *p && n < max;) {
        if (strncmp(p, what, wl) == 0 && p[wl] == ' ')
            ids[n++] = strtoll(p + wl + 1, NULL, 10);
        const char *nl = strchr(p, '\n');
        p = nl ? nl + 1 : p + strlen(p);
    }
    return n;
}

/* run_fault - run a fault scenario to its end; returns the status. */
static int run_fault(const char *scenario, const char *const env[])
{
    child_start(&kid, scenario, env);
    return child_end(&kid, 30, true);
}

static void expect_exit2(int st)
{
    char s[96];
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 2)
        FAIL("dumpprog: %s, expected exit status 2",
             harness_status_str(st, s, sizeof s));
}

/* report_goroutines - the goroutines section of a report: from the first
 * header line to the register dump (or the end). */
static const char *report_goroutines(const char *err, size_t *len)
{
    const char *g = NULL;
    for (const char *p = err; *p;) {
        const char *nl = strchr(p, '\n');
        size_t ll = nl ? (size_t)(nl - p) : strlen(p);
        int64_t id;
        char st[128];
        if (is_header(p, ll, &id, st, sizeof st)) {
            g = p;
            break;
        }
        p = nl ? nl + 1 : p + ll;
    }
    if (g == NULL) {
        *len = 0;
        return err + strlen(err);
    }
    const char *r = strstr(g, "\nrax    0x");
    if (r == NULL)
        r = strstr(g, "\nr0     0x"); /* aarch64 */
    *len = r ? (size_t)(r + 1 - g) : strlen(g);
    return g;
}

static bool ere(const char *pattern, const char *text)
{
    regex_t re;
    int r = regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB);
    if (r != 0) {
        char e[256];
        regerror(r, &re, e, sizeof e);
        FAIL("regcomp(%s): %s", pattern, e);
    }
    bool hit = regexec(&re, text, 0, NULL, 0) == 0;
    regfree(&re);
    return hit;
}

/* sanitizer_took_it - in a sanitizer build, whether the sanitizer
 * reported the fault before weft could (as test_crash's nilderef). */
static bool sanitizer_took_it(int st)
{
    if (!SANITIZED || strstr(kid.err, "Sanitizer") == NULL)
        return false;
    ASSERT(!(WIFEXITED(st) && WEXITSTATUS(st) == 0));
    if (strstr(kid.err, "SEGV") == NULL && strstr(kid.err, "signal") == NULL)
        FAIL("the sanitizer's report does not name the fault:\n%s",
             kid.err);
    printf("# the sanitizer reported the fault first; accepted\n");
    return true;
}

TEST(segfault_report)
{
    int st = run_fault("segv", NULL);
    int64_t fid;
    ASSERT_EQ(child_ids(&kid, "faulter", &fid, 1), 1);
    if (sanitizer_took_it(st))
        return;
    expect_exit2(st);
    /* Go's fatalsignal report, then the faulting goroutine only
     * (WEFTTRACEBACK unset: single), innermost frame first. */
    char re[512];
    snprintf(re, sizeof re,
             "^fatal error: unexpected signal\n\n"
             "\\[signal SIGSEGV: segmentation violation code=0x[0-9a-f]+ "
             "addr=0x10 pc=0x[0-9a-f]+\\]\n\n"
             "goroutine %lld \\[running\\]:\n"
             "fault_write\\(\\.\\.\\.\\)\n"
             "\t/[^\n]*/tests/dumpprog\\.c:[0-9]+\n"
             "faulter_segv\\(\\.\\.\\.\\)\n",
             (long long)fid);
    if (!ere(re, kid.err))
        FAIL("the report does not match %s:\n%s", re, kid.err);
    size_t len;
    const char *g = report_goroutines(kid.err, &len);
    ASSERT_EQ(check_shape(g, len, false), 1);
}

TEST(stack_overflow_report)
{
    int st = run_fault("overflow", NULL);
    int64_t fid;
    ASSERT_EQ(child_ids(&kid, "faulter", &fid, 1), 1);
    expect_exit2(st);
    char want[256];
    snprintf(want, sizeof want,
             "runtime: goroutine %lld stack overflow: stack size 65536 "
             "bytes\n", (long long)fid);
    ASSERT_CONTAINS(kid.err, want);
    ASSERT_CONTAINS(kid.err, "fatal error: stack overflow\n\n");
    /* The trace: the overflowing goroutine first, recursing. */
    size_t len;
    const char *g = report_goroutines(kid.err, &len);
    char re[256];
    snprintf(re, sizeof re,
             "^goroutine %lld \\[running\\]:\n"
             "recurse_forever\\(\\.\\.\\.\\)\n"
             "\t/[^\n]*/tests/dumpprog\\.c:[0-9]+ \\+0x[0-9a-f]+\n"
             "recurse_forever\\(\\.\\.\\.\\)\n",
             (long long)fid);
    if (!ere(re, g))
        FAIL("the trace does not start with %s:\n%s", re, g);
    struct doc d = parse(g, len);
    const struct gd *f = doc_find(&d, fid);
    ASSERT(f != NULL);
    int deep = 0;
    for (const char *p = f->body; (p = strstr(p, "recurse_forever(")); p++)
        deep++;
    ASSERT_GE(deep, 50);
    ASSERT_CONTAINS(f->body, "...additional frames elided...\n");
    ASSERT_CONTAINS(f->body, "created by fault_main in goroutine 1\n");
    /* A runtime fault shows every goroutine (Go's default for it). */
    int64_t by[8];
    int nb = child_ids(&kid, "bystander", by, 8);
    ASSERT_EQ(nb, 5);
    for (int i = 0; i < nb; i++)
        ASSERT_EQ(doc_count(&d, by[i]), 1);
    ASSERT_EQ(check_shape(g, len, false), d.n);
    doc_free(&d);
}

/* ------------------------------------------- WEFTTRACEBACK, on a trap */

/* trap_report - run the trap scenario at WEFTTRACEBACK=level; checks the
 * parts every level shares and returns the wait status. */
static int trap_report(const char *level)
{
    char var[64];
    snprintf(var, sizeof var, "WEFTTRACEBACK=%s", level);
    const char *const env[] = {var, NULL};
    int st = run_fault("trap", env);
    ASSERT_CONTAINS(kid.err, "fatal error: unexpected signal\n\n"
                             "[signal SIGILL: illegal instruction code=");
    return st;
}

/* count_headers - lines starting "goroutine N [" in s. */
static int count_headers(const char *s)
{
    int n = 0;
    for (const char *p = s; (p = strstr(p, "goroutine ")) != NULL; p++)
        if ((p == s || p[-1] == '\n') && p[10] >= '0' && p[10] <= '9' &&
            strstr(p, " [") != NULL && strchr(p, '[') < strchr(p, '\n'))
            n++;
    return n;
}

/* check_all_listed - the faulter first, then main and the bystanders,
 * each exactly once, nothing else. */
static void check_all_listed(const struct doc *d)
{
    int64_t fid, mid, by[8];
    ASSERT_EQ(child_ids(&kid, "faulter", &fid, 1), 1);
    ASSERT_EQ(child_ids(&kid, "main", &mid, 1), 1);
    int nb = child_ids(&kid, "bystander", by, 8);
    ASSERT_EQ(nb, 5);
    ASSERT_EQ(d->n, 2 + nb);
    ASSERT_EQ(d->g[0].id, fid);
    ASSERT_STR_EQ(d->g[0].state, "running");
    ASSERT_EQ(doc_count(d, mid), 1);
    for (int i = 0; i < nb; i++)
        ASSERT_EQ(doc_count(d, by[i]), 1);
    ASSERT_CONTAINS(d->g[0].body, "fault_trap(...)\n");
}

TEST(traceback_none)
{
    int st = trap_report("none");
    expect_exit2(st);
    ASSERT_EQ(count_headers(kid.err), 0);
    if (strstr(kid.err, "rip    0x") != NULL)
        FAIL("a register dump at WEFTTRACEBACK=none:\n%s", kid.err);
}

TEST(traceback_single)
{
    int st = trap_report("single");
    expect_exit2(st);
    int64_t fid;
    ASSERT_EQ(child_ids(&kid, "faulter", &fid, 1), 1);
    size_t len;
    const char *g = report_goroutines(kid.err, &len);
    ASSERT_EQ(check_shape(g, len, false), 1);
    struct doc d = parse(g, len);
    ASSERT_EQ(d.n, 1);
    ASSERT_EQ(d.g[0].id, fid);
    ASSERT_STR_EQ(d.g[0].state, "running");
    /* The faulting function on top, user frames only. */
    static struct frame f[MAXFRAMES];
    int n = frames(&d.g[0], f);
    ASSERT_GE(n, 3);
    ASSERT_STR_EQ(f[0].func, "fault_trap");
    ASSERT_STR_EQ(f[1].func, "faulter_trap");
    if (strstr(kid.err, "weft__") != NULL ||
        strstr(kid.err, "rip    0x") != NULL)
        FAIL("runtime frames or registers at single:\n%s", kid.err);
    doc_free(&d);
}

TEST(traceback_all)
{
    int st = trap_report("all");
    expect_exit2(st);
    size_t len;
    const char *g = report_goroutines(kid.err, &len);
    struct doc d = parse(g, len);
    ASSERT_EQ(check_shape(g, len, false), d.n);
    check_all_listed(&d);
    if (strstr(kid.err, "weft__") != NULL ||
        strstr(kid.err, "rip    0x") != NULL)
        FAIL("runtime frames or registers at all:\n%s", kid.err);
    doc_free(&d);
}

/* check_system - what system and crash add: fp/sp/pc, weft's frames,
 * the register dump after the goroutines. */
static void check_system(void)
{
    size_t len;
    const char *g = report_goroutines(kid.err, &len);
    struct doc d = parse(g, len);
    ASSERT_EQ(check_shape(g, len, true), d.n);
    check_all_listed(&d);
    for (int i = 0; i < d.n; i++)
        if (strstr(d.g[i].body, "weft__ctx_start(...)\n") == NULL)
            FAIL("goroutine %lld has no weft__ctx_start frame at "
                 "system:\n%s", (long long)d.g[i].id, d.g[i].body);
#if defined(__x86_64__)
    if (!ere("\nrax    0x[0-9a-f]+\n(.*\n)*rip    0x[0-9a-f]+\n"
             "rflags 0x[0-9a-f]+\ncs     0x[0-9a-f]+\nfs     0x[0-9a-f]+\n"
             "gs     0x[0-9a-f]+\n$",
             g + len - 1))
        FAIL("no register dump after the goroutines:\n%s", g + len);
#endif
    doc_free(&d);
}

TEST(traceback_system)
{
    int st = trap_report("system");
    expect_exit2(st);
    check_system();
}

TEST(traceback_crash)
{
    int st = trap_report("crash");
    char s[96];
    if (!WIFSIGNALED(st) || WTERMSIG(st) != SIGABRT)
        FAIL("dumpprog: %s, expected to be killed by SIGABRT",
             harness_status_str(st, s, sizeof s));
    check_system();
}

/* ------------------------------------------------------------ SIGQUIT */

/* Under TSan a process-directed SIGQUIT is taken by a thread that does
 * not block it (weft_main's, an idle M, sysmon) and held by TSan until
 * that thread reaches an intercepted call; weft's threads sleep in raw
 * futex syscalls, so the dump does not come until the runtime ends. */
static void skip_under_tsan(void)
{
    if (TSAN)
        SKIP("TSan holds SIGQUIT on a thread asleep in a raw futex "
             "syscall: no dump until that thread wakes");
}

/* check_quit_dump - one SIGQUIT dump in text[0..len): the preamble, then
 * every announced coroutine once (system level: weft's frames, fp/sp/pc),
 * up to the register dump or the end. Returns the parsed goroutines. */
static struct doc check_quit_dump(const char *text, size_t len)
{
    if (!ere("^SIGQUIT: quit\nPC=0x[0-9a-f]+ m=-?[0-9]+ sigcode=-?[0-9]+"
             "\n\ngoroutine ",
             text))
        FAIL("the SIGQUIT preamble is not Go's:\n%.*s", (int)len, text);
    size_t glen;
    const char *g = report_goroutines(text, &glen);
    if (g + glen > text + len)
        glen = (size_t)(text + len - g);
    struct doc d = parse(g, glen);
    ASSERT_EQ(check_shape(g, glen, true), d.n);
    const char *kinds[] = {"bystander", "main", "spinner", "syscall"};
    int total = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        int64_t ids[8];
        int n = child_ids(&kid, kinds[k], ids, 8);
        for (int i = 0; i < n; i++) {
            if (doc_count(&d, ids[i]) != 1)
                FAIL("%s %lld is listed %d times in the SIGQUIT dump:\n%.*s",
                     kinds[k], (long long)ids[i], doc_count(&d, ids[i]),
                     (int)glen, g);
        }
        total += n;
    }
    /* Nothing else but the signalled thread's own stack. */
    ASSERT_EQ(d.n - doc_count(&d, 0), total);
    ASSERT_LE(doc_count(&d, 0), 1);
    return d;
}

TEST(sigquit_dump)
{
    skip_under_tsan();
    child_start(&kid, "quit", NULL);
    child_await(&kid, false, "ready\n", 1, 10);
    ASSERT_EQ(kill(kid.pid, SIGQUIT), 0);
    int st = child_end(&kid, 30, false);
    expect_exit2(st);
    struct doc d = check_quit_dump(kid.err, strlen(kid.err));
    /* Identical bystanders show identical stacks. */
    int64_t by[8];
    ASSERT_EQ(child_ids(&kid, "bystander", by, 8), 5);
    const struct gd *a = doc_find(&d, by[0]), *b = doc_find(&d, by[1]);
    ASSERT_STR_EQ(a->state, "chan receive");
    ASSERT_CONTAINS(a->body, "bystander_recv(...)\n");
    ASSERT_CONTAINS(doc_find(&d, by[3])->body, "bystander_sleep(...)\n");
    ASSERT_CONTAINS(doc_find(&d, by[4])->body, "bystander_mutex(...)\n");
    (void)b;
    /* The register dump ends it. */
#if defined(__x86_64__)
    if (!ere("\n\nrax    0x[0-9a-f]+\n(.*\n)*rip    0x[0-9a-f]+\n"
             "rflags 0x[0-9a-f]+\ncs     0x[0-9a-f]+\nfs     0x[0-9a-f]+\n"
             "gs     0x[0-9a-f]+\n$",
             kid.err))
        FAIL("the SIGQUIT dump does not end with the registers:\n%s",
             kid.err);
#endif
    doc_free(&d);
}

TEST(sigquit_dump_busy)
{
    skip_under_tsan();
    child_start(&kid, "quitbusy", NULL);
    child_await(&kid, false, "ready\n", 1, 10);
    ASSERT_EQ(kill(kid.pid, SIGQUIT), 0);
    int st = child_end(&kid, 30, false);
    expect_exit2(st);
    struct doc d = check_quit_dump(kid.err, strlen(kid.err));
    int64_t sp[2], sc;
    ASSERT_EQ(child_ids(&kid, "spinner", sp, 2), 2);
    ASSERT_EQ(child_ids(&kid, "syscall", &sc, 1), 1);
    check_running(&d, sp[0], "running", "spin_pure", "/tests/dumpprog.c",
                  true);
    check_running(&d, sp[1], "running|runnable", "spin_checkpoint",
                  "/tests/dumpprog.c", true); /* see running_main */
    check_running(&d, sc, "syscall", "block_in_syscall", "/tests/dumpprog.c",
                  true);
    doc_free(&d);
}

TEST(sigquit_continue)
{
    skip_under_tsan();
    const char *const env[] = {"WEFTDEBUG=sigquitdump=continue", NULL};
    child_start(&kid, "quit", env);
    child_await(&kid, false, "ready\n", 1, 10);
    int64_t mid;
    ASSERT_EQ(child_ids(&kid, "main", &mid, 1), 1);
    char last[64];
    snprintf(last, sizeof last, "goroutine %lld [", (long long)mid);
    for (int round = 1; round <= 2; round++) {
        ASSERT_EQ(kill(kid.pid, SIGQUIT), 0);
        /* The dump came (main is listed in it) ... */
        child_await(&kid, true, last, round, 10);
        /* ... and the process still serves stdin. */
        ASSERT_EQ(write(kid.in, "ping\n", 5), 5);
        child_await(&kid, false, "pong\n", round, 10);
        ASSERT_EQ(waitpid(kid.pid, NULL, WNOHANG), 0);
    }
    ASSERT_EQ(write(kid.in, "exit\n", 5), 5);
    int st = child_end(&kid, 30, true);
    char s[96];
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("dumpprog: %s after two SIGQUITs with sigquitdump=continue, "
             "expected exit 0", harness_status_str(st, s, sizeof s));
    /* Two complete dumps, and no register dump (that ends a process). */
    const char *second = strstr(kid.err + 1, "SIGQUIT: quit\n");
    ASSERT(second != NULL);
    ASSERT(strstr(second + 1, "SIGQUIT: quit\n") == NULL);
    struct doc d1 = check_quit_dump(kid.err, (size_t)(second - kid.err));
    struct doc d2 = check_quit_dump(second, strlen(second));
    ASSERT_EQ(d1.n, d2.n);
    if (strstr(kid.err, "rip    0x") != NULL)
        FAIL("a register dump with sigquitdump=continue:\n%s", kid.err);
    doc_free(&d1);
    doc_free(&d2);
}
