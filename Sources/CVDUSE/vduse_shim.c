#include "CVDUSE.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/ioctl.h>

/* Layout checks against the kernel ABI (x86_64 and aarch64 share it). */
_Static_assert(sizeof(struct vb_vduse_dev_config) == 336, "vduse_dev_config");
_Static_assert(offsetof(struct vb_vduse_dev_config, features) == 264, "vduse_dev_config.features");
_Static_assert(offsetof(struct vb_vduse_dev_config, config_size) == 332, "vduse_dev_config.config_size");
_Static_assert(sizeof(struct vb_vduse_iotlb_entry) == 32, "vduse_iotlb_entry");
_Static_assert(offsetof(struct vb_vduse_iotlb_entry, perm) == 24, "vduse_iotlb_entry.perm");
_Static_assert(sizeof(struct vb_vduse_config_data) == 8, "vduse_config_data");
_Static_assert(sizeof(struct vb_vduse_vq_config) == 32, "vduse_vq_config");
_Static_assert(sizeof(struct vb_vduse_vq_info) == 48, "vduse_vq_info");
_Static_assert(offsetof(struct vb_vduse_vq_info, split) == 32, "vduse_vq_info.split");
_Static_assert(offsetof(struct vb_vduse_vq_info, ready) == 40, "vduse_vq_info.ready");
_Static_assert(sizeof(struct vb_vduse_vq_eventfd) == 8, "vduse_vq_eventfd");
_Static_assert(sizeof(struct vb_vduse_iova_umem) == 48, "vduse_iova_umem");
_Static_assert(sizeof(struct vb_vduse_iova_info) == 48, "vduse_iova_info");
_Static_assert(sizeof(struct vb_vduse_vq_state) == 12, "vduse_vq_state");
_Static_assert(sizeof(struct vb_vduse_dev_request) == 152, "vduse_dev_request");
_Static_assert(offsetof(struct vb_vduse_dev_request, iova) == 24, "vduse_dev_request.iova");
_Static_assert(sizeof(struct vb_vduse_dev_response) == 152, "vduse_dev_response");
_Static_assert(offsetof(struct vb_vduse_dev_response, vq_state) == 24, "vduse_dev_response.vq_state");
_Static_assert(VB_VDUSE_CREATE_DEV == 0x41508102u, "CREATE_DEV number");
_Static_assert(VB_VDUSE_VQ_GET_INFO == 0xc0308115u, "VQ_GET_INFO number");

static int rc(int r) { return r < 0 ? -errno : r; }

int vb_vduse_get_api_version(int fd, uint64_t *v) { return rc(ioctl(fd, VB_VDUSE_GET_API_VERSION, v)); }
int vb_vduse_set_api_version(int fd, uint64_t v) { return rc(ioctl(fd, VB_VDUSE_SET_API_VERSION, &v)); }

int vb_vduse_create_dev(int fd, const char *name, uint32_t vendor_id, uint32_t device_id,
                        uint64_t features, uint32_t vq_num, uint32_t vq_align,
                        const uint8_t *config, uint32_t config_size) {
    size_t n = strlen(name);
    if (n == 0 || n >= VB_VDUSE_NAME_MAX) return -EINVAL;
    struct vb_vduse_dev_config *c = calloc(1, sizeof(*c) + config_size);
    if (!c) return -ENOMEM;
    memcpy(c->name, name, n);
    c->vendor_id = vendor_id;
    c->device_id = device_id;
    c->features = features;
    c->vq_num = vq_num;
    c->vq_align = vq_align;
    c->config_size = config_size;
    if (config_size) memcpy(c->config, config, config_size);
    int r = rc(ioctl(fd, VB_VDUSE_CREATE_DEV, c));
    free(c);
    return r;
}

int vb_vduse_destroy_dev(int fd, const char *name) {
    char buf[VB_VDUSE_NAME_MAX] = {0};
    size_t n = strlen(name);
    if (n == 0 || n >= VB_VDUSE_NAME_MAX) return -EINVAL;
    memcpy(buf, name, n);
    return rc(ioctl(fd, VB_VDUSE_DESTROY_DEV, buf));
}

int vb_vduse_vq_setup(int fd, uint32_t index, uint16_t max_size) {
    struct vb_vduse_vq_config c = {0};
    c.index = index;
    c.max_size = max_size;
    return rc(ioctl(fd, VB_VDUSE_VQ_SETUP, &c));
}
int vb_vduse_vq_get_info(int fd, struct vb_vduse_vq_info *info) { return rc(ioctl(fd, VB_VDUSE_VQ_GET_INFO, info)); }
int vb_vduse_vq_setup_kickfd(int fd, uint32_t index, int efd) {
    struct vb_vduse_vq_eventfd e = { .index = index, .fd = efd };
    return rc(ioctl(fd, VB_VDUSE_VQ_SETUP_KICKFD, &e));
}
int vb_vduse_vq_inject_irq(int fd, uint32_t index) { return rc(ioctl(fd, VB_VDUSE_VQ_INJECT_IRQ, &index)); }
int vb_vduse_dev_get_features(int fd, uint64_t *f) { return rc(ioctl(fd, VB_VDUSE_DEV_GET_FEATURES, f)); }
int vb_vduse_dev_set_config(int fd, uint32_t offset, const uint8_t *buf, uint32_t length) {
    struct vb_vduse_config_data *d = calloc(1, sizeof(*d) + length);
    if (!d) return -ENOMEM;
    d->offset = offset;
    d->length = length;
    memcpy(d->buffer, buf, length);
    int r = rc(ioctl(fd, VB_VDUSE_DEV_SET_CONFIG, d));
    free(d);
    return r;
}
int vb_vduse_dev_inject_config_irq(int fd) { return rc(ioctl(fd, VB_VDUSE_DEV_INJECT_CONFIG_IRQ)); }
int vb_vduse_iotlb_get_fd(int fd, struct vb_vduse_iotlb_entry *e) { return rc(ioctl(fd, VB_VDUSE_IOTLB_GET_FD, e)); }
int vb_vduse_iotlb_get_info(int fd, struct vb_vduse_iova_info *i) { return rc(ioctl(fd, VB_VDUSE_IOTLB_GET_INFO, i)); }
int vb_vduse_iotlb_reg_umem(int fd, uint64_t uaddr, uint64_t iova, uint64_t size) {
    struct vb_vduse_iova_umem u = { .uaddr = uaddr, .iova = iova, .size = size };
    return rc(ioctl(fd, VB_VDUSE_IOTLB_REG_UMEM, &u));
}
int vb_vduse_iotlb_dereg_umem(int fd, uint64_t iova, uint64_t size) {
    struct vb_vduse_iova_umem u = { .iova = iova, .size = size };
    return rc(ioctl(fd, VB_VDUSE_IOTLB_DEREG_UMEM, &u));
}

size_t vb_vduse_request_size(void) { return sizeof(struct vb_vduse_dev_request); }
size_t vb_vduse_response_size(void) { return sizeof(struct vb_vduse_dev_response); }

