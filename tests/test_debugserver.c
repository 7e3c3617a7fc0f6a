/*
 * test_debugserver.c - the debug server (weft_debug_serve/stop, profile/
 * debugserver.c) from the outside: every endpoint's status, content type
 * and body shape through raw sockets, curl, `go tool pprof` and a real
 * Prometheus; bad input of every kind (garbage, oversized heads, too many
 * headers, huge bodies, bad methods and parameters, unknown paths,
 * half-open, idle and slowloris connections), each followed by a good
 * request that must still be answered; the API's errors; stop with
 * connections open; and the runtime ending while the server serves.
 *
 * Each test runs its own runtime (2 Ps). The server runs as coroutines;
 * the client side runs inside weft_blocking() on the body coroutine, so
 * it may use plain blocking sockets and subprocesses (harness_run) while
 * the Ps go on serving. The harness's leak gate checks that no fd is left
 * open; ASan's leak check that no connection struct is.
 *
 * A build without protobuf-c and zlib (WEFT_HAVE_PPROF unset) has no
 * profiles: weft_profile_write returns -ENOSYS and the server must answer
 * 501; the tests that need profiles check that instead, or skip.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "weft_test.h"

extern int64_t weft__debug_req_timeout; /* debugserver.c, white box */

#define HTTP_TEST_BIG (16 * 1024)

/* ------------------------------------------------------------- clients */

struct hresp {
    int status;   /* 0: no answer at all (the server just closed) */
    char *raw;    /* the whole answer, NUL-terminated */
    size_t rawlen;
    char *body;   /* into raw */
    size_t blen;
};

static void hresp_free(struct hresp *r)
{
    free(r->raw);
    memset(r, 0, sizeof *r);
}

/* hdr - the value of header name in r (case-insensitive), copied into
 * out; "" when absent. */
static const char *hdr(const struct hresp *r, const char *name, char *out,
                       size_t cap)
{
    out[0] = '\0';
    if (r->raw == NULL)
        return out;
    size_t nl = strlen(name);
    const char *p = strstr(r->raw, "\r\n");
    while (p != NULL && p + 2 < r->body) {
        p += 2;
        if (strncasecmp(p, name, nl) == 0 && p[nl] == ':') {
            const char *v = p + nl + 1;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t n = (size_t)(e - v) < cap - 1 ? (size_t)(e - v) : cap - 1;
            memcpy(out, v, n);
            out[n] = '\0';
            return out;
        }
        p = strstr(p, "\r\n");
    }
    return out;
}

static int dial(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ASSERT(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET,
                             .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        FAIL("connect to port %d: %s", port, strerror(errno));
    struct timeval tv = {(time_t)(20 * slow()), 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void send_all(int fd, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue; /* a dump's freeze signal (SIGURG) */
        if (w <= 0)
            return; /* the server may refuse early: that is tested */
        s += w;
        n -= (size_t)w;
    }
}

/* read_resp - read until the server closes; parse the status line. */
static void read_resp(int fd, struct hresp *r)
{
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap + 1);
    ASSERT(b != NULL);
    for (;;) {
        if (n == cap) {
            cap *= 2;
            b = realloc(b, cap + 1);
            ASSERT(b != NULL);
        }
        ssize_t k = recv(fd, b + n, cap - n, 0);
        if (k < 0 && errno == EINTR)
            continue; /* a profile's freeze signal (SIGURG) */
        /* SO_RCVTIMEO: the server neither answered nor closed. Every
         * "closed without a word" check relies on this being a failure. */
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            FAIL("no answer and no close within %.0f s (%zu bytes so far)",
                 20 * slow(), n);
        if (k <= 0)
            break; /* closed (0) or reset: the answer is complete */
        n += (size_t)k;
    }
    b[n] = '\0';
    memset(r, 0, sizeof *r);
    r->raw = b;
    r->rawlen = n;
    char *e = strstr(b, "\r\n\r\n");
    r->body = e != NULL ? e + 4 : b + n;
    r->blen = (size_t)(b + n - r->body);
    if (n >= 12 && memcmp(b, "HTTP/1.1 ", 9) == 0)
        r->status = atoi(b + 9);
}

/* roundtrip - send req (n bytes), read the whole answer. */
static void roundtrip(int port, const char *req, size_t n, struct hresp *r)
{
    int fd = dial(port);
    send_all(fd, req, n);
    read_resp(fd, r);
    close(fd);
}

static void get(int port, const char *path, struct hresp *r)
{
    char req[1024];
    int n = snprintf(req, sizeof req,
                     "GET %s HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n",
                     path);
    roundtrip(port, req, (size_t)n, r);
}

/* expect - GET path answers status with content type ctype (NULL: any). */
static void expect(int port, const char *path, int status, const char *ctype)
{
    struct hresp r;
    char ct[128];
    get(port, path, &r);
    if (r.status != status)
        FAIL("GET %s: status %d, want %d:\n%s", path, r.status, status,
             r.raw);
    if (ctype != NULL && strcmp(hdr(&r, "Content-Type", ct, sizeof ct),
                                ctype) != 0)
        FAIL("GET %s: Content-Type \"%s\", want \"%s\"", path, ct, ctype);
    hresp_free(&r);
}

/* still_serving - a good request after something bad. */
static void still_serving(int port, const char *after)
{
    struct hresp r;
    get(port, "/debug/pprof/cmdline", &r);
    if (r.status != 200)
        FAIL("after %s the server no longer serves: status %d:\n%s", after,
             r.status, r.raw);
    hresp_free(&r);
}

/* bad - send req raw, want status (0: the server closes without a
 * word), then a good request must still work. */
static void bad(int port, const char *what, const char *req, size_t n,
                int status)
{
    struct hresp r;
    roundtrip(port, req, n, &r);
    if (r.status != status)
        FAIL("%s: status %d, want %d:\n%.300s", what, r.status, status,
             r.raw);
    hresp_free(&r);
    still_serving(port, what);
}

/* ----------------------------------------------------------- the runner */

struct tctx {
    int port;
    void (*client)(struct tctx *);
    bool nostop; /* leave the server running when the runtime ends */
};

static intptr_t client_tramp(void *arg)
{
    struct tctx *t = arg;
    t->client(t);
    return 0;
}

static int serve_body(void *arg)
{
    struct tctx *t = arg;
    int port = weft_debug_serve("127.0.0.1:0");
    EXPECT_OK(port);
    ASSERT_GT(port, 0);
    t->port = port;
    weft_blocking(client_tramp, t);
    if (!t->nostop)
        EXPECT_ERR(weft_debug_stop(), 0);
    return 0;
}

static void with_server(void (*client)(struct tctx *))
{
    struct tctx t = {0, client, false};
    run(2, serve_body, &t);
}

/* Whether this build has profiles (profile/meson.build). */
static bool have_profiles(void)
{
#if WEFT_HAVE_PPROF
    return true;
#else
    return false;
#endif
}

/* ---------------------------------------------------------------- API */

static int api_body(void *arg)
{
    (void)arg;
    EXPECT_ERR(weft_debug_serve(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_debug_serve(""), WEFT_EINVAL);
    EXPECT_ERR(weft_debug_serve("nonsense"), WEFT_EINVAL);
    int r = weft_debug_serve("127.0.0.1:99999");
    if (r >= 0)
        FAIL("port 99999 was accepted (%d)", r);
    EXPECT_ERR(weft_debug_stop(), WEFT_EINVAL); /* not serving */
    int port = weft_debug_serve("127.0.0.1:0");
    EXPECT_OK(port);
    EXPECT_ERR(weft_debug_serve("127.0.0.1:0"), WEFT_EBUSY);
    EXPECT_ERR(weft_debug_stop(), 0);
    EXPECT_ERR(weft_debug_stop(), WEFT_EINVAL);
    /* Servable again, and the address is free again. */
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    EXPECT_ERR(weft_debug_serve(addr), port);
    /* Another listener on the same address: the bind error, and the
     * server state is left as it was. */
    EXPECT_ERR(weft_debug_stop(), 0);
    int lfd = weft_listen("tcp4", addr, 0);
    EXPECT_OK(lfd);
    EXPECT_ERR(weft_debug_serve(addr), -EADDRINUSE);
    EXPECT_ERR(weft_close(lfd), 0);
    EXPECT_OK(weft_debug_serve(addr));
    EXPECT_ERR(weft_debug_stop(), 0);
    return 0;
}

TEST(api_errors)
{
    EXPECT_ERR(weft_debug_serve("127.0.0.1:0"), WEFT_ENOTCORO);
    EXPECT_ERR(weft_debug_stop(), WEFT_ENOTCORO);
    run(2, api_body, NULL);
}

/* ---------------------------------------------------------- endpoints */

/* Go 1.19's index page (net/http/pprof indexTmplExecute) with our
 * profiles; counts are written N. */
static const char go_index[] =
    "<html>\n<head>\n<title>/debug/pprof/</title>\n<style>\n"
    ".profile-name{\n\tdisplay:inline-block;\n\twidth:6rem;\n}\n</style>\n"
    "</head>\n<body>\n/debug/pprof/<br>\n<br>\nTypes of profiles "
    "available:\n<table>\n<thead><td>Count</td><td>Profile</td></thead>\n"
    "<tr><td>N</td><td><a href='block?debug=1'>block</a></td></tr>\n"
    "<tr><td>N</td><td><a href='cmdline?debug=1'>cmdline</a></td></tr>\n"
    "<tr><td>N</td><td><a href='goroutine?debug=1'>goroutine</a></td></tr>\n"
    "<tr><td>N</td><td><a href='mutex?debug=1'>mutex</a></td></tr>\n"
    "<tr><td>N</td><td><a href='profile?debug=1'>profile</a></td></tr>\n"
    "<tr><td>N</td><td><a href='threadcreate?debug=1'>threadcreate</a></td>"
    "</tr>\n</table>\n<a href=\"goroutine?debug=2\">full goroutine stack "
    "dump</a>\n<br>\n<p>\nProfile Descriptions:\n<ul>\n"
    "<li><div class=profile-name>block: </div> Stack traces that led to "
    "blocking on synchronization primitives</li>\n"
    "<li><div class=profile-name>cmdline: </div> The command line invocation "
    "of the current program</li>\n"
    "<li><div class=profile-name>goroutine: </div> Stack traces of all "
    "current goroutines</li>\n"
    "<li><div class=profile-name>mutex: </div> Stack traces of holders of "
    "contended mutexes</li>\n"
    "<li><div class=profile-name>profile: </div> CPU profile. You can "
    "specify the duration in the seconds GET parameter. After you get the "
    "profile file, use the go tool pprof command to investigate the "
    "profile.</li>\n"
    "<li><div class=profile-name>threadcreate: </div> Stack traces that led "
    "to the creation of new OS threads</li>\n"
    "</ul>\n</p>\n</body>\n</html>";

static void index_client(struct tctx *t)
{
    struct hresp r;
    char v[128];
    get(t->port, "/debug/pprof/", &r);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(hdr(&r, "Content-Type", v, sizeof v),
                  "text/html; charset=utf-8");
    ASSERT_EQ(atol(hdr(&r, "Content-Length", v, sizeof v)), r.blen);
    /* Counts as N; the goroutine count must be live coroutines. */
    char *norm = malloc(r.blen + 1);
    ASSERT(norm != NULL);
    size_t o = 0;
    int64_t goroutines = -1;
    for (size_t i = 0; i < r.blen;) {
        if (strncmp(r.body + i, "<tr><td>", 8) == 0) {
            memcpy(norm + o, "<tr><td>N", 9);
            o += 9;
            i += 8;
            int64_t n = atoll(r.body + i);
            if (strncmp(strstr(r.body + i, "'>") + 2, "goroutine<", 10) == 0)
                goroutines = n;
            while (r.body[i] >= '0' && r.body[i] <= '9')
                i++;
        } else {
            norm[o++] = r.body[i++];
        }
    }
    norm[o] = '\0';
    ASSERT_STR_EQ(norm, go_index);
    free(norm);
    int64_t want = weft_profile_count("goroutine");
    if (want >= 0)
        ASSERT_GT(goroutines, 0);
    else
        ASSERT_EQ(goroutines, 0); /* not built yet: shown as 0 */
    hresp_free(&r);

    /* /debug/pprof redirects, as Go's mux does. */
    get(t->port, "/debug/pprof", &r);
    ASSERT_EQ(r.status, 301);
    ASSERT_STR_EQ(hdr(&r, "Location", v, sizeof v), "/debug/pprof/");
    hresp_free(&r);

    /* HEAD: the headers of GET, no body. */
    static const char head[] = "HEAD /debug/pprof/ HTTP/1.1\r\nHost: x\r\n\r\n";
    roundtrip(t->port, head, sizeof head - 1, &r);
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.blen, 0);
    ASSERT_GT(atol(hdr(&r, "Content-Length", v, sizeof v)), 1000);
    hresp_free(&r);
}

TEST(index_page) { with_server(index_client); }

static void cmdline_client(struct tctx *t)
{
    struct hresp r;
    char v[128];
    get(t->port, "/debug/pprof/cmdline", &r);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(hdr(&r, "Content-Type", v, sizeof v),
                  "text/plain; charset=utf-8");
    char want[4096];
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = read(fd, want, sizeof want);
    close(fd);
    ASSERT_GT(n, 0);
    ASSERT_EQ(r.blen, n - 1); /* joined by NUL, none at the end */
    ASSERT(memcmp(r.body, want, r.blen) == 0);
    hresp_free(&r);
}

TEST(cmdline) { with_server(cmdline_client); }

/* symbol_marker - a function the symbol endpoint must name. */
void symbol_marker(void);
__attribute__((noinline, used)) void symbol_marker(void)
{
    __asm__ volatile("");
}

static void symbol_client(struct tctx *t)
{
    struct hresp r;
    char v[128];
    get(t->port, "/debug/pprof/symbol", &r);
    ASSERT_EQ(r.status, 200);
    ASSERT_STR_EQ(hdr(&r, "Content-Type", v, sizeof v),
                  "text/plain; charset=utf-8");
    ASSERT_STR_EQ(r.body, "num_symbols: 1\n");
    hresp_free(&r);

    /* POST three addresses (symbol_marker's, one nowhere, the same
     * again) as pprof does: only the known ones are answered. */
    uintptr_t pc = (uintptr_t)&symbol_marker;
    char body[128], req[512];
    int bn = snprintf(body, sizeof body, "%#lx+0x10+%#lx", (unsigned long)pc,
                      (unsigned long)pc);
    int n = snprintf(req, sizeof req,
                     "POST /debug/pprof/symbol HTTP/1.1\r\nHost: x\r\n"
                     "Content-Length: %d\r\n\r\n%s",
                     bn, body);
    roundtrip(t->port, req, (size_t)n, &r);
    ASSERT_EQ(r.status, 200);
    char want[256];
    snprintf(want, sizeof want, "num_symbols: 1\n%#lx symbol_marker\n%#lx "
             "symbol_marker\n", (unsigned long)pc, (unsigned long)pc);
    ASSERT_STR_EQ(r.body, want);
    hresp_free(&r);

    /* GET with the addresses as the raw query. */
    char path[128];
    snprintf(path, sizeof path, "/debug/pprof/symbol?%#lx", (unsigned long)pc);
    get(t->port, path, &r);
    snprintf(want, sizeof want, "num_symbols: 1\n%#lx symbol_marker\n",
             (unsigned long)pc);
    ASSERT_STR_EQ(r.body, want);
    hresp_free(&r);
}

TEST(symbol) { with_server(symbol_client); }

static void profiles_client(struct tctx *t)
{
    static const char *const names[] = {"goroutine", "block", "mutex",
                                        "threadcreate"};
    bool have = have_profiles();
    for (size_t i = 0; i < 4; i++) {
        for (int debug = 0; debug <= 2; debug++) {
            char path[128];
            struct hresp r;
            char ct[128], cd[128];
            snprintf(path, sizeof path, "/debug/pprof/%s?debug=%d", names[i],
                     debug);
            get(t->port, path, &r);
            hdr(&r, "Content-Type", ct, sizeof ct);
            hdr(&r, "Content-Disposition", cd, sizeof cd);
            if (!have) {
                /* No profiles: a 501 with the error, never a crash. */
                if (r.status != 501 || strcmp(ct, "text/plain; charset=utf-8"))
                    FAIL("%s: %d %s, want 501 in a build without profiles",
                         path, r.status, ct);
                hresp_free(&r);
                continue;
            }
            if (r.status != 200)
                FAIL("%s: status %d:\n%s", path, r.status, r.raw);
            if (debug == 0) {
                char want[128];
                snprintf(want, sizeof want, "attachment; filename=\"%s\"",
                         names[i]);
                ASSERT_STR_EQ(ct, "application/octet-stream");
                ASSERT_STR_EQ(cd, want);
                /* gzip'd profile.proto */
                ASSERT(r.blen >= 2 && (unsigned char)r.body[0] == 0x1f &&
                       (unsigned char)r.body[1] == 0x8b);
            } else {
                ASSERT_STR_EQ(ct, "text/plain; charset=utf-8");
                ASSERT_STR_EQ(cd, "");
                if (debug == 2 && i == 0)
                    ASSERT_CONTAINS(r.body, "goroutine ");
                else if (i == 0 || i == 3)
                    ASSERT_CONTAINS(r.body, " profile: total ");
            }
            hresp_free(&r);
        }
    }
    expect(t->port, "/metrics", 200,
           "text/plain; version=0.0.4; charset=utf-8");
    expect(t->port, "/debug/pprof/heap", 404, "text/plain; charset=utf-8");
    expect(t->port, "/debug/pprof/goroutine?seconds=5", 400, NULL);
}

TEST(profiles) { with_server(profiles_client); }

/* ------------------------------------------------------------ bad input */

static void bad_client(struct tctx *t)
{
    int p = t->port;
    char big[HTTP_TEST_BIG];
    size_t n;

    /* Garbage: binary junk with a blank line, and one without. */
    static const char junk[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
                               "\r\n\r\n";
    bad(p, "binary garbage", junk, sizeof junk - 1, 400);
    bad(p, "a request line that is not HTTP", "HELLO WORLD\r\n\r\n", 15, 400);
    bad(p, "no version", "GET /\r\n\r\n", 9, 400);
    bad(p, "HTTP/2.0", "GET / HTTP/2.0\r\n\r\n", 18, 505);
    bad(p, "a relative target", "GET x HTTP/1.1\r\n\r\n", 19, 400);

    /* Request line too long: over 8 KiB without an end. */
    memcpy(big, "GET /", 5);
    memset(big + 5, 'a', 9000);
    n = 9005;
    bad(p, "a 9000-byte request line", big, n, 431);

    /* Too many headers: 150 short ones, well under 8 KiB. */
    n = (size_t)sprintf(big, "GET /debug/pprof/ HTTP/1.1\r\n");
    for (int i = 0; i < 150; i++)
        n += (size_t)sprintf(big + n, "X-%d: y\r\n", i);
    n += (size_t)sprintf(big + n, "\r\n");
    bad(p, "150 headers", big, n, 431);

    /* A header line that is broken; a folded one. */
    static const char nocolon[] = "GET / HTTP/1.1\r\nHost x\r\n\r\n";
    bad(p, "a header without a colon", nocolon, sizeof nocolon - 1, 400);
    static const char fold[] = "GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n";
    bad(p, "line folding", fold, sizeof fold - 1, 400);

    /* Bodies: too big, chunked, a bad length. */
    static const char huge[] = "POST /debug/pprof/symbol HTTP/1.1\r\n"
                               "Content-Length: 100000000\r\n\r\n0x1";
    bad(p, "a 100 MB body", huge, sizeof huge - 1, 413);
    static const char chunked[] = "POST /debug/pprof/symbol HTTP/1.1\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n"
                                  "3\r\n0x1\r\n0\r\n\r\n";
    bad(p, "a chunked body", chunked, sizeof chunked - 1, 501);
    static const char badlen[] = "POST /debug/pprof/symbol HTTP/1.1\r\n"
                                 "Content-Length: -1\r\n\r\n";
    bad(p, "Content-Length -1", badlen, sizeof badlen - 1, 400);
    static const char twolen[] = "POST /debug/pprof/symbol HTTP/1.1\r\n"
                                 "Content-Length: 1\r\nContent-Length: 2\r\n"
                                 "\r\nab";
    bad(p, "two Content-Lengths", twolen, sizeof twolen - 1, 400);

    /* Methods: DELETE and a made-up one get 405 with Allow. */
    static const char del[] = "DELETE /debug/pprof/ HTTP/1.1\r\n\r\n";
    struct hresp r;
    char v[64];
    roundtrip(p, del, sizeof del - 1, &r);
    ASSERT_EQ(r.status, 405);
    ASSERT_STR_EQ(hdr(&r, "Allow", v, sizeof v), "GET, HEAD, POST");
    hresp_free(&r);
    bad(p, "method BREW", "BREW / HTTP/1.1\r\n\r\n", 19, 405);

    /* Parameters. */
    expect(p, "/debug/pprof/goroutine?debug=7", 400, NULL);
    expect(p, "/debug/pprof/goroutine?debug=x", 400, NULL);
    expect(p, "/debug/pprof/goroutine?debug=%zz", 400, NULL);
    expect(p, "/debug/pprof/profile?seconds=0", 400, NULL);
    expect(p, "/debug/pprof/profile?seconds=-1", 400, NULL);
    expect(p, "/debug/pprof/profile?seconds=abc", 400, NULL);
    expect(p, "/debug/pprof/profile?seconds=100000", 400, NULL);
    expect(p, "/debug/pprof/profile?seconds=99999999999999999999", 400, NULL);

    /* Paths. */
    expect(p, "/", 404, NULL);
    expect(p, "/nope", 404, NULL);
    expect(p, "/debug/pprof/nope", 404, NULL);
    expect(p, "/debug/pprof/goroutine/x", 404, NULL);
    expect(p, "/metricsx", 404, NULL);

    /* Half-open: part of a head, then our side shut for writing. The
     * server sees EOF mid-request and closes without a word (a 408 would
     * mean it missed the EOF that came with the data: test_net's
     * read_fin_same_edge), and goes on serving. */
    int fd = dial(p);
    send_all(fd, "GET /debug/pprof/ HT", 20);
    shutdown(fd, SHUT_WR);
    read_resp(fd, &r);
    close(fd);
    if (r.status != 0)
        FAIL("half-open: status %d:\n%s", r.status, r.raw);
    hresp_free(&r);
    still_serving(p, "a half-open connection");

    /* Connect and hang up at once; connect and reset. */
    close(dial(p));
    fd = dial(p);
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    send_all(fd, "GET /deb", 8);
    close(fd);
    still_serving(p, "a reset connection");
}

TEST(bad_input)
{
    weft__debug_req_timeout = 2000 * MS;
    with_server(bad_client);
}

/* slowloris: a peer dribbling a head, and one that never sends, are cut
 * at the request deadline while others are served meanwhile. */
static void slow_client(struct tctx *t)
{
    int p = t->port;
    double start = harness_mono();
    int idle = dial(p);
    int drip = dial(p);
    struct hresp r;
    /* One byte every 50 ms: the head would take far longer than the
     * deadline. */
    static const char head[] = "GET /debug/pprof/cmdline HTTP/1.1\r\nX: ";
    size_t sent = 0;
    bool cut = false;
    while (harness_mono() - start < 10 * slow()) {
        char c = sent < sizeof head - 1 ? head[sent] : 'a';
        if (send(drip, &c, 1, MSG_NOSIGNAL) != 1) {
            cut = true;
            break;
        }
        sent++;
        struct pollfd pf = {drip, POLLIN, 0};
        if (poll(&pf, 1, 50) == 1) {
            cut = true;
            break;
        }
        if (sent % 10 == 0)
            still_serving(p, "a slowloris connection");
    }
    /* A deadline per read instead of per request would never cut a peer
     * that sends a byte every 50 ms: the 10 s loop would end uncut. */
    ASSERT(cut);
    read_resp(drip, &r);
    ASSERT_EQ(r.status, 408);
    hresp_free(&r);
    close(drip);
    /* The idle one was cut too, without a word. */
    read_resp(idle, &r);
    ASSERT_EQ(r.status, 0);
    ASSERT_EQ(r.rawlen, 0);
    hresp_free(&r);
    close(idle);
    still_serving(p, "slowloris");
}

TEST(slowloris)
{
    weft__debug_req_timeout = 500 * MS;
    with_server(slow_client);
}

/* ------------------------------------------------------------ CPU profile */

static void cpu_client(struct tctx *t)
{
    if (!have_profiles())
        SKIP("this build has no profiles (protobuf-c, zlib)");
    EXPECT_ERR(weft_cpuprofile_start(0), 0);
    /* A profile is running: the server's own attempt must fail as Go's. */
    struct hresp h;
    char v[64];
    get(t->port, "/debug/pprof/profile?seconds=1", &h);
    ASSERT_EQ(h.status, 500);
    ASSERT_STR_EQ(h.body,
                  "Could not enable CPU profiling: cpu profiling already in "
                  "use\n");
    ASSERT_STR_EQ(hdr(&h, "X-Go-Pprof", v, sizeof v), "1");
    hresp_free(&h);
    EXPECT_ERR(weft_cpuprofile_stop(-1), 0);
    /* Free again: a one-second profile. */
    get(t->port, "/debug/pprof/profile?seconds=1", &h);
    ASSERT_EQ(h.status, 200);
    ASSERT_STR_EQ(hdr(&h, "Content-Type", v, sizeof v),
                  "application/octet-stream");
    ASSERT(h.blen >= 2 && (unsigned char)h.body[0] == 0x1f);
    hresp_free(&h);
}

TEST(cpu_profile_busy) { with_server(cpu_client); }

/* -------------------------------------------------------- stop, runtime end */

/* stop_body: weft_debug_stop with idle and half-sent connections open
 * returns promptly, and their peers see the connection end. */
static intptr_t open_conns(void *arg)
{
    int *fds = arg;
    int port = fds[3];
    fds[0] = dial(port);
    fds[1] = dial(port);
    send_all(fds[1], "GET /debug/pprof/ HTTP/1.1\r\n", 28);
    fds[2] = dial(port);
    send_all(fds[2], "POST /debug/pprof/symbol HTTP/1.1\r\n"
                     "Content-Length: 100\r\n\r\n0x1", 62);
    usleep(100 * 1000); /* let the server take them in */
    return 0;
}

static intptr_t check_closed(void *arg)
{
    int *fds = arg;
    for (int i = 0; i < 3; i++) {
        struct hresp r;
        read_resp(fds[i], &r);
        close(fds[i]);
        if (r.status >= 200 && r.status < 300)
            FAIL("connection %d got an answer after stop:\n%s", i, r.raw);
        hresp_free(&r);
    }
    return 0;
}

static int stop_body(void *arg)
{
    (void)arg;
    int fds[4];
    fds[3] = weft_debug_serve("127.0.0.1:0");
    EXPECT_OK(fds[3]);
    weft_blocking(open_conns, fds);
    int64_t t0 = weft_now();
    EXPECT_ERR(weft_debug_stop(), 0);
    int64_t took = weft_now() - t0;
    /* A hang guard, not a speed check: the requests' deadline is 60 s,
     * so a stop that waited for it instead of closing shows. */
    if (took > (int64_t)(10 * 1000 * MS * slow()))
        FAIL("weft_debug_stop took %lld ms", (long long)(took / MS));
    weft_blocking(check_closed, fds);
    /* Nothing listens any more. */
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", fds[3]);
    EXPECT_ERR(weft_dial("tcp4", addr), -ECONNREFUSED);
    return 0;
}

TEST(stop_with_open_connections)
{
    weft__debug_req_timeout = 60 * 1000 * MS; /* stop, not the deadline */
    run(2, stop_body, NULL);
}

/* runtime_end: the main coroutine returns while the server serves, with
 * a connection parked mid-request. weft_main must return, the leak gate
 * sees no fd left, ASan no connection struct; then a second runtime
 * serves again on a fresh server. */
static int client_fd = -1;

static intptr_t open_one(void *arg)
{
    int port = (int)(intptr_t)arg;
    client_fd = dial(port);
    send_all(client_fd, "GET /debug/pprof/ HTTP/1.1\r\n", 28);
    usleep(100 * 1000);
    return 0;
}

static int end_body(void *arg)
{
    (void)arg;
    int port = weft_debug_serve("127.0.0.1:0");
    EXPECT_OK(port);
    weft_blocking(open_one, (void *)(intptr_t)port);
    return 0; /* no weft_debug_stop */
}

static void again_client(struct tctx *t)
{
    still_serving(t->port, "a runtime that ended while serving");
}

TEST(runtime_end_while_serving)
{
    /* The body returns with the server still serving: its coroutines,
     * listener and a parked connection are left for the runtime's end
     * to release, which is what this test checks. */
    gate_off = true;
    weft__debug_req_timeout = 60 * 1000 * MS;
    run(2, end_body, NULL);
    struct hresp r;
    read_resp(client_fd, &r); /* the server side is gone: EOF */
    ASSERT_EQ(r.status, 0);
    hresp_free(&r);
    close(client_fd);
    with_server(again_client);
}

/* --------------------------------------------------------- real clients */

static void curl_client(struct tctx *t)
{
    if (!harness_have_tool("curl"))
        SKIP("curl is not installed");
    char url[128], out[8192], err[1024];
    int st;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/debug/pprof/", t->port);
    const char *argv[] = {"curl", "-sS", "--max-time", "20", "-o",
                          "/dev/null", "-w", "%{http_code} %{content_type}",
                          url, NULL};
    ASSERT_EQ(harness_run(argv, NULL, out, sizeof out, err, sizeof err, &st),
              0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("curl %s: %s", url, err);
    ASSERT_STR_EQ(out, "200 text/html; charset=utf-8");

    /* POST with curl: the symbol endpoint, Expect: 100-continue forced. */
    snprintf(url, sizeof url, "http://127.0.0.1:%d/debug/pprof/symbol",
             t->port);
    char data[64];
    snprintf(data, sizeof data, "%#lx", (unsigned long)&symbol_marker);
    const char *argv2[] = {"curl", "-sS", "--max-time", "20", "-H",
                           "Expect: 100-continue", "--data-binary", data,
                           url, NULL};
    ASSERT_EQ(harness_run(argv2, NULL, out, sizeof out, err, sizeof err, &st),
              0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("curl POST %s: %s", url, err);
    ASSERT_CONTAINS(out, " symbol_marker\n");
}

TEST(curl) { with_server(curl_client); }

/* go tool pprof reads the goroutine profile and a CPU profile. */
static void pprof_client(struct tctx *t)
{
    if (!harness_have_tool("go"))
        SKIP("go is not installed");
    if (!have_profiles())
        SKIP("this build has no profiles (protobuf-c, zlib)");
    char tmp[] = "/tmp/weft-pprof-XXXXXX";
    ASSERT(mkdtemp(tmp) != NULL);
    char home[128], url[128], out[1 << 16], err[4096];
    snprintf(home, sizeof home, "HOME=%s", tmp);
    char ptmp[128];
    snprintf(ptmp, sizeof ptmp, "PPROF_TMPDIR=%s", tmp);
    const char *env[] = {home, ptmp, "GOFLAGS=", NULL};
    int st;
    snprintf(url, sizeof url, "http://127.0.0.1:%d/debug/pprof/goroutine",
             t->port);
    const char *argv[] = {"go", "tool", "pprof", "-raw", url, NULL};
    ASSERT_EQ(harness_run(argv, env, out, sizeof out, err, sizeof err, &st),
              0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        FAIL("go tool pprof %s: %s", url, err);
    ASSERT_CONTAINS(out, "goroutine/count");

    /* Nothing profiles here: the server's own profile must start. */
    EXPECT_OK(weft_cpuprofile_start(0));
    EXPECT_OK(weft_cpuprofile_stop(-1));
    {
        snprintf(url, sizeof url,
                 "http://127.0.0.1:%d/debug/pprof/profile?seconds=1", t->port);
        const char *argv2[] = {"go", "tool", "pprof", "-raw", url, NULL};
        ASSERT_EQ(harness_run(argv2, env, out, sizeof out, err, sizeof err,
                              &st),
                  0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
            FAIL("go tool pprof %s: %s", url, err);
        ASSERT_CONTAINS(out, "cpu/nanoseconds");
    }
    const char *rm[] = {"rm", "-rf", tmp, NULL};
    harness_run(rm, NULL, NULL, 0, NULL, 0, &st);
}

TEST_TIMEOUT(go_tool_pprof, 120) { with_server(pprof_client); }

/*
 * A real Prometheus (Debian's /usr/bin/prometheus) scrapes /metrics every
 * second; its HTTP API must then report the target healthy, and a query
 * for weft_coroutines must return the series it stored from us.
 */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    ASSERT_EQ(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    close(fd);
    return ntohs(sa.sin_port);
}

static void prom_client(struct tctx *t)
{
    const char *prom = "/usr/bin/prometheus";
    if (access(prom, X_OK) != 0)
        SKIP("prometheus is not installed");
    char dir[] = "/tmp/weft-prom-XXXXXX";
    ASSERT(mkdtemp(dir) != NULL);
    char cfg[256], data[256], logf[256], listen[64], cfgarg[300],
        dataarg[300], listenarg[100];
    snprintf(cfg, sizeof cfg, "%s/prometheus.yml", dir);
    snprintf(data, sizeof data, "%s/data", dir);
    snprintf(logf, sizeof logf, "%s/log", dir);
    int pport = free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%d", pport);
    FILE *f = fopen(cfg, "w");
    ASSERT(f != NULL);
    fprintf(f,
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: weft\n"
            "    static_configs:\n      - targets: ['127.0.0.1:%d']\n",
            t->port);
    fclose(f);
    snprintf(cfgarg, sizeof cfgarg, "--config.file=%s", cfg);
    snprintf(dataarg, sizeof dataarg, "--storage.tsdb.path=%s", data);
    snprintf(listenarg, sizeof listenarg, "--web.listen-address=%s", listen);

    pid_t pid = fork();
    ASSERT(pid >= 0);
    if (pid == 0) {
        int lfd = open(logf, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(lfd, 1);
        dup2(lfd, 2);
        execl(prom, prom, cfgarg, dataarg, listenarg, (char *)NULL);
        _exit(127);
    }

    /* Poll the targets API until the weft job has been scraped and is
     * healthy, then the query API until weft_coroutines{job="weft"} is
     * stored (the first scrape's samples can take a moment to show). */
    static const char *const qs[] = {
        "GET /api/v1/targets HTTP/1.1\r\nHost: x\r\n"
        "Connection: close\r\n\r\n",
        "GET /api/v1/query?query=weft_coroutines HTTP/1.1\r\nHost: x\r\n"
        "Connection: close\r\n\r\n",
    };
    static const char *const wants[][2] = {
        {"\"job\":\"weft\"", "\"health\":\"up\""},
        {"\"__name__\":\"weft_coroutines\"", "\"job\":\"weft\""},
    };
    int stage = 0;
    const char *want = wants[0][1];
    bool seen = false;
    struct hresp r = {0};
    double start = harness_mono();
    while (harness_mono() - start < 40 * slow()) {
        usleep(250 * 1000);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)pport)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            close(fd);
            continue;
        }
        send_all(fd, qs[stage], strlen(qs[stage]));
        hresp_free(&r);
        read_resp(fd, &r);
        close(fd);
        want = wants[stage][1];
        if (r.status == 200 && strstr(r.body, wants[stage][0]) != NULL &&
            strstr(r.body, want) != NULL && ++stage == 2) {
            seen = true;
            break;
        }
    }
    kill(pid, SIGTERM);
    int st;
    waitpid(pid, &st, 0);
    if (!seen) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "tail -n 20 %s >&2", logf);
        if (system(cmd) != 0) {
        }
        FAIL("prometheus never reported %s for the weft job (%s); last "
             "answer:\n%s",
             want, stage == 0 ? "targets" : "weft_coroutines query",
             r.raw ? r.raw : "(none)");
    }
    hresp_free(&r);
    const char *rm[] = {"rm", "-rf", dir, NULL};
    harness_run(rm, NULL, NULL, 0, NULL, 0, &st);
}

TEST_TIMEOUT(prometheus_scrape, 120) { with_server(prom_client); }
