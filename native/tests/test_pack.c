/* Hostile-input test of the tensor pack decoder (meant to run under ASan/UBSan):
 * encode a small pack, then open it at every truncation length, with every
 * single byte flipped, and with random byte fuzz.  Every call must return a
 * status and never read outside the buffer.  Also checks CRC32C vectors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cellnet_native.h"

static int failures;
#define EXPECT(cond, ...)                                   \
    do {                                                    \
        if (!(cond)) {                                      \
            failures++;                                     \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                   \
            fputc('\n', stderr);                            \
        }                                                   \
    } while (0)

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Exercise every decoder entry point on a private heap copy of exactly len
 * bytes (so ASan catches any read past len).  Returns cn_pack_open's status. */
static int probe(const unsigned char *src, uint64_t len) {
    unsigned char *b = malloc(len ? len : 1);
    if (!b) return CN_E_INVAL;
    if (len) memcpy(b, src, len);
    cn_pack_info info;
    int st = cn_pack_open(b, len, NULL, &info);
    static cn_pack_entry entries[8];
    int st2 = cn_pack_entries(b, len, entries, 8);
    int st3 = cn_pack_verify(b, len, -1);
    int st4 = cn_pack_verify(b, len, 0);
    EXPECT(st <= 0 && st2 <= 0 && st3 <= 0 && st4 <= 0, "positive status");
    free(b);
    return st;
}

static uint64_t rd64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* Recompute the head CRC after a mutation so the structural checks are reached. */
static void fix_head_crc(unsigned char *b, uint64_t len) {
    if (len < 64) return;
    uint64_t head = rd64(b + 16);
    if (head < 16 || head > len) return;
    static const unsigned char zero4[4] = {0, 0, 0, 0};
    uint32_t c = cn_crc32c(cn_crc32c(cn_crc32c(0, b, 12), zero4, 4), b + 16, (size_t)(head - 16));
    for (int i = 0; i < 4; i++) b[12 + i] = (unsigned char)(c >> (8 * i));
}

static int make_pack(unsigned char *buf, uint64_t cap, uint64_t *total) {
    static float a[6] = {1, 2, 3, 4, 5, 6};
    static int8_t c[3] = {-1, 0, 1};
    static double d = 2.5;
    uint64_t sa[2] = {2, 3}, sc[1] = {3}, se[2] = {0, 4};
    cn_pack_item items[4] = {
        {.name = "alpha", .name_len = 5, .dtype = CN_F32, .ndim = 2, .shape = sa, .data = a},
        {.name = "c", .name_len = 1, .dtype = CN_I8, .ndim = 1, .shape = sc, .data = c},
        {.name = "scalar", .name_len = 6, .dtype = CN_F64, .ndim = 0, .shape = NULL, .data = &d},
        {.name = "empty", .name_len = 5, .dtype = CN_U16, .ndim = 2, .shape = se, .data = NULL},
    };
    const char meta[] = "\xa1\x61k\x01"; /* CBOR {"k": 1} */
    uint64_t head;
    int st = cn_pack_plan(items, 4, 4, &head, total);
    if (st) return st;
    if (*total > cap) return CN_E_NOSPACE;
    return cn_pack_write(items, 4, meta, 4, buf, cap, 1);
}

static void test_crc(void) {
    const char *v = "123456789";
    EXPECT(cn_crc32c(0, v, 9) == 0xE3069283u, "crc vector");
    EXPECT(cn_crc32c_portable(0, v, 9) == 0xE3069283u, "portable vector");
    static unsigned char buf[70000], dst[70100];
    for (size_t i = 0; i < sizeof buf; i++) buf[i] = (unsigned char)rnd();
    for (int it = 0; it < 300; it++) {
        size_t off = rnd() % 64, n = rnd() % (sizeof buf - 64), doff = rnd() % 64;
        uint32_t c0 = (uint32_t)rnd();
        uint32_t want = cn_crc32c_portable(c0, buf + off, n);
        EXPECT(cn_crc32c(c0, buf + off, n) == want, "crc n=%zu off=%zu", n, off);
        uint32_t got = c0;
        EXPECT(cn_copy_crc32c(dst + doff, buf + off, n, &got) == CN_OK, "copy status");
        EXPECT(got == want && memcmp(dst + doff, buf + off, n) == 0, "copy n=%zu", n);
    }
}

/* Large copies take the non-temporal store path: check it at odd alignments. */
static void test_copy_large(void) {
    size_t n = (size_t)5 << 20;
    unsigned char *src = malloc(n + 64), *dst = malloc(n + 128);
    if (!src || !dst) { failures++; free(src); free(dst); return; }
    for (size_t i = 0; i < n + 64; i++) src[i] = (unsigned char)rnd();
    for (size_t doff = 0; doff < 3; doff++) {
        memset(dst, 0xee, n + 128);
        uint32_t c = 5, want = cn_crc32c_portable(5, src + 3, n - doff);
        EXPECT(cn_copy_crc32c(dst + 1 + doff * 31, src + 3, n - doff, &c) == CN_OK, "large");
        EXPECT(c == want && memcmp(dst + 1 + doff * 31, src + 3, n - doff) == 0, "large copy");
        EXPECT(dst[doff * 31] == 0xee && dst[1 + doff * 31 + n - doff] == 0xee, "bounds");
    }
    free(src);
    free(dst);
}

int main(void) {
    test_copy_large();
    test_crc();
    static unsigned char pack[4096];
    uint64_t total = 0;
    int st = make_pack(pack, sizeof pack, &total);
    EXPECT(st == CN_OK, "make_pack %d", st);
    if (st) return 1;
    EXPECT(probe(pack, total) == CN_OK, "intact pack opens");
    EXPECT(cn_pack_verify(pack, total, -1) == CN_OK, "intact pack verifies");

    cn_pack_info info;
    EXPECT(cn_pack_open(pack, total, NULL, &info) == CN_OK, "open");
    for (uint64_t len = 0; len < total; len++) {
        int s = probe(pack, len);
        EXPECT(s == CN_E_TRUNCATED, "truncated at %llu gave %d", (unsigned long long)len, s);
    }
    for (uint64_t i = 0; i < info.head_len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            pack[i] ^= (unsigned char)(1u << bit);
            int s = probe(pack, total);
            EXPECT(s < 0, "flip of byte %llu bit %d not detected", (unsigned long long)i, bit);
            pack[i] ^= (unsigned char)(1u << bit);
        }
    }
    for (uint64_t i = info.head_len; i < total; i++) {
        pack[i] ^= 0x5a;
        probe(pack, total);
        pack[i] ^= 0x5a;
    }
    static unsigned char fuzz[4096];
    for (int it = 0; it < 5000; it++) {
        memcpy(fuzz, pack, total);
        int flips = 1 + (int)(rnd() % 8);
        for (int k = 0; k < flips; k++) fuzz[rnd() % total] = (unsigned char)rnd();
        probe(fuzz, rnd() % (total + 1));
        for (uint64_t k = 0; k < total; k++) fuzz[k] = (unsigned char)rnd();
        memcpy(fuzz, "CNPK\x01\x00", 6);
        probe(fuzz, total);
    }
    /* Mutate the head and re-sign it: reaches every structural check. */
    int seen[16] = {0};
    for (int it = 0; it < 20000; it++) {
        memcpy(fuzz, pack, total);
        int flips = 1 + (int)(rnd() % 3);
        for (int k = 0; k < flips; k++) {
            uint64_t at = rnd() % info.head_len;
            if (rnd() & 1) fuzz[at] ^= (unsigned char)(1u << (rnd() % 8));
            else fuzz[at] = (unsigned char)rnd();
        }
        fix_head_crc(fuzz, total);
        int s = probe(fuzz, total);
        seen[-s < 16 ? -s : 15]++;
    }
    EXPECT(seen[-CN_E_RANGE] && seen[-CN_E_FORMAT], "structural checks hit");
    printf("re-signed fuzz statuses: ok %d range %d format %d limit %d trunc %d\n",
           seen[0], seen[-CN_E_RANGE], seen[-CN_E_FORMAT],
           seen[-CN_E_LIMIT], seen[-CN_E_TRUNCATED]);
    /* planning errors */
    uint64_t h, t, huge[2] = {1ull << 40, 1ull << 40};
    cn_pack_item bad = {.name = "x", .name_len = 1, .dtype = 99, .ndim = 0};
    EXPECT(cn_pack_plan(&bad, 1, 0, &h, &t) == CN_E_DTYPE, "bad dtype");
    bad.dtype = CN_F32;
    bad.ndim = 65;
    EXPECT(cn_pack_plan(&bad, 1, 0, &h, &t) == CN_E_LIMIT, "ndim 65");
    bad.ndim = 2;
    bad.shape = huge;
    EXPECT(cn_pack_plan(&bad, 1, 0, &h, &t) == CN_E_LIMIT, "shape overflow");
    EXPECT(cn_pack_write(&bad, 1, NULL, 0, pack, 64, 1) == CN_E_LIMIT, "write overflow");
    if (failures) fprintf(stderr, "%d failures\n", failures);
    else printf("test_pack: ok (pack of %llu bytes)\n", (unsigned long long)total);
    return failures ? 1 : 0;
}
