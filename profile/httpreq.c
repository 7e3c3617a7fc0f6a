/*
 * httpreq.c - the debug server's request-head parser (see httpreq.h for
 * the contract). It depends on libc's string functions only: the fuzz
 * target compiles this file alone.
 *
 * How it reads a head: line by line, each line found with memchr inside
 * the first HTTP_HEAD_MAX bytes, so a head that never ends costs one scan
 * of at most HTTP_HEAD_MAX bytes per call and nothing beyond the limit is
 * ever looked at. Every complete line is checked as soon as it is seen,
 * so garbage is refused on its first line, not after a timeout.
 *
 * Leniency, on purpose (what go tool pprof, curl and Prometheus send is
 * all strict HTTP/1.1; the rest is about not being fooled): bare LF line
 * ends and leading empty lines are accepted (RFC 9112 2.2); a missing
 * Host is accepted (the server routes by path only). Refused: obsolete
 * line folding, whitespace before a header's colon, control characters,
 * Transfer-Encoding (the server reads bodies by Content-Length only; a
 * request with both is a smuggling vector), conflicting Content-Lengths.
 */
#include <errno.h>
#include <string.h>

#include "httpreq.h"

static bool is_tchar(unsigned char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
           (ch >= '0' && ch <= '9') ||
           (ch != 0 && strchr("!#$%&'*+-.^_`|~", ch) != NULL);
}

/* eqcase - s[0, n) equals the lower-case literal lit, ignoring ASCII
 * case. */
static bool eqcase(const char *s, size_t n, const char *lit)
{
    size_t k = strlen(lit);
    if (n != k)
        return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c - 'A' + 'a');
        if (c != (unsigned char)lit[i])
            return false;
    }
    return true;
}

/* request_line - parse "METHOD SP target SP HTTP/1.x" in s[0, n); off is
 * s's offset in the buffer (for the path and query offsets). Returns 0 or
 * a negated status. */
static int request_line(const char *s, size_t n, size_t off,
                        struct http_req *rq)
{
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i >= n || s[i] != ' ')
        return -400;
    if (i == 3 && memcmp(s, "GET", 3) == 0)
        rq->method = HTTP_GET;
    else if (i == 4 && memcmp(s, "HEAD", 4) == 0)
        rq->method = HTTP_HEAD;
    else if (i == 4 && memcmp(s, "POST", 4) == 0)
        rq->method = HTTP_POST;
    else
        rq->method = HTTP_OTHER;

    size_t t = ++i;
    while (i < n && s[i] != ' ') {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c >= 0x7f)
            return -400;
        i++;
    }
    if (i == t || i >= n || s[t] != '/')
        return -400;
    const char *q = memchr(s + t, '?', i - t);
    size_t tend = i;
    rq->path_off = off + t;
    if (q != NULL) {
        rq->path_len = (size_t)(q - (s + t));
        rq->query_off = off + (size_t)(q - s) + 1;
        rq->query_len = tend - (size_t)(q - s) - 1;
    } else {
        rq->path_len = tend - t;
        rq->query_off = off + tend;
        rq->query_len = 0;
    }

    const char *v = s + i + 1;
    size_t vn = n - i - 1;
    if (vn != 8 || memcmp(v, "HTTP/", 5) != 0)
        return -400;
    if (v[5] < '0' || v[5] > '9' || v[6] != '.' || v[7] < '0' || v[7] > '9')
        return -400;
    if (v[5] != '1' || v[7] > '1')
        return -505;
    rq->minor = v[7] - '0';
    return 0;
}

/* header_line - one "name: value" line in s[0, n). *cl is the
 * Content-Length seen so far (-1: none). Returns 0 or a negated status. */
static int header_line(const char *s, size_t n, struct http_req *rq,
                       long long *cl)
{
    if (s[0] == ' ' || s[0] == '\t')
        return -400; /* obsolete line folding */
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)s[i]))
        i++;
    if (i == 0 || i >= n || s[i] != ':')
        return -400;
    size_t namelen = i++;
    while (i < n && (s[i] == ' ' || s[i] == '\t'))
        i++;
    size_t e = n;
    while (e > i && (s[e - 1] == ' ' || s[e - 1] == '\t'))
        e--;
    for (size_t k = i; k < e; k++) {
        unsigned char c = (unsigned char)s[k];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return -400;
    }
    const char *v = s + i;
    size_t vn = e - i;

    if (eqcase(s, namelen, "content-length")) {
        if (vn == 0)
            return -400;
        long long x = 0;
        for (size_t k = 0; k < vn; k++) {
            if (v[k] < '0' || v[k] > '9')
                return -400;
            if (x <= HTTP_BODY_MAX) /* saturate: past the limit is enough */
                x = x * 10 + (v[k] - '0');
        }
        if (*cl >= 0 && *cl != x)
            return -400;
        *cl = x;
    } else if (eqcase(s, namelen, "transfer-encoding")) {
        return -501;
    } else if (eqcase(s, namelen, "expect")) {
        rq->expect_continue = eqcase(v, vn, "100-continue");
    }
    return 0;
}

ssize_t weft__http_parse(const char *buf, size_t n, struct http_req *out)
{
    struct http_req rq;
    memset(&rq, 0, sizeof rq);
    size_t lim = n < HTTP_HEAD_MAX ? n : HTTP_HEAD_MAX;
    size_t i = 0;
    long long cl = -1;

    /* RFC 9112 2.2: empty lines before the request line are ignored. */
    for (;;) {
        if (i < lim && buf[i] == '\n')
            i++;
        else if (i + 1 < lim && buf[i] == '\r' && buf[i + 1] == '\n')
            i += 2;
        else
            break;
    }

    bool first = true;
    for (;;) {
        const char *nl = i < lim ? memchr(buf + i, '\n', lim - i) : NULL;
        if (nl == NULL)
            return n >= HTTP_HEAD_MAX ? -431 : 0;
        size_t next = (size_t)(nl - buf) + 1;
        size_t end = next - 1;
        if (end > i && buf[end - 1] == '\r')
            end--;
        const char *s = buf + i;
        size_t len = end - i;
        if (first) {
            int r = request_line(s, len, i, &rq);
            if (r < 0)
                return r;
            first = false;
        } else if (len == 0) {
            if (cl > HTTP_BODY_MAX)
                return -413;
            rq.content_length = cl < 0 ? 0 : (size_t)cl;
            *out = rq;
            return (ssize_t)next;
        } else {
            if (++rq.nheaders > HTTP_HEADERS_MAX)
                return -431;
            int r = header_line(s, len, &rq, &cl);
            if (r < 0)
                return r;
        }
        i = next;
    }
}

static int unhex(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* decode - percent-decode s[0, n) into out (cap bytes, NUL-terminated);
 * '+' is a space. Returns the length, -EINVAL, -ERANGE. */
static int decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '%') {
            if (n - i < 3) /* fewer than two characters follow */
                return -EINVAL;
            int hi = unhex((unsigned char)s[i + 1]);
            int lo = unhex((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0)
                return -EINVAL;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        } else if (c == '+') {
            c = ' ';
        }
        if (o + 1 >= cap)
            return -ERANGE;
        out[o++] = (char)c;
    }
    if (cap == 0)
        return -ERANGE;
    out[o] = '\0';
    return (int)o;
}

int weft__http_query(const char *q, size_t qlen, const char *key, char *out,
                     size_t cap)
{
    size_t klen = strlen(key);
    size_t i = 0;
    while (i < qlen) {
        const char *amp = memchr(q + i, '&', qlen - i);
        size_t end = amp != NULL ? (size_t)(amp - q) : qlen;
        const char *eq = memchr(q + i, '=', end - i);
        size_t kend = eq != NULL ? (size_t)(eq - q) : end;
        char k[64];
        int kn = decode(q + i, kend - i, k, sizeof k);
        if (kn >= 0 && (size_t)kn == klen && memcmp(k, key, klen) == 0) {
            size_t vs = eq != NULL ? kend + 1 : end;
            return decode(q + vs, end - vs, out, cap);
        }
        i = end + 1;
    }
    return -ENOENT;
}
