/* Thin eventfd, mmap, poll, fallocate, block-device ioctl and thread-name
 * shims; see CSys.h. _GNU_SOURCE is defined for this target only. */
#include "CSys.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/vfs.h>
#include <linux/falloc.h>
#include <linux/fs.h>

_Static_assert(VB_FALLOC_KEEP_SIZE == FALLOC_FL_KEEP_SIZE, "fallocate flag mismatch");
_Static_assert(VB_FALLOC_PUNCH_HOLE == FALLOC_FL_PUNCH_HOLE, "fallocate flag mismatch");
_Static_assert(VB_FALLOC_ZERO_RANGE == FALLOC_FL_ZERO_RANGE, "fallocate flag mismatch");

static int rc(int r) { return r < 0 ? -errno : r; }

int vb_eventfd(unsigned int initval, int nonblock) {
    return rc(eventfd(initval, EFD_CLOEXEC | (nonblock ? EFD_NONBLOCK : 0)));
}

int vb_eventfd_drain(int fd) {
    uint64_t value;
    for (;;) {
        ssize_t n = read(fd, &value, sizeof(value));
        if (n == (ssize_t)sizeof(value)) return 1;
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && errno == EAGAIN) return 0;
        return n < 0 ? -errno : -EIO;
    }
}

int vb_eventfd_signal(int fd) {
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

void *vb_mmap_shared(int fd, uint64_t offset, size_t length, int writable, int *err) {
    void *p = mmap(NULL, length, PROT_READ | (writable ? PROT_WRITE : 0), MAP_SHARED, fd, (off_t)offset);
    if (p == MAP_FAILED) { *err = errno; return NULL; }
    *err = 0;
    return p;
}

int vb_munmap(void *addr, size_t length) { return rc(munmap(addr, length)); }

int vb_poll_in(const int *fds, short *revents, int n, int timeout_ms) {
    struct pollfd p[8];
    if (n > 8 || n < 0) return -EINVAL;
    for (int i = 0; i < n; i++) { p[i].fd = fds[i]; p[i].events = POLLIN; p[i].revents = 0; }
    int r = poll(p, (nfds_t)n, timeout_ms);
    if (r < 0) return -errno;
    for (int i = 0; i < n; i++) revents[i] = p[i].revents;
    return r;
}

int vb_errno(void) { return errno; }

int vb_io_fallocate(int fd, int mode, uint64_t offset, uint64_t length) {
    return fallocate(fd, mode, (off_t)offset, (off_t)length) < 0 ? -errno : 0;
}

int vb_io_o_direct(void) { return O_DIRECT; }
int vb_io_o_directory(void) { return O_DIRECTORY; }

long long vb_io_fs_type(int fd) {
    struct statfs st;
    int r;
    do { r = fstatfs(fd, &st); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : (long long)(unsigned long)st.f_type;
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

int vb_ofd_lock(int fd, int exclusive) {
    struct flock l;
    memset(&l, 0, sizeof(l));
    l.l_type = exclusive ? F_WRLCK : F_RDLCK;
    l.l_whence = SEEK_SET;
    l.l_start = 0;
    l.l_len = 0;
    int r;
    do { r = fcntl(fd, F_OFD_SETLK, &l); } while (r < 0 && errno == EINTR);
    return r < 0 ? -errno : 0;
}

int vb_io_o_nonblock(void) { return O_NONBLOCK; }

void vb_set_thread_name(const char *name) {
    char cut[16];
    strncpy(cut, name, sizeof(cut) - 1);
    cut[sizeof(cut) - 1] = 0;
    pthread_setname_np(pthread_self(), cut);
}

int vb_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC) < 0 ? -errno : 0;
}

extern char **environ;

int vb_spawn_with_output(int *pid, const char *path, char *const argv[], int out_fd) {
    posix_spawn_file_actions_t actions;
    posix_spawnattr_t attributes;
    sigset_t empty, all;
    pid_t child = 0;
    int rc;
    if ((rc = posix_spawn_file_actions_init(&actions)) != 0) return -rc;
    if ((rc = posix_spawnattr_init(&attributes)) != 0) {
        posix_spawn_file_actions_destroy(&actions);
        return -rc;
    }
    sigemptyset(&empty);
    sigfillset(&all);
    rc = posix_spawn_file_actions_adddup2(&actions, out_fd, 1);
    if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, out_fd, 2);
    if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(&actions, 3);
    if (rc == 0) rc = posix_spawnattr_setsigmask(&attributes, &empty);
    if (rc == 0) rc = posix_spawnattr_setsigdefault(&attributes, &all);
    if (rc == 0) rc = posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    if (rc == 0) rc = posix_spawn(&child, path, &actions, &attributes, argv, environ);
    posix_spawn_file_actions_destroy(&actions);
    posix_spawnattr_destroy(&attributes);
    if (rc != 0) return -rc;
    *pid = child;
    return 0;
}
