/*
 * debugserver.c - Go's /debug/pprof/ endpoints and a Prometheus /metrics
 * over HTTP/1.1, served by coroutines of the running runtime on its own
 * netpoller (weft_debug_serve, weft_debug_stop in weft.h).
 *
 * Shape: one accept-loop coroutine owns the listener; it spawns one
 * coroutine per connection, which reads one request head (httpreq.c, a
 * pure parser), its body if any, builds the whole response body in a
 * memfd (the profile writers want an fd and may block their thread: a
 * regular file never makes them wait in poll), maps it, and writes status
 * line, headers and body with one weft_writev. Every response carries
 * Content-Length and "Connection: close"; keep-alive buys nothing for a
 * few scrapes a minute, and one request per connection keeps the state
 * machine trivial (go tool pprof and Prometheus reconnect).
 *
 * Bounds (what makes it safe to leave on): a head of at most
 * HTTP_HEAD_MAX bytes and HTTP_HEADERS_MAX headers (431), a body of at
 * most HTTP_BODY_MAX (413); the whole request must arrive within
 * weft__debug_req_timeout (else 408, or a silent close if nothing came:
 * slowloris costs a parked coroutine for that long); every write has a
 * deadline; at most MAX_CONNS connections at once (more are closed on
 * accept); CPU profiles last 1..SECONDS_MAX seconds (else 400).
 *
 * Invariants:
 *  1. srv.lock (a short futex lock, never held across a park) guards
 *     srv.state, srv.lfd, the conns list and every conn's fd field.
 *  2. An fd is closed only by the coroutine that owns it (the accept loop
 *     the listener, a connection coroutine its socket), after setting the
 *     field to -1 under srv.lock. weft_debug_stop only shutdown(2)s the
 *     fds it finds under the lock: that wakes every parked reader (EOF,
 *     accept's EINVAL) and cannot hit a reused fd number, which a close
 *     from the stopper could.
 *  3. srv.wg counts the accept loop and every connection coroutine; the
 *     accept loop adds a connection's count before spawning it, while
 *     its own is still held, so the count reaches 0 only once all are
 *     done. weft_debug_stop waits on it.
 *  4. A connection's resources (its socket, memfd, mapping, request body)
 *     hang off its struct dconn, which stays on srv.conns until every one
 *     is released, and each field is cleared before its resource is
 *     released. So when the runtime ends while coroutines are parked
 *     here (they are abandoned, never resumed), weft__debug_fini, called
 *     from the runtime's teardown with no thread left running, frees
 *     exactly what is still held.
 *
 * Rejected: closing connections from weft_debug_stop (invariant 2); a
 * buffer in memory for the body (a profile has no size bound known in
 * advance; a memfd grows as needed and is one mmap to send); sendfile
 * from the memfd (a non-blocking socket needs its own EAGAIN loop, and
 * weft_writev already has one with deadlines); one coroutine serving all
 * connections (a CPU profile holds its connection for seconds).
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "httpreq.h"
#include "pprof.h"
#include "runtime.h"

#define SEC ((int64_t)1000 * 1000 * 1000)
#define MAX_CONNS 64
#define SECONDS_DEFAULT 30 /* Go's default CPU profile length */
#define SECONDS_MAX 3600
#define WRITE_TIMEOUT (60 * SEC)
#define LINGER_TIMEOUT (1 * SEC)
#define LINGER_MAX (256 * 1024)
#define CMDLINE_MAX (1024 * 1024)
#define CONN_STACK ((size_t)512 * 1024) /* symbolizing may go deep */

/* How long a whole request (head and body) may take to arrive. Not
 * static: white-box tests shorten it to see slowloris cut quickly. */
int64_t weft__debug_req_timeout = 10 * SEC;

enum { S_IDLE, S_SERVING, S_STOPPING };

struct dconn {
    struct dconn *next, *prev; /* srv.lock */
    int fd;                    /* srv.lock; closed by the owner only */
    /* Owner coroutine only (weft__debug_fini after the runtime's end): */
    int bodyfd;  /* the response body's memfd, or -1 */
    void *map;   /* the body mapped for writing, or NULL */
    size_t maplen;
    char *reqbody; /* the request body, or NULL */
    char head[HTTP_HEAD_MAX];
};

static struct {
    wlock lock;
    int state;           /* lock */
    int lfd;             /* lock; -1: none */
    struct dconn *conns; /* lock */
    int nconns;          /* lock */
    weft_waitgroup_t wg; /* invariant 3 */
} srv = {.lfd = -1, .wg = WEFT_WAITGROUP_INIT};

/* ------------------------------------------------------------- responses */

/* What a handler answers: the body is in c->bodyfd. */
struct resp {
    int status;
    const char *ctype;
    char extra[160]; /* more header lines, CRLF-terminated */
};

static const char *reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 301: return "Moved Permanently";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Request Entity Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    default: return "Error";
    }
}

#define TEXT "text/plain; charset=utf-8"

/* body_reset - empty the connection's body memfd, creating it the first
 * time. Returns 0 or a negative errno. */
static int body_reset(struct dconn *c)
{
    if (c->bodyfd < 0) {
        int fd = memfd_create("weft-debug-body", MFD_CLOEXEC);
        if (fd < 0)
            return -errno;
        c->bodyfd = fd;
        return 0;
    }
    if (ftruncate(c->bodyfd, 0) < 0 || lseek(c->bodyfd, 0, SEEK_SET) < 0)
        return -errno;
    return 0;
}

__attribute__((format(printf, 2, 3))) static void
body_printf(struct dconn *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (c->bodyfd >= 0)
        vdprintf(c->bodyfd, fmt, ap); /* a full disk shows as a short body */
    va_end(ap);
}

/* fail - answer status with text and a newline, as Go's serveError: the
 * X-Go-Pprof header tells `go tool pprof` to show the text. */
static void fail(struct dconn *c, struct resp *rs, int status,
                 const char *text)
{
    rs->status = status;
    rs->ctype = TEXT;
    snprintf(rs->extra, sizeof rs->extra, "X-Go-Pprof: 1\r\n");
    if (body_reset(c) == 0)
        body_printf(c, "%s\n", text);
}

/* fail_err - as fail, for an error code a profile call returned: -ENOSYS
 * (a part not built in) is 501, anything else 500. */
static void fail_err(struct dconn *c, struct resp *rs, const char *what,
                     int err)
{
    char text[160];
    snprintf(text, sizeof text, "%s: %s", what, weft_strerror(err));
    fail(c, rs, err == -ENOSYS ? 501 : 500, text);
}

/*
 * send_resp - write rs and the body in c->bodyfd (none if it is absent
 * and the status is an error: then "NNN Reason\n"), without the body for
 * HEAD. Returns 0 or a negative errno.
 */
static ssize_t send_resp(struct dconn *c, const struct resp *rs, bool head)
{
    char hdr[512];
    char fallback[64];
    const void *body = NULL;
    size_t blen = 0;

    if (c->bodyfd >= 0) {
        struct stat st;
        if (fstat(c->bodyfd, &st) < 0)
            return -errno;
        blen = (size_t)st.st_size;
        if (blen > 0) {
            void *m = mmap(NULL, blen, PROT_READ, MAP_SHARED, c->bodyfd, 0);
            if (m == MAP_FAILED)
                return -errno;
            c->maplen = blen;
            c->map = m;
            body = m;
        }
    } else if (rs->status >= 400) {
        int k = snprintf(fallback, sizeof fallback, "%d %s\n", rs->status,
                         reason(rs->status));
        body = fallback;
        blen = (size_t)k;
    }

    time_t now = time(NULL);
    struct tm tm;
    char date[40];
    gmtime_r(&now, &tm);
    strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    int hn = snprintf(hdr, sizeof hdr,
                      "HTTP/1.1 %d %s\r\n"
                      "Content-Type: %s\r\n"
                      "Content-Length: %zu\r\n"
                      "Date: %s\r\n"
                      "X-Content-Type-Options: nosniff\r\n"
                      "%s"
                      "Connection: close\r\n\r\n",
                      rs->status, reason(rs->status), rs->ctype, blen, date,
                      rs->extra);
    struct iovec iov[2] = {{hdr, (size_t)hn}, {(void *)body, blen}};
    ssize_t r = weft_writev_dl(c->fd, iov, head || blen == 0 ? 1 : 2, NULL,
                               weft_now() + WRITE_TIMEOUT);
    if (c->map != NULL) {
        void *m = c->map;
        c->map = NULL; /* invariant 4: clear, then release */
        munmap(m, c->maplen);
    }
    return r < 0 ? r : 0;
}

/* ------------------------------------------------------------- handlers */

struct req {
    struct dconn *c;
    struct http_req h;
    const char *path;
    size_t pathlen;
    const char *query;
    const char *body; /* POST body, NUL-terminated; or NULL */
    size_t bodylen;
};

static bool path_is(const struct req *rq, const char *lit)
{
    return rq->pathlen == strlen(lit) && memcmp(rq->path, lit, rq->pathlen) == 0;
}

/* param - the value of key in the query; -ENOENT when absent. */
static int param(const struct req *rq, const char *key, char *out, size_t cap)
{
    return weft__http_query(rq->query, rq->h.query_len, key, out, cap);
}

/* parse_uint - s as a decimal number in [lo, hi]: true and *v, or false
 * (empty, a sign, other characters, out of range). */
static bool parse_uint(const char *s, long lo, long hi, long *v)
{
    long x = 0;
    if (*s == '\0')
        return false;
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9')
            return false;
        x = x * 10 + (*s - '0');
        if (x > hi)
            return false;
    }
    if (x < lo)
        return false;
    *v = x;
    return true;
}

/* Ours among Go's profiles; trace, heap and allocs do not exist here. */
static const char *const named[] = {"block", "goroutine", "mutex",
                                    "threadcreate"};

static const struct {
    const char *name, *desc;
} index_rows[] = {
    /* Sorted by name, as Go sorts them; texts are Go 1.19's. */
    {"block", "Stack traces that led to blocking on synchronization "
              "primitives"},
    {"cmdline", "The command line invocation of the current program"},
    {"goroutine", "Stack traces of all current goroutines"},
    {"mutex", "Stack traces of holders of contended mutexes"},
    {"profile", "CPU profile. You can specify the duration in the seconds "
                "GET parameter. After you get the profile file, use the go "
                "tool pprof command to investigate the profile."},
    {"threadcreate", "Stack traces that led to the creation of new OS "
                     "threads"},
};

/* serve_index - Go 1.19's net/http/pprof index page, byte for byte in
 * structure (indexTmplExecute), with our profiles and their counts. */
static void serve_index(struct dconn *c, struct resp *rs)
{
    rs->ctype = "text/html; charset=utf-8";
    body_printf(c, "<html>\n<head>\n<title>/debug/pprof/</title>\n<style>\n"
                   ".profile-name{\n\tdisplay:inline-block;\n\twidth:6rem;\n}"
                   "\n</style>\n</head>\n<body>\n/debug/pprof/<br>\n<br>\n"
                   "Types of profiles available:\n<table>\n"
                   "<thead><td>Count</td><td>Profile</td></thead>\n");
    for (size_t i = 0; i < sizeof index_rows / sizeof index_rows[0]; i++) {
        const char *name = index_rows[i].name;
        int64_t n = 0;
        for (size_t k = 0; k < sizeof named / sizeof named[0]; k++)
            if (strcmp(name, named[k]) == 0)
                n = weft_profile_count(name);
        body_printf(c,
                    "<tr><td>%lld</td><td><a href='%s?debug=1'>%s</a></td>"
                    "</tr>\n",
                    (long long)(n < 0 ? 0 : n), name, name);
    }
    body_printf(c, "</table>\n<a href=\"goroutine?debug=2\">full goroutine "
                   "stack dump</a>\n<br>\n<p>\nProfile Descriptions:\n<ul>\n");
    for (size_t i = 0; i < sizeof index_rows / sizeof index_rows[0]; i++)
        body_printf(c, "<li><div class=profile-name>%s: </div> %s</li>\n",
                    index_rows[i].name, index_rows[i].desc);
    body_printf(c, "</ul>\n</p>\n</body>\n</html>");
}

/* serve_named - goroutine, block, mutex, threadcreate with debug=0|1|2,
 * the headers Go's handler sets. */
static void serve_named(struct dconn *c, struct resp *rs, const struct req *rq,
                        const char *name)
{
    char v[32];
    long debug = 0;
    int r = param(rq, "seconds", v, sizeof v);
    if (r != -ENOENT && r != 0) {
        /* Go answers delta profiles only for heap, allocs, block and
         * mutex, and we keep no earlier snapshot to subtract. */
        fail(c, rs, 400,
             "\"seconds\" parameter is not supported for this profile type");
        return;
    }
    r = param(rq, "debug", v, sizeof v);
    if (r > 0 && !parse_uint(v, 0, 2, &debug)) {
        fail(c, rs, 400, "invalid value for \"debug\" - must be 0, 1 or 2");
        return;
    }
    if (r < 0 && r != -ENOENT) {
        fail(c, rs, 400, "invalid value for \"debug\" - must be 0, 1 or 2");
        return;
    }
    /* Go prints every profile but goroutine as debug=1 for debug >= 1. */
    if (debug == 2 && strcmp(name, "goroutine") != 0)
        debug = 1;
    r = weft_profile_write(name, c->bodyfd, (int)debug);
    if (r < 0) {
        char what[64];
        snprintf(what, sizeof what, "Could not write %s profile", name);
        fail_err(c, rs, what, r);
        return;
    }
    if (debug != 0) {
        rs->ctype = TEXT;
    } else {
        rs->ctype = "application/octet-stream";
        snprintf(rs->extra, sizeof rs->extra,
                 "Content-Disposition: attachment; filename=\"%s\"\r\n", name);
    }
}

/*
 * serve_cpu - /debug/pprof/profile?seconds=N: profile for N seconds,
 * waiting on the connection itself, so a client that goes away (or
 * weft_debug_stop's shutdown) ends the wait early and the profile is
 * dropped. Returns false when there is no one left to answer.
 */
static bool serve_cpu(struct dconn *c, struct resp *rs, const struct req *rq)
{
    char v[32];
    long sec = SECONDS_DEFAULT;
    int r = param(rq, "seconds", v, sizeof v);
    /* Empty is absent, as Go's FormValue makes it. */
    if ((r < 0 && r != -ENOENT) ||
        (r > 0 && !parse_uint(v, 1, SECONDS_MAX, &sec))) {
        fail(c, rs, 400,
             "invalid value for \"seconds\" - must be an integer from 1 to "
             "3600");
        return true;
    }
    r = weft_cpuprofile_start(0);
    if (r == WEFT_EBUSY) {
        fail(c, rs, 500,
             "Could not enable CPU profiling: cpu profiling already in use");
        return true;
    }
    if (r < 0) {
        fail_err(c, rs, "Could not enable CPU profiling", r);
        return true;
    }
    int64_t end = weft_now() + sec * SEC;
    char scratch[512];
    for (;;) {
        ssize_t n = weft_read_dl(c->fd, scratch, sizeof scratch, end);
        if (n == WEFT_ETIMEDOUT)
            break;
        if (n <= 0) {
            weft_cpuprofile_stop(-1);
            return false;
        }
    }
    r = weft_cpuprofile_stop(c->bodyfd);
    if (r < 0) {
        fail_err(c, rs, "Could not write CPU profile", r);
        return true;
    }
    rs->ctype = "application/octet-stream";
    snprintf(rs->extra, sizeof rs->extra,
             "Content-Disposition: attachment; filename=\"profile\"\r\n");
    return true;
}

/* serve_cmdline - argv, NUL-separated, as Go's os.Args joined by NUL:
 * /proc/self/cmdline without its final NUL. */
static void serve_cmdline(struct dconn *c, struct resp *rs)
{
    rs->ctype = TEXT;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fail_err(c, rs, "cmdline", -errno);
        return;
    }
    char buf[4096];
    size_t total = 0;
    bool pending_nul = false; /* hold back a NUL: it may be the last one */
    ssize_t n;
    while (total < CMDLINE_MAX && (n = read(fd, buf, sizeof buf)) > 0) {
        total += (size_t)n;
        if (pending_nul)
            weft__writeall(c->bodyfd, "", 1);
        pending_nul = buf[n - 1] == '\0';
        weft__writeall(c->bodyfd, buf, (size_t)n - pending_nul);
    }
    close(fd);
}

/* parse_addr - one word of a symbol request as Go's strconv.ParseUint
 * with base 0 (0x hex, 0o/0 octal, 0b binary, else decimal). 0: bad. */
static uint64_t parse_addr(const char *s, size_t n)
{
    unsigned base = 10;
    if (n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        base = 16, s += 2, n -= 2;
    else if (n >= 2 && s[0] == '0' && (s[1] == 'b' || s[1] == 'B'))
        base = 2, s += 2, n -= 2;
    else if (n >= 2 && s[0] == '0' && (s[1] == 'o' || s[1] == 'O'))
        base = 8, s += 2, n -= 2;
    else if (n >= 1 && s[0] == '0')
        base = 8;
    if (n == 0)
        return 0;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char ch = s[i];
        unsigned d;
        if (ch >= '0' && ch <= '9')
            d = (unsigned)(ch - '0');
        else if (ch >= 'a' && ch <= 'f')
            d = (unsigned)(ch - 'a' + 10);
        else if (ch >= 'A' && ch <= 'F')
            d = (unsigned)(ch - 'A' + 10);
        else
            return 0;
        if (d >= base || v > (UINT64_MAX - d) / base)
            return 0;
        v = v * base + d;
    }
    return v;
}

/* serve_symbol - Go's pprof.Symbol: "num_symbols: 1", then "0xADDR name"
 * for every address of the '+'-separated list (the POST body, or the raw
 * query of a GET) that names a function. */
static void serve_symbol(struct dconn *c, struct resp *rs,
                         const struct req *rq)
{
    rs->ctype = TEXT;
    body_printf(c, "num_symbols: 1\n");
    const char *s = rq->h.method == HTTP_POST ? rq->body : rq->query;
    size_t n = rq->h.method == HTTP_POST ? rq->bodylen : rq->h.query_len;
    if (s == NULL)
        return;
    size_t i = 0;
    while (i <= n) {
        const char *plus = memchr(s + i, '+', n - i);
        size_t end = plus != NULL ? (size_t)(plus - s) : n;
        uint64_t pc = parse_addr(s + i, end - i);
        if (pc != 0 && weft__dump_lock()) {
            /* The symbol cache belongs to the dump lock; the name is
             * copied out before letting go. */
            char name[256] = "";
            bool owned;
            const struct sym *sy =
                weft__symbolize_peek((uintptr_t)pc, true, &owned);
            if (sy != NULL && sy->n > 0 && strcmp(sy->f[0].func, "??") != 0)
                snprintf(name, sizeof name, "%s", sy->f[0].func);
            if (owned)
                free((void *)sy);
            weft__dump_unlock();
            if (name[0] != '\0')
                body_printf(c, "%#llx %s\n", (unsigned long long)pc, name);
        }
        if (plus == NULL)
            break;
        i = end + 1;
    }
}

static void serve_metrics(struct dconn *c, struct resp *rs)
{
    int r = weft_metrics_write(c->bodyfd);
    if (r < 0) {
        fail_err(c, rs, "Could not write metrics", r);
        return;
    }
    rs->ctype = "text/plain; version=0.0.4; charset=utf-8";
}

/* route - answer rq into rs. Returns false when there is no one left to
 * answer (a CPU profile's client went away). */
static bool route(struct req *rq, struct resp *rs)
{
    struct dconn *c = rq->c;
    static const char pfx[] = "/debug/pprof/";
    const size_t np = sizeof pfx - 1;

    rs->status = 200;
    rs->ctype = TEXT;
    rs->extra[0] = '\0';
    int r = body_reset(c);
    if (r < 0) {
        rs->status = 500; /* send_resp's fallback body: no memfd */
        return true;
    }
    if (path_is(rq, "/metrics")) {
        serve_metrics(c, rs);
    } else if (path_is(rq, "/debug/leaks")) {
        r = weft_leakcheck_write(c->bodyfd);
        if (r < 0)
            fail_err(c, rs, "Could not write the leak report", r);
    } else if (path_is(rq, "/debug/pprof")) {
        rs->status = 301;
        snprintf(rs->extra, sizeof rs->extra,
                 "Location: /debug/pprof/\r\n");
    } else if (rq->pathlen < np || memcmp(rq->path, pfx, np) != 0) {
        fail(c, rs, 404, "404 page not found");
        rs->extra[0] = '\0'; /* Go's mux, not pprof, says this */
    } else if (rq->pathlen == np) {
        serve_index(c, rs);
    } else if (path_is(rq, "/debug/pprof/cmdline")) {
        serve_cmdline(c, rs);
    } else if (path_is(rq, "/debug/pprof/profile")) {
        return serve_cpu(c, rs, rq);
    } else if (path_is(rq, "/debug/pprof/symbol")) {
        serve_symbol(c, rs, rq);
    } else {
        const char *name = NULL;
        for (size_t k = 0; k < sizeof named / sizeof named[0]; k++)
            if (rq->pathlen - np == strlen(named[k]) &&
                memcmp(rq->path + np, named[k], rq->pathlen - np) == 0)
                name = named[k];
        if (name == NULL)
            fail(c, rs, 404, "Unknown profile");
        else
            serve_named(c, rs, rq, name);
    }
    return true;
}

/* ------------------------------------------------------------ connections */

/* early_error - answer a request that went wrong before routing: the
 * body is "NNN Reason\n". */
static void early_error(struct dconn *c, int status, const char *extra)
{
    struct resp rs = {.status = status, .ctype = TEXT};
    if (extra != NULL)
        snprintf(rs.extra, sizeof rs.extra, "%s", extra);
    if (body_reset(c) == 0)
        body_printf(c, "%d %s\n", status, reason(status));
    send_resp(c, &rs, false);
}

/* handle - read one request from c and answer it. */
static void handle(struct dconn *c)
{
    int64_t dl = weft_now() + weft__debug_req_timeout;
    size_t n = 0;
    struct req rq = {.c = c};
    ssize_t hl;

    while ((hl = weft__http_parse(c->head, n, &rq.h)) == 0) {
        ssize_t r = weft_read_dl(c->fd, c->head + n, sizeof c->head - n, dl);
        if (r == WEFT_ETIMEDOUT && n > 0)
            early_error(c, 408, NULL);
        if (r <= 0)
            return;
        n += (size_t)r;
    }
    if (hl < 0) {
        early_error(c, (int)-hl, NULL);
        return;
    }
    if (rq.h.method == HTTP_OTHER) {
        early_error(c, 405, "Allow: GET, HEAD, POST\r\n");
        return;
    }
    size_t cl = rq.h.content_length;
    if (cl > 0) {
        /* The parser bounds cl by HTTP_BODY_MAX. */
        char *b = malloc(cl + 1);
        if (b == NULL) {
            early_error(c, 500, NULL);
            return;
        }
        c->reqbody = b;
        size_t have = n - (size_t)hl;
        if (have > cl)
            have = cl; /* a pipelined request: never answered */
        memcpy(b, c->head + hl, have);
        if (have < cl && rq.h.expect_continue) {
            static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
            if (weft_write_dl(c->fd, cont, sizeof cont - 1, NULL, dl) < 0)
                return;
        }
        while (have < cl) {
            ssize_t r = weft_read_dl(c->fd, b + have, cl - have, dl);
            if (r == WEFT_ETIMEDOUT)
                early_error(c, 408, NULL);
            if (r <= 0)
                return;
            have += (size_t)r;
        }
        b[cl] = '\0';
        rq.body = b;
        rq.bodylen = cl;
    }
    rq.path = c->head + rq.h.path_off;
    rq.pathlen = rq.h.path_len;
    rq.query = c->head + rq.h.query_off;

    struct resp rs;
    if (route(&rq, &rs))
        send_resp(c, &rs, rq.h.method == HTTP_HEAD);
}

/* linger - after the answer, stop sending and read what the peer still
 * sends until it closes, briefly: closing with unread input would reset
 * the connection and could destroy the answer before the peer read it. */
static void linger(int fd)
{
    char buf[4096];
    size_t total = 0;
    int64_t dl = weft_now() + LINGER_TIMEOUT;

    weft_shutdown(fd, SHUT_WR);
    while (total < LINGER_MAX) {
        ssize_t r = weft_read_dl(fd, buf, sizeof buf, dl);
        if (r <= 0)
            break;
        total += (size_t)r;
    }
}

/* release - free c's resources, field by field (invariant 4), unlink it
 * and free it. */
static void release(struct dconn *c)
{
    if (c->bodyfd >= 0) {
        int fd = c->bodyfd;
        c->bodyfd = -1;
        close(fd);
    }
    if (c->reqbody != NULL) {
        char *b = c->reqbody;
        c->reqbody = NULL;
        free(b);
    }
    weft__lock(&srv.lock);
    int fd = c->fd;
    c->fd = -1;
    weft__unlock(&srv.lock);
    if (fd >= 0)
        weft_close(fd);
    weft__lock(&srv.lock);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv.conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    srv.nconns--;
    weft__unlock(&srv.lock);
    free(c);
}

static void conn_main(void *arg)
{
    struct dconn *c = arg;
    handle(c);
    linger(c->fd);
    release(c);
    weft_waitgroup_done(&srv.wg);
}

/* accept_loop - accept until weft_debug_stop; owns the listener. */
static void accept_loop(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    weft_go_opts_t opts = {.stack_size = CONN_STACK,
                           .name = "weft.debugserver.conn"};

    for (;;) {
        int fd = weft_accept(lfd, NULL, NULL);
        weft__lock(&srv.lock);
        bool stop = srv.state != S_SERVING;
        weft__unlock(&srv.lock);
        if (stop) {
            if (fd >= 0)
                weft_close(fd);
            break;
        }
        if (fd < 0) {
            if (fd == WEFT_ECLOSED || fd == WEFT_EBADF || fd == WEFT_EINVAL)
                break; /* the listener is gone: nothing to retry */
            weft_sleep(5 * 1000 * 1000); /* ECONNABORTED, ENOBUFS ... */
            continue;
        }
        struct dconn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            weft_close(fd);
            continue;
        }
        c->fd = fd;
        c->bodyfd = -1;
        /* The state again, with the insertion: a stop that came since
         * the check above has shut down every listed fd but not this
         * one, and would wait for its coroutine up to a request's life. */
        weft__lock(&srv.lock);
        bool full = srv.nconns >= MAX_CONNS || srv.state != S_SERVING;
        if (!full) {
            c->next = srv.conns;
            if (srv.conns != NULL)
                srv.conns->prev = c;
            srv.conns = c;
            srv.nconns++;
        }
        weft__unlock(&srv.lock);
        if (full) {
            weft_close(fd);
            free(c);
            continue;
        }
        weft_waitgroup_add(&srv.wg, 1);
        if (weft_go_opts(conn_main, c, &opts) < 0) {
            release(c);
            weft_waitgroup_done(&srv.wg);
        }
    }
    weft__lock(&srv.lock);
    int fd = srv.lfd;
    srv.lfd = -1;
    weft__unlock(&srv.lock);
    if (fd >= 0)
        weft_close(fd);
    weft_waitgroup_done(&srv.wg);
}

/* ------------------------------------------------------------------ API */

WEFT_EXTERN int weft_debug_serve(const char *addr)
{
    if (addr == NULL || *addr == '\0')
        return WEFT_EINVAL;
    if (weft_self() <= 0)
        return WEFT_ENOTCORO;
    weft__lock(&srv.lock);
    if (srv.state != S_IDLE) {
        weft__unlock(&srv.lock);
        return WEFT_EBUSY;
    }
    srv.state = S_SERVING; /* reserved while we listen */
    weft__unlock(&srv.lock);

    int err;
    int lfd = weft_listen("tcp", addr, 0);
    if (lfd < 0) {
        err = lfd;
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(lfd, (struct sockaddr *)&ss, &sl) < 0) {
        err = -errno;
        goto fail_close;
    }
    int port = ss.ss_family == AF_INET6
                   ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                   : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    weft__lock(&srv.lock);
    srv.lfd = lfd;
    weft__unlock(&srv.lock);
    weft_waitgroup_add(&srv.wg, 1);
    weft_go_opts_t opts = {.name = "weft.debugserver"};
    int64_t id = weft_go_opts(accept_loop, (void *)(intptr_t)lfd, &opts);
    if (id < 0) {
        weft_waitgroup_done(&srv.wg);
        weft__lock(&srv.lock);
        srv.lfd = -1;
        weft__unlock(&srv.lock);
        err = (int)id;
        goto fail_close;
    }
    return port;

fail_close:
    weft_close(lfd);
fail:
    weft__lock(&srv.lock);
    srv.state = S_IDLE;
    weft__unlock(&srv.lock);
    return err;
}

WEFT_EXTERN int weft_debug_stop(void)
{
    if (weft_self() <= 0)
        return WEFT_ENOTCORO;
    weft__lock(&srv.lock);
    if (srv.state != S_SERVING) {
        weft__unlock(&srv.lock);
        return WEFT_EINVAL;
    }
    srv.state = S_STOPPING;
    /* Invariant 2: wake the owners; they close. */
    if (srv.lfd >= 0)
        shutdown(srv.lfd, SHUT_RDWR);
    for (struct dconn *c = srv.conns; c != NULL; c = c->next)
        if (c->fd >= 0)
            shutdown(c->fd, SHUT_RDWR);
    weft__unlock(&srv.lock);
    weft_waitgroup_wait(&srv.wg);
    weft__lock(&srv.lock);
    srv.state = S_IDLE;
    weft__unlock(&srv.lock);
    return 0;
}

/*
 * weft__debug_fini - the runtime is ending (teardown): no thread runs
 * coroutines any more, and those parked here are abandoned. Release what
 * they held (invariant 4) with plain close(2) (the poller's tables go
 * next) and make the server servable again by the next runtime.
 */
void weft__debug_fini(void)
{
    struct dconn *c = srv.conns;
    while (c != NULL) {
        struct dconn *next = c->next;
        if (c->fd >= 0)
            close(c->fd);
        if (c->bodyfd >= 0)
            close(c->bodyfd);
        if (c->map != NULL)
            munmap(c->map, c->maplen);
        free(c->reqbody);
        free(c);
        c = next;
    }
    if (srv.lfd >= 0)
        close(srv.lfd);
    memset(&srv, 0, sizeof srv);
    srv.lfd = -1;
    srv.state = S_IDLE;
}
