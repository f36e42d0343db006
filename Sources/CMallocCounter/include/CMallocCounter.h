/*
 * CMallocCounter - counts heap allocations made by the whole process, so a
 * benchmark can report allocations per request. Linking this target into an
 * executable interposes malloc/calloc/realloc/posix_memalign/aligned_alloc
 * (forwarding to glibc's own entry points). Benchmarks and the engine's
 * allocation test (BlockEngineTests). Under AddressSanitizer or
 * ThreadSanitizer nothing is interposed (the sanitizer owns malloc) and
 * vb_malloc_counting() is 0: callers must not trust the count then.
 */
#ifndef VB_MALLOC_COUNTER_H
#define VB_MALLOC_COUNTER_H
#include <stdint.h>
uint64_t vb_malloc_count(void);
/* 1 when allocations are counted (no sanitizer owns malloc), else 0. */
int vb_malloc_counting(void);
#endif
