/*
 * debugserver.c - /debug/pprof/ and /metrics over HTTP, served by
 * coroutines on the runtime's own netpoller. (Skeleton: filled in by
 * issue 6's debug server work.)
 */
#include "pprof.h"
#include "runtime.h"

WEFT_EXTERN int weft_debug_serve(const char *addr)
{
    return -ENOSYS;
}

WEFT_EXTERN int weft_debug_stop(void)
{
    return -ENOSYS;
}
