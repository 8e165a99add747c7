/* Tensor pack: a named set of n-d arrays plus opaque metadata in one
 * checksummed, 64-byte aligned byte string that decodes zero-copy.
 *
 * Format, version 1 (every integer little-endian)
 * ------------------------------------------------
 *   fixed header, 64 bytes:
 *      0  u8[4] magic "CNPK"
 *      4  u16   version (1)
 *      6  u16   flags (no bits defined: must be 0)
 *      8  u32   n_tensors
 *     12  u32   head_crc: CRC32C of bytes [0, head_len) with this field read as 0
 *     16  u64   head_len: bytes before tensor data; a multiple of 64
 *     24  u64   total_len: whole pack; a multiple of 64
 *     32  u64   meta_off \ metadata range, inside the head,
 *     40  u64   meta_len / after the names
 *     48  u64   n_dims: sum of every entry's ndim
 *     56  u64   reserved (0)
 *   entry table at 64, n_tensors entries of 40 bytes:
 *      0  u64   data_off (64-byte aligned, >= head_len, ascending, no overlap)
 *      8  u64   nbytes (== product(shape) * dtype size)
 *     16  u64   name_off \ UTF-8 name range, inside the names area
 *     24  u32   name_len /
 *     28  u32   crc: CRC32C of the tensor's nbytes data bytes
 *     32  u8    dtype (enum cn_dtype)
 *     33  u8    ndim (<= CN_PACK_MAX_NDIM)
 *     34  u8[6] reserved (0)
 *   dims: n_dims u64, each entry's shape in entry order
 *   names area, then metadata, then zero bytes up to head_len
 *   tensor data, each at its data_off, zero padded to the next 64 bytes;
 *   total_len is the end of the last tensor rounded up to 64 (or head_len).
 *
 * The decoder checks, in order: magic (FORMAT), version (VERSION), the head is
 * all there (TRUNCATED), head CRC (CHECKSUM), limits (LIMIT), then every range
 * before it is used, with overflow-free arithmetic (x <= end - off, never
 * off + x <= end).  It reads only [0, len) and never allocates.
 */
#include <string.h>

#include "internal.h"

#define HDR_LEN 64u
#define ENTRY_LEN 40u
#define VERSION 1u
static const unsigned char MAGIC[4] = {'C', 'N', 'P', 'K'};

static uint64_t rd(const unsigned char *p, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

static void wr(unsigned char *p, uint64_t v, int n) {
    for (int i = 0; i < n; i++) { p[i] = (unsigned char)v; v >>= 8; }
}

static int is_zero(const unsigned char *p, size_t n) {
    unsigned char acc = 0;
    for (size_t i = 0; i < n; i++) acc |= p[i];
    return acc == 0;
}

/* Round up to 64; 0 on overflow (callers treat 0 as failure for v > 0). */
static uint64_t align64(uint64_t v) {
    if (v > UINT64_MAX - 63) return 0;
    return (v + 63) & ~(uint64_t)63;
}

/* product(shape) * size into *out; -1 on overflow.  A zero dim gives 0. */
static int shape_bytes(const uint64_t *shape, const unsigned char *dims, uint32_t ndim,
                       uint64_t size, uint64_t *out) {
    uint64_t prod = size;
    int overflow = 0;
    for (uint32_t k = 0; k < ndim; k++) {
        uint64_t d = shape ? shape[k] : rd(dims + 8 * (size_t)k, 8);
        if (d == 0) { *out = 0; return 0; }
        if (prod > UINT64_MAX / d) overflow = 1;
        else prod *= d;
    }
    if (overflow) return -1;
    *out = prod;
    return 0;
}

/* ---------------------------------------------------------------- decode */
typedef struct lims {
    uint64_t tensors, ndim, name_len, meta_len, total_len;
} lims;

static const lims NO_LIMITS = {UINT32_MAX, CN_PACK_MAX_NDIM, UINT32_MAX, UINT64_MAX, UINT64_MAX};

static lims make_lims(const cn_pack_limits *l) {
    lims r = {CN_PACK_DEFAULT_MAX_TENSORS, CN_PACK_MAX_NDIM, CN_PACK_DEFAULT_MAX_NAME_LEN,
              CN_PACK_DEFAULT_MAX_META_LEN, UINT64_MAX};
    if (!l) return r;
    if (l->max_tensors) r.tensors = l->max_tensors;
    if (l->max_ndim) r.ndim = l->max_ndim < CN_PACK_MAX_NDIM ? l->max_ndim : CN_PACK_MAX_NDIM;
    if (l->max_name_len) r.name_len = l->max_name_len;
    if (l->max_meta_len) r.meta_len = l->max_meta_len;
    if (l->max_total_len) r.total_len = l->max_total_len;
    return r;
}

static uint32_t head_crc(const unsigned char *b, uint64_t head_len) {
    static const unsigned char zero4[4] = {0, 0, 0, 0};
    uint32_t c = cn_crc32c(0, b, 12);
    c = cn_crc32c(c, zero4, 4);
    return cn_crc32c(c, b + 16, (size_t)(head_len - 16));
}

/* parse() result: the head is valid (info filled) but the data is not all there. */
#define DATA_MISSING 1

/* Validate the head of b[0..len) and fill info (and out[] when not NULL).
 * Returns DATA_MISSING after filling info when only tensor data is missing. */
static int parse(const unsigned char *b, uint64_t len, const lims *L, cn_pack_info *info,
                 cn_pack_entry *out) {
    if (!b && len) return CN_E_INVAL;
    if (len < 4) return CN_E_TRUNCATED;
    if (memcmp(b, MAGIC, 4) != 0) return CN_E_FORMAT;
    if (len < 6) return CN_E_TRUNCATED;
    if (rd(b + 4, 2) != VERSION) return CN_E_VERSION;
    if (len < HDR_LEN) return CN_E_TRUNCATED;
    uint64_t flags = rd(b + 6, 2), n = rd(b + 8, 4), crc = rd(b + 12, 4);
    uint64_t head_len = rd(b + 16, 8), total_len = rd(b + 24, 8);
    uint64_t meta_off = rd(b + 32, 8), meta_len = rd(b + 40, 8), n_dims = rd(b + 48, 8);
    if (flags || rd(b + 56, 8)) return CN_E_FORMAT;
    if (head_len < HDR_LEN || head_len % 64 || total_len % 64 || total_len < head_len)
        return CN_E_FORMAT;
    if (head_len > len) return CN_E_TRUNCATED;
    if (head_crc(b, head_len) != crc) return CN_E_CHECKSUM;
    if (n > L->tensors || meta_len > L->meta_len || total_len > L->total_len) return CN_E_LIMIT;

    if (n_dims > n * CN_PACK_MAX_NDIM) return CN_E_FORMAT;
    uint64_t names = HDR_LEN + n * ENTRY_LEN + n_dims * 8; /* < 2^44: no overflow */
    if (names > head_len) return CN_E_RANGE;
    if (meta_off < names || meta_off > head_len || meta_len > head_len - meta_off)
        return CN_E_RANGE;

    uint64_t dim_cursor = 0, prev_end = head_len;
    for (uint64_t i = 0; i < n; i++) {
        const unsigned char *e = b + HDR_LEN + i * ENTRY_LEN;
        uint64_t data_off = rd(e, 8), nbytes = rd(e + 8, 8), name_off = rd(e + 16, 8);
        uint64_t name_len = rd(e + 24, 4), dtype = rd(e + 32, 1), ndim = rd(e + 33, 1);
        size_t size = cn_dtype_size((int)dtype); /* unknown dtype: malformed input */
        if (!size || !is_zero(e + 34, 6) || ndim > CN_PACK_MAX_NDIM) return CN_E_FORMAT;
        if (ndim > L->ndim || name_len > L->name_len) return CN_E_LIMIT;
        if (ndim > n_dims - dim_cursor) return CN_E_FORMAT;
        const unsigned char *dims = b + HDR_LEN + n * ENTRY_LEN + dim_cursor * 8;
        uint64_t want;
        if (shape_bytes(NULL, dims, (uint32_t)ndim, size, &want) || want != nbytes)
            return CN_E_FORMAT;
        if (name_off < names || name_off > meta_off || name_len > meta_off - name_off)
            return CN_E_RANGE;
        if (data_off % 64 || data_off < prev_end || data_off > total_len ||
            nbytes > total_len - data_off)
            return CN_E_RANGE;
        prev_end = data_off + nbytes;
        if (out) {
            cn_pack_entry *o = &out[i];
            memset(o, 0, sizeof *o);
            o->name_off = name_off;
            o->name_len = (uint32_t)name_len;
            o->dtype = (int32_t)dtype;
            o->ndim = (uint32_t)ndim;
            o->crc = (uint32_t)rd(e + 28, 4);
            o->data_off = data_off;
            o->nbytes = nbytes;
            for (uint64_t k = 0; k < ndim; k++) o->shape[k] = rd(dims + 8 * k, 8);
        }
        dim_cursor += ndim;
    }
    if (dim_cursor != n_dims) return CN_E_FORMAT;
    if (align64(prev_end) != total_len) return CN_E_FORMAT;
    if (info) {
        info->version = VERSION;
        info->n_tensors = (uint32_t)n;
        info->head_len = head_len;
        info->total_len = total_len;
        info->meta_off = meta_off;
        info->meta_len = meta_len;
    }
    return len < total_len ? DATA_MISSING : CN_OK;
}

size_t cn_pack_header_len(void) { return HDR_LEN; }

int cn_pack_open(const void *buf, uint64_t len, const cn_pack_limits *limits,
                 cn_pack_info *info) {
    if (!info) return CN_E_INVAL;
    lims L = make_lims(limits);
    int st = parse((const unsigned char *)buf, len, &L, info, NULL);
    return st == DATA_MISSING ? CN_E_TRUNCATED : st;
}

int cn_pack_entries(const void *buf, uint64_t len, cn_pack_entry *out, size_t n) {
    const unsigned char *b = (const unsigned char *)buf;
    cn_pack_info info;
    /* The usual call (out sized from cn_pack_open) needs one pass over the
     * head, filling out[] as it validates; on an error out[] is unspecified. */
    if (out && b && len >= HDR_LEN && rd(b + 8, 4) <= n) {
        int st = parse(b, len, &NO_LIMITS, &info, out);
        return st < 0 ? st : CN_OK;
    }
    /* Otherwise validate first, so a malformed head reports its own error. */
    int st = parse(b, len, &NO_LIMITS, &info, NULL);
    if (st < 0) return st;
    if (!out && info.n_tensors) return CN_E_INVAL;
    if (n < info.n_tensors) return CN_E_NOSPACE;
    return CN_OK; /* no entries to copy */
}

int cn_pack_verify(const void *buf, uint64_t len, int64_t i) {
    const unsigned char *b = (const unsigned char *)buf;
    cn_pack_info info;
    int st = parse(b, len, &NO_LIMITS, &info, NULL);
    if (st < 0) return st;
    if (st == DATA_MISSING) return CN_E_TRUNCATED;
    if (i >= (int64_t)info.n_tensors) return CN_E_INVAL;
    uint64_t first = i < 0 ? 0 : (uint64_t)i, last = i < 0 ? info.n_tensors : (uint64_t)i + 1;
    for (uint64_t k = first; k < last; k++) {
        const unsigned char *e = b + HDR_LEN + k * ENTRY_LEN;
        uint64_t off = rd(e, 8), nb = rd(e + 8, 8);
        if (cn_crc32c(0, b + off, (size_t)nb) != (uint32_t)rd(e + 28, 4)) return CN_E_CHECKSUM;
    }
    return CN_OK;
}

/* ---------------------------------------------------------------- encode */
typedef struct layout {
    uint64_t names, meta_off, head_len, total_len, n_dims;
} layout;

static int plan(cn_pack_item *items, size_t n, size_t meta_len, layout *lay) {
    if (n && !items) return CN_E_INVAL;
    if (n > UINT32_MAX) return CN_E_LIMIT;
    uint64_t n_dims = 0, names_len = 0;
    for (size_t i = 0; i < n; i++) {
        const cn_pack_item *it = &items[i];
        size_t size = cn_dtype_size(it->dtype);
        if (!size) return CN_E_DTYPE;
        if (it->ndim > CN_PACK_MAX_NDIM) return CN_E_LIMIT;
        if ((it->ndim && !it->shape) || (it->name_len && !it->name)) return CN_E_INVAL;
        if (shape_bytes(it->shape, NULL, it->ndim, size, &items[i].nbytes) ||
            items[i].nbytes > SIZE_MAX)
            return CN_E_LIMIT;
        n_dims += it->ndim;
        names_len += it->name_len; /* < 2^64: n < 2^32 names of < 2^32 bytes */
    }
    uint64_t names = HDR_LEN + (uint64_t)n * ENTRY_LEN + n_dims * 8;
    uint64_t meta_off = names + names_len;
    if ((uint64_t)meta_len > UINT64_MAX - meta_off) return CN_E_LIMIT;
    uint64_t cur = align64(meta_off + meta_len);
    if (!cur) return CN_E_LIMIT;
    lay->names = names;
    lay->meta_off = meta_off;
    lay->head_len = cur;
    lay->n_dims = n_dims;
    for (size_t i = 0; i < n; i++) {
        items[i].data_off = cur;
        if (items[i].nbytes > UINT64_MAX - cur) return CN_E_LIMIT;
        uint64_t next = align64(cur + items[i].nbytes);
        if (!next) return CN_E_LIMIT;
        cur = next;
    }
    lay->total_len = cur;
    return CN_OK;
}

int cn_pack_plan(cn_pack_item *items, size_t n, size_t meta_len, uint64_t *head_len,
                 uint64_t *total_len) {
    if (!head_len || !total_len) return CN_E_INVAL;
    layout lay;
    int st = plan(items, n, meta_len, &lay);
    if (st < 0) return st;
    *head_len = lay.head_len;
    *total_len = lay.total_len;
    return CN_OK;
}

static void write_head(const cn_pack_item *items, size_t n, const void *meta, size_t meta_len,
                       const layout *lay, unsigned char *b) {
    memset(b, 0, HDR_LEN);
    memcpy(b, MAGIC, 4);
    wr(b + 4, VERSION, 2);
    wr(b + 8, n, 4);
    wr(b + 16, lay->head_len, 8);
    wr(b + 24, lay->total_len, 8);
    wr(b + 32, lay->meta_off, 8);
    wr(b + 40, meta_len, 8);
    wr(b + 48, lay->n_dims, 8);
    unsigned char *dims = b + HDR_LEN + n * ENTRY_LEN;
    uint64_t name_off = lay->names;
    for (size_t i = 0; i < n; i++) {
        const cn_pack_item *it = &items[i];
        unsigned char *e = b + HDR_LEN + i * ENTRY_LEN;
        memset(e, 0, ENTRY_LEN);
        wr(e, it->data_off, 8);
        wr(e + 8, it->nbytes, 8);
        wr(e + 16, name_off, 8);
        wr(e + 24, it->name_len, 4);
        wr(e + 28, it->crc, 4);
        wr(e + 32, (uint64_t)it->dtype, 1);
        wr(e + 33, it->ndim, 1);
        for (uint32_t k = 0; k < it->ndim; k++, dims += 8) wr(dims, it->shape[k], 8);
        if (it->name_len) memcpy(b + name_off, it->name, it->name_len);
        name_off += it->name_len;
    }
    if (meta_len) memcpy(b + lay->meta_off, meta, meta_len);
    uint64_t meta_end = lay->meta_off + meta_len;
    memset(b + meta_end, 0, (size_t)(lay->head_len - meta_end));
    wr(b + 12, head_crc(b, lay->head_len), 4);
}

int cn_pack_write(cn_pack_item *items, size_t n, const void *meta, size_t meta_len, void *buf,
                  uint64_t cap, int copy_data) {
    if (!buf || (meta_len && !meta)) return CN_E_INVAL;
    layout lay;
    int st = plan(items, n, meta_len, &lay);
    if (st < 0) return st;
    if (cap < (copy_data ? lay.total_len : lay.head_len)) return CN_E_NOSPACE;
    unsigned char *b = (unsigned char *)buf;
    uintptr_t lo = (uintptr_t)b, hi = lo + (uintptr_t)(copy_data ? lay.total_len : lay.head_len);
    for (size_t i = 0; i < n; i++) {
        uintptr_t d = (uintptr_t)items[i].data;
        if (!items[i].nbytes) continue;
        if (!d) return CN_E_INVAL;
        if (d < hi && lo < d + (uintptr_t)items[i].nbytes) return CN_E_INVAL; /* overlaps buf */
    }
    for (size_t i = 0; i < n; i++) {
        cn_pack_item *it = &items[i];
        uint32_t c = 0;
        if (!copy_data) {
            c = cn_crc32c(0, it->data, (size_t)it->nbytes);
        } else {
            st = cn__copy_crc32c(b + it->data_off, it->data, (size_t)it->nbytes, &c,
                                 lay.total_len >= CN_NT_THRESHOLD);
            if (st < 0) return st;
            uint64_t end = it->data_off + it->nbytes;
            uint64_t next = i + 1 < n ? items[i + 1].data_off : lay.total_len;
            memset(b + end, 0, (size_t)(next - end));
        }
        it->crc = c;
    }
    write_head(items, n, meta, meta_len, &lay, b);
    return CN_OK;
}
