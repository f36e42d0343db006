/* Thin fd, fallocate and block-device ioctl shims; see CAsyncIO.h. */
#include "CAsyncIO.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/vfs.h>
#include <linux/falloc.h>
#include <linux/fs.h>

_Static_assert(VB_FALLOC_KEEP_SIZE == FALLOC_FL_KEEP_SIZE, "fallocate flag mismatch");
_Static_assert(VB_FALLOC_PUNCH_HOLE == FALLOC_FL_PUNCH_HOLE, "fallocate flag mismatch");
_Static_assert(VB_FALLOC_ZERO_RANGE == FALLOC_FL_ZERO_RANGE, "fallocate flag mismatch");

int vb_io_eventfd_create(void) {
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

int vb_io_eventfd_drain(int fd) {
    uint64_t value;
    for (;;) {
        ssize_t n = read(fd, &value, sizeof(value));
        if (n == (ssize_t)sizeof(value)) return 1;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        return n < 0 ? -errno : -EIO;
    }
}

int vb_io_eventfd_signal(int fd) {
    uint64_t one = 1;
    for (;;) {
        ssize_t n = write(fd, &one, sizeof(one));
        if (n == (ssize_t)sizeof(one)) return 0;
        if (n < 0 && errno == EINTR) continue;
        /* EAGAIN: the counter is at its maximum, so the fd is readable anyway. */
        if (n < 0 && errno == EAGAIN) return 0;
        return n < 0 ? -errno : -EIO;
    }
}

int vb_io_fallocate(int fd, int mode, uint64_t offset, uint64_t length) {
    return fallocate(fd, mode, (off_t)offset, (off_t)length) < 0 ? -errno : 0;
}

int vb_io_blk_getsize64(int fd, uint64_t *bytes) {
    return ioctl(fd, BLKGETSIZE64, bytes) < 0 ? -errno : 0;
}

int vb_io_blk_logical_block_size(int fd, uint32_t *bytes) {
    int size = 0;
    if (ioctl(fd, BLKSSZGET, &size) < 0) return -errno;
    *bytes = (uint32_t)size;
    return 0;
}

int vb_io_o_direct(void) { return O_DIRECT; }

long long vb_io_fs_type(int fd) {
    struct statfs st;
    int rc;
    do { rc = fstatfs(fd, &st); } while (rc < 0 && errno == EINTR);
    return rc < 0 ? -errno : (long long)(unsigned long)st.f_type;
}
