/*
 * metrics.c - the runtime's metrics: counters, the scheduling-latency
 * histogram, process gauges, Prometheus text. (Skeleton: filled in by
 * issue 6's metrics work.)
 */
#include "pprof.h"
#include "runtime.h"

WEFT_EXTERN int weft_metrics_write(int fd)
{
    return -ENOSYS;
}
