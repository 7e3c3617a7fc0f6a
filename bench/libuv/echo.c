/*
 * echo.c - the libuv peer of examples/echo.c: a single-threaded TCP echo
 * server on one uv loop, for bench/net.sh.
 *
 * Usage: libuv_echo --port N   (listens on 127.0.0.1:N only)
 *
 * Concepts:
 * - One uv_tcp_t per connection, with TCP_NODELAY, in a struct that also
 *   holds its read buffer (alloc_cb hands that buffer out, so reading
 *   allocates nothing).
 * - Echo: read_cb first tries uv_try_write, which on an idle socket sends
 *   everything at once; what it could not send is copied into a write
 *   request and queued with uv_write.
 * - It prints nothing while serving and runs until killed. A listen error
 *   exits 1; a connection error just closes that connection (SIGPIPE is
 *   ignored, as Go's runtime does for sockets).
 *
 * Invariants:
 * 1. A connection is freed only in its close callback, after every queued
 *    write's callback has run (libuv calls them, with UV_ECANCELED, before
 *    close_cb).
 * 2. The read buffer is reused only after read_cb returns: every byte not
 *    written by uv_try_write is copied before that.
 *
 * Rejected alternative: uv_write straight from the read buffer (the
 * buffer must then stay untouched until write_cb, which needs reading to
 * stop or a buffer per write; the try_write fast path is what a tuned
 * libuv server does).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define BUF_SIZE 4096

struct conn {
    uv_tcp_t tcp;
    char buf[BUF_SIZE];
};

struct wreq {
    uv_write_t req;
    char data[];
};

static uv_loop_t *loop;

/* on_alloc - hand out the connection's own read buffer. */
static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = (struct conn *)h;
    (void)suggested;
    *buf = uv_buf_init(c->buf, sizeof c->buf);
}

static void on_close(uv_handle_t *h)
{
    free(h); /* struct conn: tcp is its first member */
}

static void on_write(uv_write_t *req, int status)
{
    struct wreq *w = (struct wreq *)req;
    if (status < 0 && !uv_is_closing((uv_handle_t *)req->handle))
        uv_close((uv_handle_t *)req->handle, on_close);
    free(w);
}

/* on_read - echo what came in: uv_try_write, then uv_write the rest. */
static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    if (n < 0) {
        if (!uv_is_closing((uv_handle_t *)s))
            uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (n == 0)
        return;
    size_t done = 0;
    uv_buf_t b = uv_buf_init(buf->base, (unsigned int)n);
    int r = uv_try_write(s, &b, 1);
    if (r > 0)
        done = (size_t)r;
    else if (r < 0 && r != UV_EAGAIN && r != UV_ENOSYS) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (done == (size_t)n)
        return;
    size_t left = (size_t)n - done;
    struct wreq *w = malloc(sizeof *w + left);
    if (!w) {
        uv_close((uv_handle_t *)s, on_close);
        return;
    }
    memcpy(w->data, buf->base + done, left);
    b = uv_buf_init(w->data, (unsigned int)left);
    if (uv_write(&w->req, s, &b, 1, on_write) != 0) {
        free(w);
        uv_close((uv_handle_t *)s, on_close);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) {
        fprintf(stderr, "libuv_echo: connection: %s\n", uv_strerror(status));
        return;
    }
    struct conn *c = malloc(sizeof *c);
    if (!c)
        return;
    uv_tcp_init(loop, &c->tcp);
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        uv_close((uv_handle_t *)&c->tcp, on_close);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
}

int main(int argc, char **argv)
{
    long port = 0;
    if (argc == 3 && strcmp(argv[1], "--port") == 0) {
        char *end;
        port = strtol(argv[2], &end, 10);
        if (*end != '\0')
            port = 0;
    }
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "usage: libuv_echo --port N\n");
        return 1;
    }
    /* A write to a connection the client reset must not kill us. */
    signal(SIGPIPE, SIG_IGN);
    loop = uv_default_loop();
    uv_tcp_t server;
    struct sockaddr_in addr;
    uv_tcp_init(loop, &server);
    uv_ip4_addr("127.0.0.1", (int)port, &addr);
    int r = uv_tcp_bind(&server, (const struct sockaddr *)&addr, 0);
    if (r == 0)
        r = uv_listen((uv_stream_t *)&server, 4096, on_connection);
    if (r != 0) {
        fprintf(stderr, "libuv_echo: listen on 127.0.0.1:%ld: %s\n", port,
                uv_strerror(r));
        return 1;
    }
    return uv_run(loop, UV_RUN_DEFAULT);
}
