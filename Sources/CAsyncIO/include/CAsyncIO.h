/*
 * CAsyncIO - thin C shims over liburing and libaio for vduse-blk's block
 * backends (eventfds, fallocate and block-device ioctls are in CSys).
 * No logic: each function is one library call or syscall,
 * returning -errno on failure.
 *
 * <liburing.h> and <libaio.h> are deliberately NOT included here (their
 * headers clash with SwiftGlibc's module); the rings live behind opaque
 * pointers allocated in C.
 */
#ifndef VB_CASYNCIO_H
#define VB_CASYNCIO_H

#include <stdint.h>
#include <stddef.h>
#include <sys/uio.h>

/* io_uring_setup flags we may ask for (identical to the uapi values). */
enum {
    VB_URING_SETUP_SUBMIT_ALL = 1u << 7,
};

/* ---- io_uring ----------------------------------------------------------- */
struct vb_uring;

/* io_uring_queue_init(entries, flags). NULL with *err = -errno on failure. */
struct vb_uring *vb_uring_create(unsigned entries, unsigned flags, int *err);
/* io_uring_queue_exit + free. */
void vb_uring_destroy(struct vb_uring *r);
int vb_uring_register_eventfd(struct vb_uring *r, int efd);
/* io_uring_register_files(&fd, 1): afterwards, index 0 with fixed = 1 names fd. */
int vb_uring_register_file(struct vb_uring *r, int fd);

/* Each prep returns 0, or -EBUSY when the SQ is full. fixed != 0 sets
 * IOSQE_FIXED_FILE (fd is then an index into the registered files). */
int vb_uring_prep_readv(struct vb_uring *r, int fd, int fixed, const struct iovec *iov,
                        unsigned nr_iov, uint64_t offset, uint64_t user_data);
int vb_uring_prep_writev(struct vb_uring *r, int fd, int fixed, const struct iovec *iov,
                         unsigned nr_iov, uint64_t offset, uint64_t user_data);
/* datasync != 0: IORING_FSYNC_DATASYNC. */
int vb_uring_prep_fsync(struct vb_uring *r, int fd, int fixed, int datasync, uint64_t user_data);
int vb_uring_prep_fallocate(struct vb_uring *r, int fd, int fixed, int mode, uint64_t offset,
                            uint64_t length, uint64_t user_data);

/* A plain read(2) of len bytes into buf (used to wait on eventfds in the ring). */
int vb_uring_prep_read(struct vb_uring *r, int fd, void *buf, unsigned len, uint64_t offset,
                       uint64_t user_data);
/* Cancels the request whose user_data is target. */
int vb_uring_prep_cancel(struct vb_uring *r, uint64_t target, uint64_t user_data);

/* io_uring_submit: number of SQEs submitted, or -errno. */
int vb_uring_submit(struct vb_uring *r);
/* io_uring_submit_and_wait(wait_nr). */
int vb_uring_submit_and_wait(struct vb_uring *r, unsigned wait_nr);
/* SQEs prepared but not yet consumed by the kernel. */
unsigned vb_uring_sq_ready(struct vb_uring *r);
/* CQEs waiting in the completion ring. */
unsigned vb_uring_cq_ready(struct vb_uring *r);
/* Copies up to max CQEs' (user_data, res) out and advances the CQ; returns the count. */
unsigned vb_uring_reap(struct vb_uring *r, uint64_t *user_data, int32_t *res, unsigned max);

/* ---- Linux AIO (libaio) ------------------------------------------------- */
struct vb_aio;

/* io_setup(max_events) plus `slots` iocbs and a pointer array for io_submit.
 * NULL with *err = -errno on failure. */
struct vb_aio *vb_aio_create(unsigned max_events, unsigned slots, int *err);
/* io_destroy (waits for outstanding iocbs) + free. */
void vb_aio_destroy(struct vb_aio *a);
/* Prepare iocb[slot]; data is returned in the event. eventfd < 0: none. */
void vb_aio_prep_preadv(struct vb_aio *a, unsigned slot, int fd, const struct iovec *iov,
                        int nr_iov, uint64_t offset, int eventfd, uint64_t data);
void vb_aio_prep_pwritev(struct vb_aio *a, unsigned slot, int fd, const struct iovec *iov,
                         int nr_iov, uint64_t offset, int eventfd, uint64_t data);
void vb_aio_prep_fdsync(struct vb_aio *a, unsigned slot, int fd, int eventfd, uint64_t data);
/* io_submit of iocb[slots[0..n)]: number accepted, or -errno for slots[0]. */
int vb_aio_submit(struct vb_aio *a, const uint32_t *slots, unsigned n);
/* io_getevents(0, max, zero timeout): count, or -errno; (data, res) out. */
int vb_aio_getevents(struct vb_aio *a, uint64_t *data, int64_t *res, unsigned max);

#endif
