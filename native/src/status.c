/* Status strings, ABI version, dtype sizes and the no-op call. */
#include "internal.h"

const char *cn_strerror(int status) {
    switch (status) {
    case CN_OK: return "ok";
    case CN_E_INVAL: return "invalid argument";
    case CN_E_NOSPACE: return "buffer too small";
    case CN_E_TRUNCATED: return "input truncated";
    case CN_E_FORMAT: return "malformed input";
    case CN_E_CHECKSUM: return "checksum mismatch";
    case CN_E_RANGE: return "offset or length out of range";
    case CN_E_LIMIT: return "limit exceeded";
    case CN_E_DTYPE: return "unsupported dtype";
    case CN_E_SHAPE: return "shape mismatch";
    case CN_E_VERSION: return "unknown format version";
    default: return "unknown status";
    }
}

int cn_abi_version(void) { return CN_ABI_VERSION; }

int cn_noop(int x) { return x; }

size_t cn_dtype_size(int dtype) {
    switch (dtype) {
    case CN_BOOL: case CN_I8: case CN_U8: return 1;
    case CN_I16: case CN_U16: case CN_F16: case CN_BF16: return 2;
    case CN_I32: case CN_U32: case CN_F32: return 4;
    case CN_I64: case CN_U64: case CN_F64: return 8;
    default: return 0;
    }
}
