/*
 * fuzz_httpreq.c - libFuzzer target for the debug server's request
 * parser (profile/httpreq.c): weft__http_parse on the input, then
 * weft__http_query on the query it found, checking the contract's
 * invariants (httpreq.h): the head length lies within the input and the
 * limits, every offset lies within the head, statuses are the documented
 * ones, parsing a prefix never claims a longer head. ASan/UBSan catch
 * reads outside the buffer, which is copied to an exact-size allocation
 * so any overread is caught.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "httpreq.h"

#define CHECK(c)                                                              \
    do {                                                                      \
        if (!(c))                                                             \
            __builtin_trap();                                                 \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *buf = malloc(size ? size : 1);
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    struct http_req rq;
    ssize_t r = weft__http_parse(buf, size, &rq);
    if (r > 0) {
        size_t hl = (size_t)r;
        CHECK(hl <= size && hl <= HTTP_HEAD_MAX);
        CHECK(rq.path_off + rq.path_len <= hl);
        CHECK(rq.path_len > 0 && buf[rq.path_off] == '/');
        CHECK(rq.query_off + rq.query_len <= hl);
        CHECK(rq.content_length <= HTTP_BODY_MAX);
        CHECK(rq.nheaders <= HTTP_HEADERS_MAX);
        CHECK(rq.minor == 0 || rq.minor == 1);
        /* The same head alone parses the same. */
        struct http_req again;
        CHECK(weft__http_parse(buf, hl, &again) == r);
        CHECK(memcmp(&again, &rq, sizeof rq) == 0);
        /* A strict prefix of the head is incomplete or already bad. */
        CHECK(weft__http_parse(buf, hl - 1, &again) <= 0);
        char out[64];
        static const char *const keys[] = {"debug", "seconds", "", "a"};
        for (size_t k = 0; k < 4; k++) {
            int q = weft__http_query(buf + rq.query_off, rq.query_len, keys[k],
                                     out, sizeof out);
            CHECK(q == -ENOENT || q == -EINVAL || q == -ERANGE ||
                  (q >= 0 && (size_t)q < sizeof out && out[q] == '\0'));
        }
    } else if (r < 0) {
        CHECK(r == -400 || r == -413 || r == -431 || r == -501 || r == -505);
    } else {
        CHECK(size < HTTP_HEAD_MAX);
    }
    /* The query lookup alone, on raw bytes, with a tiny output. */
    char small[4];
    int q = weft__http_query(buf, size, "debug", small, sizeof small);
    CHECK(q == -ENOENT || q == -EINVAL || q == -ERANGE ||
          (q >= 0 && q < 4 && small[q] == '\0'));
    free(buf);
    return 0;
}
