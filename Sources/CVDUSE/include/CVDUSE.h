/*
 * CVDUSE - thin C shims for vduse-blk. No logic: each function is one ioctl,
 * one syscall or one barrier, returning -errno on failure (never touching a
 * global errno the caller must race to read).
 */
#ifndef VB_CVDUSE_H
#define VB_CVDUSE_H

#include <stdint.h>
#include <stddef.h>
#include <sys/uio.h>
#include <dirent.h>
#include "vduse_uapi.h"

/* ---- ioctls on /dev/vduse/control ------------------------------------- */
int vb_vduse_get_api_version(int ctrl_fd, uint64_t *version);
int vb_vduse_set_api_version(int ctrl_fd, uint64_t version);
/* Builds struct vb_vduse_dev_config with its trailing config space and issues CREATE_DEV. */
int vb_vduse_create_dev(int ctrl_fd, const char *name, uint32_t vendor_id, uint32_t device_id,
                        uint64_t features, uint32_t vq_num, uint32_t vq_align,
                        const uint8_t *config, uint32_t config_size);
int vb_vduse_destroy_dev(int ctrl_fd, const char *name);

/* ---- ioctls on /dev/vduse/NAME ---------------------------------------- */
int vb_vduse_vq_setup(int dev_fd, uint32_t index, uint16_t max_size);
int vb_vduse_vq_get_info(int dev_fd, struct vb_vduse_vq_info *info);
int vb_vduse_vq_setup_kickfd(int dev_fd, uint32_t index, int fd);
int vb_vduse_vq_inject_irq(int dev_fd, uint32_t index);
int vb_vduse_dev_get_features(int dev_fd, uint64_t *features);
int vb_vduse_dev_set_config(int dev_fd, uint32_t offset, const uint8_t *buf, uint32_t length);
int vb_vduse_dev_inject_config_irq(int dev_fd);
/* Returns a new fd (>= 0) for the region overlapping [entry->start, entry->last]; entry is filled. */
int vb_vduse_iotlb_get_fd(int dev_fd, struct vb_vduse_iotlb_entry *entry);
int vb_vduse_iotlb_get_info(int dev_fd, struct vb_vduse_iova_info *info);
int vb_vduse_iotlb_reg_umem(int dev_fd, uint64_t uaddr, uint64_t iova, uint64_t size);
int vb_vduse_iotlb_dereg_umem(int dev_fd, uint64_t iova, uint64_t size);

/* Sizes of the message structs, for read(2)/write(2). */
size_t vb_vduse_request_size(void);
size_t vb_vduse_response_size(void);

/* ---- plain syscalls (-errno on failure) -------------------------------- */
int vb_eventfd(unsigned int initval, int nonblock);
/* Returns MAP_FAILED-free result: address, or NULL with *err = errno. */
void *vb_mmap_shared(int fd, uint64_t offset, size_t length, int writable, int *err);
int vb_munmap(void *addr, size_t length);
/* poll(2) on up to n fds for POLLIN; returns the count ready or -errno. revents out. */
int vb_poll_in(const int *fds, short *revents, int n, int timeout_ms);
int vb_errno(void);

/* ---- ordering on shared ring memory ----------------------------------- */
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
static inline void vb_fence_seq_cst(void) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
static inline void vb_fence_acquire(void) { __atomic_thread_fence(__ATOMIC_ACQUIRE); }
static inline void vb_fence_release(void) { __atomic_thread_fence(__ATOMIC_RELEASE); }

/* The name of a readdir() record, in place: a record can be shorter than
 * struct dirent, so copying the struct (as Swift's `pointee` does) reads past it. */
static inline const char *vb_dirent_name(const struct dirent *e) { return e->d_name; }

#endif
