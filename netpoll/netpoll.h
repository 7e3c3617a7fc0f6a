/*
 * netpoll.h - the contract between the scheduler and a poller backend
 * (netpoll_epoll.c on Linux). Go's netpoll.go, reduced to what the
 * scheduler needs:
 *
 *  weft__netpoll_init()   create the poller; 0 or -errno. Called once
 *                         per weft_main before any M runs.
 *  weft__netpoll_close()  release it; no M may be polling.
 *  weft__netpoll(delay, &n)
 *                         wait for I/O readiness: delay < 0 blocks until
 *                         woken, 0 only looks, > 0 blocks at most delay
 *                         ns. Returns the Gs made ready, linked through
 *                         schedlink (n of them), or NULL. At most one M
 *                         calls it with delay != 0 at a time (the one that
 *                         set sched.lastpoll to 0).
 *  weft__netpoll_break()  make a blocked weft__netpoll return soon. Any
 *                         thread, async-signal-safe; coalesced.
 *  weft__netpoll_waiters() whether any G waits on I/O: the scheduler
 *                         only blocks in the poller when there is I/O or
 *                         a timer to wait for.
 */
#ifndef WEFT_NETPOLL_H
#define WEFT_NETPOLL_H

#include <stdbool.h>
#include <stdint.h>

struct g;

int weft__netpoll_init(void);
void weft__netpoll_close(void);
struct g *weft__netpoll(int64_t delay, int32_t *n);
void weft__netpoll_break(void);
bool weft__netpoll_waiters(void);

#endif
