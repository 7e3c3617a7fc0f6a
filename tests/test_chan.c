/*
 * test_chan.c - channels and select through the public API (weft.h):
 * Go's channel semantics (close, FIFO, rendezvous), select fairness,
 * default and deadlines, lifetime (free while blocked), bad input, and the
 * try forms from a plain pthread.
 *
 * Each test runs in its own forked child (harness.h) and starts its own
 * runtime with weft_main() via run(), with WEFTMAXPROCS set; most repeat
 * at 1 and 2 Ps (and more for the stress tests) and over several rounds
 * ("seeds": different capacities and counts). Assertions are about
 * invariants (exactly-once delivery, per-producer order, exact sums) and
 * loose statistical or time bounds, never interleavings. Time bounds are
 * multiplied by slow() in slow builds.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "weft_test.h"

static weft_chan_t *newchan(size_t elemsize, size_t cap)
{
    weft_chan_t *c = NULL;
    EXPECT_OK(weft_chan_new(&c, elemsize, cap));
    ASSERT(c != NULL);
    return c;
}

/* ------------------------------------------------------------ bad input */

static void *notcoro_thread(void *arg)
{
    weft_chan_t *c = arg;
    int64_t v = 1;
    EXPECT_ERR(weft_chan_send(c, &v), WEFT_ENOTCORO);
    EXPECT_ERR(weft_chan_recv(c, &v), WEFT_ENOTCORO);
    EXPECT_ERR(weft_chan_send_dl(c, &v, weft_now()), WEFT_ENOTCORO);
    weft_select_case_t cs = {c, WEFT_RECV, &v, 0};
    EXPECT_ERR(weft_select(&cs, 1), WEFT_ENOTCORO);
    EXPECT_ERR(weft_select(NULL, 0), WEFT_ENOTCORO);
    return NULL;
}

TEST(bad_input)
{
    weft_chan_t *c = NULL;
    int64_t v = 7;
    EXPECT_ERR(weft_chan_new(NULL, 8, 0), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_new(&c, 0, 0), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_new(&c, 65537, 0), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_new(&c, (size_t)1 << 40, 1), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_new(&c, 1, ((size_t)1 << 31) + 1), WEFT_EINVAL);
    ASSERT(c == NULL);
    EXPECT_OK(weft_chan_new(&c, 65536, 0));
    EXPECT_OK(weft_chan_free(c));

    EXPECT_ERR(weft_chan_send(NULL, &v), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_send_dl(NULL, &v, 0), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_trysend(NULL, &v), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_recv(NULL, &v), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_recv_dl(NULL, &v, 0), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_tryrecv(NULL, &v), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_close(NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_free(NULL), WEFT_EINVAL);
    ASSERT_EQ(weft_chan_len(NULL), 0);
    ASSERT_EQ(weft_chan_cap(NULL), 0);

    c = newchan(sizeof v, 2);
    EXPECT_ERR(weft_chan_trysend(c, NULL), WEFT_EINVAL);
    EXPECT_ERR(weft_chan_send(c, NULL), WEFT_EINVAL);
    weft_select_case_t cs[2] = {{c, 3, &v, 0}, {c, WEFT_SEND, NULL, 0}};
    EXPECT_ERR(weft_tryselect(cs, 1), WEFT_EINVAL);  /* bad op */
    EXPECT_ERR(weft_tryselect(cs + 1, 1), WEFT_EINVAL); /* NULL send elem */
    EXPECT_ERR(weft_tryselect(NULL, 1), WEFT_EINVAL);
    EXPECT_ERR(weft_tryselect(cs, 65537), WEFT_EINVAL);
    EXPECT_ERR(weft_tryselect(NULL, 0), WEFT_EAGAIN);
    /* Blocking forms outside a coroutine, before and with a runtime. */
    notcoro_thread(c);
    /* Try forms from a plain thread with no runtime at all. */
    EXPECT_OK(weft_chan_trysend(c, &v));
    int64_t w = 0;
    EXPECT_OK(weft_chan_tryrecv(c, &w));
    ASSERT_EQ(w, 7);
    EXPECT_OK(weft_chan_free(c));
    /* After free (memory gone): detectable only without a sanitizer,
     * which would rightly report the read of freed memory. */
    if (!SANITIZED) {
        EXPECT_ERR(weft_chan_free(c), WEFT_EINVAL);
    }
}

static int notcoro_body(void *arg)
{
    (void)arg;
    weft_chan_t *c = newchan(8, 0);
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, notcoro_thread, c), 0);
    pthread_join(t, NULL);
    EXPECT_OK(weft_chan_free(c));
    return 0;
}

TEST(notcoro_with_runtime)
{
    run(2, notcoro_body, NULL);
}

/* --------------------------------------------------------- basic / FIFO */

static int basic_body(void *arg)
{
    (void)arg;
    for (size_t cap = 1; cap <= 9; cap += 4) {
        weft_chan_t *c = newchan(sizeof(int64_t), cap);
        ASSERT_EQ(weft_chan_cap(c), cap);
        for (int64_t i = 0; i < (int64_t)cap; i++) {
            EXPECT_OK(weft_chan_trysend(c, &i));
            ASSERT_EQ(weft_chan_len(c), i + 1);
        }
        int64_t v = 99;
        EXPECT_ERR(weft_chan_trysend(c, &v), WEFT_EAGAIN);
        EXPECT_ERR(weft_chan_send_dl(c, &v, weft_now()), WEFT_ETIMEDOUT);
        for (int round = 0; round < 3; round++) /* wrap the ring */
            for (int64_t i = 0; i < (int64_t)cap; i++) {
                EXPECT_OK(weft_chan_recv(c, &v));
                ASSERT_EQ(v, i);
                EXPECT_OK(weft_chan_send(c, &i));
            }
        EXPECT_OK(weft_chan_recv(c, NULL)); /* discard */
        ASSERT_EQ(weft_chan_len(c), cap - 1);
        EXPECT_OK(weft_chan_free(c));
    }
    weft_chan_t *u = newchan(sizeof(int64_t), 0);
    int64_t v = 1;
    EXPECT_ERR(weft_chan_trysend(u, &v), WEFT_EAGAIN);
    EXPECT_ERR(weft_chan_tryrecv(u, &v), WEFT_EAGAIN);
    ASSERT_EQ(weft_chan_cap(u), 0);
    ASSERT_EQ(weft_chan_len(u), 0);
    EXPECT_OK(weft_chan_free(u));

    /* Odd element sizes go through the generic copy. */
    char big[1000], out[1000];
    weft_chan_t *b = newchan(sizeof big, 2);
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)i;
    EXPECT_OK(weft_chan_send(b, big));
    memset(out, 0, sizeof out);
    EXPECT_OK(weft_chan_recv(b, out));
    ASSERT(memcmp(big, out, sizeof big) == 0);
    EXPECT_OK(weft_chan_free(b));
    return 0;
}

TEST(basic_fifo)
{
    run(1, basic_body, NULL);
}

/* ------------------------------------------------------- close semantics */

static int close_body(void *arg)
{
    (void)arg;
    weft_chan_t *c = newchan(sizeof(int64_t), 4);
    for (int64_t i = 1; i <= 3; i++)
        EXPECT_OK(weft_chan_send(c, &i));
    EXPECT_OK(weft_chan_close(c));
    int64_t v = 5;
    EXPECT_ERR(weft_chan_send(c, &v), WEFT_ECLOSED);
    EXPECT_ERR(weft_chan_trysend(c, &v), WEFT_ECLOSED);
    EXPECT_ERR(weft_chan_close(c), WEFT_ECLOSED);
    for (int64_t i = 1; i <= 3; i++) {
        EXPECT_OK(weft_chan_recv(c, &v));
        ASSERT_EQ(v, i);
    }
    v = 5;
    EXPECT_ERR(weft_chan_recv(c, &v), WEFT_ECLOSED);
    ASSERT_EQ(v, 0); /* zeroed */
    EXPECT_ERR(weft_chan_tryrecv(c, &v), WEFT_ECLOSED);
    EXPECT_ERR(weft_chan_recv_dl(c, &v, weft_now() + MS), WEFT_ECLOSED);
    EXPECT_OK(weft_chan_free(c)); /* free of a closed channel is fine */
    return 0;
}

TEST(close_semantics)
{
    run(1, close_body, NULL);
    run(2, close_body, NULL);
}

struct blocker {
    weft_chan_t *c;
    int op;
    _Atomic int64_t *closed; /* count of ECLOSED results */
    _Atomic int64_t *other;  /* anything else */
};

static void blocker_fn(void *arg)
{
    struct blocker *b = arg;
    int64_t v = 42;
    int r = b->op == WEFT_SEND ? weft_chan_send(b->c, &v)
                               : weft_chan_recv(b->c, &v);
    if (r == WEFT_ECLOSED && (b->op == WEFT_SEND || v == 0))
        atomic_fetch_add(b->closed, 1);
    else
        atomic_fetch_add(b->other, 1);
}

static void wait_count(_Atomic int64_t *c, int64_t n, const char *what)
{
    int64_t end = weft_now() + (int64_t)(10000 * MS * slow());
    while (atomic_load(c) < n) {
        if (weft_now() > end)
            FAIL("%s: %lld of %lld", what, (long long)atomic_load(c),
                 (long long)n);
        weft_sleep(MS / 4);
    }
}

/* Coroutines that end right after a channel operation may still hold a
 * reference on the channel (until they run again): a body waits for them
 * with await_exits() before freeing, or shutdown would abandon them with
 * the reference and the channel would leak. */
static _Atomic int64_t nexited;

static void exited(void)
{
    atomic_fetch_add(&nexited, 1);
}

static void await_exits(int64_t n)
{
    wait_count(&nexited, n, "coroutines exited");
    atomic_store(&nexited, 0);
}

/* close_wakes: arg != NULL uses weft_chan_free instead of close. */
static int close_wakes_body(void *arg)
{
    bool use_free = arg != NULL;
    enum { N = 50 };
    _Atomic int64_t closed = 0, other = 0;
    weft_chan_t *rc = newchan(sizeof(int64_t), 0); /* receivers block */
    weft_chan_t *sc = newchan(sizeof(int64_t), 1); /* senders block */
    int64_t v = 1;
    EXPECT_OK(weft_chan_send(sc, &v));
    struct blocker br = {rc, WEFT_RECV, &closed, &other};
    struct blocker bs = {sc, WEFT_SEND, &closed, &other};
    for (int i = 0; i < N; i++) {
        EXPECT_OK(weft_go(blocker_fn, &br));
        EXPECT_OK(weft_go(blocker_fn, &bs));
    }
    wait_parked(0, WR_CHAN_RECEIVE, N);
    wait_parked(0, WR_CHAN_SEND, N);
    ASSERT_EQ(atomic_load(&closed) + atomic_load(&other), 0);
    if (use_free) {
        EXPECT_OK(weft_chan_free(rc));
        EXPECT_OK(weft_chan_free(sc));
        /* The blockers still hold references: the memory lives and
         * the pointer is recognised as freed. At 1 P none of them has
         * run yet, so this is deterministic there. */
        if (weft_procs() == 1) {
            EXPECT_ERR(weft_chan_send(rc, &v), WEFT_EINVAL);
            EXPECT_ERR(weft_chan_trysend(sc, &v), WEFT_EINVAL);
            EXPECT_ERR(weft_chan_close(rc), WEFT_EINVAL);
            EXPECT_ERR(weft_chan_free(rc), WEFT_EINVAL);
            ASSERT_EQ(weft_chan_len(sc), 0);
        }
    } else {
        EXPECT_OK(weft_chan_close(rc));
        EXPECT_OK(weft_chan_close(sc));
    }
    wait_count(&closed, 2 * N, "woken by close");
    ASSERT_EQ(atomic_load(&other), 0);
    if (!use_free) {
        /* The buffered value is still there to drain. */
        EXPECT_OK(weft_chan_recv(sc, &v));
        ASSERT_EQ(v, 1);
        EXPECT_ERR(weft_chan_recv(sc, &v), WEFT_ECLOSED);
        EXPECT_OK(weft_chan_free(rc));
        EXPECT_OK(weft_chan_free(sc));
    }
    return 0;
}

TEST(close_wakes_all)
{
    run(1, close_wakes_body, NULL);
    run(2, close_wakes_body, NULL);
    run(4, close_wakes_body, NULL);
}

TEST(free_while_blocked)
{
    run(1, close_wakes_body, "free");
    run(2, close_wakes_body, "free");
    run(4, close_wakes_body, "free");
}

/* ----------------------------------------------- many producers/consumers */

enum { NPROD = 8, NCONS = 8 };

struct mpmc {
    weft_chan_t *c, *done;
    int64_t per; /* values per producer */
    int64_t sum; /* received, atomic */
    int64_t count;
    int id;
};

struct mpmc_p {
    struct mpmc *m;
    int id;
};

static void producer(void *arg)
{
    struct mpmc_p *p = arg;
    for (int64_t s = 0; s < p->m->per; s++) {
        int64_t v = (int64_t)p->id << 32 | s;
        EXPECT_OK(weft_chan_send(p->m->c, &v));
    }
    int64_t one = 1;
    EXPECT_OK(weft_chan_send(p->m->done, &one));
    exited();
}

static void consumer(void *arg)
{
    struct mpmc_p *p = arg;
    int64_t last[NPROD];
    for (int i = 0; i < NPROD; i++)
        last[i] = -1;
    int64_t sum = 0, n = 0, v;
    int r;
    while ((r = weft_chan_recv(p->m->c, &v)) == 0) {
        int id = (int)(v >> 32);
        int64_t s = v & 0xffffffff;
        ASSERT(id >= 0 && id < NPROD);
        if (s <= last[id])
            FAIL("producer %d: seq %lld after %lld", id, (long long)s,
                 (long long)last[id]);
        last[id] = s;
        sum += s;
        n++;
    }
    EXPECT_ERR(r, WEFT_ECLOSED);
    __atomic_fetch_add(&p->m->sum, sum, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&p->m->count, n, __ATOMIC_SEQ_CST);
    int64_t one = 1;
    EXPECT_OK(weft_chan_send(p->m->done, &one));
    exited();
}

static int mpmc_body(void *arg)
{
    size_t cap = (size_t)(intptr_t)arg;
    struct mpmc m = {0};
    m.per = SANITIZED ? 2000 : 20000;
    m.c = newchan(sizeof(int64_t), cap);
    m.done = newchan(sizeof(int64_t), 0);
    struct mpmc_p ps[NPROD], cs[NCONS];
    for (int i = 0; i < NCONS; i++) {
        cs[i] = (struct mpmc_p){&m, i};
        EXPECT_OK(weft_go(consumer, &cs[i]));
    }
    for (int i = 0; i < NPROD; i++) {
        ps[i] = (struct mpmc_p){&m, i};
        EXPECT_OK(weft_go(producer, &ps[i]));
    }
    int64_t v;
    for (int i = 0; i < NPROD; i++)
        EXPECT_OK(weft_chan_recv(m.done, &v));
    EXPECT_OK(weft_chan_close(m.c));
    for (int i = 0; i < NCONS; i++)
        EXPECT_OK(weft_chan_recv(m.done, &v));
    await_exits(NPROD + NCONS);
    ASSERT_EQ(m.count, NPROD * m.per);
    ASSERT_EQ(m.sum, NPROD * (m.per * (m.per - 1) / 2));
    EXPECT_OK(weft_chan_free(m.c));
    EXPECT_OK(weft_chan_free(m.done));
    return 0;
}

TEST_TIMEOUT(mpmc_order_and_sum, 120)
{
    static const size_t caps[] = {0, 1, 16, 128};
    static const int procs[] = {1, 2, 4};
    for (size_t i = 0; i < sizeof caps / sizeof caps[0]; i++)
        for (size_t j = 0; j < sizeof procs / sizeof procs[0]; j++)
            run(procs[j], mpmc_body, (void *)(intptr_t)caps[i]);
}

/* ---------------------------------------------------- unbuffered rendezvous */

struct rdv {
    weft_chan_t *c;
    _Atomic int64_t received;
};

static void late_receiver(void *arg)
{
    struct rdv *r = arg;
    weft_sleep(20 * MS);
    int64_t v;
    atomic_store(&r->received, 1);
    EXPECT_OK(weft_chan_recv(r->c, &v));
    ASSERT_EQ(v, 123);
    exited();
}

static void pong(void *arg)
{
    weft_chan_t **cs = arg;
    int64_t v;
    while (weft_chan_recv(cs[0], &v) == 0) {
        v++;
        EXPECT_OK(weft_chan_send(cs[1], &v));
    }
    exited();
}

static int rendezvous_body(void *arg)
{
    (void)arg;
    struct rdv r = {newchan(sizeof(int64_t), 0), 0};
    int64_t t0 = weft_now(), v = 123;
    EXPECT_OK(weft_go(late_receiver, &r));
    EXPECT_OK(weft_chan_send(r.c, &v));
    /* The send completed only once the receiver came. */
    ASSERT_EQ(atomic_load(&r.received), 1);
    ASSERT_GE(weft_now() - t0, 20 * MS);
    EXPECT_OK(weft_chan_free(r.c));

    /* Ping-pong: every value comes back incremented. */
    weft_chan_t *cs[2] = {newchan(sizeof(int64_t), 0),
                          newchan(sizeof(int64_t), 0)};
    EXPECT_OK(weft_go(pong, cs));
    for (int64_t i = 0; i < 20000; i += 2) {
        v = i;
        EXPECT_OK(weft_chan_send(cs[0], &v));
        EXPECT_OK(weft_chan_recv(cs[1], &v));
        ASSERT_EQ(v, i + 1);
    }
    EXPECT_OK(weft_chan_close(cs[0]));
    await_exits(2);
    EXPECT_OK(weft_chan_free(cs[0]));
    EXPECT_OK(weft_chan_free(cs[1]));
    return 0;
}

TEST(unbuffered_rendezvous)
{
    run(1, rendezvous_body, NULL);
    run(2, rendezvous_body, NULL);
}

/* ------------------------------------------------------------- deadlines */

static int deadline_body(void *arg)
{
    (void)arg;
    weft_chan_t *e = newchan(sizeof(int64_t), 1);
    weft_chan_t *u = newchan(sizeof(int64_t), 0);
    int64_t v = 5;
    for (int i = 0; i < 20; i++) {
        int64_t d = (i % 5 + 1) * MS / 2;
        int64_t dl = weft_now() + d;
        EXPECT_ERR(weft_chan_recv_dl(e, &v, dl), WEFT_ETIMEDOUT);
        ASSERT_GE(weft_now(), dl); /* never early */
        dl = weft_now() + d;
        EXPECT_ERR(weft_chan_send_dl(u, &v, dl), WEFT_ETIMEDOUT);
        ASSERT_GE(weft_now(), dl);
    }
    /* A timed-out receiver's *elem is untouched and its sudog gone. */
    v = 77;
    EXPECT_ERR(weft_chan_recv_dl(u, &v, weft_now() + MS), WEFT_ETIMEDOUT);
    ASSERT_EQ(v, 77);
    EXPECT_ERR(weft_chan_trysend(u, &v), WEFT_EAGAIN);
    /* Passed deadline: still done if it needs no waiting. */
    EXPECT_OK(weft_chan_send_dl(e, &v, 0));
    EXPECT_ERR(weft_chan_send_dl(e, &v, 0), WEFT_ETIMEDOUT);
    EXPECT_OK(weft_chan_recv_dl(e, &v, 0));
    ASSERT_EQ(v, 77);
    int64_t t0 = weft_now();
    EXPECT_ERR(weft_chan_recv_dl(e, &v, 0), WEFT_ETIMEDOUT);
    ASSERT_LT(weft_now() - t0, (int64_t)(50 * MS * slow()));
    EXPECT_OK(weft_chan_free(e));
    EXPECT_OK(weft_chan_free(u));
    return 0;
}

TEST(deadlines)
{
    run(1, deadline_body, NULL);
    run(2, deadline_body, NULL);
}

/* Senders and receivers with short deadlines racing each other: whatever
 * a send reported as sent is received exactly once, nothing else is. */
struct racer {
    weft_chan_t *c, *done;
    int64_t sent, got; /* atomic sums */
    int64_t nsent, ngot;
    int id;
};

static void race_sender(void *arg)
{
    struct racer *r = arg;
    int64_t sum = 0, n = 0;
    for (int64_t i = 1; i <= 3000; i++) {
        int64_t v = i;
        int e = weft_chan_send_dl(r->c, &v, weft_now() + 20000);
        if (e == 0) {
            sum += v;
            n++;
        } else if (e != WEFT_ETIMEDOUT) {
            FAIL("send_dl: %s", weft_err_name(e));
        }
    }
    __atomic_fetch_add(&r->sent, sum, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&r->nsent, n, __ATOMIC_SEQ_CST);
    int64_t one = 1;
    EXPECT_OK(weft_chan_send(r->done, &one));
    exited();
}

static void race_receiver(void *arg)
{
    struct racer *r = arg;
    int64_t sum = 0, n = 0, v;
    for (;;) {
        v = -1;
        int e = weft_chan_recv_dl(r->c, &v, weft_now() + 15000);
        if (e == 0) {
            ASSERT(v >= 1 && v <= 3000);
            sum += v;
            n++;
        } else if (e == WEFT_ECLOSED) {
            break;
        } else if (e == WEFT_ETIMEDOUT) {
            ASSERT_EQ(v, -1);
        } else {
            FAIL("recv_dl: %s", weft_err_name(e));
        }
    }
    __atomic_fetch_add(&r->got, sum, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&r->ngot, n, __ATOMIC_SEQ_CST);
    int64_t one = 1;
    EXPECT_OK(weft_chan_send(r->done, &one));
    exited();
}

static int timeout_race_body(void *arg)
{
    size_t cap = (size_t)(intptr_t)arg;
    struct racer r = {0};
    r.c = newchan(sizeof(int64_t), cap);
    r.done = newchan(sizeof(int64_t), 0);
    for (int i = 0; i < 4; i++) {
        EXPECT_OK(weft_go(race_sender, &r));
        EXPECT_OK(weft_go(race_receiver, &r));
    }
    int64_t v;
    /* The senders report first: receivers loop until the close. */
    for (int i = 0; i < 4; i++)
        EXPECT_OK(weft_chan_recv(r.done, &v));
    EXPECT_OK(weft_chan_close(r.c));
    for (int i = 0; i < 4; i++)
        EXPECT_OK(weft_chan_recv(r.done, &v));
    await_exits(8);
    ASSERT_EQ(r.ngot, r.nsent);
    ASSERT_EQ(r.got, r.sent);
    ASSERT_GT(r.nsent, 0);
    EXPECT_OK(weft_chan_free(r.c));
    EXPECT_OK(weft_chan_free(r.done));
    return 0;
}

TEST_TIMEOUT(timeout_races, 120)
{
    for (int p = 1; p <= 4; p *= 2) {
        run(p, timeout_race_body, (void *)(intptr_t)0);
        run(p, timeout_race_body, (void *)(intptr_t)2);
    }
}

/* ---------------------------------------------------------------- select */

static int fairness_body(void *arg)
{
    (void)arg;
    weft_chan_t *a = newchan(sizeof(int64_t), 1);
    weft_chan_t *b = newchan(sizeof(int64_t), 1);
    int64_t va = 1, vb = 2, got;
    EXPECT_OK(weft_chan_send(a, &va));
    EXPECT_OK(weft_chan_send(b, &vb));
    enum { N = 100000 };
    int64_t hits[2] = {0, 0};
    weft_select_case_t cs[2] = {{a, WEFT_RECV, &got, 0},
                                {b, WEFT_RECV, &got, 0}};
    for (int i = 0; i < N; i++) {
        int k = weft_select(cs, 2);
        ASSERT(k == 0 || k == 1);
        ASSERT_EQ(cs[k].result, 0);
        ASSERT_EQ(got, k + 1);
        hits[k]++;
        EXPECT_OK(weft_chan_send(k == 0 ? a : b, k == 0 ? &va : &vb));
    }
    ASSERT_GE(hits[0], N * 45 / 100);
    ASSERT_LE(hits[0], N * 55 / 100);

    /* Three ready send cases: each about a third. */
    weft_chan_t *c3[3];
    int64_t h3[3] = {0, 0, 0}, x = 9;
    weft_select_case_t s3[3];
    for (int i = 0; i < 3; i++) {
        c3[i] = newchan(sizeof(int64_t), 1);
        s3[i] = (weft_select_case_t){c3[i], WEFT_SEND, &x, 0};
    }
    for (int i = 0; i < 30000; i++) {
        int k = weft_tryselect(s3, 3);
        ASSERT(k >= 0 && k < 3);
        h3[k]++;
        EXPECT_OK(weft_chan_tryrecv(c3[k], NULL));
    }
    for (int i = 0; i < 3; i++) {
        ASSERT_GE(h3[i], 9000);
        ASSERT_LE(h3[i], 11000);
        EXPECT_OK(weft_chan_free(c3[i]));
    }
    EXPECT_OK(weft_chan_free(a));
    EXPECT_OK(weft_chan_free(b));
    return 0;
}

TEST(select_fairness)
{
    run(1, fairness_body, NULL);
    run(2, fairness_body, NULL);
}

static int select_misc_body(void *arg)
{
    (void)arg;
    weft_chan_t *a = newchan(sizeof(int64_t), 1);
    weft_chan_t *b = newchan(sizeof(int64_t), 0);
    int64_t v = 0, w = 3;
    weft_select_case_t cs[3] = {{NULL, WEFT_RECV, &v, 0},
                                {a, WEFT_RECV, &v, 0},
                                {NULL, WEFT_SEND, &w, 0}};
    /* default */
    EXPECT_ERR(weft_tryselect(cs, 3), WEFT_EAGAIN);
    /* deadline, never early */
    int64_t dl = weft_now() + 3 * MS;
    EXPECT_ERR(weft_select_dl(cs, 3, dl), WEFT_ETIMEDOUT);
    ASSERT_GE(weft_now(), dl);
    EXPECT_ERR(weft_select_dl(cs, 3, 0), WEFT_ETIMEDOUT);
    /* NULL channels never chosen. */
    for (int i = 0; i < 200; i++) {
        EXPECT_OK(weft_chan_send(a, &w));
        cs[1].result = 99;
        ASSERT_EQ(weft_select(cs, 3), 1);
        ASSERT_EQ(cs[1].result, 0);
        ASSERT_EQ(v, 3);
    }
    /* Only NULL channels: like no cases, until the deadline. */
    dl = weft_now() + 2 * MS;
    EXPECT_ERR(weft_select_dl(cs, 1, dl), WEFT_ETIMEDOUT);
    ASSERT_GE(weft_now(), dl);
    dl = weft_now() + 2 * MS;
    EXPECT_ERR(weft_select_dl(NULL, 0, dl), WEFT_ETIMEDOUT);
    ASSERT_GE(weft_now(), dl);
    /* Closed channels: a recv case gets ECLOSED (elem zeroed), a send
     * case gets ECLOSED. */
    EXPECT_OK(weft_chan_close(b));
    weft_select_case_t cr = {b, WEFT_RECV, &v, 0};
    v = 5;
    ASSERT_EQ(weft_select(&cr, 1), 0);
    ASSERT_EQ(cr.result, WEFT_ECLOSED);
    ASSERT_EQ(v, 0);
    weft_select_case_t cw = {b, WEFT_SEND, &w, 0};
    ASSERT_EQ(weft_tryselect(&cw, 1), 0);
    ASSERT_EQ(cw.result, WEFT_ECLOSED);
    /* A closed case among blocked ones is chosen. */
    weft_chan_t *u = newchan(sizeof(int64_t), 0);
    weft_select_case_t mix[2] = {{u, WEFT_RECV, &v, 0},
                                 {b, WEFT_RECV, &v, 0}};
    ASSERT_EQ(weft_select(mix, 2), 1);
    ASSERT_EQ(mix[1].result, WEFT_ECLOSED);
    /* The same channel twice (send and receive) in one select. */
    weft_select_case_t dup[3] = {{a, WEFT_SEND, &w, 0},
                                 {a, WEFT_RECV, &v, 0},
                                 {a, WEFT_SEND, &w, 0}};
    int k = weft_select(dup, 3); /* a is empty: a send is ready */
    ASSERT(k == 0 || k == 2);
    ASSERT_EQ(weft_chan_len(a), 1);
    ASSERT_EQ(weft_select(dup, 3), 1); /* full: only the receive */
    ASSERT_EQ(weft_chan_len(a), 0);
    EXPECT_OK(weft_chan_free(a));
    EXPECT_OK(weft_chan_free(b));
    EXPECT_OK(weft_chan_free(u));
    return 0;
}

TEST(select_default_deadline_null_closed)
{
    run(1, select_misc_body, NULL);
    run(2, select_misc_body, NULL);
}

/* Blocking selects woken by plain sends/receives, across Ms. */
struct selw {
    weft_chan_t *c[4];
    weft_chan_t *done;
    int64_t n;
};

static void sel_feeder(void *arg)
{
    struct selw *s = arg;
    for (int64_t i = 0; i < s->n; i++) {
        int64_t v = i;
        EXPECT_OK(weft_chan_send(s->c[i % 3], &v));
    }
    int64_t one = 1;
    EXPECT_OK(weft_chan_send(s->done, &one));
    exited();
}

static void sel_drainer(void *arg)
{
    struct selw *s = arg;
    for (int64_t i = 0; i < s->n; i++) {
        int64_t v;
        EXPECT_OK(weft_chan_recv(s->c[3], &v));
        ASSERT_EQ(v, 1000000 + i);
    }
    int64_t one = 1;
    EXPECT_OK(weft_chan_send(s->done, &one));
    exited();
}

static int select_wake_body(void *arg)
{
    size_t cap = (size_t)(intptr_t)arg;
    struct selw s;
    for (int i = 0; i < 4; i++)
        s.c[i] = newchan(sizeof(int64_t), cap);
    s.done = newchan(sizeof(int64_t), 0);
    s.n = SANITIZED ? 5000 : 30000;
    EXPECT_OK(weft_go(sel_feeder, &s));
    EXPECT_OK(weft_go(sel_drainer, &s));
    int64_t got = 0, sum = 0, sent = 0, v = 0, out = 1000000;
    weft_select_case_t cs[5] = {{s.c[0], WEFT_RECV, &v, 0},
                                {s.c[1], WEFT_RECV, &v, 0},
                                {s.c[2], WEFT_RECV, &v, 0},
                                {s.c[3], WEFT_SEND, &out, 0},
                                {NULL, WEFT_RECV, NULL, 0}};
    while (got < s.n || sent < s.n) {
        if (sent == s.n)
            cs[3].chan = NULL;
        int k = weft_select(cs, 5);
        ASSERT(k >= 0 && k <= 3);
        ASSERT_EQ(cs[k].result, 0);
        if (k == 3) {
            sent++;
            out++;
        } else {
            got++;
            sum += v;
        }
    }
    ASSERT_EQ(sum, s.n * (s.n - 1) / 2);
    for (int i = 0; i < 2; i++)
        EXPECT_OK(weft_chan_recv(s.done, &v));
    await_exits(2);
    /* Our sudogs left no trace: no receiver is queued any more. */
    if (cap == 0)
        for (int i = 0; i < 3; i++)
            EXPECT_ERR(weft_chan_trysend(s.c[i], &v), WEFT_EAGAIN);
    for (int i = 0; i < 4; i++)
        EXPECT_OK(weft_chan_free(s.c[i]));
    EXPECT_OK(weft_chan_free(s.done));
    return 0;
}

TEST_TIMEOUT(select_wakeups, 120)
{
    for (int p = 1; p <= 4; p *= 2) {
        run(p, select_wake_body, (void *)(intptr_t)0);
        run(p, select_wake_body, (void *)(intptr_t)4);
    }
}

/* A select with many cases (sorting, heap path), one of them made ready
 * by another coroutine; the rest must be dequeued afterwards. */
struct bigsel {
    weft_chan_t *c[40];
    int pick;
};

static void bigsel_sender(void *arg)
{
    struct bigsel *b = arg;
    weft_sleep(MS);
    int64_t v = b->pick;
    EXPECT_OK(weft_chan_send(b->c[b->pick], &v));
    exited();
}

static int bigsel_body(void *arg)
{
    (void)arg;
    struct bigsel b;
    weft_select_case_t cs[40];
    int64_t vals[40];
    for (int i = 0; i < 40; i++) {
        b.c[i] = newchan(sizeof(int64_t), 0);
        cs[i] = (weft_select_case_t){b.c[i], WEFT_RECV, &vals[i], 0};
    }
    for (int round = 0; round < 20; round++) {
        b.pick = (round * 7) % 40;
        EXPECT_OK(weft_go(bigsel_sender, &b));
        int k = weft_select(cs, 40);
        ASSERT_EQ(k, b.pick);
        ASSERT_EQ(vals[k], b.pick);
        int64_t v = 0;
        for (int i = 0; i < 40; i++) /* no receiver left queued */
            EXPECT_ERR(weft_chan_trysend(b.c[i], &v), WEFT_EAGAIN);
    }
    await_exits(20);
    for (int i = 0; i < 40; i++)
        EXPECT_OK(weft_chan_free(b.c[i]));
    return 0;
}

TEST(select_many_cases)
{
    run(1, bigsel_body, NULL);
    run(2, bigsel_body, NULL);
}

/* select blocked, channel freed under it: woken with ECLOSED. */
static void sel_blocked(void *arg)
{
    weft_chan_t **cs = arg;
    int64_t v = 1;
    weft_select_case_t c2[2] = {{cs[0], WEFT_RECV, &v, 0},
                                {cs[1], WEFT_SEND, &v, 0}};
    atomic_fetch_add((_Atomic int64_t *)cs[3], 1); /* about to select */
    int k = weft_select(c2, 2);
    ASSERT(k == 0 || k == 1);
    ASSERT_EQ(c2[k].result, WEFT_ECLOSED);
    atomic_fetch_add((_Atomic int64_t *)cs[2], 1);
}

static int sel_free_body(void *arg)
{
    (void)arg;
    _Atomic int64_t n = 0, started = 0;
    for (int round = 0; round < 50; round++) {
        weft_chan_t *c0 = newchan(8, 0), *c1 = newchan(8, 0);
        void *cs[4] = {c0, c1, (void *)&n, (void *)&started};
        EXPECT_OK(weft_go(sel_blocked, cs));
        EXPECT_OK(weft_go(sel_blocked, cs));
        /* Free only once both are blocked in select: freeing a channel
         * another coroutine is just starting to use is a use-after-free
         * (weft.h). */
        wait_count(&started, 2 * (round + 1), "selects started");
        wait_parked(0, WR_SELECT, 2);
        EXPECT_OK(weft_chan_free(round % 2 ? c0 : c1));
        wait_count(&n, 2 * (round + 1), "selects woken by free");
        EXPECT_OK(weft_chan_free(round % 2 ? c1 : c0));
    }
    return 0;
}

TEST(select_free_while_blocked)
{
    run(1, sel_free_body, NULL);
    run(2, sel_free_body, NULL);
}

/* select with no cases: parks for good; main returns regardless. */
static void no_cases(void *arg)
{
    atomic_store((_Atomic int64_t *)arg, 1);
    weft_select(NULL, 0);
    atomic_store((_Atomic int64_t *)arg, 2); /* never */
}

static int no_cases_body(void *arg)
{
    (void)arg;
    static _Atomic int64_t st;
    EXPECT_OK(weft_go(no_cases, (void *)&st));
    wait_parked(0, WR_SELECT_NO_CASES, 1);
    weft_sleep(20 * MS); /* and stays parked */
    ASSERT_EQ(atomic_load(&st), 1);
    return 0;
}

TEST(select_no_cases_blocks)
{
    /* The coroutine in an empty select blocks forever, by design; the
     * runtime's end reclaims it. */
    gate_opts = &gate_fds_only;
    run(1, no_cases_body, NULL);
    run(2, no_cases_body, NULL);
}

/* ------------------------------------------------------ plain pthreads */

struct ext {
    weft_chan_t *in, *out;
    int64_t n;
};

static void *ext_thread(void *arg)
{
    struct ext *e = arg;
    for (int64_t i = 0; i < e->n; i++) {
        int64_t v = i;
        int r;
        while ((r = weft_chan_trysend(e->in, &v)) == WEFT_EAGAIN)
            sched_yield();
        EXPECT_OK(r);
        int64_t w = -1;
        weft_select_case_t cs = {e->out, WEFT_RECV, &w, 0};
        while ((r = weft_tryselect(&cs, 1)) == WEFT_EAGAIN)
            sched_yield();
        ASSERT_EQ(r, 0);
        ASSERT_EQ(cs.result, 0);
        ASSERT_EQ(w, i * 2);
    }
    return NULL;
}

static int ext_body(void *arg)
{
    /* No other coroutine, no timer: only the outside thread's wake-ups
     * (weft__ready_any) can run this one again. */
    size_t cap = (size_t)(intptr_t)arg;
    struct ext e = {newchan(sizeof(int64_t), cap),
                    newchan(sizeof(int64_t), cap), SANITIZED ? 500 : 3000};
    /* The thread wakes us from outside: tell deadlock detection. */
    EXPECT_OK(weft_external_ref());
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, ext_thread, &e), 0);
    for (int64_t i = 0; i < e.n; i++) {
        int64_t v;
        EXPECT_OK(weft_chan_recv(e.in, &v));
        ASSERT_EQ(v, i);
        v *= 2;
        EXPECT_OK(weft_chan_send(e.out, &v));
    }
    EXPECT_OK(weft_external_unref());
    pthread_join(t, NULL);
    EXPECT_OK(weft_chan_free(e.in));
    EXPECT_OK(weft_chan_free(e.out));
    return 0;
}

TEST(try_from_pthread)
{
    for (int p = 1; p <= 2; p++) {
        run(p, ext_body, (void *)(intptr_t)0);
        run(p, ext_body, (void *)(intptr_t)1);
    }
}

/* ------------------------------------------- buffered lock-free stress */

/*
 * The buffered ring is used without the lock (chan.c): these tests mix
 * lock-free operations (send/recv/try with room or items) with parking
 * ones (full, empty) and with select and close, over many seeds: caps
 * from 1 (every other op parks) up, 8-byte elements (the inline path)
 * and 24-byte ones (the general ring path), 1 to 4 Ps. A lost wakeup
 * hangs a receiver: the receives carry a long deadline and a timeout
 * fails the test instead of the harness's alarm.
 */
enum { RS_PMAX = 4, RS_CMAX = 4 };

struct rs_elem {
    int64_t v;          /* producer << 32 | seq */
    int64_t check[2];   /* 24-byte elements: ~v, v * 3 */
};

struct rs {
    weft_chan_t *c, *idle, *done;
    size_t elemsize;
    int nprod, ncons;
    int64_t per;          /* items per producer */
    _Atomic int64_t count, sum;
    _Atomic int64_t sent[RS_PMAX]; /* close race: sends that returned 0 */
    bool racy;            /* close while producers still send */
    uint64_t yieldmask;   /* producers yield when rand & mask == 0 */
};

struct rs_arg {
    struct rs *r;
    int id;
    uint64_t rng;
};

static uint64_t rs_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* rs_deadline - long enough never to pass unless a wakeup was lost. */
static int64_t rs_deadline(void)
{
    return weft_now() + (int64_t)(10000 * MS * slow());
}

static void rs_producer(void *arg)
{
    struct rs_arg *a = arg;
    struct rs *r = a->r;
    for (int64_t s = 0; r->racy || s < r->per; s++) {
        struct rs_elem e = {(int64_t)a->id << 32 | s, {0, 0}};
        e.check[0] = ~e.v;
        e.check[1] = e.v * 3;
        int how = (int)(rs_rand(&a->rng) % 8), rc;
        if (how == 0) { /* try, then block */
            rc = weft_chan_trysend(r->c, &e);
            if (rc == WEFT_EAGAIN)
                rc = weft_chan_send(r->c, &e);
        } else if (how == 1) { /* select: the idle case never fires */
            weft_select_case_t cs[2] = {{r->c, WEFT_SEND, &e, 0},
                                        {r->idle, WEFT_RECV, NULL, 0}};
            int k = weft_select(cs, 2);
            ASSERT_EQ(k, 0);
            rc = cs[0].result;
        } else {
            rc = weft_chan_send_dl(r->c, &e, rs_deadline());
        }
        if (rc == WEFT_ECLOSED && r->racy) {
            /* Closed stays closed for senders. */
            EXPECT_ERR(weft_chan_send(r->c, &e), WEFT_ECLOSED);
            EXPECT_ERR(weft_chan_trysend(r->c, &e), WEFT_ECLOSED);
            break;
        }
        if (rc != 0)
            FAIL("producer %d: send %lld: %s", a->id, (long long)s,
                 weft_err_name(rc));
        atomic_store(&r->sent[a->id], s + 1);
        if ((rs_rand(&a->rng) & r->yieldmask) == 0)
            weft_yield();
    }
    int64_t one = 1;
    EXPECT_OK(weft_chan_send(r->done, &one));
    exited();
}

static void rs_consumer(void *arg)
{
    struct rs_arg *a = arg;
    struct rs *r = a->r;
    int64_t last[RS_PMAX];
    for (int i = 0; i < RS_PMAX; i++)
        last[i] = -1;
    int64_t sum = 0, n = 0;
    int rc;
    for (;;) {
        struct rs_elem e;
        memset(&e, 0xee, sizeof e);
        int how = (int)(rs_rand(&a->rng) % 8);
        if (how == 0) {
            rc = weft_chan_tryrecv(r->c, &e);
            if (rc == WEFT_EAGAIN) {
                weft_yield();
                continue;
            }
        } else if (how == 1) {
            weft_select_case_t cs[2] = {{r->idle, WEFT_RECV, NULL, 0},
                                        {r->c, WEFT_RECV, &e, 0}};
            int k = weft_select_dl(cs, 2, rs_deadline());
            if (k != 1)
                FAIL("consumer %d: select %d (%s): lost wakeup?", a->id, k,
                     weft_err_name(k));
            rc = cs[1].result;
        } else {
            rc = weft_chan_recv_dl(r->c, &e, rs_deadline());
        }
        if (rc == WEFT_ECLOSED)
            break;
        if (rc != 0)
            FAIL("consumer %d: recv: %s (lost wakeup?)", a->id,
                 weft_err_name(rc));
        int id = (int)(e.v >> 32);
        int64_t s = e.v & 0xffffffff;
        ASSERT(id >= 0 && id < r->nprod);
        if (r->elemsize > 8) {
            ASSERT_EQ(e.check[0], ~e.v);
            ASSERT_EQ(e.check[1], e.v * 3);
        }
        if (s <= last[id])
            FAIL("producer %d: seq %lld after %lld", id, (long long)s,
                 (long long)last[id]);
        last[id] = s;
        sum += s;
        n++;
    }
    /* Closed and drained stays so: nothing may appear after it. */
    int64_t z[3] = {1, 1, 1};
    EXPECT_ERR(weft_chan_tryrecv(r->c, z), WEFT_ECLOSED);
    ASSERT_EQ(z[0], 0);
    EXPECT_ERR(weft_chan_recv(r->c, NULL), WEFT_ECLOSED);
    ASSERT_EQ(weft_chan_len(r->c), 0);
    atomic_fetch_add(&r->sum, sum);
    atomic_fetch_add(&r->count, n);
    int64_t one = 1;
    EXPECT_OK(weft_chan_send(r->done, &one));
    exited();
}

static int rs_body(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 1;
    static const size_t caps[] = {1, 2, 3, 5, 16, 128};
    struct rs r = {0};
    r.racy = seed % 3 == 2;
    r.yieldmask = 15;
    r.elemsize = rs_rand(&rng) % 3 == 0 ? sizeof(struct rs_elem) : 8;
    size_t cap = caps[rs_rand(&rng) % (sizeof caps / sizeof caps[0])];
    r.nprod = 1 + (int)(rs_rand(&rng) % RS_PMAX);
    r.ncons = 1 + (int)(rs_rand(&rng) % RS_CMAX);
    r.per = SANITIZED ? 1000 : 20000;
    r.c = newchan(r.elemsize, cap);
    r.idle = newchan(8, 1);
    r.done = newchan(8, 0);
    struct rs_arg ps[RS_PMAX], cs[RS_CMAX];
    for (int i = 0; i < r.ncons; i++) {
        cs[i] = (struct rs_arg){&r, i, rs_rand(&rng) | 1};
        EXPECT_OK(weft_go(rs_consumer, &cs[i]));
    }
    for (int i = 0; i < r.nprod; i++) {
        ps[i] = (struct rs_arg){&r, i, rs_rand(&rng) | 1};
        EXPECT_OK(weft_go(rs_producer, &ps[i]));
    }
    int64_t v;
    if (r.racy) {
        /* Close while the producers are sending. */
        weft_sleep((int64_t)(rs_rand(&rng) % 2000) * US);
        EXPECT_OK(weft_chan_close(r.c));
    }
    for (int i = 0; i < r.nprod; i++)
        EXPECT_OK(weft_chan_recv(r.done, &v));
    if (!r.racy)
        EXPECT_OK(weft_chan_close(r.c));
    for (int i = 0; i < r.ncons; i++)
        EXPECT_OK(weft_chan_recv(r.done, &v));
    await_exits(r.nprod + r.ncons);
    /* Exactly once: what was received is what sends returned 0 for,
     * which for each producer is 0 .. sent-1. */
    int64_t count = 0, sum = 0;
    for (int i = 0; i < r.nprod; i++) {
        int64_t n = atomic_load(&r.sent[i]);
        if (!r.racy)
            ASSERT_EQ(n, r.per);
        count += n;
        sum += n * (n - 1) / 2;
    }
    ASSERT_EQ(atomic_load(&r.count), count);
    ASSERT_EQ(atomic_load(&r.sum), sum);
    EXPECT_OK(weft_chan_free(r.c));
    EXPECT_OK(weft_chan_free(r.idle));
    EXPECT_OK(weft_chan_free(r.done));
    return 0;
}

/* rs_close_body - close racing with lock-free sends into a ring whose
 * receivers are mostly parked (the producers yield after every send):
 * close must hand what is in the ring to them (invariant 4), not report
 * closed over it, and no send that returned 0 may be lost. */
static int rs_close_body(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    uint64_t rng = seed * 0x9e3779b97f4a7c15ull + 7;
    for (int round = 0; round < (SANITIZED ? 30 : 150); round++) {
        struct rs r = {0};
        r.racy = true;
        r.yieldmask = 0;
        r.elemsize = round % 4 == 3 ? sizeof(struct rs_elem) : 8;
        r.nprod = 1 + (int)(rs_rand(&rng) % 2);
        r.ncons = 1 + (int)(rs_rand(&rng) % RS_CMAX);
        r.c = newchan(r.elemsize, 1 + (size_t)(rs_rand(&rng) % 4));
        r.idle = newchan(8, 1);
        r.done = newchan(8, 0);
        struct rs_arg ps[RS_PMAX], cs[RS_CMAX];
        for (int i = 0; i < r.ncons; i++) {
            cs[i] = (struct rs_arg){&r, i, rs_rand(&rng) | 1};
            EXPECT_OK(weft_go(rs_consumer, &cs[i]));
        }
        for (int i = 0; i < r.nprod; i++) {
            ps[i] = (struct rs_arg){&r, i, rs_rand(&rng) | 1};
            EXPECT_OK(weft_go(rs_producer, &ps[i]));
        }
        int64_t spin = (int64_t)(rs_rand(&rng) % 400);
        for (int64_t k = 0; k < spin; k++)
            weft_yield();
        EXPECT_OK(weft_chan_close(r.c));
        int64_t v;
        for (int i = 0; i < r.nprod + r.ncons; i++)
            EXPECT_OK(weft_chan_recv(r.done, &v));
        await_exits(r.nprod + r.ncons);
        int64_t count = 0, sum = 0;
        for (int i = 0; i < r.nprod; i++) {
            int64_t n = atomic_load(&r.sent[i]);
            count += n;
            sum += n * (n - 1) / 2;
        }
        ASSERT_EQ(atomic_load(&r.count), count);
        ASSERT_EQ(atomic_load(&r.sum), sum);
        EXPECT_OK(weft_chan_free(r.c));
        EXPECT_OK(weft_chan_free(r.idle));
        EXPECT_OK(weft_chan_free(r.done));
    }
    return 0;
}

TEST_TIMEOUT(buffered_close_race, 300)
{
    for (int p = 1; p <= 4; p *= 2)
        for (int s = 0; s < 3; s++)
            run(p, rs_close_body, (void *)(uintptr_t)(s + 1));
}

TEST_TIMEOUT(buffered_lockfree_stress, 300)
{
    static const int procs[] = {1, 2, 4};
    int seeds = SANITIZED ? 6 : 12;
    for (size_t j = 0; j < sizeof procs / sizeof procs[0]; j++)
        for (int s = 0; s < seeds; s++)
            run(procs[j], rs_body, (void *)(uintptr_t)(s + 1));
}

/*
 * Select ping-pong pairs on 2 Ps for a while: each hand-off goes through
 * runnext, so a pair shares one time slice and sysmon preempts it every
 * 10 ms at a select's checkpoint, after which the G may resume on the
 * other M. A select must then use the M it runs on, not the one it
 * started on (TSan: two threads advancing one M's fastrand). Every value
 * must come back, in order.
 */
struct selpair {
    weft_chan_t *ping, *pong;
    int64_t trips;
};

static void selpong(void *arg)
{
    struct selpair *sp = arg;
    int64_t v;
    for (;;) {
        weft_select_case_t rc = {sp->ping, WEFT_RECV, &v, 0};
        ASSERT_EQ(weft_select(&rc, 1), 0);
        if (rc.result == WEFT_ECLOSED)
            break;
        v++;
        weft_select_case_t sc = {sp->pong, WEFT_SEND, &v, 0};
        ASSERT_EQ(weft_select(&sc, 1), 0);
    }
    exited();
}

static void selping(void *arg)
{
    struct selpair *sp = arg;
    int64_t until = weft_now() + (int64_t)(300 * MS * slow());
    for (int64_t i = 0; weft_now() < until; i++) {
        weft_select_case_t sc = {sp->ping, WEFT_SEND, &i, 0};
        ASSERT_EQ(weft_select(&sc, 1), 0);
        int64_t v = -1;
        weft_select_case_t rc = {sp->pong, WEFT_RECV, &v, 0};
        ASSERT_EQ(weft_select(&rc, 1), 0);
        ASSERT_EQ(v, i + 1);
        sp->trips++;
    }
    EXPECT_OK(weft_chan_close(sp->ping));
    exited();
}

static int selpairs_body(void *arg)
{
    (void)arg;
    static struct selpair sp[4];
    for (int i = 0; i < 4; i++) {
        sp[i] = (struct selpair){newchan(sizeof(int64_t), 0),
                                 newchan(sizeof(int64_t), 0), 0};
        EXPECT_OK(weft_go(selpong, &sp[i]));
        EXPECT_OK(weft_go(selping, &sp[i]));
    }
    await_exits(8);
    for (int i = 0; i < 4; i++) {
        ASSERT_GT(sp[i].trips, 0);
        EXPECT_OK(weft_chan_free(sp[i].ping));
        EXPECT_OK(weft_chan_free(sp[i].pong));
    }
    return 0;
}

TEST_TIMEOUT(select_pingpong_preempted, 120)
{
    for (int round = 0; round < 4; round++) /* TSan saw the bug 1 in 3 */
        run(2, selpairs_body, NULL);
}

/*
 * One producer, one consumer, capacity 1 or 2: nearly every operation
 * finds the ring full or empty, so the two sides keep parking and
 * waking each other through the waiting flags while the other side is
 * on its lock-free path (chan.c invariant 2). Values must arrive in
 * order, and a lost wakeup shows as a deadline passing.
 */
struct pc {
    weft_chan_t *c;
    int64_t n;
    int spin; /* producer: yields between sends, to vary the timing */
};

static void pc_producer(void *arg)
{
    struct pc *p = arg;
    for (int64_t i = 0; i < p->n; i++) {
        int rc = weft_chan_send_dl(p->c, &i, rs_deadline());
        if (rc != 0)
            FAIL("send %lld: %s (lost wakeup?)", (long long)i,
                 weft_err_name(rc));
        for (int k = 0; k < (int)(i % (p->spin + 1)); k++)
            weft_checkpoint();
    }
    EXPECT_OK(weft_chan_close(p->c));
    exited();
}

static int pc_body(void *arg)
{
    int variant = (int)(intptr_t)arg;
    struct pc p = {newchan(sizeof(int64_t), 1 + (size_t)(variant & 1)),
                   SANITIZED ? 20000 : 300000, variant >> 1};
    EXPECT_OK(weft_go(pc_producer, &p));
    int64_t v, want = 0;
    int rc;
    while ((rc = weft_chan_recv_dl(p.c, &v, rs_deadline())) == 0) {
        if (v != want)
            FAIL("got %lld, want %lld", (long long)v, (long long)want);
        want++;
    }
    EXPECT_ERR(rc, WEFT_ECLOSED);
    ASSERT_EQ(want, p.n);
    await_exits(1);
    EXPECT_OK(weft_chan_free(p.c));
    return 0;
}

TEST_TIMEOUT(buffered_no_lost_wakeup, 300)
{
    for (int p = 1; p <= 2; p++)
        for (int variant = 0; variant < 6; variant++)
            run(p, pc_body, (void *)(intptr_t)variant);
}

/*
 * A lock-free receiver racing the hand-off: a plain thread spins on
 * tryrecv while coroutines wait in recv and select. When a sender's
 * item is taken by the thread between the sender's publish and its
 * hand-off to a parked waiter, the waiter is woken to retry (chan.c
 * invariant 3); it must neither get a value that was never sent nor be
 * left parked, and every item goes to exactly one receiver.
 */
struct steal {
    weft_chan_t *c, *idle;
    int64_t n;
    _Atomic int64_t count, sum;
    _Atomic bool stop;
};

static void *steal_thread(void *arg)
{
    struct steal *st = arg;
    int64_t count = 0, sum = 0, v;
    int r;
    while (!atomic_load(&st->stop)) {
        if ((r = weft_chan_tryrecv(st->c, &v)) == 0) {
            ASSERT(v >= 0 && v < st->n);
            count++;
            sum += v;
        } else if (r == WEFT_ECLOSED) {
            break;
        }
    }
    atomic_fetch_add(&st->count, count);
    atomic_fetch_add(&st->sum, sum);
    return NULL;
}

static void steal_waiter(void *arg)
{
    struct steal *st = arg;
    int64_t count = 0, sum = 0, v;
    for (bool sel = false;; sel = !sel) {
        v = -1;
        int r;
        if (sel) {
            weft_select_case_t cs[2] = {{st->idle, WEFT_RECV, NULL, 0},
                                        {st->c, WEFT_RECV, &v, 0}};
            int k = weft_select_dl(cs, 2, rs_deadline());
            if (k != 1)
                FAIL("select %d (%s): lost wakeup?", k, weft_err_name(k));
            r = cs[1].result;
        } else {
            r = weft_chan_recv_dl(st->c, &v, rs_deadline());
        }
        if (r == WEFT_ECLOSED)
            break;
        if (r != 0)
            FAIL("recv: %s (lost wakeup?)", weft_err_name(r));
        ASSERT(v >= 0 && v < st->n);
        count++;
        sum += v;
    }
    atomic_fetch_add(&st->count, count);
    atomic_fetch_add(&st->sum, sum);
    exited();
}

static void steal_sender(void *arg)
{
    struct steal *st = arg;
    for (int64_t i = 0; i < st->n; i++) {
        EXPECT_OK(weft_chan_send_dl(st->c, &i, rs_deadline()));
        weft_yield(); /* let the waiters park again */
    }
    exited();
}

static int steal_body(void *arg)
{
    size_t cap = (size_t)(uintptr_t)arg;
    struct steal st = {newchan(sizeof(int64_t), cap), newchan(8, 1),
                       SANITIZED ? 5000 : 100000, 0, 0, false};
    /* The thread may ready a sender from outside: tell deadlock
     * detection. */
    EXPECT_OK(weft_external_ref());
    pthread_t t;
    ASSERT_EQ(pthread_create(&t, NULL, steal_thread, &st), 0);
    for (int i = 0; i < 3; i++)
        EXPECT_OK(weft_go(steal_waiter, &st));
    EXPECT_OK(weft_go(steal_sender, &st));
    await_exits(1);
    EXPECT_OK(weft_chan_close(st.c));
    await_exits(3);
    atomic_store(&st.stop, true);
    pthread_join(t, NULL);
    EXPECT_OK(weft_external_unref());
    ASSERT_EQ(atomic_load(&st.count), st.n);
    ASSERT_EQ(atomic_load(&st.sum), st.n * (st.n - 1) / 2);
    EXPECT_OK(weft_chan_free(st.c));
    EXPECT_OK(weft_chan_free(st.idle));
    return 0;
}

TEST_TIMEOUT(buffered_retry_wake, 300)
{
    for (int p = 1; p <= 2; p++) {
        run(p, steal_body, (void *)(uintptr_t)1);
        run(p, steal_body, (void *)(uintptr_t)4);
    }
}

/*
 * Free right after the last receive: a worker sends one value into a
 * fresh buffered channel and returns; the receiver frees the channel as
 * soon as it has the value, possibly while the worker is still inside
 * its send on another P. The send must not touch the channel after the
 * value became visible (chan.c invariant 8); ASan builds check it.
 */
static void oneshot_sender(void *arg)
{
    int64_t v = 77;
    EXPECT_OK(weft_chan_send((weft_chan_t *)arg, &v));
}

static int oneshot_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < (SANITIZED ? 2000 : 20000); i++) {
        weft_chan_t *c = newchan(sizeof(int64_t), 1 + (size_t)(i & 1));
        int64_t v = 0;
        EXPECT_OK(weft_go(oneshot_sender, c));
        if (i & 2)
            weft_yield(); /* sometimes the sender goes first */
        EXPECT_OK(weft_chan_recv(c, &v));
        ASSERT_EQ(v, 77);
        EXPECT_OK(weft_chan_free(c));
    }
    return 0;
}

TEST_TIMEOUT(buffered_free_after_recv, 120)
{
    run(1, oneshot_body, NULL);
    run(2, oneshot_body, NULL);
}
