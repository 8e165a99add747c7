/* Quantization kernels: placeholder until the implementation lands. */
#include "internal.h"

int cn_convert(const void *src, int src_dtype, void *dst, int dst_dtype, uint64_t n) {
    return CN_E_INVAL;
}
uint64_t cn_q8_nblocks(uint64_t n, uint32_t block) { return block ? (n + block - 1) / block : 0; }
int cn_quantize_q8(const void *x, int x_dtype, uint64_t n, uint32_t block, int8_t *q,
                   float *scales) { return CN_E_INVAL; }
int cn_dequantize_q8(const int8_t *q, const float *scales, uint64_t n, uint32_t block, void *out,
                     int out_dtype) { return CN_E_INVAL; }
