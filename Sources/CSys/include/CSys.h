/*
 * CSys - thin C shims over the Linux system calls vduse-blk's Swift code
 * needs beyond what SwiftGlibc exports without _GNU_SOURCE: eventfds, poll,
 * shared mmap, fallocate, O_DIRECT, statx, block-device ioctls, OFD locks,
 * thread names, and the memory barriers of shared rings. No logic: each
 * function is one call, returning -errno on failure (never leaving a global
 * errno for the caller to race to read). _GNU_SOURCE stays inside the .c
 * files, so no Swift target needs it.
 */
#ifndef VB_CSYS_H
#define VB_CSYS_H

#include <stdint.h>
#include <stddef.h>
#include <dirent.h>

/* ---- eventfds ------------------------------------------------------------ */
/* eventfd(initval, EFD_CLOEXEC | (nonblock ? EFD_NONBLOCK : 0)): fd, or -errno. */
int vb_eventfd(unsigned int initval, int nonblock);
/* Nonblocking read of the counter: 1 if it was readable, 0 if not, or -errno. */
int vb_eventfd_drain(int fd);
/* Adds 1 to the counter: 0 (also when it is saturated, it is readable then), or -errno. */
int vb_eventfd_signal(int fd);

/* ---- memory and polling -------------------------------------------------- */
/* mmap(MAP_SHARED): the address, or NULL with *err = errno. */
void *vb_mmap_shared(int fd, uint64_t offset, size_t length, int writable, int *err);
int vb_munmap(void *addr, size_t length);
/* poll(2) on up to 8 fds for POLLIN; returns the count ready or -errno; revents out. */
int vb_poll_in(const int *fds, short *revents, int n, int timeout_ms);
int vb_errno(void);

/* ---- files --------------------------------------------------------------- */
/* fallocate(2) modes, identical to <linux/falloc.h> (checked in the .c). */
enum {
    VB_FALLOC_KEEP_SIZE = 0x01,
    VB_FALLOC_PUNCH_HOLE = 0x02,
    VB_FALLOC_ZERO_RANGE = 0x10,
};
/* fallocate(2): 0, or -errno. */
int vb_io_fallocate(int fd, int mode, uint64_t offset, uint64_t length);
/* O_DIRECT and O_DIRECTORY, for open(2). */
int vb_io_o_direct(void);
int vb_io_o_directory(void);
/* The file system type (statfs f_type, e.g. TMPFS_MAGIC) of fd's file, or -errno. */
long long vb_io_fs_type(int fd);
/* ioctl(BLKGETSIZE64): 0, or -errno. */
int vb_io_blk_getsize64(int fd, uint64_t *bytes);
/* ioctl(BLKSSZGET), the logical block size: 0, or -errno. */
int vb_io_blk_logical_block_size(int fd, uint32_t *bytes);
/* statx(STATX_DIOALIGN): 0 with the alignments (0 when the file system does not
 * report them), or -errno. */
int vb_io_statx_dio_align(int fd, uint32_t *mem_align, uint32_t *offset_align);
/* statx(STATX_BTIME) of PATH (following links): 0 with the birth time (0, 0 when
 * the file system keeps none), or -errno. Tells a file from a later one that
 * reused its inode number. */
int vb_statx_birth(const char *path, int64_t *sec, uint32_t *nsec);

/* An open-file-description lock on the whole file (F_OFD_SETLK, never
 * waits): exclusive (write) or shared (read). Held until the description's
 * last fd closes. 0, or -errno (-EAGAIN/-EACCES: another holder conflicts). */
int vb_ofd_lock(int fd, int exclusive);
/* O_NONBLOCK and O_EXCL, for open(2). */
int vb_io_o_nonblock(void);

/* ---- threads ------------------------------------------------------------- */
/* pthread_setname_np on the calling thread (the name is cut to 15 bytes). */
void vb_set_thread_name(const char *name);

/* ---- child processes ----------------------------------------------------- */
/* pipe2(O_CLOEXEC). 0, or -errno. */
int vb_pipe_cloexec(int fds[2]);
/* posix_spawn of `path` with `argv` (NULL-terminated) and the caller's
 * environment: stdout and stderr go to `out_fd`, every descriptor from 3 up
 * is closed, signal mask empty and dispositions default. 0 and *pid, or
 * -errno. */
int vb_spawn_with_output(int *pid, const char *path, char *const argv[], int out_fd);

/* ---- directories --------------------------------------------------------- */
/* The name of a readdir() record, in place: a record can be shorter than
 * struct dirent, so copying the struct (as Swift's `pointee` does) reads past it. */
static inline const char *vb_dirent_name(const struct dirent *e) { return e->d_name; }

/* ---- ordering on shared ring memory -------------------------------------- */
static inline uint16_t vb_load_acquire_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_ACQUIRE);
}
static inline void vb_store_release_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELEASE);
}
static inline uint16_t vb_load_relaxed_u16(const void *p) {
    return __atomic_load_n((const uint16_t *)p, __ATOMIC_RELAXED);
}
static inline void vb_store_relaxed_u16(void *p, uint16_t v) {
    __atomic_store_n((uint16_t *)p, v, __ATOMIC_RELAXED);
}
static inline uint64_t vb_load_acquire_u64(const void *p) {
    return __atomic_load_n((const uint64_t *)p, __ATOMIC_ACQUIRE);
}
static inline void vb_store_release_u64(void *p, uint64_t v) {
    __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELEASE);
}
static inline void vb_store_relaxed_u64(void *p, uint64_t v) {
    __atomic_store_n((uint64_t *)p, v, __ATOMIC_RELAXED);
}
static inline void vb_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void vb_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void vb_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }

#endif
