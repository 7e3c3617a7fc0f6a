/*
 * netpoll_epoll.c - the epoll backend of netpoll.h: one epoll instance per
 * runtime, edge-triggered, broken out of a sleep by an eventfd.
 *
 * The scheduler's idle path blocks here until the earliest timer (one M
 * at a time, see proc.c findrunnable), so timers and, with the socket
 * module, I/O readiness wake the same sleeper.
 *
 * Events carry the data fd.c chose at registration (fd | generation
 * << 32); fd.c turns them into woken Gs. The io_uring rings (uring.c)
 * are in the set too: every poll also takes their completions.
 *
 * Invariants:
 *  1. wakesig is 1 while a break is pending (eventfd written, not yet
 *     drained): concurrent breaks coalesce into one write.
 *  2. The poll sleeps with nanosecond precision (epoll_pwait2) where the
 *     kernel has it, else in milliseconds rounded up, so a timer never
 *     fires early because of the poller.
 */
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "runtime.h"
#include "sanitizer.h"

/* The break eventfd's event data, and the io_uring rings' (RING_DATA |
 * P id): no fd's (fd | seq << 32 with fd < 2^31). */
#define BREAK_DATA UINT64_MAX
#define RING_DATA ((uint64_t)1 << 31)

static int epfd = -1;
static int breakfd = -1;
static _Atomic uint32_t wakesig;
static bool nopwait2;

int weft__netpoll_init(void)
{
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return -errno;
    breakfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (breakfd < 0) {
        int err = -errno;
        close(epfd);
        epfd = -1;
        return err;
    }
    struct epoll_event ev = {.events = EPOLLIN, .data.u64 = BREAK_DATA};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, breakfd, &ev) < 0) {
        int err = -errno;
        weft__netpoll_close();
        return err;
    }
    STORE(&wakesig, 0);
    weft__uring_init(epfd, RING_DATA);
    /* Valgrind 3.19 does not know epoll_pwait2 and complains loudly. */
    nopwait2 = weft__vg_on;
    return 0;
}

void weft__netpoll_close(void)
{
    weft__uring_close();
    if (breakfd >= 0)
        close(breakfd);
    if (epfd >= 0)
        close(epfd);
    breakfd = epfd = -1;
}

void weft__netpoll_break(void)
{
    uint32_t zero = 0;
    if (!atomic_compare_exchange_strong(&wakesig, &zero, 1))
        return;
    uint64_t one = 1;
    while (write(breakfd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

int weft__netpoll_open(int fd, uint64_t data)
{
    struct epoll_event ev = {
        .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
        .data.u64 = data,
    };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) == 0)
        return 0;
    /* Still registered from a generation closed with close(2) while a
     * dup of it lived on: take it over. */
    if (errno == EEXIST && epoll_ctl(epfd, EPOLL_CTL_MOD, fd, &ev) == 0)
        return 0;
    return -errno;
}

void weft__netpoll_disarm(int fd)
{
    struct epoll_event ev = {0};
    epoll_ctl(epfd, EPOLL_CTL_DEL, fd, &ev); /* ENOENT etc: nothing to do */
}

static int pollwait(struct epoll_event *evs, int max, int64_t delay)
{
    if (!nopwait2) {
        struct timespec ts, *tsp = NULL;
        if (delay >= 0) {
            ts.tv_sec = delay / 1000000000;
            ts.tv_nsec = delay % 1000000000;
            tsp = &ts;
        }
        int n = epoll_pwait2(epfd, evs, max, tsp, NULL);
        if (n >= 0 || errno != ENOSYS)
            return n;
        nopwait2 = true;
    }
    int ms = -1;
    if (delay >= 0)
        ms = delay > 1000000000000LL ? 1000000 : (int)((delay + 999999) / 1000000);
    return epoll_wait(epfd, evs, max, ms);
}

struct g *weft__netpoll(int64_t delay)
{
    struct epoll_event evs[128];
    int k = pollwait(evs, 128, delay);
    if (k < 0) {
        if (errno != EINTR)
            weft__throw("weft: netpoll - epoll_wait failed");
        return NULL;
    }
    struct g *list = NULL;
    for (int i = 0; i < k; i++) {
        if (evs[i].data.u64 == BREAK_DATA) {
            /* Only a sleeping poll consumes a break: a non-blocking look
             * must not swallow the one meant for the sleeper. */
            if (delay != 0) {
                uint64_t v;
                while (read(breakfd, &v, sizeof v) < 0 && errno == EINTR)
                    ;
                STORE(&wakesig, 0);
            }
            continue;
        }
        if (evs[i].data.u64 & RING_DATA)
            continue; /* reaped below, all rings at once */
        uint32_t e = evs[i].events;
        bool r = e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR);
        bool w = e & (EPOLLOUT | EPOLLHUP | EPOLLERR);
        weft__pd_netready(evs[i].data.u64, r, w,
                          e & (EPOLLRDHUP | EPOLLHUP | EPOLLERR), &list);
    }
    if (weft__uring_on)
        list = weft__uring_reapall(list);
    return list;
}
