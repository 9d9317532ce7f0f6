/* Stands in for peer_tbb.cpp where no C++ compiler is found. */
#include "bench.h"

#include <string.h>

int bench_run_tbb(struct bench_run *r)
{
    strcpy(r->err, "tbb: not available in this build (no C++ compiler)");
    return BENCH_NOTAV;
}
