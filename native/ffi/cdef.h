/* cffi declarations of native/include/cellnet_native.h (checked against it by
 * tests/native/test_binding.py).  Macros use "..." so the C compiler fills
 * in their values. */
#define CN_ABI_VERSION ...
#define CN_OK ...
#define CN_E_INVAL ...
#define CN_E_NOSPACE ...
#define CN_E_TRUNCATED ...
#define CN_E_FORMAT ...
#define CN_E_CHECKSUM ...
#define CN_E_RANGE ...
#define CN_E_LIMIT ...
#define CN_E_DTYPE ...
#define CN_E_SHAPE ...
#define CN_E_VERSION ...
#define CN_CPU_SSE42 ...
#define CN_CPU_PCLMUL ...
#define CN_CPU_AVX2 ...
#define CN_CPU_FMA ...
#define CN_CPU_F16C ...
#define CN_CPU_AVX512F ...
#define CN_CPU_AVX512BW ...
#define CN_CPU_AVX512VL ...
#define CN_CPU_VPCLMUL ...
#define CN_CPU_ARM_CRC ...
#define CN_PACK_ALIGN ...
#define CN_PACK_MAX_NDIM ...
#define CN_PACK_DEFAULT_MAX_TENSORS ...
#define CN_PACK_DEFAULT_MAX_NAME_LEN ...
#define CN_PACK_DEFAULT_MAX_META_LEN ...
#define CN_AGG_MAX_INPUTS ...

const char *cn_strerror(int status);
int cn_abi_version(void);
int cn_noop(int x);

unsigned cn_cpu_features(void);
unsigned cn_cpu_set_mask(unsigned mask);

enum cn_dtype {
    CN_BOOL = 1,
    CN_I8 = 2, CN_I16 = 3, CN_I32 = 4, CN_I64 = 5,
    CN_U8 = 6, CN_U16 = 7, CN_U32 = 8, CN_U64 = 9,
    CN_F16 = 10, CN_BF16 = 11, CN_F32 = 12, CN_F64 = 13
};
size_t cn_dtype_size(int dtype);

uint32_t cn_crc32c(uint32_t crc, const void *data, size_t n);
uint32_t cn_crc32c_portable(uint32_t crc, const void *data, size_t n);
const char *cn_crc32c_impl(void);
int cn_copy_crc32c(void *dst, const void *src, size_t n, uint32_t *crc);
#define CN_FRAME_PREFIX_SIZE ...
int cn_frame_seal(void *head, size_t head_len, unsigned type, unsigned flags,
                  uint64_t payload_len, const void *last, size_t last_len, uint32_t payload_crc);
int cn_frame_verify(const void *buf, size_t offset, size_t n);
#define CN_CBOR_MAX_DEPTH ...
int cn_cbor_check(const void *data, size_t n);

typedef struct cn_pack_item {
    const char *name;
    uint32_t name_len;
    int32_t dtype;
    uint32_t ndim;
    const uint64_t *shape;
    const void *data;
    uint64_t nbytes;
    uint64_t data_off;
    uint32_t crc;
} cn_pack_item;
int cn_pack_plan(cn_pack_item *items, size_t n, size_t meta_len,
                 uint64_t *head_len, uint64_t *total_len);
int cn_pack_write(cn_pack_item *items, size_t n, const void *meta, size_t meta_len,
                  void *buf, uint64_t cap, int copy_data);
typedef struct cn_pack_limits {
    uint32_t max_tensors;
    uint32_t max_ndim;
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
    uint64_t name_off;
    uint32_t name_len;
    int32_t dtype;
    uint32_t ndim;
    uint32_t crc;
    uint64_t data_off;
    uint64_t nbytes;
    uint64_t shape[64];
} cn_pack_entry;
size_t cn_pack_header_len(void);
int cn_pack_open(const void *buf, uint64_t len, const cn_pack_limits *limits,
                 cn_pack_info *info);
int cn_pack_entries(const void *buf, uint64_t len, cn_pack_entry *out, size_t n);
int cn_pack_verify(const void *buf, uint64_t len, int64_t i);

int cn_agg_accumulate(void *acc, int acc_dtype, const void *x, int x_dtype,
                      uint64_t n, double w);
int cn_agg_accumulate_many(void *acc, int acc_dtype, const void *const *xs, int x_dtype,
                           const double *w, size_t k, uint64_t n);
int cn_agg_finalize(const void *acc, int acc_dtype, uint64_t n, double total_weight,
                    void *out, int out_dtype);
int cn_agg_median(const void *const *xs, int x_dtype, size_t k, uint64_t n,
                  void *out, int out_dtype);
int cn_agg_trimmed_mean(const void *const *xs, int x_dtype, size_t k, size_t trim,
                        uint64_t n, void *out, int out_dtype);
int cn_l2_norm(const void *x, int dtype, uint64_t n, double *out);
int cn_clip_norm(void *x, int dtype, uint64_t n, double max_norm, double *scale);

int cn_convert(const void *src, int src_dtype, void *dst, int dst_dtype, uint64_t n);
uint64_t cn_q8_nblocks(uint64_t n, uint32_t block);
int cn_quantize_q8(const void *x, int x_dtype, uint64_t n, uint32_t block,
                   int8_t *q, float *scales);
int cn_dequantize_q8(const int8_t *q, const float *scales, uint64_t n, uint32_t block,
                     void *out, int out_dtype);
