/* Wire-frame helpers: a cellnet frame's three checksums in one call, and a
 * strict "exactly one CBOR item" check, so the Python wire layer makes one
 * native call per frame where it used to make three.
 *
 * Theory of operation
 * -------------------
 * The frame prefix (32 bytes, little-endian) is laid out in
 * cellnet/wire/frame.py: header_len u32 at 8, header_crc u32 at 12,
 * payload_len u64 at 16, payload_crc u32 at 24, prefix_crc u32 at 28 (the
 * CRC32C of bytes 0..27).  cn_frame_seal writes the whole prefix in front
 * of headers the caller has placed; cn_frame_verify checks them against a frame
 * held whole in memory, prefix CRC first, so no declared length is trusted
 * before its own checksum holds.
 *
 * cn_cbor_check walks the CBOR grammar (RFC 8949 section 3) without building
 * anything: an explicit stack of open containers, each with its items left
 * (definite) or a parity bit (indefinite map).  Every length is compared with
 * the bytes left before it is used, and a definite count can never exceed the
 * bytes left (each item takes at least one), so hostile input costs at most
 * one step per input byte.
 */
#include <string.h>

#include "internal.h"

static uint32_t ld32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t ld64(const uint8_t *p) { return (uint64_t)ld32(p) | (uint64_t)ld32(p + 4) << 32; }

static void st32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

int cn_frame_seal(void *head, size_t head_len, unsigned type, unsigned flags,
                  uint64_t payload_len, const void *last, size_t last_len, uint32_t payload_crc) {
    if (!head || head_len < CN_FRAME_PREFIX_SIZE || (last_len && !last)) return CN_E_INVAL;
    if (type > 0xff || flags > 0xffff || last_len > payload_len) return CN_E_INVAL;
    uint8_t *h = head;
    size_t hlen = head_len - CN_FRAME_PREFIX_SIZE;
    if ((uint64_t)hlen > UINT32_MAX) return CN_E_RANGE;
    h[0] = 0xce;
    h[1] = 0x11;
    h[2] = 1; /* version */
    h[3] = (uint8_t)type;
    h[4] = (uint8_t)flags;
    h[5] = (uint8_t)(flags >> 8);
    h[6] = h[7] = 0; /* reserved */
    st32(h + 8, (uint32_t)hlen);
    st32(h + 12, cn_crc32c(0, h + CN_FRAME_PREFIX_SIZE, hlen));
    st32(h + 16, (uint32_t)payload_len);
    st32(h + 20, (uint32_t)(payload_len >> 32));
    st32(h + 24, last_len ? cn_crc32c(payload_crc, last, last_len) : payload_crc);
    st32(h + 28, cn_crc32c(0, h, 28));
    return CN_OK;
}

int cn_frame_verify(const void *buf, size_t offset, size_t n) {
    if (!buf || n < CN_FRAME_PREFIX_SIZE) return CN_E_INVAL;
    const uint8_t *p = (const uint8_t *)buf + offset;
    if (cn_crc32c(0, p, 28) != ld32(p + 28)) return CN_E_CHECKSUM;
    uint64_t hlen = ld32(p + 8), plen = ld64(p + 16);
    size_t avail = n - CN_FRAME_PREFIX_SIZE;
    if (hlen > avail || plen > avail - hlen) return CN_E_TRUNCATED;
    const uint8_t *hdr = p + CN_FRAME_PREFIX_SIZE;
    if (cn_crc32c(0, hdr, (size_t)hlen) != ld32(p + 12)) return CN_E_CHECKSUM;
    if (cn_crc32c(0, hdr + hlen, (size_t)plen) != ld32(p + 24)) return CN_E_CHECKSUM;
    return hlen ? cn_cbor_check(hdr, (size_t)hlen) : CN_OK;
}

/* ------------------------------------------------------------------ CBOR */
enum { DEFINITE, INDEF_ARRAY, INDEF_MAP, INDEF_BYTES, INDEF_TEXT };

int cn_cbor_check(const void *data, size_t n) {
    if (!data && n) return CN_E_INVAL;
    const uint8_t *p = data, *end = p + n;
    struct { uint64_t left; int kind; } st[CN_CBOR_MAX_DEPTH];
    int depth = 0, tagged = 0;
    for (;;) {
        if (p == end) return CN_E_TRUNCATED;
        unsigned ib = *p++, major = ib >> 5, ai = ib & 31;
        int in_string = depth && st[depth - 1].kind >= INDEF_BYTES;
        uint64_t val = ai;
        if (ai == 31) {
            if (major == 7) { /* break: closes the innermost indefinite container */
                if (!depth || st[depth - 1].kind == DEFINITE || tagged) return CN_E_FORMAT;
                if (st[depth - 1].kind == INDEF_MAP && st[depth - 1].left) return CN_E_FORMAT;
                depth--;
                goto item_done;
            }
            if (major < 2 || major == 6 || in_string) return CN_E_FORMAT;
            if (depth == CN_CBOR_MAX_DEPTH) return CN_E_LIMIT;
            st[depth].left = 0;
            st[depth].kind = major == 2 ? INDEF_BYTES : major == 3 ? INDEF_TEXT
                           : major == 4 ? INDEF_ARRAY : INDEF_MAP;
            depth++;
            tagged = 0;
            continue;
        }
        if (ai >= 28) return CN_E_FORMAT;
        if (ai >= 24) {
            size_t len = (size_t)1 << (ai - 24);
            if ((size_t)(end - p) < len) return CN_E_TRUNCATED;
            val = 0;
            for (size_t i = 0; i < len; i++) val = val << 8 | p[i];
            p += len;
        }
        if (in_string && major != (st[depth - 1].kind == INDEF_BYTES ? 2u : 3u)) return CN_E_FORMAT;
        tagged = 0;
        switch (major) {
        case 2:
        case 3:
            if (val > (uint64_t)(end - p)) return CN_E_TRUNCATED;
            p += val;
            break;
        case 4:
        case 5:
            if (val > (uint64_t)(end - p) / (major == 5 ? 2 : 1)) return CN_E_TRUNCATED;
            if (major == 5) val *= 2;
            if (!val) break;
            if (depth == CN_CBOR_MAX_DEPTH) return CN_E_LIMIT;
            st[depth].left = val;
            st[depth].kind = DEFINITE;
            depth++;
            continue;
        case 6:
            tagged = 1; /* the tagged item follows; together they are one item */
            continue;
        case 7:
            if (ai == 24 && val < 32) return CN_E_FORMAT;
            break;
        default:
            break;
        }
    item_done:
        for (;;) {
            if (!depth) return p == end ? CN_OK : CN_E_FORMAT;
            if (st[depth - 1].kind != DEFINITE) {
                st[depth - 1].left ^= 1; /* key/value parity (used by maps only) */
                break;
            }
            if (--st[depth - 1].left) break;
            depth--; /* a finished container is one item of its parent */
        }
    }
}
