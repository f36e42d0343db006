/* statx(STATX_DIOALIGN) through the raw syscall, so the kernel's struct statx
 * (with the dio fields) is used whatever the C library's copy lacks. Kept in
 * its own file: <linux/stat.h> and <sys/stat.h> do not mix. */
#include "CSys.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/syscall.h>
#include <linux/stat.h>

#ifndef STATX_DIOALIGN
#define STATX_DIOALIGN 0x00002000U
#endif

int vb_io_statx_dio_align(int fd, uint32_t *mem_align, uint32_t *offset_align) {
    struct statx stx;
    memset(&stx, 0, sizeof(stx));
    if (syscall(SYS_statx, fd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) < 0) return -errno;
    if (stx.stx_mask & STATX_DIOALIGN) {
        *mem_align = stx.stx_dio_mem_align;
        *offset_align = stx.stx_dio_offset_align;
    } else {
        *mem_align = 0;
        *offset_align = 0;
    }
    return 0;
}

int vb_statx_birth(const char *path, int64_t *sec, uint32_t *nsec) {
    struct statx stx;
    memset(&stx, 0, sizeof(stx));
    if (syscall(SYS_statx, AT_FDCWD, path, 0, STATX_BTIME, &stx) < 0) return -errno;
    if (stx.stx_mask & STATX_BTIME) {
        *sec = stx.stx_btime.tv_sec;
        *nsec = stx.stx_btime.tv_nsec;
    } else {
        *sec = 0;
        *nsec = 0;
    }
    return 0;
}
