/* Float kernels on exact-size heap buffers at every tail length, SIMD and
 * portable, so ASan catches any read or write past an end; results of the
 * two paths are compared.  Exit status 0 = pass. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cellnet_native.h"

static int failures;
#define CHECK(cond)                                                     \
    do {                                                                \
        if (!(cond)) {                                                  \
            fprintf(stderr, "%s:%d: CHECK(%s)\n", __FILE__, __LINE__, #cond); \
            failures++;                                                 \
        }                                                               \
    } while (0)

static const int FLOATS[4] = {CN_F16, CN_BF16, CN_F32, CN_F64};

/* n random values in [-2, 2) of dtype d, in a buffer of exactly n elements. */
static void *make(int d, size_t n, unsigned *seed) {
    size_t sz = cn_dtype_size(d);
    void *p = malloc(n * sz + 1); /* +1: malloc(0) may return NULL */
    float *tmp = malloc(n * sizeof(float) + 1);
    for (size_t i = 0; i < n; i++) {
        *seed = *seed * 1103515245u + 12345u;
        tmp[i] = (float)((*seed >> 8) & 0xffff) / 16384.0f - 2.0f;
    }
    CHECK(cn_convert(tmp, CN_F32, p, d, n) == CN_OK);
    free(tmp);
    return p;
}

static double get(const void *p, int d, size_t i) {
    double v = 0;
    CHECK(cn_convert((const char *)p + i * cn_dtype_size(d), d, &v, CN_F64, 1) == CN_OK);
    return v;
}

static void run_one(size_t n, int xd, int ad, unsigned *seed) {
    enum { K = 11 };
    const void *xs[K];
    double w[K];
    for (int k = 0; k < K; k++) {
        xs[k] = make(xd, n, seed);
        w[k] = 0.25 * (k + 1);
    }
    void *acc[2], *out[2];
    double norm[2];
    for (int pass = 0; pass < 2; pass++) {
        unsigned prev = cn_cpu_set_mask(pass ? 0u : ~0u);
        acc[pass] = calloc(n + 1, cn_dtype_size(ad));
        out[pass] = malloc(n * cn_dtype_size(xd) + 1);
        CHECK(cn_agg_accumulate_many(acc[pass], ad, xs, xd, w, K, n) == CN_OK);
        CHECK(cn_agg_accumulate(acc[pass], ad, xs[0], xd, n, -1.0) == CN_OK);
        CHECK(cn_agg_finalize(acc[pass], ad, n, 2.0, out[pass], xd) == CN_OK);
        CHECK(cn_agg_median(xs, xd, K, n, acc[pass], ad) == CN_OK);
        CHECK(cn_agg_trimmed_mean(xs, xd, K, 3, n, acc[pass], ad) == CN_OK);
        CHECK(cn_l2_norm(xs[1], xd, n, &norm[pass]) == CN_OK);
        uint64_t nb = cn_q8_nblocks(n, 7);
        int8_t *q = malloc(n + 1);
        float *s = malloc(nb * sizeof(float) + 1);
        CHECK(cn_quantize_q8(xs[2], xd, n, 7, q, s) == CN_OK);
        CHECK(cn_dequantize_q8(q, s, n, 7, out[pass], xd) == CN_OK);
        for (size_t i = 0; i < n; i++)
            CHECK(fabs(get(out[pass], xd, i) - get(xs[2], xd, i)) <= s[i / 7] * 0.51 + 0.02);
        double sc;
        CHECK(cn_clip_norm(out[pass], xd, n, 0.5, &sc) == CN_OK);
        free(q);
        free(s);
        cn_cpu_set_mask(prev);
    }
    for (size_t i = 0; i < n; i++)
        CHECK(fabs(get(acc[0], ad, i) - get(acc[1], ad, i)) <= 1e-6);
    CHECK(fabs(norm[0] - norm[1]) <= 1e-9 * (1 + norm[0]));
    for (int pass = 0; pass < 2; pass++) {
        free(acc[pass]);
        free(out[pass]);
    }
    for (int k = 0; k < K; k++) free((void *)xs[k]);
}

int main(void) {
    static const size_t lens[] = {0, 1, 7, 15, 16, 17, 31, 33, 63, 64, 65, 1023, 1025, 2049, 5003};
    unsigned seed = 1;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int xi = 0; xi < 4; xi++)
            for (int ai = 2; ai < 4; ai++) run_one(lens[li], FLOATS[xi], FLOATS[ai], &seed);
    /* bad parameters: status codes, never a crash */
    float f = 1.0f;
    const void *one[1] = {&f};
    double w = 1.0;
    CHECK(cn_agg_accumulate_many(&f, CN_I32, one, CN_F32, &w, 1, 1) == CN_E_DTYPE);
    CHECK(cn_agg_accumulate_many(&f, CN_F32, NULL, CN_F32, &w, 1, 1) == CN_E_INVAL);
    CHECK(cn_agg_median(one, CN_F32, CN_AGG_MAX_INPUTS + 1, 1, &f, CN_F32) == CN_E_INVAL);
    CHECK(cn_quantize_q8(&f, CN_F32, 1, 0, NULL, NULL) == CN_E_INVAL);
    f = INFINITY;
    int8_t q;
    float s;
    CHECK(cn_quantize_q8(&f, CN_F32, 1, 4, &q, &s) == CN_E_INVAL);
    if (failures) fprintf(stderr, "%d failures\n", failures);
    return failures != 0;
}
