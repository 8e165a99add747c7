/* Weighted accumulation (FedAvg) and finalize, L2 norm and norm clipping.
 *
 * Theory of operation: the weighted sum is memory bound, so the fused kernel
 * reads every input exactly once and the accumulator as few times as
 * possible.  The accumulator is walked in L1-sized blocks; inside a block up
 * to GROUP inputs are folded in at once, each tile of 4 SIMD vectors of the
 * accumulator staying in registers while every input's matching tile is
 * loaded, widened (f16 via F16C, bf16 by a shift) and FMA'd in.  With
 * k <= GROUP the accumulator is read and written once per call.  Three
 * builds of the same kernel exist (AVX-512, AVX2+FMA+F16C, portable C),
 * chosen at run time by cn__float_level(). */
#include <math.h>

#include "floatk.h"

#define BLOCK 2048 /* accumulator elements per cache block */
#define GROUP 8    /* inputs fused per pass over a block */

#if defined(CN_X86)
#include <immintrin.h>
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define T256 __attribute__((target("avx2,fma,f16c")))
#endif

typedef void (*many_fn)(void *acc, const void *const *xs, const double *w, size_t k, size_t n);

/* DEF_MANY: acc[i] += sum_j w[j] * x_j[i] for one (ISA, acc dtype, x dtype). */
#define DEF_MANY(NAME, TGT, AT, XT, VT, VW, LDA, STA, SET1, FMA, LDX, SX, SFMA)                 \
    TGT static void NAME(void *acc_, const void *const *xs, const double *w, size_t k,       \
                         size_t n) {                                                        \
        AT *acc = (AT *)acc_;                                                               \
        for (size_t b0 = 0; b0 < n; b0 += BLOCK) {                                          \
            size_t b1 = n - b0 < BLOCK ? n : b0 + BLOCK;                                    \
            for (size_t g = 0; g < k; g += GROUP) {                                         \
                size_t ge = k - g < GROUP ? k : g + GROUP;                                  \
                size_t i = b0;                                                              \
                for (; i + 4 * (VW) <= b1; i += 4 * (VW)) {                                 \
                    VT a0 = LDA(acc + i), a1 = LDA(acc + i + (VW));                         \
                    VT a2 = LDA(acc + i + 2 * (VW)), a3 = LDA(acc + i + 3 * (VW));          \
                    for (size_t j = g; j < ge; j++) {                                       \
                        const XT *p = (const XT *)xs[j] + i;                                \
                        VT wv = SET1((AT)w[j]);                                             \
                        a0 = FMA(wv, LDX(p), a0);                                           \
                        a1 = FMA(wv, LDX(p + (VW)), a1);                                    \
                        a2 = FMA(wv, LDX(p + 2 * (VW)), a2);                                \
                        a3 = FMA(wv, LDX(p + 3 * (VW)), a3);                                \
                    }                                                                       \
                    STA(acc + i, a0);                                                       \
                    STA(acc + i + (VW), a1);                                                \
                    STA(acc + i + 2 * (VW), a2);                                            \
                    STA(acc + i + 3 * (VW), a3);                                            \
                }                                                                           \
                for (; i < b1; i++) {                                                       \
                    AT s = acc[i];                                                          \
                    for (size_t j = g; j < ge; j++)                                         \
                        s = SFMA((AT)w[j], (AT)SX((const XT *)xs[j] + i), s);               \
                    acc[i] = s;                                                             \
                }                                                                           \
            }                                                                               \
        }                                                                                   \
    }

/* scalar element loaders */
#define SX_F32(p) (*(p))
#define SX_F64(p) (*(p))
#define SX_F16(p) cn__h2f(*(p))
#define SX_BF16(p) cn__b2f(*(p))

/* ---- portable: the same tiling on scalars (compilers vectorize what they can) */
#define P_LD(p) (*(p))
#define P_ST(p, v) (*(p) = (v))
#define P_SET1(x) (x)
#define P_FMA(a, b, c) ((a) * (b) + (c))
#define NOTGT
DEF_MANY(p_f32_f32, NOTGT, float, float, float, 1, P_LD, P_ST, P_SET1, P_FMA, (float)SX_F32, SX_F32, P_FMA)
DEF_MANY(p_f32_f16, NOTGT, float, uint16_t, float, 1, P_LD, P_ST, P_SET1, P_FMA, SX_F16, SX_F16, P_FMA)
DEF_MANY(p_f32_bf16, NOTGT, float, uint16_t, float, 1, P_LD, P_ST, P_SET1, P_FMA, SX_BF16, SX_BF16, P_FMA)
DEF_MANY(p_f32_f64, NOTGT, float, double, float, 1, P_LD, P_ST, P_SET1, P_FMA, (float)SX_F64, SX_F64, P_FMA)
DEF_MANY(p_f64_f32, NOTGT, double, float, double, 1, P_LD, P_ST, P_SET1, P_FMA, (double)SX_F32, SX_F32, P_FMA)
DEF_MANY(p_f64_f16, NOTGT, double, uint16_t, double, 1, P_LD, P_ST, P_SET1, P_FMA, (double)SX_F16, SX_F16, P_FMA)
DEF_MANY(p_f64_bf16, NOTGT, double, uint16_t, double, 1, P_LD, P_ST, P_SET1, P_FMA, (double)SX_BF16, SX_BF16, P_FMA)
DEF_MANY(p_f64_f64, NOTGT, double, double, double, 1, P_LD, P_ST, P_SET1, P_FMA, SX_F64, SX_F64, P_FMA)

#if defined(CN_X86)
/* ---- AVX-512: 16 floats / 8 doubles per vector */
#define Z_LDF(p) _mm512_loadu_ps(p)
#define Z_STF(p, v) _mm512_storeu_ps(p, v)
#define Z_LDD(p) _mm512_loadu_pd(p)
#define Z_STD(p, v) _mm512_storeu_pd(p, v)
#define Z_H16(p) _mm256_loadu_si256((const __m256i *)(p))
#define Z_H8(p) _mm_loadu_si128((const __m128i *)(p))
#define ZF_F32(p) _mm512_loadu_ps(p)
#define ZF_F16(p) _mm512_cvtph_ps(Z_H16(p))
#define ZF_BF16(p) _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(Z_H16(p)), 16))
#define ZF_F64(p)                                                                         \
    _mm512_castpd_ps(_mm512_insertf64x4(                                                  \
        _mm512_castps_pd(_mm512_castps256_ps512(_mm512_cvtpd_ps(_mm512_loadu_pd(p)))),    \
        _mm256_castps_pd(_mm512_cvtpd_ps(_mm512_loadu_pd((p) + 8))), 1))
#define ZD_F64(p) _mm512_loadu_pd(p)
#define ZD_F32(p) _mm512_cvtps_pd(_mm256_loadu_ps(p))
#define ZD_F16(p) _mm512_cvtps_pd(_mm256_cvtph_ps(Z_H8(p)))
#define ZD_BF16(p) \
    _mm512_cvtps_pd(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(Z_H8(p)), 16)))
DEF_MANY(z_f32_f32, T512, float, float, __m512, 16, Z_LDF, Z_STF, _mm512_set1_ps, _mm512_fmadd_ps, ZF_F32, SX_F32, __builtin_fmaf)
DEF_MANY(z_f32_f16, T512, float, uint16_t, __m512, 16, Z_LDF, Z_STF, _mm512_set1_ps, _mm512_fmadd_ps, ZF_F16, SX_F16, __builtin_fmaf)
DEF_MANY(z_f32_bf16, T512, float, uint16_t, __m512, 16, Z_LDF, Z_STF, _mm512_set1_ps, _mm512_fmadd_ps, ZF_BF16, SX_BF16, __builtin_fmaf)
DEF_MANY(z_f32_f64, T512, float, double, __m512, 16, Z_LDF, Z_STF, _mm512_set1_ps, _mm512_fmadd_ps, ZF_F64, SX_F64, __builtin_fmaf)
DEF_MANY(z_f64_f32, T512, double, float, __m512d, 8, Z_LDD, Z_STD, _mm512_set1_pd, _mm512_fmadd_pd, ZD_F32, SX_F32, __builtin_fma)
DEF_MANY(z_f64_f16, T512, double, uint16_t, __m512d, 8, Z_LDD, Z_STD, _mm512_set1_pd, _mm512_fmadd_pd, ZD_F16, SX_F16, __builtin_fma)
DEF_MANY(z_f64_bf16, T512, double, uint16_t, __m512d, 8, Z_LDD, Z_STD, _mm512_set1_pd, _mm512_fmadd_pd, ZD_BF16, SX_BF16, __builtin_fma)
DEF_MANY(z_f64_f64, T512, double, double, __m512d, 8, Z_LDD, Z_STD, _mm512_set1_pd, _mm512_fmadd_pd, ZD_F64, SX_F64, __builtin_fma)

/* ---- AVX2 + FMA + F16C: 8 floats / 4 doubles per vector */
#define Y_LDF(p) _mm256_loadu_ps(p)
#define Y_STF(p, v) _mm256_storeu_ps(p, v)
#define Y_LDD(p) _mm256_loadu_pd(p)
#define Y_STD(p, v) _mm256_storeu_pd(p, v)
#define Y_H8(p) _mm_loadu_si128((const __m128i *)(p))
#define Y_H4(p) _mm_loadl_epi64((const __m128i *)(p))
#define YF_F32(p) _mm256_loadu_ps(p)
#define YF_F16(p) _mm256_cvtph_ps(Y_H8(p))
#define YF_BF16(p) _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(Y_H8(p)), 16))
#define YF_F64(p) \
    _mm256_set_m128(_mm256_cvtpd_ps(_mm256_loadu_pd((p) + 4)), _mm256_cvtpd_ps(_mm256_loadu_pd(p)))
#define YD_F64(p) _mm256_loadu_pd(p)
#define YD_F32(p) _mm256_cvtps_pd(_mm_loadu_ps(p))
#define YD_F16(p) _mm256_cvtps_pd(_mm_cvtph_ps(Y_H4(p)))
#define YD_BF16(p) _mm256_cvtps_pd(_mm_castsi128_ps(_mm_slli_epi32(_mm_cvtepu16_epi32(Y_H4(p)), 16)))
DEF_MANY(y_f32_f32, T256, float, float, __m256, 8, Y_LDF, Y_STF, _mm256_set1_ps, _mm256_fmadd_ps, YF_F32, SX_F32, __builtin_fmaf)
DEF_MANY(y_f32_f16, T256, float, uint16_t, __m256, 8, Y_LDF, Y_STF, _mm256_set1_ps, _mm256_fmadd_ps, YF_F16, SX_F16, __builtin_fmaf)
DEF_MANY(y_f32_bf16, T256, float, uint16_t, __m256, 8, Y_LDF, Y_STF, _mm256_set1_ps, _mm256_fmadd_ps, YF_BF16, SX_BF16, __builtin_fmaf)
DEF_MANY(y_f32_f64, T256, float, double, __m256, 8, Y_LDF, Y_STF, _mm256_set1_ps, _mm256_fmadd_ps, YF_F64, SX_F64, __builtin_fmaf)
DEF_MANY(y_f64_f32, T256, double, float, __m256d, 4, Y_LDD, Y_STD, _mm256_set1_pd, _mm256_fmadd_pd, YD_F32, SX_F32, __builtin_fma)
DEF_MANY(y_f64_f16, T256, double, uint16_t, __m256d, 4, Y_LDD, Y_STD, _mm256_set1_pd, _mm256_fmadd_pd, YD_F16, SX_F16, __builtin_fma)
DEF_MANY(y_f64_bf16, T256, double, uint16_t, __m256d, 4, Y_LDD, Y_STD, _mm256_set1_pd, _mm256_fmadd_pd, YD_BF16, SX_BF16, __builtin_fma)
DEF_MANY(y_f64_f64, T256, double, double, __m256d, 4, Y_LDD, Y_STD, _mm256_set1_pd, _mm256_fmadd_pd, YD_F64, SX_F64, __builtin_fma)
#endif

/* Index of an input dtype in the kernel tables: f16, bf16, f32, f64. */
static int xslot(int d) { return d - CN_F16; }

static many_fn pick_many(int acc_dtype, int x_dtype) {
    static const many_fn port[2][4] = {{p_f32_f16, p_f32_bf16, p_f32_f32, p_f32_f64},
                                       {p_f64_f16, p_f64_bf16, p_f64_f32, p_f64_f64}};
    int a = acc_dtype == CN_F64, x = xslot(x_dtype);
#if defined(CN_X86)
    static const many_fn z[2][4] = {{z_f32_f16, z_f32_bf16, z_f32_f32, z_f32_f64},
                                    {z_f64_f16, z_f64_bf16, z_f64_f32, z_f64_f64}};
    static const many_fn y[2][4] = {{y_f32_f16, y_f32_bf16, y_f32_f32, y_f32_f64},
                                    {y_f64_f16, y_f64_bf16, y_f64_f32, y_f64_f64}};
    switch (cn__float_level()) {
    case CN__LVL_AVX512: return z[a][x];
    case CN__LVL_AVX2: return y[a][x];
    default: break;
    }
#endif
    return port[a][x];
}

static int acc_ok(int d) { return d == CN_F32 || d == CN_F64; }

int cn_agg_accumulate_many(void *acc, int acc_dtype, const void *const *xs, int x_dtype,
                           const double *w, size_t k, uint64_t n) {
    if (!acc_ok(acc_dtype) || !cn__is_float(x_dtype)) return CN_E_DTYPE;
    if (n == 0 || k == 0) return CN_OK;
    if (!acc || !xs || !w || n > SIZE_MAX / 8) return CN_E_INVAL;
    for (size_t j = 0; j < k; j++)
        if (!xs[j] || !isfinite(w[j])) return CN_E_INVAL;
    pick_many(acc_dtype, x_dtype)(acc, xs, w, k, (size_t)n);
    return CN_OK;
}

int cn_agg_accumulate(void *acc, int acc_dtype, const void *x, int x_dtype, uint64_t n,
                      double w) {
    const void *xs[1] = {x};
    return cn_agg_accumulate_many(acc, acc_dtype, xs, x_dtype, &w, 1, n);
}

/* out[i] = a[i] / tw for same-dtype finalize: one pass, no staging buffer.  A
 * true division (not a multiply by 1/tw) so results equal numpy's bit for bit;
 * the AVX builds let the compiler use wide vdivps/vdivpd. */
#define DEF_DIV(NAME, TGT, T)                                                   \
    TGT static void NAME(const T *a, T tw, T *o, size_t n) {                   \
        for (size_t i = 0; i < n; i++) o[i] = a[i] / tw;                       \
    }
DEF_DIV(div_f32, , float)
DEF_DIV(div_f64, , double)
#if defined(CN_X86)
DEF_DIV(div_f32_avx512, T512, float)
DEF_DIV(div_f64_avx512, T512, double)
DEF_DIV(div_f32_avx2, T256, float)
DEF_DIV(div_f64_avx2, T256, double)
#endif

static void div_same(const void *a, int dtype, double tw, void *o, size_t n) {
#if defined(CN_X86)
    switch (cn__float_level()) { /* the same level check as every other float kernel */
    case CN__LVL_AVX512:
        if (dtype == CN_F32) div_f32_avx512(a, (float)tw, o, n);
        else div_f64_avx512(a, tw, o, n);
        return;
    case CN__LVL_AVX2:
        if (dtype == CN_F32) div_f32_avx2(a, (float)tw, o, n);
        else div_f64_avx2(a, tw, o, n);
        return;
    default: break;
    }
#endif
    if (dtype == CN_F32) div_f32(a, (float)tw, o, n);
    else div_f64(a, tw, o, n);
}

int cn_agg_finalize(const void *acc, int acc_dtype, uint64_t n, double total_weight, void *out,
                    int out_dtype) {
    if (!acc_ok(acc_dtype) || !cn__is_float(out_dtype)) return CN_E_DTYPE;
    if (!(total_weight > 0.0) || !isfinite(total_weight)) return CN_E_INVAL;
    if (n == 0) return CN_OK;
    if (!acc || !out || n > SIZE_MAX / 8) return CN_E_INVAL;
    size_t os = cn_dtype_size(out_dtype);
    if (acc_dtype == CN_F32 && !(isfinite((float)total_weight) && (float)total_weight > 0.0f))
        return CN_E_INVAL;
    if (out_dtype == acc_dtype && (out == acc || (const char *)out + n * os <= (const char *)acc ||
                                   (const char *)acc + n * os <= (const char *)out)) {
        /* in place or disjoint: each out[i] depends on acc[i] alone */
        div_same(acc, acc_dtype, total_weight, out, (size_t)n);
        return CN_OK;
    }
    if (acc_dtype == CN_F32) {
        float buf[CN__CHUNK], tw = (float)total_weight;
        const float *a = (const float *)acc;
        for (uint64_t i = 0; i < n; i += CN__CHUNK) {
            size_t c = (size_t)(n - i < CN__CHUNK ? n - i : CN__CHUNK);
            for (size_t j = 0; j < c; j++) buf[j] = a[i + j] / tw;
            cn__convert(buf, CN_F32, (char *)out + i * os, out_dtype, c);
        }
    } else {
        double buf[CN__CHUNK];
        const double *a = (const double *)acc;
        for (uint64_t i = 0; i < n; i += CN__CHUNK) {
            size_t c = (size_t)(n - i < CN__CHUNK ? n - i : CN__CHUNK);
            for (size_t j = 0; j < c; j++) buf[j] = a[i + j] / total_weight;
            cn__convert(buf, CN_F64, (char *)out + i * os, out_dtype, c);
        }
    }
    return CN_OK;
}

/* ------------------------------------------------------------------ norms */
/* Sum of squares in double with 8 independent partial sums (vectorizable). */
#define DEF_SSQ(NAME, T)                                                       \
    CN_INLINE double NAME(const T *x, size_t n) {                              \
        double s[8] = {0, 0, 0, 0, 0, 0, 0, 0};                                \
        size_t i = 0;                                                          \
        for (; i + 8 <= n; i += 8)                                             \
            for (int j = 0; j < 8; j++) s[j] += (double)x[i + j] * (double)x[i + j]; \
        for (; i < n; i++) s[0] += (double)x[i] * (double)x[i];               \
        return ((s[0] + s[4]) + (s[1] + s[5])) + ((s[2] + s[6]) + (s[3] + s[7])); \
    }
DEF_SSQ(ssq_f32, float)
DEF_SSQ(ssq_f64, double)

CN_INLINE double ssq_run(const void *x, int dtype, size_t n) {
    if (dtype == CN_F64) return ssq_f64((const double *)x, n);
    if (dtype == CN_F32) return ssq_f32((const float *)x, n);
    float buf[CN__CHUNK];
    double s = 0.0;
    for (size_t i = 0; i < n; i += CN__CHUNK) {
        size_t c = n - i < CN__CHUNK ? n - i : CN__CHUNK;
        cn__convert((const uint16_t *)x + i, dtype, buf, CN_F32, c);
        s += ssq_f32(buf, c);
    }
    return s;
}

#if defined(CN_X86)
T512 static double ssq_512(const void *x, int d, size_t n) { return ssq_run(x, d, n); }
T256 static double ssq_256(const void *x, int d, size_t n) { return ssq_run(x, d, n); }
#endif
static double ssq_port(const void *x, int d, size_t n) { return ssq_run(x, d, n); }

static double ssq(const void *x, int d, size_t n) {
#if defined(CN_X86)
    switch (cn__float_level()) {
    case CN__LVL_AVX512: return ssq_512(x, d, n);
    case CN__LVL_AVX2: return ssq_256(x, d, n);
    default: break;
    }
#endif
    return ssq_port(x, d, n);
}

/* float64 input whose squares overflow or underflow: scale by max|x|. */
static double norm_scaled(const double *x, size_t n) {
    double m = 0.0, s = 0.0;
    for (size_t i = 0; i < n; i++) m = fabs(x[i]) > m ? fabs(x[i]) : m;
    if (m == 0.0 || !isfinite(m)) return m;
    for (size_t i = 0; i < n; i++) s += (x[i] / m) * (x[i] / m);
    return m * sqrt(s);
}

int cn_l2_norm(const void *x, int dtype, uint64_t n, double *out) {
    if (!cn__is_float(dtype)) return CN_E_DTYPE;
    if (!out || (n && !x) || n > SIZE_MAX / 8) return CN_E_INVAL;
    double s = n ? ssq(x, dtype, (size_t)n) : 0.0;
    if (dtype == CN_F64 && s == s && !(s > 1e-280 && s < 1e280))
        *out = norm_scaled((const double *)x, (size_t)n);
    else
        *out = sqrt(s);
    return CN_OK;
}

int cn_clip_norm(void *x, int dtype, uint64_t n, double max_norm, double *scale) {
    if (!cn__is_float(dtype)) return CN_E_DTYPE;
    if (!scale || !(max_norm >= 0.0) || !isfinite(max_norm)) return CN_E_INVAL;
    double norm;
    int st = cn_l2_norm(x, dtype, n, &norm);
    if (st) return st;
    if (!isfinite(norm)) return CN_E_INVAL;
    double s = norm > max_norm ? max_norm / norm : 1.0;
    *scale = s;
    if (s >= 1.0) return CN_OK;
    if (dtype == CN_F64) {
        double *d = (double *)x;
        for (uint64_t i = 0; i < n; i++) d[i] *= s;
    } else if (dtype == CN_F32) {
        float *f = (float *)x;
        for (uint64_t i = 0; i < n; i++) f[i] = (float)((double)f[i] * s);
    } else {
        float buf[CN__CHUNK];
        uint16_t *h = (uint16_t *)x;
        for (uint64_t i = 0; i < n; i += CN__CHUNK) {
            size_t c = (size_t)(n - i < CN__CHUNK ? n - i : CN__CHUNK);
            cn__convert(h + i, dtype, buf, CN_F32, c);
            for (size_t j = 0; j < c; j++) buf[j] = cn__d2f_odd((double)buf[j] * s);
            cn__convert(buf, CN_F32, h + i, dtype, c);
        }
    }
    return CN_OK;
}
