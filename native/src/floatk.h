/* Private helpers shared by the float kernels (aggregate.c, robust.c,
 * quantize.c): scalar half/bfloat16 bit conversions, the SIMD dispatch level
 * and the internal (unchecked) converter.  Not part of the public API. */
#ifndef CN_FLOATK_H
#define CN_FLOATK_H

#include <string.h>

#include "internal.h"

/* Elements per stack chunk when a kernel converts through a scratch buffer. */
#define CN__CHUNK 1024

#if defined(__GNUC__)
#define CN_INLINE static inline __attribute__((always_inline))
#else
#define CN_INLINE static inline
#endif

/* SIMD level the float kernels dispatch on. */
enum { CN__LVL_PORTABLE = 0, CN__LVL_AVX2 = 1, CN__LVL_AVX512 = 2 };

static inline int cn__float_level(void) {
#if defined(CN_X86)
    unsigned f = cn__cpu_active();
    const unsigned avx2 = CN_CPU_AVX2 | CN_CPU_FMA | CN_CPU_F16C;
    const unsigned avx512 = avx2 | CN_CPU_AVX512F | CN_CPU_AVX512BW | CN_CPU_AVX512VL;
    if ((f & avx512) == avx512) return CN__LVL_AVX512;
    if ((f & avx2) == avx2) return CN__LVL_AVX2;
#endif
    return CN__LVL_PORTABLE;
}

static inline int cn__is_float(int dtype) {
    return dtype == CN_F16 || dtype == CN_BF16 || dtype == CN_F32 || dtype == CN_F64;
}

CN_INLINE uint32_t cn__fbits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
CN_INLINE float cn__bitsf(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* IEEE half -> float, exact (subnormals, inf and NaN payloads kept). */
CN_INLINE float cn__h2f(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
    if (exp == 0x1f) return cn__bitsf(sign | 0x7f800000u | (man << 13));
    if (exp == 0) {
        /* zero or subnormal: man * 2^-24, exact in float */
        float v = (float)man * 5.9604644775390625e-08f;
        return cn__bitsf(cn__fbits(v) | sign);
    }
    return cn__bitsf(sign | ((exp + 112u) << 23) | (man << 13));
}

/* float -> IEEE half, round to nearest even; overflow -> inf, NaN stays NaN. */
CN_INLINE uint16_t cn__f2h(float f) {
    uint32_t x = cn__fbits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((ax >> 13) & 0x3ffu));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* rounds to >= 65520: inf */
    if (ax < 0x38800000u) {
        /* result is subnormal or zero: round ax * 2^24 to an integer (RNE) */
        if (ax < 0x33000000u) return sign; /* below half the smallest subnormal */
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126u - e; /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1u);
        if (rem > half || (rem == half && (q & 1u))) q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = ax + 0xfffu + ((ax >> 13) & 1u); /* RNE on the 13 dropped bits */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

/* bfloat16 <-> float (bfloat16 is the top half of a float). */
CN_INLINE float cn__b2f(uint16_t b) { return cn__bitsf((uint32_t)b << 16); }
CN_INLINE uint16_t cn__f2b(float f) {
    uint32_t x = cn__fbits(f);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u); /* quiet NaN */
    return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

/* double -> float rounded to odd: a second rounding to a narrower format
 * (half, bfloat16) then equals a single correct rounding of the double. */
CN_INLINE float cn__d2f_odd(double d) {
    float f = (float)d;
    if ((double)f != d && d == d) {
        uint32_t b = cn__fbits(f);
        double af = f < 0 ? -(double)f : (double)f, ad = d < 0 ? -d : d;
        if (af > ad) b -= 1u; /* rounded away from zero: step back toward zero */
        f = cn__bitsf(b | 1u);
    }
    return f;
}

/* Unchecked conversion between the float dtypes (quantize.c); buffers must
 * not overlap unless src == dst with equal dtypes. */
void cn__convert(const void *src, int sd, void *dst, int dd, size_t n);

#endif
