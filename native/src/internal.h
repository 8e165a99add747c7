/* Shared internals of the native core: not part of the public API. */
#ifndef CN_INTERNAL_H
#define CN_INTERNAL_H

#include "cellnet_native.h"

/* CPU features the kernels may use now (detected & the test mask). */
unsigned cn__cpu_active(void);

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
