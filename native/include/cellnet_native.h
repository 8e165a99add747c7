/*
 * cellnet_native.h - the one public header of cellnet's native core.
 *
 * Conventions (as in lz4 / meshoptimizer):
 *   - every function that can fail returns an int status: CN_OK (0) or a
 *     negative CN_E_* code; cn_strerror() names it.  Nothing aborts or prints.
 *   - the caller allocates every buffer; *_bound() / *_plan() functions say
 *     how large it must be.
 *   - decoders treat their input as hostile: every offset and length is
 *     checked against the buffer before it is used.
 *   - no I/O, no threads, no global mutable state except the CPU dispatch
 *     table, which is set once (idempotently) on first use.
 */
#ifndef CELLNET_NATIVE_H
#define CELLNET_NATIVE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever a signature, struct layout or format changes; the Python
 * loader refuses a build whose value differs from the one it expects. */
#define CN_ABI_VERSION 1

/* ---------------------------------------------------------------- status */
#define CN_OK           0
#define CN_E_INVAL     -1  /* invalid argument (NULL pointer, bad parameter) */
#define CN_E_NOSPACE   -2  /* caller buffer too small */
#define CN_E_TRUNCATED -3  /* input shorter than its own header declares */
#define CN_E_FORMAT    -4  /* bad magic, reserved bits or malformed layout */
#define CN_E_CHECKSUM  -5  /* checksum mismatch */
#define CN_E_RANGE     -6  /* offset/length out of range, misaligned or overlapping */
#define CN_E_LIMIT     -7  /* exceeds a caller-supplied limit */
#define CN_E_DTYPE     -8  /* unknown or unsupported dtype for this operation */
#define CN_E_SHAPE     -9  /* element counts / shapes disagree */
#define CN_E_VERSION  -10  /* unknown format version */

const char *cn_strerror(int status);
int cn_abi_version(void);

/* A do-nothing call: measures the per-call overhead of the binding. */
int cn_noop(int x);

/* ---------------------------------------------------------- CPU dispatch */
#define CN_CPU_SSE42     (1u << 0)
#define CN_CPU_PCLMUL    (1u << 1)
#define CN_CPU_AVX2      (1u << 2)
#define CN_CPU_FMA       (1u << 3)
#define CN_CPU_F16C      (1u << 4)
#define CN_CPU_AVX512F   (1u << 5)
#define CN_CPU_AVX512BW  (1u << 6)
#define CN_CPU_AVX512VL  (1u << 7)
#define CN_CPU_VPCLMUL   (1u << 8)
#define CN_CPU_ARM_CRC   (1u << 16)

/* Features the CPU has (detected once). */
unsigned cn_cpu_features(void);
/* Features the kernels may use: detected & mask.  Tests pass 0 to force the
 * portable paths and ~0u to restore; returns the previous mask. */
unsigned cn_cpu_set_mask(unsigned mask);

/* ------------------------------------------------------------------ dtype */
enum cn_dtype {
    CN_BOOL = 1,
    CN_I8 = 2, CN_I16 = 3, CN_I32 = 4, CN_I64 = 5,
    CN_U8 = 6, CN_U16 = 7, CN_U32 = 8, CN_U64 = 9,
    CN_F16 = 10, CN_BF16 = 11, CN_F32 = 12, CN_F64 = 13
};
/* Bytes per element, or 0 for an unknown dtype. */
size_t cn_dtype_size(int dtype);

/* ----------------------------------------------------------------- CRC32C */
/* CRC32C (Castagnoli, reflected, as in iSCSI/ext4) of data, continuing from
 * crc (pass 0 to start).  Uses AVX-512 VPCLMULQDQ, SSE4.2/PCLMUL or ARMv8 CRC
 * when present (runtime dispatch). */
uint32_t cn_crc32c(uint32_t crc, const void *data, size_t n);
/* The table-driven portable version, for tests and as the fallback. */
uint32_t cn_crc32c_portable(uint32_t crc, const void *data, size_t n);
/* Name of the implementation cn_crc32c dispatches to right now. */
const char *cn_crc32c_impl(void);
/* Copy n bytes src -> dst and return the CRC32C of them in *crc (continuing
 * from its input value) in one pass over src.  Overlapping buffers are
 * CN_E_INVAL.  Large copies (>= 4 MiB) use non-temporal stores, so dst is
 * not left in cache. */
int cn_copy_crc32c(void *dst, const void *src, size_t n, uint32_t *crc);

/* ------------------------------------------------------------ wire frame */
/* The 32-byte frame prefix of cellnet/wire/frame.py: header_len u32 at 8,
 * header_crc at 12, payload_len u64 at 16, payload_crc at 24 and prefix_crc
 * (CRC32C of bytes 0..27) at 28, all little-endian. */
#define CN_FRAME_PREFIX_SIZE 32
/* head holds 32 bytes for the prefix, then the CBOR headers (head_len bytes
 * in all).  Writes the prefix: magic, version 1, type, flags, the lengths,
 * the header CRC, the payload CRC (cn_crc32c(payload_crc, last, last_len):
 * pass the CRC of the payload segments before the last one, or 0) and the
 * prefix CRC. */
int cn_frame_seal(void *head, size_t head_len, unsigned type, unsigned flags,
                  uint64_t payload_len, const void *last, size_t last_len, uint32_t payload_crc);
/* Check the frame starting at buf + offset, of which n bytes are readable:
 * its prefix, header and payload CRCs (CN_E_CHECKSUM; the prefix first, so
 * no length is used before its own checksum holds), that it fits in n
 * (CN_E_TRUNCATED), and that a non-empty header block is exactly one CBOR
 * item (as cn_cbor_check). */
int cn_frame_verify(const void *buf, size_t offset, size_t n);
/* CN_OK iff data[0..n) is exactly one well-formed CBOR data item (nesting at
 * most CN_CBOR_MAX_DEPTH): CN_E_TRUNCATED if it ends early, CN_E_FORMAT if it
 * is malformed or bytes follow it, CN_E_LIMIT if it nests deeper.  Nothing is
 * decoded: this only proves where the item ends. */
#define CN_CBOR_MAX_DEPTH 64
int cn_cbor_check(const void *data, size_t n);

/* ------------------------------------------------------------ tensor pack */
/*
 * A pack is one contiguous byte string:
 *   [head: fixed header | entry table | dims | names | metadata | zero pad]
 *   [tensor 0 data | pad to 64] [tensor 1 data | pad to 64] ...
 * Every tensor's data starts at a 64-byte aligned offset.  The head carries a
 * CRC32C of itself; each entry carries the CRC32C of its tensor's bytes.
 * Metadata is opaque bytes to C (Python stores CBOR there).
 */
#define CN_PACK_ALIGN     64
#define CN_PACK_MAX_NDIM  64
/* Limits cn_pack_open applies when given NULL (or a zero field). */
#define CN_PACK_DEFAULT_MAX_TENSORS   (1u << 20)
#define CN_PACK_DEFAULT_MAX_NAME_LEN  65535u
#define CN_PACK_DEFAULT_MAX_META_LEN  (64ull << 20)

typedef struct cn_pack_item {
    /* in */
    const char *name;      /* UTF-8, not NUL-terminated */
    uint32_t name_len;
    int32_t dtype;         /* enum cn_dtype */
    uint32_t ndim;
    const uint64_t *shape; /* ndim entries */
    const void *data;      /* C-contiguous tensor bytes (may be NULL when only planning) */
    /* out (set by cn_pack_plan / cn_pack_write) */
    uint64_t nbytes;       /* element count * dtype size */
    uint64_t data_off;     /* offset of the data inside the pack */
    uint32_t crc;          /* CRC32C of the data (set by cn_pack_write) */
} cn_pack_item;

/* Validate items and lay the pack out: sets nbytes/data_off of every item,
 * *head_len (bytes before the first tensor's data) and *total_len.
 * CN_E_DTYPE: unknown dtype; CN_E_LIMIT: ndim > CN_PACK_MAX_NDIM or a size
 * overflows; CN_E_INVAL: NULL name/shape with a nonzero length. */
int cn_pack_plan(cn_pack_item *items, size_t n, size_t meta_len,
                 uint64_t *head_len, uint64_t *total_len);

/* Write a pack (plans it again itself; nothing is written on error).  copy_data != 0: write the whole pack into buf
 * (cap >= total_len), copying and checksumming tensor data in one pass.
 * copy_data == 0: write only the head (cap >= head_len), checksumming the
 * tensors in place; the caller sends head, then each tensor's bytes followed
 * by (next data_off - data_off - nbytes) zero bytes. */
int cn_pack_write(cn_pack_item *items, size_t n, const void *meta, size_t meta_len,
                  void *buf, uint64_t cap, int copy_data);

/* A zero field means "the default" (CN_PACK_DEFAULT_*; max_ndim:
 * CN_PACK_MAX_NDIM; max_total_len: none). */
typedef struct cn_pack_limits {
    uint32_t max_tensors;
    uint32_t max_ndim;      /* <= CN_PACK_MAX_NDIM */
    uint32_t max_name_len;
    uint64_t max_meta_len;
    uint64_t max_total_len;
} cn_pack_limits;

typedef struct cn_pack_info {
    uint32_t version;
    uint32_t n_tensors;
    uint64_t head_len;
    uint64_t total_len;
    uint64_t meta_off;
    uint64_t meta_len;
} cn_pack_info;

typedef struct cn_pack_entry {
    uint64_t name_off;      /* offset of the name bytes inside the pack */
    uint32_t name_len;
    int32_t dtype;
    uint32_t ndim;
    uint32_t crc;
    uint64_t data_off;
    uint64_t nbytes;
    uint64_t shape[CN_PACK_MAX_NDIM];
} cn_pack_entry;

/* Length of the fixed header; a pack is never shorter. */
size_t cn_pack_header_len(void);

/* Read and fully validate the head of a pack (magic, version, head CRC,
 * every entry: dtype, ndim, shape product vs nbytes, alignment, ranges,
 * overlaps, name and metadata ranges) against len and limits (NULL: the
 * defaults).  Does not read tensor data.  Only len bytes are touched.
 * When the head is valid but len < total_len, *info is filled and the result
 * is CN_E_TRUNCATED: a receiver can open the head before the data arrives. */
int cn_pack_open(const void *buf, uint64_t len, const cn_pack_limits *limits,
                 cn_pack_info *info);

/* Validate the head (structure only, no limits) and copy the entry table
 * into out[0..n) (n >= n_tensors, else CN_E_NOSPACE).  Needs only the head
 * (len >= head_len); unused shape slots are zero.  On an error the contents
 * of out[] are unspecified. */
int cn_pack_entries(const void *buf, uint64_t len, cn_pack_entry *out, size_t n);

/* Validate the head and check the data CRC of tensor i (i < 0: every
 * tensor).  len must cover total_len.  CN_E_INVAL: i >= n_tensors. */
int cn_pack_verify(const void *buf, uint64_t len, int64_t i);

/* ------------------------------------------------------------ aggregation */
/* Float kernels take n elements of C-contiguous, native-endian data at any
 * alignment; n == 0 is a no-op.  Accumulators are CN_F32 or CN_F64; inputs
 * and outputs any of CN_F16/BF16/F32/F64 (else CN_E_DTYPE).  Arithmetic is
 * in the accumulator's precision (inputs are widened exactly; an f64 input
 * into an f32 accumulator is first rounded to f32).  SIMD builds use FMA, so
 * results may differ from the portable build in the last bit. */

/* Most inputs the median / trimmed mean take at once. */
#define CN_AGG_MAX_INPUTS 256

/* acc += w * x, one pass.  w must be finite (else CN_E_INVAL). */
int cn_agg_accumulate(void *acc, int acc_dtype, const void *x, int x_dtype,
                      uint64_t n, double w);

/* acc += sum_k w[k] * xs[k], one pass over all k inputs at once (same
 * dtype): the accumulator is read and written once per 8 inputs. */
int cn_agg_accumulate_many(void *acc, int acc_dtype, const void *const *xs, int x_dtype,
                           const double *w, size_t k, uint64_t n);

/* out = acc / total_weight, divided in the accumulator's precision, then
 * rounded (nearest even) to out_dtype.  total_weight must be finite and > 0.
 * out may alias acc if both start at the same address and out's element is
 * no wider than acc's. */
int cn_agg_finalize(const void *acc, int acc_dtype, uint64_t n, double total_weight,
                    void *out, int out_dtype);

/* Coordinate-wise median of k inputs (same dtype, 1 <= k <= CN_AGG_MAX_INPUTS),
 * computed in double and rounded to out_dtype.  The median of an even count
 * is the mean of the two middle values.  A coordinate with any NaN gives NaN
 * (as np.median); infinities sort normally. */
int cn_agg_median(const void *const *xs, int x_dtype, size_t k, uint64_t n,
                  void *out, int out_dtype);

/* Coordinate-wise mean after dropping the `trim` smallest and `trim` largest
 * values (2*trim < k <= CN_AGG_MAX_INPUTS).  NaN as for the median. */
int cn_agg_trimmed_mean(const void *const *xs, int x_dtype, size_t k, size_t trim,
                        uint64_t n, void *out, int out_dtype);

/* Euclidean norm of x, accumulated in double (f64 input whose squares would
 * overflow or underflow is rescaled by max|x|).  NaN in x gives NaN. */
int cn_l2_norm(const void *x, int dtype, uint64_t n, double *out);

/* Scale x in place by s = min(1, max_norm / ||x||) (one rounding per
 * element); *scale gets s.  max_norm must be finite and >= 0; a non-finite
 * norm is CN_E_INVAL and leaves x unchanged. */
int cn_clip_norm(void *x, int dtype, uint64_t n, double max_norm, double *scale);

/* ----------------------------------------------------------- quantization */
/* Convert n values between float types (CN_F16/BF16/F32/F64) with one
 * rounding to nearest even (f64 -> f16/bf16 too); overflow to +-inf, NaN stays
 * NaN, subnormals exact.  src and dst must not overlap. */
int cn_convert(const void *src, int src_dtype, void *dst, int dst_dtype, uint64_t n);

/* Number of per-block scales for n values in blocks of `block` (0 if block == 0). */
uint64_t cn_q8_nblocks(uint64_t n, uint32_t block);

/* Symmetric blockwise int8.  Values are taken as float32 (f64 rounded once);
 * per block b of `block` values (the last may be shorter):
 * scale_b = max|x| / 127 (float32), q = round_half_even(x * 127 / max|x|)
 * clamped to [-127, 127]; an all-zero block has scale 0 and q = 0.
 * |dequant(q) - x| <= scale_b / 2 (+ float32 rounding) per element.
 * Non-finite input (or f64 beyond float32 range) is CN_E_INVAL; q and
 * scales (cn_q8_nblocks entries) are then unspecified.  block must be > 0. */
int cn_quantize_q8(const void *x, int x_dtype, uint64_t n, uint32_t block,
                   int8_t *q, float *scales);
/* out = q * scale_b, in float32 (double for a CN_F64 out), rounded to out_dtype. */
int cn_dequantize_q8(const int8_t *q, const float *scales, uint64_t n, uint32_t block,
                     void *out, int out_dtype);

#ifdef __cplusplus
}
#endif
#endif /* CELLNET_NATIVE_H */
