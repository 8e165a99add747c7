/* Tensor pack: placeholder until the pack implementation lands. */
#include "internal.h"

size_t cn_pack_header_len(void) { return 64; }
int cn_pack_plan(cn_pack_item *items, size_t n, size_t meta_len, uint64_t *head_len,
                 uint64_t *total_len) { return CN_E_INVAL; }
int cn_pack_write(cn_pack_item *items, size_t n, const void *meta, size_t meta_len, void *buf,
                  uint64_t cap, int copy_data) { return CN_E_INVAL; }
int cn_pack_open(const void *buf, uint64_t len, const cn_pack_limits *limits,
                 cn_pack_info *info) { return CN_E_INVAL; }
int cn_pack_entries(const void *buf, uint64_t len, cn_pack_entry *out, size_t n) {
    return CN_E_INVAL;
}
int cn_pack_verify(const void *buf, uint64_t len, int64_t i) { return CN_E_INVAL; }
