/*
 * httpreq.h - the debug server's HTTP/1.x request-head parser and query
 * lookup: pure functions over a caller's buffer (bytes in, a struct of
 * offsets out), with no I/O, no allocation and no runtime calls, so a
 * fuzzer can drive them alone (tests/fuzz_httpreq.c, built by
 * tests/fuzz-httpreq.sh from httpreq.c and nothing else).
 *
 * Invariants:
 *  1. Neither function reads outside buf[0, n) (q[0, qlen)); neither
 *     needs a NUL terminator.
 *  2. Every offset/length pair in struct http_req lies within the head
 *     that weft__http_parse measured.
 *  3. The limits below are enforced by the parser, not by its callers, so
 *     the server cannot forget one: a head over HTTP_HEAD_MAX or with over
 *     HTTP_HEADERS_MAX header lines is -431 even before it is complete.
 */
#ifndef WEFT_HTTPREQ_H
#define WEFT_HTTPREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HTTP_HEAD_MAX (8 * 1024)  /* request line, headers, blank line */
#define HTTP_HEADERS_MAX 100      /* header lines */
#define HTTP_BODY_MAX (64 * 1024) /* Content-Length */

enum http_method { HTTP_OTHER, HTTP_GET, HTTP_HEAD, HTTP_POST };

struct http_req {
    enum http_method method;
    int minor;                   /* HTTP/1.minor (0 or 1) */
    size_t path_off, path_len;   /* the target up to '?' (starts with '/') */
    size_t query_off, query_len; /* after '?'; len 0: none */
    size_t content_length;       /* 0 when absent */
    int nheaders;
    bool expect_continue;        /* Expect: 100-continue */
};

/*
 * weft__http_parse - parse the request head at the start of buf[0, n).
 * Empty lines before the request line are skipped; lines end in CRLF or
 * a bare LF. Returns the head's length, blank line included (> 0), once
 * it is all there; 0 if more bytes are needed; or the negated status to
 * answer with: -400 (malformed: a bad request line, target, header line,
 * or Content-Length; obsolete line folding), -431 (head over
 * HTTP_HEAD_MAX bytes or over HTTP_HEADERS_MAX headers), -413
 * (Content-Length over HTTP_BODY_MAX), -501 (Transfer-Encoding: bodies
 * need a Content-Length), -505 (not HTTP/1.0 or 1.1). A complete but bad
 * line is reported as soon as it arrives, before the head ends. An
 * unknown method parses as HTTP_OTHER (the server answers 405). rq is
 * filled only on success.
 */
ssize_t weft__http_parse(const char *buf, size_t n, struct http_req *rq);

/*
 * weft__http_query - the value of key in the raw query q[0, qlen)
 * ("a=1&b=2"; '+' is a space; %XX escapes), decoded into out (cap bytes,
 * NUL-terminated). The first occurrence wins; "key" without '=' has the
 * empty value. Returns the value's length, -ENOENT (absent), -EINVAL (a
 * bad % escape), -ERANGE (the value does not fit in cap - 1 bytes).
 */
int weft__http_query(const char *q, size_t qlen, const char *key, char *out,
                     size_t cap);

#endif /* WEFT_HTTPREQ_H */
