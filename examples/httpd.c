/*
 * httpd.c - an HTTP/1.1 server with keep-alive, one coroutine per
 * connection, written as straight-line blocking code: read a request,
 * answer it, repeat. While a connection waits for its peer, its coroutine
 * is parked and the thread serves the others.
 *
 *     build/examples/httpd [--port N] [--procs N] [--debug-addr ADDR]
 *         (default port 8080, 0 picks a free one; the debug server, Go's
 *         /debug/pprof/ and /metrics, on ADDR, default 127.0.0.1:6060,
 *         "off" for none)
 *     curl -s localhost:8080/
 *     curl -s -d '{"hello":"world"}' localhost:8080/sendjson
 *     hey -z 5s -c 50 -m POST -T application/json -d '{"a":1}' \
 *         http://127.0.0.1:8080/sendjson
 *
 * Routes: GET / (the route list), POST /sendjson (checks a JSON object,
 * answers {"status":"ok","received":BYTES,"keys":MEMBERS,...}), GET
 * /healthz ("ok"). HEAD works wherever GET does.
 *
 * What makes it fast: each connection parses requests in place in one
 * input buffer on its coroutine's stack and builds responses in one output
 * buffer, so nothing is allocated per request and each batch of responses
 * is one write(2). Pipelined requests that arrive together are answered
 * together, in one write.
 *
 * What makes it safe to expose:
 *  1. A request head is at most HEAD_MAX bytes (else 431) and a body at
 *     most BODY_MAX (else 413): a connection's memory is bounded.
 *  2. Every read has a deadline. A connection may sit idle between requests
 *     for IDLE_TIMEOUT; once a request has begun and must be waited for,
 *     the rest of it must arrive within REQUEST_TIMEOUT (else 408). So a
 *     slowloris peer, dribbling a byte at a time, costs one parked
 *     coroutine for a few seconds and is then cut off.
 *  3. Every write has a deadline too: a peer that never reads cannot pin
 *     a coroutine.
 *  4. A malformed request gets 400 and the connection is closed: after
 *     garbage, where the next request starts is unknown.
 *
 * Limits, on purpose: request bodies must have a Content-Length; a chunked
 * one gets 411 Length Required (any other transfer coding 501), and the
 * connection is closed. /sendjson checks structure only (brackets nest and
 * match, strings end, one object and nothing after it), not a full JSON
 * grammar.
 *
 * Rejected: one Date string shared by all connections and rewritten each
 * second (a reader on another thread may copy it mid-rewrite; each
 * connection caches its own instead); a buffer as large as the biggest
 * body (the body is checked as it streams through the input buffer);
 * writing each response as soon as it is built (pipelined requests would
 * cost a write(2) each).
 */
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <weft.h>

#define SEC (1000 * 1000 * 1000LL)

#define HEAD_MAX (8 * 1024)    /* request line and headers */
#define BODY_MAX (1024 * 1024) /* request body */
#define INBUF (16 * 1024)      /* must exceed HEAD_MAX: see read_head */
#define OUTBUF (16 * 1024)
#define RESP_MAX 2048           /* the largest response we build */
#define IDLE_TIMEOUT (10 * SEC) /* between requests */
#define REQUEST_TIMEOUT (5 * SEC)
#define WRITE_TIMEOUT (10 * SEC)
#define LINGER_TIMEOUT (2 * SEC)
#define JSON_DEPTH 64

_Static_assert(INBUF > HEAD_MAX, "a whole head must fit in the buffer");

/* One per connection, on its coroutine's stack. */
struct conn {
    int fd;
    size_t start, end; /* input not yet consumed: in[start, end) */
    size_t outlen;     /* responses not yet written: out[0, outlen) */
    int64_t deadline;  /* for the rest of this request; 0: not yet set */
    time_t date_sec;   /* the second date[] was formatted for */
    char date[48];     /* "Date: ...\r\n" */
    char in[INBUF];
    char out[OUTBUF];
};

enum method { M_OTHER, M_GET, M_HEAD, M_POST };
enum route { R_NONE, R_INDEX, R_SENDJSON, R_HEALTHZ };
enum outcome { KEEP, CLOSE, LINGER };

/* What a request head said. It holds no pointers into conn.in: reading
 * the body reuses that buffer. */
struct request {
    enum method method;
    enum route route;
    int minor; /* HTTP/1.minor */
    bool keepalive;
    bool expect_continue;
    size_t body_len;
};

/* ---------------------------------------------------------- responses */

struct status {
    int code;
    const char *line; /* the status line, CRLF included */
    size_t len;
    const char *body; /* the body of an error answer: "NNN Reason\n" */
    size_t blen;
};

/* clang-format off */
#define STATUS(code, text)                                                 \
    {code, "HTTP/1.1 " #code " " text "\r\n",                             \
     sizeof("HTTP/1.1 " #code " " text "\r\n") - 1, #code " " text "\n",  \
     sizeof(#code " " text "\n") - 1}
/* clang-format on */

static const struct status statuses[] = {
    STATUS(200, "OK"),
    STATUS(400, "Bad Request"),
    STATUS(404, "Not Found"),
    STATUS(405, "Method Not Allowed"),
    STATUS(408, "Request Timeout"),
    STATUS(411, "Length Required"),
    STATUS(413, "Content Too Large"),
    STATUS(417, "Expectation Failed"),
    STATUS(431, "Request Header Fields Too Large"),
    STATUS(501, "Not Implemented"),
    STATUS(505, "HTTP Version Not Supported"),
};

static const struct status *find_status(int code)
{
    for (size_t i = 0; i < sizeof statuses / sizeof statuses[0]; i++)
        if (statuses[i].code == code)
            return &statuses[i];
    return &statuses[1]; /* not reached: every code we send is listed */
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUTS(p, lit) put(p, lit, sizeof(lit) - 1)

static char *put_uint(char *p, uint64_t v)
{
    char tmp[20];
    size_t n = 0;

    do
        tmp[n++] = (char)('0' + v % 10);
    while ((v /= 10) != 0);
    while (n > 0)
        *p++ = tmp[--n];
    return p;
}

/* date_header - the connection's Date header line, formatted at most once
 * a second. Per connection rather than shared, so no thread ever reads a
 * string another is rewriting. strftime's names are English because this
 * program never calls setlocale. */
static const char *date_header(struct conn *c, size_t *len)
{
    time_t now = time(NULL); /* the vDSO: no system call */

    if (now != c->date_sec) {
        struct tm tm;
        c->date_sec = now;
        gmtime_r(&now, &tm);
        strftime(c->date, sizeof c->date, "Date: %a, %d %b %Y %H:%M:%S GMT\r\n",
                 &tm);
    }
    *len = strlen(c->date);
    return c->date;
}

/*
 * respond - append a whole response to c->out: status line, Date,
 * Content-Type, Content-Length, Connection when it differs from the
 * version's default, the extra header lines (or NULL), then the body,
 * unless the request was HEAD. The caller has made RESP_MAX bytes of room.
 */
static void respond(struct conn *c, const struct request *rq, int code,
                    const char *ctype, const char *body, size_t blen,
                    const char *extra)
{
    const struct status *st = find_status(code);
    char *p = c->out + c->outlen;
    size_t dlen;
    const char *date = date_header(c, &dlen);

    p = put(p, st->line, st->len);
    p = put(p, date, dlen);
    p = PUTS(p, "Content-Type: ");
    p = put(p, ctype, strlen(ctype));
    p = PUTS(p, "\r\nContent-Length: ");
    p = put_uint(p, blen);
    p = PUTS(p, "\r\n");
    if (!rq->keepalive)
        p = PUTS(p, "Connection: close\r\n");
    else if (rq->minor == 0)
        p = PUTS(p, "Connection: keep-alive\r\n");
    if (extra != NULL)
        p = put(p, extra, strlen(extra));
    p = PUTS(p, "\r\n");
    if (rq->method != M_HEAD)
        p = put(p, body, blen);
    c->outlen = (size_t)(p - c->out);
}

#define TEXT "text/plain; charset=utf-8"
#define JSON "application/json"

/* respond_error - a final error answer; the connection closes after it. */
static void respond_error(struct conn *c, struct request *rq, int code)
{
    const struct status *st = find_status(code);

    rq->keepalive = false;
    respond(c, rq, code, TEXT, st->body, st->blen, NULL);
}

/* flush - write out every response built so far. Returns 0, or -1 when
 * the connection is gone (reset, or the peer stopped reading). */
static int flush(struct conn *c)
{
    if (c->outlen == 0)
        return 0;
    ssize_t r = weft_write_dl(c->fd, c->out, c->outlen, NULL,
                              weft_now() + WRITE_TIMEOUT);
    c->outlen = 0;
    return r < 0 ? -1 : 0;
}

/* ------------------------------------------------------------ reading */

/*
 * head_end - the length of the head at the start of p[0, n), blank line
 * included, or 0 if it is not all there yet. Lines may end in CRLF or a
 * bare LF. *from is where the search resumes when more bytes arrive, so a
 * head dribbled in a byte at a time is still scanned once.
 */
static size_t head_end(const char *p, size_t n, size_t *from)
{
    size_t i = *from;

    while (i < n) {
        const char *nl = memchr(p + i, '\n', n - i);
        if (nl == NULL)
            break;
        i = (size_t)(nl - p);
        if (i + 1 < n && p[i + 1] == '\n')
            return i + 2;
        if (i + 2 < n && p[i + 1] == '\r' && p[i + 2] == '\n')
            return i + 3;
        if (i + 1 == n || (i + 2 == n && p[i + 1] == '\r')) {
            *from = i; /* the blank line may be arriving */
            return 0;
        }
        i++;
    }
    *from = n;
    return 0;
}

/*
 * read_head - read until c->in[c->start, ...) holds a whole request head
 * and return its length. Responses still in c->out are written before it
 * blocks. Returns 0 when the connection should just end (the peer closed,
 * or stayed idle for IDLE_TIMEOUT), or -code for a final error answer
 * (431: the head is too long; 408: it was not done in REQUEST_TIMEOUT).
 */
static ssize_t read_head(struct conn *c)
{
    size_t from = 0;
    int64_t idle_deadline = 0;

    for (;;) {
        /* RFC 9112 2.2: empty lines before a request are ignored. They
         * still count as the request having begun, so a stream of them
         * cannot keep the connection forever. */
        while (c->start < c->end &&
               (c->in[c->start] == '\r' || c->in[c->start] == '\n')) {
            c->start++;
            from = 0;
            if (c->deadline == 0)
                c->deadline = weft_now() + REQUEST_TIMEOUT;
        }
        size_t n = c->end - c->start;
        if (n > 0) {
            size_t len = head_end(c->in + c->start, n, &from);
            if (len > HEAD_MAX || (len == 0 && n >= HEAD_MAX))
                return -431;
            if (len > 0)
                return (ssize_t)len;
            if (c->deadline == 0)
                c->deadline = weft_now() + REQUEST_TIMEOUT;
        }
        /* About to block: the peer may be waiting for our answers. */
        if (flush(c) < 0)
            return 0;
        if (n == 0) {
            c->start = c->end = 0;
        } else if (c->start + HEAD_MAX >= INBUF) {
            /* Make room for the rest of a head of up to HEAD_MAX. */
            memmove(c->in, c->in + c->start, n);
            c->start = 0;
            c->end = n;
        }
        int64_t dl = c->deadline;
        if (dl == 0) {
            if (idle_deadline == 0)
                idle_deadline = weft_now() + IDLE_TIMEOUT;
            dl = idle_deadline;
        }
        ssize_t r = weft_read_dl(c->fd, c->in + c->end, INBUF - c->end, dl);
        if (r > 0)
            c->end += (size_t)r;
        else if (r == WEFT_ETIMEDOUT && c->deadline != 0)
            return -408;
        else
            return 0; /* end of file, idle too long, reset */
    }
}

/* The JSON check, fed the body piece by piece as it arrives. */
struct jscan {
    unsigned depth; /* brackets open */
    unsigned keys;  /* members of the top-level object */
    bool in_str, esc, done, bad;
    char open[JSON_DEPTH]; /* the open brackets, '{' or '[' */
};

static void jscan_feed(struct jscan *js, const char *p, size_t n)
{
    for (size_t i = 0; i < n && !js->bad; i++) {
        unsigned char ch = (unsigned char)p[i];
        if (js->in_str) {
            if (js->esc)
                js->esc = false;
            else if (ch == '\\')
                js->esc = true;
            else if (ch == '"')
                js->in_str = false;
            else if (ch < 0x20)
                js->bad = true; /* raw control characters are not JSON */
            continue;
        }
        switch (ch) {
        case ' ':
        case '\t':
        case '\r':
        case '\n':
            break;
        case '{':
        case '[':
            if (js->done || (js->depth == 0 && ch != '{') ||
                js->depth == JSON_DEPTH)
                js->bad = true;
            else
                js->open[js->depth++] = (char)ch;
            break;
        case '}':
        case ']':
            if (js->depth == 0 ||
                js->open[js->depth - 1] != (ch == '}' ? '{' : '['))
                js->bad = true;
            else if (--js->depth == 0)
                js->done = true;
            break;
        case '"':
            js->in_str = true;
            js->bad = js->depth == 0;
            break;
        case ':':
            js->keys += js->depth == 1; /* depth 1 is the top object */
            break;
        default:
            js->bad = js->depth == 0; /* nothing outside the object */
        }
    }
}

/*
 * read_body - consume the request's body of len bytes, feeding it to js
 * (NULL: discard it). Returns 0, -1 when the peer is gone, or -408 when
 * the body did not arrive within REQUEST_TIMEOUT.
 */
static int read_body(struct conn *c, size_t len, struct jscan *js)
{
    while (len > 0) {
        if (c->start == c->end) {
            if (flush(c) < 0) /* a 100 Continue, earlier answers */
                return -1;
            if (c->deadline == 0)
                c->deadline = weft_now() + REQUEST_TIMEOUT;
            c->start = c->end = 0;
            ssize_t r = weft_read_dl(c->fd, c->in, INBUF, c->deadline);
            if (r <= 0)
                return r == WEFT_ETIMEDOUT ? -408 : -1;
            c->end = (size_t)r;
        }
        size_t take = c->end - c->start;
        if (take > len)
            take = len; /* the rest is the next request */
        if (js != NULL)
            jscan_feed(js, c->in + c->start, take);
        c->start += take;
        len -= take;
    }
    return 0;
}

/* ------------------------------------------------------------ parsing */

/* tchar from RFC 9110 5.6.2: the characters of methods and header names. */
static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

static bool is_token(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i]))
            return false;
    return n > 0;
}

/* Whether s[0, n) equals lit, ignoring ASCII case. */
#define IS(s, n, lit)                                                          \
    ((n) == sizeof(lit) - 1 && strncasecmp(s, lit, sizeof(lit) - 1) == 0)

static enum route find_route(const char *path, size_t n)
{
    if (n == 1) /* path[0] is '/' */
        return R_INDEX;
    if (n == 9 && memcmp(path, "/sendjson", 9) == 0)
        return R_SENDJSON;
    if (n == 8 && memcmp(path, "/healthz", 8) == 0)
        return R_HEALTHZ;
    return R_NONE;
}

/* parse_request_line - "METHOD SP target SP HTTP/1.x". Returns 0 or an
 * error code. */
static int parse_request_line(const char *s, size_t n, struct request *rq)
{
    const char *end = s + n;
    const char *sp1 = memchr(s, ' ', n);
    if (sp1 == NULL || !is_token(s, (size_t)(sp1 - s)))
        return 400;
    const char *target = sp1 + 1;
    const char *sp2 = memchr(target, ' ', (size_t)(end - target));
    if (sp2 == NULL || sp2 == target)
        return 400;
    const char *v = sp2 + 1;
    if (end - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' ||
        v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9')
        return 400;
    if (v[5] != '1')
        return 505;
    rq->minor = v[7] - '0';

    size_t mlen = (size_t)(sp1 - s);
    rq->method = mlen == 3 && memcmp(s, "GET", 3) == 0    ? M_GET
                 : mlen == 4 && memcmp(s, "POST", 4) == 0 ? M_POST
                 : mlen == 4 && memcmp(s, "HEAD", 4) == 0 ? M_HEAD
                                                          : M_OTHER;

    for (const char *t = target; t < sp2; t++)
        if ((unsigned char)*t <= ' ' || *t == 0x7f)
            return 400;
    /* Servers must take absolute-form too: drop scheme and authority. */
    if (*target != '/') {
        const char *slashes = memchr(target, '/', (size_t)(sp2 - target));
        if (slashes == NULL || slashes + 1 >= sp2 || slashes[1] != '/' ||
            slashes[-1] != ':')
            return 400; /* not origin- or absolute-form ('*', junk) */
        const char *path =
            memchr(slashes + 2, '/', (size_t)(sp2 - slashes - 2));
        target = path != NULL ? path : sp2;
    }
    const char *q = memchr(target, '?', (size_t)(sp2 - target));
    rq->route = target == sp2
                    ? R_INDEX /* "http://host" */
                    : find_route(target, (size_t)((q ? q : sp2) - target));
    return 0;
}

/* The headers that matter here, as seen so far. */
struct seen {
    int host;
    bool length, close, keepalive, chunked, other_coding, bad_expect;
    bool too_big;
};

static void trim(const char **s, size_t *n)
{
    while (*n > 0 && (**s == ' ' || **s == '\t'))
        (*s)++, (*n)--;
    while (*n > 0 && ((*s)[*n - 1] == ' ' || (*s)[*n - 1] == '\t'))
        (*n)--;
}

/* parse_header - one "Name: value" line. Returns 0 or an error code. */
static int parse_header(const char *s, size_t n, struct request *rq,
                        struct seen *sn)
{
    const char *colon = memchr(s, ':', n);
    /* No colon, an empty name, or space before the colon (RFC 9112 5.1,
     * a smuggling vector) or leading space (obsolete line folding). */
    if (colon == NULL || !is_token(s, (size_t)(colon - s)))
        return 400;
    size_t nlen = (size_t)(colon - s);
    const char *v = colon + 1;
    size_t vlen = (size_t)(s + n - v);
    for (size_t i = 0; i < vlen; i++) {
        unsigned char ch = (unsigned char)v[i];
        if ((ch < ' ' && ch != '\t') || ch == 0x7f)
            return 400;
    }
    trim(&v, &vlen);

    if (IS(s, nlen, "Host")) {
        sn->host++;
    } else if (IS(s, nlen, "Content-Length")) {
        size_t len = 0;
        if (vlen == 0)
            return 400;
        for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9')
                return 400;
            if (len <= BODY_MAX) /* stop before it can overflow */
                len = len * 10 + (size_t)(v[i] - '0');
        }
        if (sn->length && len != rq->body_len)
            return 400; /* two lengths: which is the body? */
        sn->length = true;
        sn->too_big = len > BODY_MAX;
        rq->body_len = len;
    } else if (IS(s, nlen, "Connection")) {
        while (vlen > 0) { /* a comma-separated list of options */
            const char *comma = memchr(v, ',', vlen);
            size_t tlen = comma ? (size_t)(comma - v) : vlen;
            const char *tok = v;
            size_t rest = comma ? vlen - tlen - 1 : 0;
            v = comma ? comma + 1 : v + vlen;
            vlen = rest;
            trim(&tok, &tlen);
            if (IS(tok, tlen, "close"))
                sn->close = true;
            else if (IS(tok, tlen, "keep-alive"))
                sn->keepalive = true;
        }
    } else if (IS(s, nlen, "Transfer-Encoding")) {
        /* The body's end is then not given by a length. */
        if (vlen >= 7 && strncasecmp(v + vlen - 7, "chunked", 7) == 0)
            sn->chunked = true;
        else
            sn->other_coding = true;
    } else if (IS(s, nlen, "Expect")) {
        if (IS(v, vlen, "100-continue"))
            rq->expect_continue = true;
        else
            sn->bad_expect = true;
    }
    return 0;
}

/*
 * parse_head - fill rq from the head p[0, len) (as found by head_end).
 * Returns 0, or the code of the error to answer before closing.
 */
static int parse_head(const char *p, size_t len, struct request *rq)
{
    const char *end = p + len, *line = p;
    struct seen sn = {0};
    int code = 0;

    while (line < end && code == 0) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        size_t n = (size_t)(eol - line);
        if (n > 0 && line[n - 1] == '\r')
            n--;
        if (line == p)
            code = parse_request_line(line, n, rq);
        else if (n > 0)
            code = parse_header(line, n, rq, &sn);
        line = eol + 1;
    }
    if (code != 0)
        return code;
    if (sn.host > 1 || (rq->minor >= 1 && sn.host == 0))
        return 400; /* RFC 9112 3.2: exactly one Host in HTTP/1.1 */
    if (sn.chunked || sn.other_coding)
        return sn.chunked && !sn.other_coding ? 411 : 501;
    if (sn.too_big)
        return 413;
    if (sn.bad_expect && rq->minor >= 1)
        return 417;
    rq->keepalive = !sn.close && (rq->minor >= 1 || sn.keepalive);
    return 0;
}

/* ------------------------------------------------------------ routes */

static const char index_body[] =
    "weft httpd: HTTP/1.1, one coroutine per connection.\n"
    "\n"
    "GET  /          this list\n"
    "POST /sendjson  a JSON object; answers a JSON summary of it\n"
    "GET  /healthz   \"ok\"\n";

_Static_assert(sizeof index_body + 512 < RESP_MAX, "room for the headers");

/* sendjson - POST /sendjson: a summary of the JSON object js checked. */
static void sendjson(struct conn *c, const struct request *rq,
                     const struct jscan *js)
{
    char body[160], *p = body;

    if (js->bad || !js->done) {
        p = PUTS(p, "{\"status\":\"error\","
                    "\"message\":\"the body is not a JSON object\"}\n");
        respond(c, rq, 400, JSON, body, (size_t)(p - body), NULL);
        return;
    }
    p = PUTS(p, "{\"status\":\"ok\",\"received\":");
    p = put_uint(p, rq->body_len);
    p = PUTS(p, ",\"keys\":");
    p = put_uint(p, js->keys);
    p = PUTS(p, ",\"message\":\"thanks for the JSON\"}\n");
    respond(c, rq, 200, JSON, body, (size_t)(p - body), NULL);
}

/* handle - answer one request whose head is parsed, reading its body. */
static enum outcome handle(struct conn *c, struct request *rq)
{
    bool get = rq->method == M_GET || rq->method == M_HEAD;
    const char *allow = NULL; /* set: 405, with this Allow header */

    if (rq->route == R_INDEX || rq->route == R_HEALTHZ)
        allow = get ? NULL : "Allow: GET, HEAD\r\n";
    else if (rq->route == R_SENDJSON)
        allow = rq->method == M_POST ? NULL : "Allow: POST\r\n";
    bool refused = rq->route == R_NONE || allow != NULL;
    struct jscan js = {0};

    if (OUTBUF - c->outlen < RESP_MAX && flush(c) < 0)
        return CLOSE;
    if (refused && rq->expect_continue && rq->body_len > 0) {
        /* The client waits for our word before sending the body: say no
         * and close, rather than read a body we do not want. */
        rq->keepalive = false;
    } else {
        /* Ask for the body only if it is not here yet (RFC 9110 10.1.1). */
        if (rq->expect_continue && rq->minor >= 1 &&
            c->end - c->start < rq->body_len) {
            char *p = PUTS(c->out + c->outlen, "HTTP/1.1 100 Continue\r\n\r\n");
            c->outlen = (size_t)(p - c->out);
        }
        /* Even a body we ignore is read: the next request follows it. */
        bool check = !refused && rq->route == R_SENDJSON;
        int r = read_body(c, rq->body_len, check ? &js : NULL);
        if (r == -408) {
            respond_error(c, rq, 408);
            return LINGER;
        }
        if (r < 0)
            return CLOSE;
    }

    if (refused) {
        const struct status *st = find_status(allow ? 405 : 404);
        respond(c, rq, st->code, TEXT, st->body, st->blen, allow);
    } else if (rq->route == R_INDEX) {
        respond(c, rq, 200, TEXT, index_body, sizeof index_body - 1, NULL);
    } else if (rq->route == R_HEALTHZ) {
        respond(c, rq, 200, TEXT, "ok", 2, NULL);
    } else {
        sendjson(c, rq, &js);
    }
    return rq->keepalive ? KEEP : CLOSE;
}

/* --------------------------------------------------------- connections */

/*
 * linger_close - close after an error answer. The peer may still be
 * sending (a body we refused, more pipelined requests), and closing a
 * socket with unread input makes the kernel send a reset, which can
 * destroy our answer before the peer reads it. So send the answer, shut
 * down our direction, and drain the peer's for a while first (Apache's
 * lingering close; Go's closeWriteAndWait).
 */
static void linger_close(struct conn *c)
{
    int64_t deadline = weft_now() + LINGER_TIMEOUT;

    if (flush(c) == 0 && weft_shutdown(c->fd, SHUT_WR) == 0)
        while (weft_read_dl(c->fd, c->in, INBUF, deadline) > 0)
            ;
    weft_close(c->fd);
}

static void serve_conn(void *arg)
{
    struct conn c; /* not zeroed whole: that would touch 32 KiB */

    c.fd = (int)(intptr_t)arg;
    c.start = c.end = c.outlen = 0;
    c.date_sec = 0;
    for (;;) {
        struct request rq = {.method = M_OTHER};
        c.deadline = 0;
        ssize_t len = read_head(&c);
        if (len == 0)
            break;
        int code =
            len < 0 ? (int)-len : parse_head(c.in + c.start, (size_t)len, &rq);
        if (code != 0) {
            respond_error(&c, &rq, code);
            linger_close(&c);
            return;
        }
        c.start += (size_t)len;
        enum outcome out = handle(&c, &rq);
        if (out == LINGER) {
            linger_close(&c);
            return;
        }
        if (out == CLOSE)
            break;
    }
    flush(&c);
    weft_close(c.fd);
}

/* local_port - the port a listening socket is bound to (after port 0
 * it is the one the kernel picked), or -1. */
static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;

    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    if (ss.ss_family == AF_INET)
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return -1;
}

struct config {
    long port;
    const char *debug_addr; /* NULL: no debug server */
};

static int serve(void *arg)
{
    const struct config *cfg = arg;
    char addr[16];

    snprintf(addr, sizeof addr, ":%ld", cfg->port);
    int lfd = weft_listen("tcp", addr, 0);
    if (lfd < 0) {
        fprintf(stderr, "httpd: listen %s: %s\n", addr, weft_strerror(lfd));
        return 1;
    }
    printf("httpd: listening on :%d (%d procs)\n", local_port(lfd),
           weft_procs());
    if (cfg->debug_addr != NULL) {
        /* Profiles and metrics of this very server, served by coroutines
         * beside its own; a failure costs only the debug server. */
        int dport = weft_debug_serve(cfg->debug_addr);
        if (dport < 0)
            fprintf(stderr, "httpd: debug server on %s: %s\n",
                    cfg->debug_addr, weft_strerror(dport));
        else
            printf("httpd: debug server on port %d (%s)\n", dport,
                   cfg->debug_addr);
    }
    fflush(stdout); /* a script may be waiting for this line on a pipe */

    /* The default stack size on purpose: default stacks are recycled from
     * a cache, while any other size is mapped and unmapped per coroutine.
     * 256 KiB of address space each, of which a connection touches about
     * 40 KiB. */
    weft_go_opts_t opts = {.name = "http conn"};
    for (;;) {
        int fd = weft_accept(lfd, NULL, NULL);
        if (fd == WEFT_ECLOSED)
            break;
        if (fd < 0) {
            /* weft_accept itself retries EINTR and ECONNABORTED and waits
             * out fd exhaustion; what is left (EPERM from a firewall,
             * ...) may pass. Pause so that an error that persists is not
             * a busy loop. */
            fprintf(stderr, "httpd: accept: %s\n", weft_strerror(fd));
            weft_sleep(10 * 1000 * 1000);
            continue;
        }
        int64_t id = weft_go_opts(serve_conn, (void *)(intptr_t)fd, &opts);
        if (id < 0) {
            fprintf(stderr, "httpd: weft_go: %s\n", weft_strerror((int)id));
            weft_close(fd);
        }
    }
    weft_close(lfd);
    return 0;
}

static void usage(const char *prog)
{
    fprintf(stderr,
            "usage: %s [--port N] [--procs N] [--debug-addr ADDR|off]\n",
            prog);
    exit(2);
}

/* flag_num - the value of the flag at argv[*i], an integer in [lo, hi];
 * exits with the usage line when it is missing or bad. */
static long flag_num(int argc, char **argv, int *i, long lo, long hi)
{
    char *end;

    if (++*i >= argc)
        usage(argv[0]);
    long v = strtol(argv[*i], &end, 10);
    if (*argv[*i] == '\0' || *end != '\0' || v < lo || v > hi)
        usage(argv[0]);
    return v;
}

int main(int argc, char **argv)
{
    struct config cfg = {8080, "127.0.0.1:6060"};

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--port") == 0) {
            cfg.port = flag_num(argc, argv, &i, 0, 65535);
        } else if (strcmp(argv[i], "--debug-addr") == 0) {
            if (++i >= argc)
                usage(argv[0]);
            cfg.debug_addr = strcmp(argv[i], "off") == 0 ? NULL : argv[i];
        } else if (strcmp(argv[i], "--procs") == 0) {
            flag_num(argc, argv, &i, 1, WEFT_MAXPROCS_LIMIT);
            /* weft_main reads WEFTMAXPROCS once, when it starts. */
            setenv("WEFTMAXPROCS", argv[i], 1);
        } else {
            usage(argv[0]);
        }
    }
    int rc = weft_main(serve, &cfg);
    if (rc < 0) {
        fprintf(stderr, "httpd: weft_main: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
