/*
 * debugvars.c - WEFTDEBUG and WEFTTRACEBACK (stub: defaults only).
 */
#include "runtime.h"

struct debugvars weft__debug = {.traceback = TB_SINGLE};

void weft__debug_parse(void)
{
    weft__debug = (struct debugvars){.traceback = TB_SINGLE};
}
