#include "CMallocCounter.h"
#include <errno.h>
#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define VB_SANITIZED 1
#endif
#endif

#ifdef VB_SANITIZED
/* The sanitizer's allocator must see every malloc and free: count nothing. */
uint64_t vb_malloc_count(void) { return 0; }
int vb_malloc_counting(void) { return 0; }
#else
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

static uint64_t allocations;

static inline void count(void) { __atomic_add_fetch(&allocations, 1, __ATOMIC_RELAXED); }

uint64_t vb_malloc_count(void) { return __atomic_load_n(&allocations, __ATOMIC_RELAXED); }
int vb_malloc_counting(void) { return 1; }

void *malloc(size_t n) { count(); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { count(); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { count(); return __libc_realloc(p, n); }
void *aligned_alloc(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
void *memalign(size_t a, size_t n) { count(); return __libc_memalign(a, n); }
int posix_memalign(void **out, size_t a, size_t n) {
    count();
    void *p = __libc_memalign(a, n);
    if (!p) return ENOMEM;
    *out = p;
    return 0;
}
#endif
