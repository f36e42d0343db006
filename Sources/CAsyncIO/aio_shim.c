/* Thin shims over libaio; see CAsyncIO.h. */
#include "CAsyncIO.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>
#include <libaio.h>

struct vb_aio {
    io_context_t ctx;
    unsigned slots;
    struct iocb *iocbs;        /* [slots] */
    struct iocb **batch;       /* [slots], scratch for io_submit */
    struct io_event *events;   /* [slots], scratch for io_getevents */
};

struct vb_aio *vb_aio_create(unsigned max_events, unsigned slots, int *err) {
    struct vb_aio *a = calloc(1, sizeof(*a));
    if (a == NULL) { *err = -ENOMEM; return NULL; }
    a->slots = slots;
    a->iocbs = calloc(slots, sizeof(struct iocb));
    a->batch = calloc(slots, sizeof(struct iocb *));
    a->events = calloc(slots, sizeof(struct io_event));
    if (a->iocbs == NULL || a->batch == NULL || a->events == NULL) {
        free(a->iocbs); free(a->batch); free(a->events); free(a);
        *err = -ENOMEM;
        return NULL;
    }
    int rc = io_setup((int)max_events, &a->ctx);
    if (rc < 0) {
        free(a->iocbs); free(a->batch); free(a->events); free(a);
        *err = rc;
        return NULL;
    }
    *err = 0;
    return a;
}

void vb_aio_destroy(struct vb_aio *a) {
    if (a == NULL) return;
    io_destroy(a->ctx);
    free(a->iocbs); free(a->batch); free(a->events); free(a);
}

static inline void vb_aio_finish(struct iocb *cb, int eventfd, uint64_t data) {
    if (eventfd >= 0) io_set_eventfd(cb, eventfd);
    cb->data = (void *)(uintptr_t)data;
}

void vb_aio_prep_preadv(struct vb_aio *a, unsigned slot, int fd, const struct iovec *iov,
                        int nr_iov, uint64_t offset, int eventfd, uint64_t data) {
    struct iocb *cb = &a->iocbs[slot];
    io_prep_preadv(cb, fd, iov, nr_iov, (long long)offset);
    vb_aio_finish(cb, eventfd, data);
}

void vb_aio_prep_pwritev(struct vb_aio *a, unsigned slot, int fd, const struct iovec *iov,
                         int nr_iov, uint64_t offset, int eventfd, uint64_t data) {
    struct iocb *cb = &a->iocbs[slot];
    io_prep_pwritev(cb, fd, iov, nr_iov, (long long)offset);
    vb_aio_finish(cb, eventfd, data);
}

void vb_aio_prep_fdsync(struct vb_aio *a, unsigned slot, int fd, int eventfd, uint64_t data) {
    struct iocb *cb = &a->iocbs[slot];
    io_prep_fdsync(cb, fd);
    vb_aio_finish(cb, eventfd, data);
}

int vb_aio_submit(struct vb_aio *a, const uint32_t *slots, unsigned n) {
    if (n > a->slots) return -EINVAL;
    for (unsigned i = 0; i < n; i++) a->batch[i] = &a->iocbs[slots[i]];
    return io_submit(a->ctx, (long)n, a->batch);
}

int vb_aio_getevents(struct vb_aio *a, uint64_t *data, int64_t *res, unsigned max) {
    struct timespec zero = {0, 0};
    if (max > a->slots) max = a->slots;
    int n = io_getevents(a->ctx, 0, (long)max, a->events, &zero);
    for (int i = 0; i < n; i++) {
        data[i] = (uint64_t)(uintptr_t)a->events[i].data;
        res[i] = (int64_t)(long)a->events[i].res;
    }
    return n;
}
