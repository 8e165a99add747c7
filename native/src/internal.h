/* Shared internals of the native core: not part of the public API. */
#ifndef CN_INTERNAL_H
#define CN_INTERNAL_H

#include "cellnet_native.h"

/* CPU features the kernels may use now (detected & the test mask). */
unsigned cn__cpu_active(void);

/* Copies at least this long use non-temporal stores (bigger than L2). */
#define CN_NT_THRESHOLD ((size_t)4 << 20)

/* cn_copy_crc32c with an explicit choice of non-temporal stores (the pack
 * writer streams every tensor of a large pack, whatever each one's size). */
int cn__copy_crc32c(void *dst, const void *src, size_t n, uint32_t *crc, int stream);

#if defined(__GNUC__)
#define CN_LIKELY(x) __builtin_expect(!!(x), 1)
#define CN_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define CN_LIKELY(x) (x)
#define CN_UNLIKELY(x) (x)
#endif

#if defined(__x86_64__) || defined(__i386__)
#define CN_X86 1
#endif

#endif
