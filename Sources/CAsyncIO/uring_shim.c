/* Thin shims over liburing; see CAsyncIO.h. */
#include "CAsyncIO.h"

#include <errno.h>
#include <stdlib.h>
#include <liburing.h>

_Static_assert(VB_URING_SETUP_SUBMIT_ALL == IORING_SETUP_SUBMIT_ALL, "io_uring flag mismatch");

struct vb_uring {
    struct io_uring ring;
};

struct vb_uring *vb_uring_create(unsigned entries, unsigned flags, int *err) {
    struct vb_uring *r = calloc(1, sizeof(*r));
    if (r == NULL) { *err = -ENOMEM; return NULL; }
    int rc = io_uring_queue_init(entries, &r->ring, flags);
    if (rc < 0) { free(r); *err = rc; return NULL; }
    *err = 0;
    return r;
}

void vb_uring_destroy(struct vb_uring *r) {
    if (r == NULL) return;
    io_uring_queue_exit(&r->ring);
    free(r);
}

int vb_uring_register_eventfd(struct vb_uring *r, int efd) {
    return io_uring_register_eventfd(&r->ring, efd);
}

int vb_uring_register_file(struct vb_uring *r, int fd) {
    return io_uring_register_files(&r->ring, &fd, 1);
}

static inline void vb_sqe_finish(struct io_uring_sqe *sqe, int fixed, uint64_t user_data) {
    if (fixed) sqe->flags |= IOSQE_FIXED_FILE;
    io_uring_sqe_set_data64(sqe, user_data);
}

int vb_uring_prep_readv(struct vb_uring *r, int fd, int fixed, const struct iovec *iov,
                        unsigned nr_iov, uint64_t offset, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_readv(sqe, fd, iov, nr_iov, offset);
    vb_sqe_finish(sqe, fixed, user_data);
    return 0;
}

int vb_uring_prep_writev(struct vb_uring *r, int fd, int fixed, const struct iovec *iov,
                         unsigned nr_iov, uint64_t offset, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_writev(sqe, fd, iov, nr_iov, offset);
    vb_sqe_finish(sqe, fixed, user_data);
    return 0;
}

int vb_uring_prep_fsync(struct vb_uring *r, int fd, int fixed, int datasync, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_fsync(sqe, fd, datasync ? IORING_FSYNC_DATASYNC : 0);
    vb_sqe_finish(sqe, fixed, user_data);
    return 0;
}

int vb_uring_prep_fallocate(struct vb_uring *r, int fd, int fixed, int mode, uint64_t offset,
                            uint64_t length, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_fallocate(sqe, fd, mode, (off_t)offset, (off_t)length);
    vb_sqe_finish(sqe, fixed, user_data);
    return 0;
}

int vb_uring_submit(struct vb_uring *r) { return io_uring_submit(&r->ring); }

int vb_uring_submit_and_wait(struct vb_uring *r, unsigned wait_nr) {
    return io_uring_submit_and_wait(&r->ring, wait_nr);
}

unsigned vb_uring_sq_ready(struct vb_uring *r) { return io_uring_sq_ready(&r->ring); }

unsigned vb_uring_cq_ready(struct vb_uring *r) { return io_uring_cq_ready(&r->ring); }

unsigned vb_uring_reap(struct vb_uring *r, uint64_t *user_data, int32_t *res, unsigned max) {
    struct io_uring_cqe *cqe;
    unsigned head, n = 0;
    io_uring_for_each_cqe(&r->ring, head, cqe) {
        if (n == max) break;
        user_data[n] = io_uring_cqe_get_data64(cqe);
        res[n] = cqe->res;
        n++;
    }
    io_uring_cq_advance(&r->ring, n);
    return n;
}

int vb_uring_prep_read(struct vb_uring *r, int fd, void *buf, unsigned len, uint64_t offset,
                       uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_read(sqe, fd, buf, len, offset);
    vb_sqe_finish(sqe, 0, user_data);
    return 0;
}

int vb_uring_prep_cancel(struct vb_uring *r, uint64_t target, uint64_t user_data) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (sqe == NULL) return -EBUSY;
    io_uring_prep_cancel64(sqe, target, 0);
    vb_sqe_finish(sqe, 0, user_data);
    return 0;
}
