/* Float format conversion (f16/bf16/f32/f64, round to nearest even) and
 * blockwise symmetric int8 quantization, for the compression filters.
 *
 * Conversions go through float32 as the hub: every narrowing from float32
 * is one correct rounding (F16C / AVX-512 hardware or the bit-exact scalar
 * code of floatk.h); a double is first rounded *to odd* in float32 so the
 * second rounding to half/bfloat16 still equals one correct rounding. */
#include <math.h>

#include "floatk.h"

#if defined(CN_X86)
#include <immintrin.h>
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define T256 __attribute__((target("avx2,fma,f16c")))
#endif

/* ---------------------------------------------------------- float <-> f32 */
CN_INLINE void h2f_tail(const uint16_t *s, float *d, size_t i, size_t n) {
    for (; i < n; i++) d[i] = cn__h2f(s[i]);
}
CN_INLINE void f2h_tail(const float *s, uint16_t *d, size_t i, size_t n) {
    for (; i < n; i++) d[i] = cn__f2h(s[i]);
}
/* Plain loops the compiler vectorizes for whichever target includes them. */
CN_INLINE void b2f_loop(const uint16_t *s, float *d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = cn__bitsf((uint32_t)s[i] << 16);
}
CN_INLINE void f2b_loop(const float *s, uint16_t *d, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint32_t x = cn__fbits(s[i]);
        uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
        d[i] = (uint16_t)((x & 0x7fffffffu) > 0x7f800000u ? ((x >> 16) | 0x40u) : r);
    }
}
CN_INLINE void d2f_loop(const double *s, float *d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = (float)s[i];
}
CN_INLINE void f2d_loop(const float *s, double *d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = (double)s[i];
}

#if defined(CN_X86)
T512 static void h2f_512(const uint16_t *s, float *d, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
    h2f_tail(s, d, i, n);
}
T512 static void f2h_512(const float *s, uint16_t *d, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(d + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    f2h_tail(s, d, i, n);
}
T256 static void h2f_256(const uint16_t *s, float *d, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    h2f_tail(s, d, i, n);
}
T256 static void f2h_256(const float *s, uint16_t *d, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    f2h_tail(s, d, i, n);
}
T512 static void b2f_512(const uint16_t *s, float *d, size_t n) { b2f_loop(s, d, n); }
T512 static void f2b_512(const float *s, uint16_t *d, size_t n) { f2b_loop(s, d, n); }
T512 static void d2f_512(const double *s, float *d, size_t n) { d2f_loop(s, d, n); }
T512 static void f2d_512(const float *s, double *d, size_t n) { f2d_loop(s, d, n); }
T256 static void b2f_256(const uint16_t *s, float *d, size_t n) { b2f_loop(s, d, n); }
T256 static void f2b_256(const float *s, uint16_t *d, size_t n) { f2b_loop(s, d, n); }
T256 static void d2f_256(const double *s, float *d, size_t n) { d2f_loop(s, d, n); }
T256 static void f2d_256(const float *s, double *d, size_t n) { f2d_loop(s, d, n); }
#endif

static void h2f_port(const uint16_t *s, float *d, size_t n) { h2f_tail(s, d, 0, n); }
static void f2h_port(const float *s, uint16_t *d, size_t n) { f2h_tail(s, d, 0, n); }
static void b2f_port(const uint16_t *s, float *d, size_t n) { b2f_loop(s, d, n); }
static void f2b_port(const float *s, uint16_t *d, size_t n) { f2b_loop(s, d, n); }
static void d2f_port(const double *s, float *d, size_t n) { d2f_loop(s, d, n); }
static void f2d_port(const float *s, double *d, size_t n) { f2d_loop(s, d, n); }

static void d2f_odd(const double *s, float *d, size_t n) {
    for (size_t i = 0; i < n; i++) d[i] = cn__d2f_odd(s[i]);
}

/* The dispatched float32-hub converters. */
typedef struct {
    void (*h2f)(const uint16_t *, float *, size_t);
    void (*f2h)(const float *, uint16_t *, size_t);
    void (*b2f)(const uint16_t *, float *, size_t);
    void (*f2b)(const float *, uint16_t *, size_t);
    void (*d2f)(const double *, float *, size_t);
    void (*f2d)(const float *, double *, size_t);
} cvt_table;

static const cvt_table *cvt(void) {
    static const cvt_table port = {h2f_port, f2h_port, b2f_port, f2b_port, d2f_port, f2d_port};
#if defined(CN_X86)
    static const cvt_table t512 = {h2f_512, f2h_512, b2f_512, f2b_512, d2f_512, f2d_512};
    static const cvt_table t256 = {h2f_256, f2h_256, b2f_256, f2b_256, d2f_256, f2d_256};
    switch (cn__float_level()) {
    case CN__LVL_AVX512: return &t512;
    case CN__LVL_AVX2: return &t256;
    default: break;
    }
#endif
    return &port;
}

/* src (any float dtype) -> float32, exact except f64 (RNE, or round-to-odd). */
static void to_f32(const cvt_table *t, const void *src, int sd, float *d, size_t n, int odd) {
    switch (sd) {
    case CN_F16: t->h2f((const uint16_t *)src, d, n); break;
    case CN_BF16: t->b2f((const uint16_t *)src, d, n); break;
    case CN_F32: memmove(d, src, n * 4); break;
    default:
        if (odd) d2f_odd((const double *)src, d, n);
        else t->d2f((const double *)src, d, n);
        break;
    }
}

static void from_f32(const cvt_table *t, const float *s, void *dst, int dd, size_t n) {
    switch (dd) {
    case CN_F16: t->f2h(s, (uint16_t *)dst, n); break;
    case CN_BF16: t->f2b(s, (uint16_t *)dst, n); break;
    case CN_F32: memmove(dst, s, n * 4); break;
    default: t->f2d(s, (double *)dst, n); break;
    }
}

void cn__convert(const void *src, int sd, void *dst, int dd, size_t n) {
    if (sd == dd) {
        if (src != dst) memmove(dst, src, n * cn_dtype_size(sd));
        return;
    }
    const cvt_table *t = cvt();
    if (sd == CN_F32) { from_f32(t, (const float *)src, dst, dd, n); return; }
    if (dd == CN_F32) { to_f32(t, src, sd, (float *)dst, n, 0); return; }
    /* Neither side is float32: hop through a stack chunk. */
    float buf[CN__CHUNK];
    size_t ss = cn_dtype_size(sd), ds = cn_dtype_size(dd);
    for (size_t i = 0; i < n; i += CN__CHUNK) {
        size_t m = n - i < CN__CHUNK ? n - i : CN__CHUNK;
        to_f32(t, (const char *)src + i * ss, sd, buf, m, sd == CN_F64);
        from_f32(t, buf, (char *)dst + i * ds, dd, m);
    }
}

int cn_convert(const void *src, int src_dtype, void *dst, int dst_dtype, uint64_t n) {
    if (!cn__is_float(src_dtype) || !cn__is_float(dst_dtype)) return CN_E_DTYPE;
    if (n == 0) return CN_OK;
    if (!src || !dst || n > SIZE_MAX / 8) return CN_E_INVAL;
    cn__convert(src, src_dtype, dst, dst_dtype, (size_t)n);
    return CN_OK;
}

/* ------------------------------------------------------------------- int8 */
uint64_t cn_q8_nblocks(uint64_t n, uint32_t block) {
    return block ? n / block + (n % block != 0) : 0;
}

/* Largest |x| of m floats as bits (non-negative floats order like their
 * bits, and an integer max vectorizes); > 0x7f7fffff means inf or NaN. */
CN_INLINE uint32_t absmax_bits(const float *x, size_t m) {
    uint32_t mx = 0;
    for (size_t i = 0; i < m; i++) {
        uint32_t a = cn__fbits(x[i]) & 0x7fffffffu;
        mx = a > mx ? a : mx;
    }
    return mx;
}

/* q = round-half-even(x * inv), clamped to [-127, 127]. */
CN_INLINE void q8_apply(const float *x, size_t m, float inv, int8_t *q) {
    for (size_t i = 0; i < m; i++) {
        float v = nearbyintf(x[i] * inv);
        v = v > 127.0f ? 127.0f : (v < -127.0f ? -127.0f : v);
        q[i] = (int8_t)(int32_t)v;
    }
}

CN_INLINE float q8_scale(uint32_t amax_bits, float *inv) {
    float amax = cn__bitsf(amax_bits);
    *inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    return amax / 127.0f;
}

/* Blocks up to a chunk: convert a run of whole blocks at once, then
 * quantize block by block.  Larger blocks: two passes (max, then quantize). */
CN_INLINE int q8_run(const cvt_table *t, const void *x, int xd, uint64_t n, uint32_t block,
                     int8_t *q, float *scales) {
    float buf[CN__CHUNK];
    size_t xs = cn_dtype_size(xd);
    float inv;
    if (block <= CN__CHUNK) {
        uint64_t run = (CN__CHUNK / block) * (uint64_t)block, b = 0;
        for (uint64_t i = 0; i < n; i += run) {
            size_t c = (size_t)(n - i < run ? n - i : run);
            const char *src = (const char *)x + i * xs;
            const float *f = xd == CN_F32 ? (const float *)src : buf;
            if (xd != CN_F32) to_f32(t, src, xd, buf, c, 0);
            for (size_t j = 0; j < c; j += block, b++) {
                size_t m = c - j < block ? c - j : block;
                uint32_t mx = absmax_bits(f + j, m);
                if (mx > 0x7f7fffffu) return CN_E_INVAL;
                scales[b] = q8_scale(mx, &inv);
                q8_apply(f + j, m, inv, q + i + j);
            }
        }
        return CN_OK;
    }
    uint64_t b = 0;
    for (uint64_t i = 0; i < n; i += block, b++) {
        size_t m = (size_t)(n - i < block ? n - i : block);
        uint32_t mx = 0;
        for (size_t j = 0; j < m; j += CN__CHUNK) {
            size_t c = m - j < CN__CHUNK ? m - j : CN__CHUNK;
            to_f32(t, (const char *)x + (i + j) * xs, xd, buf, c, 0);
            uint32_t cm = absmax_bits(buf, c);
            mx = cm > mx ? cm : mx;
        }
        if (mx > 0x7f7fffffu) return CN_E_INVAL;
        scales[b] = q8_scale(mx, &inv);
        for (size_t j = 0; j < m; j += CN__CHUNK) {
            size_t c = m - j < CN__CHUNK ? m - j : CN__CHUNK;
            to_f32(t, (const char *)x + (i + j) * xs, xd, buf, c, 0);
            q8_apply(buf, c, inv, q + i + j);
        }
    }
    return CN_OK;
}

#if defined(CN_X86)
T512 static int q8_512(const cvt_table *t, const void *x, int xd, uint64_t n, uint32_t block,
                       int8_t *q, float *s) { return q8_run(t, x, xd, n, block, q, s); }
T256 static int q8_256(const cvt_table *t, const void *x, int xd, uint64_t n, uint32_t block,
                       int8_t *q, float *s) { return q8_run(t, x, xd, n, block, q, s); }
#endif
static int q8_port(const cvt_table *t, const void *x, int xd, uint64_t n, uint32_t block,
                   int8_t *q, float *s) { return q8_run(t, x, xd, n, block, q, s); }

int cn_quantize_q8(const void *x, int x_dtype, uint64_t n, uint32_t block, int8_t *q,
                   float *scales) {
    if (!cn__is_float(x_dtype)) return CN_E_DTYPE;
    if (block == 0) return CN_E_INVAL;
    if (n == 0) return CN_OK;
    if (!x || !q || !scales || n > SIZE_MAX / 8) return CN_E_INVAL;
    const cvt_table *t = cvt();
#if defined(CN_X86)
    switch (cn__float_level()) {
    case CN__LVL_AVX512: return q8_512(t, x, x_dtype, n, block, q, scales);
    case CN__LVL_AVX2: return q8_256(t, x, x_dtype, n, block, q, scales);
    default: break;
    }
#endif
    return q8_port(t, x, x_dtype, n, block, q, scales);
}

/* out = q * scale_b, computed in float32 then rounded once to out's dtype
 * (in double for a float64 out). */
CN_INLINE void dq8_run(const cvt_table *t, const int8_t *q, const float *scales, uint64_t n,
                       uint32_t block, void *out, int od) {
    float buf[CN__CHUNK];
    size_t os = cn_dtype_size(od);
    for (uint64_t i = 0; i < n; i += CN__CHUNK) {
        size_t c = (size_t)(n - i < CN__CHUNK ? n - i : CN__CHUNK);
        if (od == CN_F64) {
            double *o = (double *)out + i;
            for (size_t k = 0; k < c; k++) o[k] = (double)q[i + k] * scales[(i + k) / block];
            continue;
        }
        float *o = od == CN_F32 ? (float *)out + i : buf;
        uint64_t b0 = i / block;
        size_t k = 0;
        while (k < c) {
            /* run of elements sharing block b0: a plain vectorizable loop */
            uint64_t end = (b0 + 1) * (uint64_t)block - i;
            size_t e = end < c ? (size_t)end : c;
            float s = scales[b0];
            for (; k < e; k++) o[k] = (float)q[i + k] * s;
            b0++;
        }
        if (od != CN_F32) from_f32(t, buf, (char *)out + i * os, od, c);
    }
}

#if defined(CN_X86)
T512 static void dq8_512(const cvt_table *t, const int8_t *q, const float *s, uint64_t n,
                         uint32_t block, void *o, int od) { dq8_run(t, q, s, n, block, o, od); }
T256 static void dq8_256(const cvt_table *t, const int8_t *q, const float *s, uint64_t n,
                         uint32_t block, void *o, int od) { dq8_run(t, q, s, n, block, o, od); }
#endif
static void dq8_port(const cvt_table *t, const int8_t *q, const float *s, uint64_t n,
                     uint32_t block, void *o, int od) { dq8_run(t, q, s, n, block, o, od); }

int cn_dequantize_q8(const int8_t *q, const float *scales, uint64_t n, uint32_t block, void *out,
                     int out_dtype) {
    if (!cn__is_float(out_dtype)) return CN_E_DTYPE;
    if (block == 0) return CN_E_INVAL;
    if (n == 0) return CN_OK;
    if (!q || !scales || !out || n > SIZE_MAX / 8) return CN_E_INVAL;
    const cvt_table *t = cvt();
#if defined(CN_X86)
    switch (cn__float_level()) {
    case CN__LVL_AVX512: dq8_512(t, q, scales, n, block, out, out_dtype); return CN_OK;
    case CN__LVL_AVX2: dq8_256(t, q, scales, n, block, out, out_dtype); return CN_OK;
    default: break;
    }
#endif
    dq8_port(t, q, scales, n, block, out, out_dtype);
    return CN_OK;
}
