#ifndef VB_CZSTD_SHIM_H
#define VB_CZSTD_SHIM_H
#include <zstd.h>
#include <zstd_errors.h>
#endif
