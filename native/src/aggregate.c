/* Aggregation kernels: placeholder until the implementation lands. */
#include "internal.h"

int cn_agg_accumulate(void *acc, int acc_dtype, const void *x, int x_dtype, uint64_t n,
                      double w) { return CN_E_INVAL; }
int cn_agg_accumulate_many(void *acc, int acc_dtype, const void *const *xs, int x_dtype,
                           const double *w, size_t k, uint64_t n) { return CN_E_INVAL; }
int cn_agg_finalize(const void *acc, int acc_dtype, uint64_t n, double total_weight, void *out,
                    int out_dtype) { return CN_E_INVAL; }
int cn_agg_median(const void *const *xs, int x_dtype, size_t k, uint64_t n, void *out,
                  int out_dtype) { return CN_E_INVAL; }
int cn_agg_trimmed_mean(const void *const *xs, int x_dtype, size_t k, size_t trim, uint64_t n,
                        void *out, int out_dtype) { return CN_E_INVAL; }
int cn_l2_norm(const void *x, int dtype, uint64_t n, double *out) { return CN_E_INVAL; }
int cn_clip_norm(void *x, int dtype, uint64_t n, double max_norm, double *scale) {
    return CN_E_INVAL;
}
