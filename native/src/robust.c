/* Robust aggregators: coordinate-wise median and trimmed mean of k inputs.
 *
 * Theory of operation: coordinates are processed in tiles.  Each input's
 * slice of the tile is widened to double into one row of a stack tile
 * (k rows x B lanes, B = TILE / k).  A Batcher odd-even merge sorting
 * network (generated for k, comparators touching padded rows dropped) then
 * sorts every column at once: each comparator is an elementwise min/max of
 * two rows, a loop the compiler turns into SIMD, so k = 8 costs 19 vector
 * min/max pairs per B coordinates instead of a branchy sort per coordinate.
 * The answer is the mean of sorted rows [lo, hi].  A column holding a NaN
 * gives NaN (as np.median does); this is tracked separately because the
 * network's order is meaningless once a NaN is in it. */
#include <math.h>

#include "floatk.h"

#define TILE 4096 /* doubles in the stack tile (32 KiB) */

#if defined(CN_X86)
#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define T256 __attribute__((target("avx2,fma,f16c")))
#endif

/* Comparators (i, j), i < j, of Batcher's odd-even merge sort for k inputs
 * (the network for the next power of two with rows >= k dropped, which is
 * valid because those rows would hold +inf and never move). */
static size_t batcher(size_t k, uint8_t (*pairs)[2]) {
    size_t np = 0, n2 = 1;
    while (n2 < k) n2 <<= 1;
    for (size_t p = 1; p < n2; p <<= 1)
        for (size_t s = p; s >= 1; s >>= 1)
            for (size_t j = s % p; j + s < n2; j += 2 * s)
                for (size_t i = 0; i < s && i + j + s < n2; i++)
                    if ((i + j) / (2 * p) == (i + j + s) / (2 * p) && i + j + s < k) {
                        pairs[np][0] = (uint8_t)(i + j);
                        pairs[np][1] = (uint8_t)(i + j + s);
                        np++;
                    }
    return np;
}

typedef struct {
    const void *const *xs;
    int xd, od;
    size_t k, lo, hi; /* average of sorted rows lo..hi inclusive */
    const uint8_t (*pairs)[2];
    size_t np;
} robust_job;

CN_INLINE void robust_run(const robust_job *jb, size_t n, void *out) {
    double tile[TILE], res[TILE];
    unsigned char nan[TILE];
    const size_t k = jb->k, B = TILE / k;
    const size_t xs = cn_dtype_size(jb->xd), os = cn_dtype_size(jb->od);
    const double inv = 1.0 / (double)(jb->hi - jb->lo + 1);
    for (size_t b0 = 0; b0 < n; b0 += B) {
        size_t m = n - b0 < B ? n - b0 : B;
        for (size_t j = 0; j < m; j++) nan[j] = 0;
        for (size_t r = 0; r < k; r++) {
            double *row = tile + r * B;
            cn__convert((const char *)jb->xs[r] + b0 * xs, jb->xd, row, CN_F64, m);
            for (size_t j = 0; j < m; j++) nan[j] |= row[j] != row[j];
        }
        for (size_t p = 0; p < jb->np; p++) {
            double *a = tile + jb->pairs[p][0] * B, *b = tile + jb->pairs[p][1] * B;
            for (size_t j = 0; j < m; j++) {
                double x = a[j], y = b[j];
                a[j] = x < y ? x : y;
                b[j] = x < y ? y : x;
            }
        }
        for (size_t j = 0; j < m; j++) res[j] = tile[jb->lo * B + j];
        for (size_t r = jb->lo + 1; r <= jb->hi; r++)
            for (size_t j = 0; j < m; j++) res[j] += tile[r * B + j];
        for (size_t j = 0; j < m; j++) res[j] = nan[j] ? NAN : res[j] * inv;
        cn__convert(res, CN_F64, (char *)out + b0 * os, jb->od, m);
    }
}

#if defined(CN_X86)
T512 static void robust_512(const robust_job *jb, size_t n, void *out) { robust_run(jb, n, out); }
T256 static void robust_256(const robust_job *jb, size_t n, void *out) { robust_run(jb, n, out); }
#endif
static void robust_port(const robust_job *jb, size_t n, void *out) { robust_run(jb, n, out); }

static int robust(const void *const *xs, int x_dtype, size_t k, size_t lo, size_t hi,
                  uint64_t n, void *out, int out_dtype) {
    if (!cn__is_float(x_dtype) || !cn__is_float(out_dtype)) return CN_E_DTYPE;
    if (k == 0 || k > CN_AGG_MAX_INPUTS) return CN_E_INVAL;
    if (n == 0) return CN_OK;
    if (!xs || !out || n > SIZE_MAX / 8) return CN_E_INVAL;
    for (size_t j = 0; j < k; j++)
        if (!xs[j]) return CN_E_INVAL;
    uint8_t pairs[4096][2]; /* 3839 comparators for 256 inputs */
    robust_job jb = {xs, x_dtype, out_dtype, k, lo, hi, (const uint8_t (*)[2])pairs, 0};
    jb.np = batcher(k, pairs);
#if defined(CN_X86)
    switch (cn__float_level()) {
    case CN__LVL_AVX512: robust_512(&jb, (size_t)n, out); return CN_OK;
    case CN__LVL_AVX2: robust_256(&jb, (size_t)n, out); return CN_OK;
    default: break;
    }
#endif
    robust_port(&jb, (size_t)n, out);
    return CN_OK;
}

int cn_agg_median(const void *const *xs, int x_dtype, size_t k, uint64_t n, void *out,
                  int out_dtype) {
    return robust(xs, x_dtype, k, (k - 1) / 2, k / 2, n, out, out_dtype);
}

int cn_agg_trimmed_mean(const void *const *xs, int x_dtype, size_t k, size_t trim, uint64_t n,
                        void *out, int out_dtype) {
    if (!cn__is_float(x_dtype) || !cn__is_float(out_dtype)) return CN_E_DTYPE;
    if (k == 0 || trim >= k || 2 * trim >= k) return CN_E_INVAL;
    return robust(xs, x_dtype, k, trim, k - 1 - trim, n, out, out_dtype);
}
