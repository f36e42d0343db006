/*
 * vduse_uapi.h - this project's own statement of the VDUSE user API
 * (Linux include/uapi/linux/vduse.h, API version 0), so that the build does
 * not depend on the host's kernel headers being new enough. Every struct is
 * checked for size and field offsets in vduse_shim.c.
 */
#ifndef VB_VDUSE_UAPI_H
#define VB_VDUSE_UAPI_H

#include <stdint.h>
#include <linux/ioctl.h>

#define VB_VDUSE_BASE 0x81
#define VB_VDUSE_NAME_MAX 256
#define VB_VDUSE_API_VERSION 0

/* Argument of CREATE_DEV: fixed part followed by config_size bytes of config space. */
struct vb_vduse_dev_config {
    char name[VB_VDUSE_NAME_MAX];
    uint32_t vendor_id;
    uint32_t device_id;
    uint64_t features;
    uint32_t vq_num;
    uint32_t vq_align;
    uint32_t reserved[13];   /* ngroups, nas (API v1) and reserved: zero */
    uint32_t config_size;
    uint8_t config[];
};

/* One IOTLB region [start, last] reachable by mmap(fd, offset). */
struct vb_vduse_iotlb_entry {
    uint64_t offset;
    uint64_t start;
    uint64_t last;
    uint8_t perm;
};
#define VB_VDUSE_ACCESS_RO 0x1
#define VB_VDUSE_ACCESS_WO 0x2
#define VB_VDUSE_ACCESS_RW 0x3

struct vb_vduse_config_data {
    uint32_t offset;
    uint32_t length;
    uint8_t buffer[];
};

struct vb_vduse_vq_config {
    uint32_t index;
    uint16_t max_size;
    uint16_t reserved[13];
};

struct vb_vduse_vq_state_split { uint16_t avail_index; };
struct vb_vduse_vq_state_packed {
    uint16_t last_avail_counter;
    uint16_t last_avail_idx;
    uint16_t last_used_counter;
    uint16_t last_used_idx;
};

struct vb_vduse_vq_info {
    uint32_t index;
    uint32_t num;
    uint64_t desc_addr;
    uint64_t driver_addr;
    uint64_t device_addr;
    union {
        struct vb_vduse_vq_state_split split;
        struct vb_vduse_vq_state_packed packed;
    };
    uint8_t ready;
};

struct vb_vduse_vq_eventfd {
    uint32_t index;
    int32_t fd;
};
#define VB_VDUSE_EVENTFD_DEASSIGN (-1)

struct vb_vduse_iova_umem {
    uint64_t uaddr;
    uint64_t iova;
    uint64_t size;
    uint64_t reserved[3];
};

struct vb_vduse_iova_info {
    uint64_t start;
    uint64_t last;
    uint64_t capability;
    uint64_t reserved[3];
};
#define VB_VDUSE_IOVA_CAP_UMEM (1ULL << 0)

/* Control messages read(2)/write(2) on /dev/vduse/NAME. */
enum vb_vduse_req_type {
    VB_VDUSE_GET_VQ_STATE = 0,
    VB_VDUSE_SET_STATUS = 1,
    VB_VDUSE_UPDATE_IOTLB = 2,
};

struct vb_vduse_vq_state {
    uint32_t index;
    union {
        struct vb_vduse_vq_state_split split;
        struct vb_vduse_vq_state_packed packed;
    };
};

struct vb_vduse_dev_status { uint8_t status; };

struct vb_vduse_iova_range {
    uint64_t start;
    uint64_t last;
};

struct vb_vduse_dev_request {
    uint32_t type;
    uint32_t request_id;
    uint32_t reserved[4];
    union {
        struct vb_vduse_vq_state vq_state;
        struct vb_vduse_dev_status s;
        struct vb_vduse_iova_range iova;
        uint32_t padding[32];
    };
};

#define VB_VDUSE_REQ_RESULT_OK 0x00
#define VB_VDUSE_REQ_RESULT_FAILED 0x01

struct vb_vduse_dev_response {
    uint32_t request_id;
    uint32_t result;
    uint32_t reserved[4];
    union {
        struct vb_vduse_vq_state vq_state;
        uint32_t padding[32];
    };
};

/* ioctl numbers */
#define VB_VDUSE_GET_API_VERSION _IOR(VB_VDUSE_BASE, 0x00, uint64_t)
#define VB_VDUSE_SET_API_VERSION _IOW(VB_VDUSE_BASE, 0x01, uint64_t)
#define VB_VDUSE_CREATE_DEV _IOW(VB_VDUSE_BASE, 0x02, struct vb_vduse_dev_config)
#define VB_VDUSE_DESTROY_DEV _IOW(VB_VDUSE_BASE, 0x03, char[VB_VDUSE_NAME_MAX])
#define VB_VDUSE_IOTLB_GET_FD _IOWR(VB_VDUSE_BASE, 0x10, struct vb_vduse_iotlb_entry)
#define VB_VDUSE_DEV_GET_FEATURES _IOR(VB_VDUSE_BASE, 0x11, uint64_t)
#define VB_VDUSE_DEV_SET_CONFIG _IOW(VB_VDUSE_BASE, 0x12, struct vb_vduse_config_data)
#define VB_VDUSE_DEV_INJECT_CONFIG_IRQ _IO(VB_VDUSE_BASE, 0x13)
#define VB_VDUSE_VQ_SETUP _IOW(VB_VDUSE_BASE, 0x14, struct vb_vduse_vq_config)
#define VB_VDUSE_VQ_GET_INFO _IOWR(VB_VDUSE_BASE, 0x15, struct vb_vduse_vq_info)
#define VB_VDUSE_VQ_SETUP_KICKFD _IOW(VB_VDUSE_BASE, 0x16, struct vb_vduse_vq_eventfd)
#define VB_VDUSE_VQ_INJECT_IRQ _IOW(VB_VDUSE_BASE, 0x17, uint32_t)
#define VB_VDUSE_IOTLB_REG_UMEM _IOW(VB_VDUSE_BASE, 0x18, struct vb_vduse_iova_umem)
#define VB_VDUSE_IOTLB_DEREG_UMEM _IOW(VB_VDUSE_BASE, 0x19, struct vb_vduse_iova_umem)
#define VB_VDUSE_IOTLB_GET_INFO _IOWR(VB_VDUSE_BASE, 0x1a, struct vb_vduse_iova_info)

/* virtio device status bits */
#define VB_VIRTIO_STATUS_ACKNOWLEDGE 1
#define VB_VIRTIO_STATUS_DRIVER 2
#define VB_VIRTIO_STATUS_DRIVER_OK 4
#define VB_VIRTIO_STATUS_FEATURES_OK 8
#define VB_VIRTIO_STATUS_NEEDS_RESET 64
#define VB_VIRTIO_STATUS_FAILED 128

#endif
