/*
 * CMallocCounter - counts heap allocations made by the whole process, so a
 * benchmark can report allocations per request. Linking this target into an
 * executable interposes malloc/calloc/realloc/posix_memalign/aligned_alloc
 * (forwarding to glibc's own entry points). Benchmarks only.
 */
#ifndef VB_MALLOC_COUNTER_H
#define VB_MALLOC_COUNTER_H
#include <stdint.h>
uint64_t vb_malloc_count(void);
#endif
