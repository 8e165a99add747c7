/* C-level checks of the basics (status strings, dtypes, CRC32C dispatch),
 * built with -DCN_BUILD_TESTS=ON and run under ASan/UBSan by
 * tests/native/test_sanitized.py. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cellnet_native.h"

static int failures;
#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                         \
        }                                                                       \
    } while (0)

int main(void) {
    CHECK(cn_abi_version() == CN_ABI_VERSION);
    CHECK(strcmp(cn_strerror(CN_OK), "ok") == 0);
    for (int s = CN_E_VERSION; s < 0; s++) CHECK(strcmp(cn_strerror(s), "unknown status") != 0);
    CHECK(cn_dtype_size(CN_F32) == 4 && cn_dtype_size(CN_BF16) == 2 && cn_dtype_size(99) == 0);

    const char *v = "123456789";
    CHECK(cn_crc32c(0, v, 9) == 0xE3069283u);
    CHECK(cn_crc32c_portable(0, v, 9) == 0xE3069283u);
    CHECK(cn_crc32c(0, NULL, 0) == 0);

    /* every length and alignment up to 300 bytes: dispatched == portable */
    unsigned char buf[320], dst[320];
    for (int i = 0; i < 320; i++) buf[i] = (unsigned char)(i * 131 + 7);
    for (size_t off = 0; off < 16; off++)
        for (size_t n = 0; n <= 300; n++) {
            uint32_t a = cn_crc32c(0, buf + off, n), b = cn_crc32c_portable(0, buf + off, n);
            CHECK(a == b);
            uint32_t c = 0;
            CHECK(cn_copy_crc32c(dst, buf + off, n, &c) == CN_OK);
            CHECK(c == a && memcmp(dst, buf + off, n) == 0);
        }
    unsigned prev = cn_cpu_set_mask(0);
    CHECK(strcmp(cn_crc32c_impl(), "portable") == 0);
    CHECK(cn_crc32c(0, v, 9) == 0xE3069283u);
    cn_cpu_set_mask(prev);

    if (failures) fprintf(stderr, "%d failure(s)\n", failures);
    return failures ? 1 : 0;
}
