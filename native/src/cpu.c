/* CPU feature detection for runtime dispatch (cpuid + xgetbv on x86,
 * getauxval on aarch64).  Detected once; a mask lets tests force the
 * portable paths. */
#include "internal.h"

#if defined(CN_X86)
#include <cpuid.h>

static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}

static unsigned detect(void) {
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    if (c & (1u << 20)) f |= CN_CPU_SSE42;
    if (c & (1u << 1)) f |= CN_CPU_PCLMUL;
    int osxsave = (c & (1u << 27)) != 0;
    unsigned long long xcr0 = osxsave ? xgetbv0() : 0;
    int ymm = (xcr0 & 0x6) == 0x6;
    int zmm = ymm && (xcr0 & 0xe0) == 0xe0;
    if (ymm) {
        if (c & (1u << 12)) f |= CN_CPU_FMA;
        if (c & (1u << 29)) f |= CN_CPU_F16C;
    }
    if (__get_cpuid_max(0, 0) >= 7) {
        __cpuid_count(7, 0, a, b, c, d);
        if (ymm && (b & (1u << 5))) f |= CN_CPU_AVX2;
        if (zmm && (b & (1u << 16))) f |= CN_CPU_AVX512F;
        if (zmm && (b & (1u << 30))) f |= CN_CPU_AVX512BW;
        if (zmm && (b & (1u << 31))) f |= CN_CPU_AVX512VL;
        if (ymm && (c & (1u << 10))) f |= CN_CPU_VPCLMUL;
    }
    return f;
}
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif
static unsigned detect(void) {
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) ? CN_CPU_ARM_CRC : 0;
}
#else
static unsigned detect(void) { return 0; }
#endif

/* Bit 31 of g_detected marks "detected"; written once, idempotently. */
static unsigned g_detected;
static unsigned g_mask = ~0u;

unsigned cn_cpu_features(void) {
    unsigned v = __atomic_load_n(&g_detected, __ATOMIC_ACQUIRE);
    if (CN_UNLIKELY(!(v & 0x80000000u))) {
        v = detect() | 0x80000000u;
        __atomic_store_n(&g_detected, v, __ATOMIC_RELEASE);
    }
    return v & 0x7fffffffu;
}

unsigned cn_cpu_set_mask(unsigned mask) {
    return __atomic_exchange_n(&g_mask, mask, __ATOMIC_ACQ_REL);
}

unsigned cn__cpu_active(void) {
    return cn_cpu_features() & __atomic_load_n(&g_mask, __ATOMIC_ACQUIRE);
}
