"""CRC32C (Castagnoli), as TensorFlow and LevelDB use it, fast enough for gigabyte checkpoints."""

from __future__ import annotations

import numpy as np

# ---------------------------------------------------------------------------------------------
# CRC32C (Castagnoli), as TensorFlow and LevelDB use it.
#
# A byte-at-a-time Python loop runs at ~5 MB/s: 80 s for a BERT-base checkpoint. The CRC is
# linear over GF(2), so instead the data is cut into many equal lanes that are checksummed side
# by side with numpy (one 4-byte word of every lane per step, through two 64 Ki-entry tables),
# and the lane CRCs are then merged pairwise with precomputed "append n zero bytes" operators.
# Measured on one core of the build machine: ~600-700 MB/s, so a 400 MB checkpoint costs ~0.6 s.
# ---------------------------------------------------------------------------------------------

_POLY = 0x82F63B78  # CRC32C, bit-reflected
_MASK_DELTA = 0xA282EAD8
_LANE_BYTES = 64  # bytes per lane per pass; a multiple of 4
_MAX_LANES = 1 << 18  # 16 MiB per pass bounds the transposed copy
_tables: dict[str, np.ndarray] = {}
_shift_ops: dict[int, list[int]] = {}
_shift_tables: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _byte_tables() -> list[np.ndarray]:
    """Slicing-by-4 tables: ``t[k][b]`` is the CRC register contribution of byte ``b`` followed by k zeros."""
    t0 = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t0 = np.where(t0 & 1, (t0 >> 1) ^ np.uint32(_POLY), t0 >> 1).astype(np.uint32)
    tables = [t0]
    for _ in range(3):
        prev = tables[-1]
        tables.append((prev >> 8) ^ t0[prev & 0xFF])
    return tables


def _word_tables() -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Tables that absorb a 32-bit word in two lookups: ``lo[w & 0xFFFF] ^ hi[w >> 16]``."""
    if not _tables:
        t = _byte_tables()
        v = np.arange(1 << 16, dtype=np.uint32)
        _tables["lo"] = t[3][v & 0xFF] ^ t[2][v >> 8]
        _tables["hi"] = t[1][v & 0xFF] ^ t[0][v >> 8]
        _tables["byte"] = t[0]
    return _tables["lo"], _tables["hi"], _tables["byte"].tolist()


def _op_apply(cols: list[int], x: int) -> int:
    """Apply a GF(2) 32x32 matrix (given by the images of the 32 unit vectors) to ``x``."""
    out = 0
    i = 0
    while x:
        if x & 1:
            out ^= cols[i]
        x >>= 1
        i += 1
    return out


def _shift_op(k: int) -> list[int]:
    """The operator that appends 2**k zero bytes to a CRC register (squared up from one bit)."""
    if k not in _shift_ops:
        if k == 0:
            op = [(1 << i >> 1) ^ (_POLY if i == 0 else 0) for i in range(32)]  # one zero bit
            for _ in range(3):
                op = [_op_apply(op, c) for c in op]
        else:
            half = _shift_op(k - 1)
            op = [_op_apply(half, c) for c in half]
        _shift_ops[k] = op
    return _shift_ops[k]


def _shift_word_tables(k: int) -> tuple[np.ndarray, np.ndarray]:
    """`_shift_op(k)` as two 64 Ki-entry tables, to apply it to a whole array of registers."""
    if k not in _shift_tables:
        cols = np.array(_shift_op(k), dtype=np.uint32)
        v = np.arange(1 << 16, dtype=np.uint32)
        halves = []
        for half in range(2):
            t = np.zeros(1 << 16, dtype=np.uint32)
            for bit in range(16):
                t ^= np.where((v >> bit) & 1, cols[16 * half + bit], 0).astype(np.uint32)
            halves.append(t)
        _shift_tables[k] = (halves[0], halves[1])
    return _shift_tables[k]


def _shift(reg: int, nbytes: int) -> int:
    k = 0
    while nbytes:
        if nbytes & 1:
            reg = _op_apply(_shift_op(k), reg)
        nbytes >>= 1
        k += 1
    return reg


def _lanes_crc(words: np.ndarray) -> int:
    """CRC register (zero start) of ``words`` (lanes x words-per-lane, little-endian uint32)."""
    lo, hi, _ = _word_tables()
    steps = np.ascontiguousarray(words.T)  # steps x lanes: each step reads one contiguous row
    reg = np.zeros(words.shape[0], dtype=np.uint32)
    x = np.empty_like(reg)
    y = np.empty_like(reg)
    for row in steps:
        np.bitwise_xor(reg, row, out=x)
        np.right_shift(x, 16, out=y)
        np.bitwise_and(x, 0xFFFF, out=x)
        np.take(lo, x, out=reg)
        np.take(hi, y, out=x)
        reg ^= x
    k = _LANE_BYTES.bit_length() - 1  # lane length is 2**k bytes; merging doubles it
    while len(reg) > 1:
        slo, shi = _shift_word_tables(k)
        left = reg[0::2]
        reg = slo[left & 0xFFFF] ^ shi[left >> 16] ^ reg[1::2]
        k += 1
    return int(reg[0])


def crc32c(data: bytes | bytearray | memoryview | np.ndarray, crc: int = 0) -> int:
    """CRC32C of ``data`` (continuing from ``crc``), e.g. ``crc32c(b"123456789") == 0xE3069283``."""
    if isinstance(data, np.ndarray):
        buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    else:
        buf = np.frombuffer(data, dtype=np.uint8)
    reg = crc ^ 0xFFFFFFFF
    pos, n = 0, len(buf)
    while n - pos >= 2 * _LANE_BYTES:
        lanes = min(_MAX_LANES, 1 << (((n - pos) // _LANE_BYTES).bit_length() - 1))
        chunk = lanes * _LANE_BYTES
        words = buf[pos : pos + chunk].view("<u4").reshape(lanes, _LANE_BYTES // 4)
        reg = _shift(reg, chunk) ^ _lanes_crc(words)
        pos += chunk
    table = _word_tables()[2]
    for b in buf[pos:].tolist():
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB's masking, which TF stores: a CRC of data holding CRCs stays informative."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF
