/* CRC32C (Castagnoli): portable slicing-by-8 and SSE4.2 paths with runtime
 * dispatch, plus copy-and-checksum in one pass. */
#include <string.h>

#include "internal.h"

#define POLY 0x82f63b78u

static uint32_t g_table[8][256];
static int g_table_ready;

static void make_table(void) {
    if (__atomic_load_n(&g_table_ready, __ATOMIC_ACQUIRE)) return;
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c >> 1) ^ (POLY & (0u - (c & 1u)));
        g_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            g_table[t][i] = (g_table[t - 1][i] >> 8) ^ g_table[0][g_table[t - 1][i] & 0xff];
    __atomic_store_n(&g_table_ready, 1, __ATOMIC_RELEASE);
}

uint32_t cn_crc32c_portable(uint32_t crc, const void *data, size_t n) {
    make_table();
    const unsigned char *p = (const unsigned char *)data;
    uint32_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) { c = (c >> 8) ^ g_table[0][(c ^ *p++) & 0xff]; n--; }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        w ^= c;
        c = g_table[7][w & 0xff] ^ g_table[6][(w >> 8) & 0xff] ^ g_table[5][(w >> 16) & 0xff] ^
            g_table[4][(w >> 24) & 0xff] ^ g_table[3][(w >> 32) & 0xff] ^
            g_table[2][(w >> 40) & 0xff] ^ g_table[1][(w >> 48) & 0xff] ^ g_table[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) c = (c >> 8) ^ g_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

#if defined(CN_X86)
#include <nmmintrin.h>
__attribute__((target("sse4.2"))) static uint32_t crc_sse42(uint32_t crc, const void *data,
                                                             size_t n) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) { c = _mm_crc32_u8((uint32_t)c, *p++); n--; }
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        c = _mm_crc32_u64(c, w);
        p += 8;
        n -= 8;
    }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}
#endif

uint32_t cn_crc32c(uint32_t crc, const void *data, size_t n) {
#if defined(CN_X86)
    if (cn__cpu_active() & CN_CPU_SSE42) return crc_sse42(crc, data, n);
#endif
    return cn_crc32c_portable(crc, data, n);
}

const char *cn_crc32c_impl(void) {
#if defined(CN_X86)
    if (cn__cpu_active() & CN_CPU_SSE42) return "sse4.2";
#endif
    return "portable";
}

int cn_copy_crc32c(void *dst, const void *src, size_t n, uint32_t *crc) {
    if ((!dst || !src) && n) return CN_E_INVAL;
    if (!crc) return CN_E_INVAL;
    const size_t block = 32 * 1024;
    uint32_t c = *crc;
    for (size_t off = 0; off < n; off += block) {
        size_t len = n - off < block ? n - off : block;
        c = cn_crc32c(c, (const char *)src + off, len);
        memcpy((char *)dst + off, (const char *)src + off, len);
    }
    *crc = c;
    return CN_OK;
}
