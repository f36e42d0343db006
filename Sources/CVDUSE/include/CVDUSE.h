/*
 * CVDUSE - the VDUSE user API for vduse-blk: our copy of the uapi structs and
 * one function per ioctl. No logic: each function is one ioctl, returning -errno on failure (never touching a
 * global errno the caller must race to read).
 */
#ifndef VB_CVDUSE_H
#define VB_CVDUSE_H

#include <stdint.h>
#include <stddef.h>
#include <sys/uio.h>
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

#endif
