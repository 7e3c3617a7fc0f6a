/*
 * schedtrace.c - WEFTDEBUG=schedtrace (stub).
 */
#include "runtime.h"

void weft__schedtrace(bool detail)
{
    (void)detail;
}
