/*
 * cpuprof.c - the CPU profiler: a CPU-time timer per M, a SIGPROF handler
 * that unwinds into a per-M ring, and the collector that turns the rings
 * into a profile. (Skeleton: filled in by issue 6's CPU profiler work.)
 */
#include "pprof.h"
#include "runtime.h"

WEFT_EXTERN int weft_cpuprofile_start(int hz)
{
    return -ENOSYS;
}

WEFT_EXTERN int weft_cpuprofile_stop(int fd)
{
    return -ENOSYS;
}
