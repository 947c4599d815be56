"""Read and write TensorFlow's V2 checkpoint bundle without TensorFlow (or the protobuf package).

Google's BERT code and the Chinese BERT-wwm releases ship weights as ``<prefix>.index`` plus
``<prefix>.data-0000N-of-0000M``. Reading them normally costs a ~600 MB TensorFlow install for
~30 lines of format; this module reads the format itself (TensorFlow's
``core/util/tensor_bundle`` on top of the LevelDB table in ``core/lib/io/table``):

* ``.index`` is a sorted string table: data blocks of prefix-compressed ``key -> value`` entries
  with a restart array, each block followed by a 5-byte trailer (compression type, masked CRC32C
  of block + type byte); an empty metaindex block; an index block mapping a separator key to each
  data block's handle (varint64 offset, varint64 size); a 48-byte footer holding the two handles,
  zero padding and the magic number ``0xdb4775248b80fb57``.
* The empty key holds a ``BundleHeaderProto`` (num_shards, endianness, version); every other key
  is a variable name holding a ``BundleEntryProto`` (dtype, shape, shard_id, offset, size, masked
  CRC32C of the bytes). Both are decoded from the protobuf wire format by hand below.
* ``.data-*`` files are raw tensor bytes at ``(offset, size)``.

Checkpoints come from strangers, so every length and offset is checked against the bytes that
are really there before anything is sliced or allocated, every block and tensor checksum is
verified, and nothing is ever executed (no pickle, no protobuf reflection). Anything malformed
becomes a one-line `InputError` naming the file (and the variable).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptm.errors import InputError

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


# ---------------------------------------------------------------------------------------------
# Protobuf wire format and the table layout.
# ---------------------------------------------------------------------------------------------

TABLE_MAGIC = 0xDB4775248B80FB57
FOOTER_BYTES = 48
BLOCK_TRAILER_BYTES = 5
BUNDLE_VERSION = 1  # kTensorBundleVersion: what we write and the consumer version we are
MAX_SHARDS = 99_999  # shard names are %05d
MAX_DIMS = 254  # TensorShape's limit

# TensorFlow DataType enum values we read: name, numpy dtype of the stored bytes (little-endian).
DTYPES: dict[int, tuple[str, np.dtype]] = {
    1: ("float32", np.dtype("<f4")),
    2: ("float64", np.dtype("<f8")),
    3: ("int32", np.dtype("<i4")),
    9: ("int64", np.dtype("<i8")),
    14: ("bfloat16", np.dtype("<u2")),  # numpy has no bfloat16: the raw bits travel as uint16
    19: ("float16", np.dtype("<f2")),
}
DTYPE_CODES = {name: code for code, (name, _) in DTYPES.items()}
_OTHER_DTYPES = {4: "uint8", 5: "int16", 6: "int8", 7: "string", 8: "complex64", 10: "bool"}
_SUPPORTED = ", ".join(DTYPE_CODES)


class _Malformed(ValueError):
    """Raised by the byte-level parsers; the reader re-raises it as an `InputError` with the file."""


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= end:
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 70:
            raise _Malformed("varint longer than 10 bytes")


def _int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _fields(buf: bytes, start: int, end: int) -> Iterator[tuple[int, int, int | tuple[int, int]]]:
    """``(field number, wire type, value)`` of one message; length-delimited values as (start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos, end)
        field, wire = key >> 3, key & 7
        if field == 0:
            raise _Malformed("protobuf field number 0")
        if wire == 0:
            value, pos = _varint(buf, pos, end)
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if pos + width > end:
                raise _Malformed("truncated fixed-width field")
            value = int.from_bytes(buf[pos : pos + width], "little")
            pos += width
        elif wire == 2:
            length, pos = _varint(buf, pos, end)
            if length > end - pos:
                raise _Malformed("length-delimited field runs past its message")
            value = (pos, pos + length)
            pos += length
        else:
            raise _Malformed(f"unsupported protobuf wire type {wire}")
        yield field, wire, value


def _expect(wire: int, want: int, what: str) -> None:
    if wire != want:
        raise _Malformed(f"{what} has wire type {wire}, expected {want}")


@dataclass(frozen=True)
class TensorEntry:
    """Where one variable lives and what it is (a decoded ``BundleEntryProto``)."""

    name: str
    dtype_code: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    masked_crc: int

    @property
    def dtype(self) -> str:
        if self.dtype_code in DTYPES:
            return DTYPES[self.dtype_code][0]
        return _OTHER_DTYPES.get(self.dtype_code, f"DataType {self.dtype_code}")


@dataclass(frozen=True)
class BundleHeader:
    num_shards: int
    big_endian: bool
    producer: int
    min_consumer: int
    bad_consumers: tuple[int, ...]


def _parse_shape(buf: bytes, start: int, end: int) -> tuple[int, ...]:
    dims: list[int] = []
    for field, wire, value in _fields(buf, start, end):
        if field == 2:
            _expect(wire, 2, "shape dim")
            size = 0
            for f2, w2, v2 in _fields(buf, *value):
                if f2 == 1:
                    _expect(w2, 0, "dim size")
                    size = _int64(v2)
            if size < 0:
                raise _Malformed("a dimension is unknown or negative")
            dims.append(size)
            if len(dims) > MAX_DIMS:
                raise _Malformed(f"more than {MAX_DIMS} dimensions")
        elif field == 3 and value:
            raise _Malformed("shape of unknown rank")
    return tuple(dims)


def _parse_entry(name: str, buf: bytes) -> TensorEntry:
    dtype = 0
    ints = {3: 0, 4: 0, 5: 0}  # shard_id, offset, size
    shape: tuple[int, ...] = ()
    crc = None
    for field, wire, value in _fields(buf, 0, len(buf)):
        if field == 1:
            _expect(wire, 0, "dtype")
            dtype = value
        elif field == 2:
            _expect(wire, 2, "shape")
            shape = _parse_shape(buf, *value)
        elif field in ints:
            _expect(wire, 0, "shard_id/offset/size")
            ints[field] = _int64(value)
            if ints[field] < 0:
                raise _Malformed(f"variable {name!r} has a negative shard, offset or size")
        elif field == 6:
            _expect(wire, 5, "crc32c")
            crc = value
        elif field == 7:
            raise _Malformed(
                f"variable {name!r} is saved in slices (a partitioned variable), which ptm cannot read"
            )
    if crc is None:
        raise _Malformed(f"variable {name!r} has no checksum")
    return TensorEntry(name, dtype, shape, ints[3], ints[4], ints[5], crc)


def _parse_header(buf: bytes) -> BundleHeader:
    num_shards = endianness = producer = min_consumer = 0
    bad: list[int] = []
    for field, wire, value in _fields(buf, 0, len(buf)):
        if field == 1:
            _expect(wire, 0, "num_shards")
            num_shards = _int64(value)
        elif field == 2:
            _expect(wire, 0, "endianness")
            endianness = value
        elif field == 3:
            _expect(wire, 2, "version")
            for f2, w2, v2 in _fields(buf, *value):
                if f2 == 1 and w2 == 0:
                    producer = _int64(v2)
                elif f2 == 2 and w2 == 0:
                    min_consumer = _int64(v2)
                elif f2 == 3 and w2 == 0:
                    bad.append(_int64(v2))
                elif f2 == 3 and w2 == 2:  # packed repeated
                    pos, end = v2
                    while pos < end:
                        v, pos = _varint(buf, pos, end)
                        bad.append(_int64(v))
    if endianness not in (0, 1):
        raise _Malformed(f"unknown endianness {endianness}")
    return BundleHeader(num_shards, endianness == 1, producer, min_consumer, tuple(bad))


def _block(data: bytes, handle: tuple[int, int], limit: int) -> bytes:
    """The contents of the block at ``handle``, after checking bounds, checksum and compression."""
    offset, size = handle
    if offset + size + BLOCK_TRAILER_BYTES > limit:
        raise _Malformed(f"block at offset {offset} (size {size}) runs past the end of the file")
    stored = int.from_bytes(data[offset + size + 1 : offset + size + 5], "little")
    if mask_crc(crc32c(memoryview(data)[offset : offset + size + 1])) != stored:
        raise _Malformed(f"checksum mismatch in the block at offset {offset}")
    kind = data[offset + size]
    if kind == 1:
        raise _Malformed("the index is snappy-compressed; TensorFlow writes it uncompressed")
    if kind != 0:
        raise _Malformed(f"unknown block compression type {kind}")
    return data[offset : offset + size]


def _block_entries(block: bytes) -> Iterator[tuple[bytes, bytes]]:
    if len(block) < 4:
        raise _Malformed("block shorter than its restart count")
    n_restarts = int.from_bytes(block[-4:], "little")
    if n_restarts > (len(block) - 4) // 4:
        raise _Malformed("block restart count larger than the block")
    end = len(block) - 4 * (n_restarts + 1)
    pos, key = 0, b""
    while pos < end:
        shared, pos = _varint(block, pos, end)
        unshared, pos = _varint(block, pos, end)
        vlen, pos = _varint(block, pos, end)
        if shared > len(key) or unshared + vlen > end - pos:
            raise _Malformed("block entry runs past its block")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        yield key, block[pos : pos + vlen]
        pos += vlen


def _handle(buf: bytes, pos: int, end: int) -> tuple[tuple[int, int], int]:
    offset, pos = _varint(buf, pos, end)
    size, pos = _varint(buf, pos, end)
    return (offset, size), pos


def _table_items(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Every ``(key, value)`` of a table file, in order, with each key checked to be increasing."""
    if len(data) < FOOTER_BYTES:
        raise _Malformed(f"{len(data)} bytes is shorter than the {FOOTER_BYTES}-byte table footer")
    footer = data[-FOOTER_BYTES:]
    if int.from_bytes(footer[40:], "little") != TABLE_MAGIC:
        raise _Malformed("bad magic number: not a TensorFlow V2 checkpoint index")
    _, pos = _handle(footer, 0, 40)  # the metaindex block: TF leaves it empty
    index_handle, _ = _handle(footer, pos, 40)
    limit = len(data) - FOOTER_BYTES
    last: bytes | None = None
    for _, value in _block_entries(_block(data, index_handle, limit)):
        handle, used = _handle(value, 0, len(value))
        if used != len(value):
            raise _Malformed("index entry is not a block handle")
        for key, item in _block_entries(_block(data, handle, limit)):
            if last is not None and key <= last:
                raise _Malformed("keys out of order")
            last = key
            yield key, item


# ---------------------------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------------------------


def shard_path(prefix: Path, shard: int, num_shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")


class CheckpointReader:
    """The variables of one checkpoint; each is read and verified on demand, never the whole file.

    Opening parses and checks the whole index: the header's version and shard count, every entry's
    dtype/shape/size agreement, and that every entry's bytes lie inside its data file.
    """

    def __init__(self, prefix: str | Path) -> None:
        self.prefix = Path(prefix)
        self.index_path = Path(f"{self.prefix}.index")
        if not self.index_path.is_file():
            raise InputError(
                self.index_path, "no such checkpoint index", "pass the checkpoint folder or prefix"
            )
        data = self.index_path.read_bytes()
        fix = "the index file is corrupt: re-download or re-save the checkpoint"
        try:
            items = list(_table_items(data))
            if not items or items[0][0] != b"":
                raise _Malformed("no bundle header (empty key)")
            self.header = _parse_header(items[0][1])
            entries = [_parse_entry(_key_name(k), v) for k, v in items[1:]]
        except _Malformed as e:
            raise InputError(self.index_path, str(e), fix) from e
        h = self.header
        if not 1 <= h.num_shards <= MAX_SHARDS:
            raise InputError(self.index_path, f"header claims {h.num_shards} shards", fix)
        if h.min_consumer > BUNDLE_VERSION or BUNDLE_VERSION in h.bad_consumers:
            raise InputError(
                self.index_path,
                f"written for bundle readers >= {h.min_consumer} (ptm reads version {BUNDLE_VERSION})",
                "re-save the checkpoint with a TF 1.x/2.x tf.compat.v1.train.Saver",
            )
        self.entries: dict[str, TensorEntry] = {e.name: e for e in entries}
        self.shard_paths = [shard_path(self.prefix, i, h.num_shards) for i in range(h.num_shards)]
        sizes: dict[int, int] = {}
        for e in entries:
            if e.shard >= h.num_shards:
                raise InputError(
                    self.index_path,
                    f"variable {e.name} is in shard {e.shard} of {h.num_shards}",
                    fix,
                )
            if e.shard not in sizes:
                path = self.shard_paths[e.shard]
                if not path.is_file():
                    raise InputError(
                        path,
                        f"missing data shard (holds variable {e.name})",
                        "copy every .data-* file of the checkpoint",
                    )
                sizes[e.shard] = path.stat().st_size
            if e.dtype_code in DTYPES:
                want = int(np.prod(e.shape, dtype=object)) * DTYPES[e.dtype_code][1].itemsize
                if want != e.size:
                    raise InputError(
                        self.index_path,
                        f"variable {e.name}: {e.size} bytes for shape {list(e.shape)} of {e.dtype}",
                        fix,
                    )
            if e.offset + e.size > sizes[e.shard]:
                raise InputError(
                    self.shard_paths[e.shard],
                    f"truncated: variable {e.name} needs bytes {e.offset}..{e.offset + e.size}, the file has {sizes[e.shard]}",
                    "re-download the checkpoint",
                )

    def read(self, name: str) -> np.ndarray:
        """The variable's value in native byte order (bfloat16 as its raw uint16 bits); checksum verified."""
        e = self.entries[name]
        if e.dtype_code not in DTYPES:
            raise InputError(
                self.index_path, f"variable {name} has dtype {e.dtype}", f"ptm reads {_SUPPORTED}"
            )
        path = self.shard_paths[e.shard]
        buf = bytearray(e.size)
        with path.open("rb") as f:
            f.seek(e.offset)
            got = f.readinto(buf)
        if got != e.size:
            raise InputError(
                path,
                f"truncated: variable {name} ends past the end of the file",
                "re-download the checkpoint",
            )
        if mask_crc(crc32c(buf)) != e.masked_crc:
            raise InputError(
                path, f"checksum mismatch in variable {name}", "the file is corrupt: re-download it"
            )
        dtype = DTYPES[e.dtype_code][1]
        if self.header.big_endian:
            return np.frombuffer(buf, dtype=dtype.newbyteorder(">")).astype(dtype).reshape(e.shape)
        return np.frombuffer(buf, dtype=dtype).reshape(e.shape)


def _key_name(key: bytes) -> str:
    try:
        return key.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Malformed(f"variable name {key[:40]!r} is not UTF-8") from e


# ---------------------------------------------------------------------------------------------
# Writing.
# ---------------------------------------------------------------------------------------------


def _put_varint(out: bytearray, value: int) -> None:
    assert value >= 0, f"varint of negative {value}"
    while True:
        b = value & 0x7F
        value >>= 7
        if value:
            out.append(b | 0x80)
        else:
            out.append(b)
            return


def _put_field(out: bytearray, field: int, wire: int, payload: int | bytes) -> None:
    _put_varint(out, field << 3 | wire)
    if wire == 0:
        _put_varint(out, payload)
    elif wire == 5:
        out += int(payload).to_bytes(4, "little")
    else:
        _put_varint(out, len(payload))
        out += payload


def _encode_entry(e: TensorEntry) -> bytes:
    shape = bytearray()
    for d in e.shape:
        dim = bytearray()
        if d:
            _put_field(dim, 1, 0, d)
        _put_field(shape, 2, 2, bytes(dim))
    out = bytearray()
    _put_field(out, 1, 0, e.dtype_code)
    _put_field(out, 2, 2, bytes(shape))
    for field, value in ((3, e.shard), (4, e.offset), (5, e.size)):
        if value:
            _put_field(out, field, 0, value)
    _put_field(out, 6, 5, e.masked_crc)
    return bytes(out)


def _encode_header(num_shards: int) -> bytes:
    version = bytearray()
    _put_field(version, 1, 0, BUNDLE_VERSION)
    out = bytearray()
    _put_field(out, 1, 0, num_shards)
    _put_field(
        out, 3, 2, bytes(version)
    )  # endianness LITTLE is proto3's default: omitted, as TF does
    return bytes(out)


class _BlockBuilder:
    def __init__(self, restart_interval: int) -> None:
        self.restart_interval = restart_interval
        self.buf = bytearray()
        self.restarts = [0]
        self.count = 0
        self.last = b""

    def add(self, key: bytes, value: bytes) -> None:
        shared = 0
        if self.count % self.restart_interval == 0:
            if self.count:
                self.restarts.append(len(self.buf))
        else:
            limit = min(len(key), len(self.last))
            while shared < limit and key[shared] == self.last[shared]:
                shared += 1
        for v in (shared, len(key) - shared, len(value)):
            _put_varint(self.buf, v)
        self.buf += key[shared:] + value
        self.last = key
        self.count += 1

    def size(self) -> int:
        return len(self.buf) + 4 * len(self.restarts) + 4

    def finish(self) -> bytes:
        tail = b"".join(r.to_bytes(4, "little") for r in self.restarts)
        return bytes(self.buf) + tail + len(self.restarts).to_bytes(4, "little")


def _encode_table(items: list[tuple[bytes, bytes]], block_size: int) -> bytes:
    """A LevelDB/TF table of sorted ``items`` (uncompressed blocks, restart interval 16 as TF uses)."""
    out = bytearray()

    def put_block(contents: bytes) -> tuple[int, int]:
        handle = (len(out), len(contents))
        out.extend(contents)
        out.append(0)  # no compression
        out.extend(mask_crc(crc32c(bytes(contents) + b"\0")).to_bytes(4, "little"))
        return handle

    index = _BlockBuilder(restart_interval=1)
    block = _BlockBuilder(restart_interval=16)

    def flush() -> None:
        nonlocal block
        offset, size = put_block(block.finish())
        handle = bytearray()
        _put_varint(handle, offset)
        _put_varint(handle, size)
        index.add(block.last, bytes(handle))  # the block's last key is a valid separator
        block = _BlockBuilder(restart_interval=16)

    for key, value in items:
        block.add(key, value)
        if block.size() >= block_size:
            flush()
    if block.count:
        flush()
    meta = put_block(_BlockBuilder(restart_interval=16).finish())
    idx = put_block(index.finish())
    footer = bytearray()
    for offset, size in (meta, idx):
        _put_varint(footer, offset)
        _put_varint(footer, size)
    footer += bytes(40 - len(footer)) + TABLE_MAGIC.to_bytes(8, "little")
    return bytes(out + footer)


class CheckpointWriter:
    """Writes a V2 bundle: ``add`` every variable (each to a shard of your choice), then ``finish``.

    Data goes to disk as it comes, so writing needs memory for one tensor at a time. TF's reader
    accepts any assignment of variables to shards (its own Saver shards by device).
    """

    def __init__(
        self, prefix: str | Path, num_shards: int = 1, block_size: int = 256 * 1024
    ) -> None:
        if not 1 <= num_shards <= MAX_SHARDS:
            raise InputError(None, f"shards={num_shards}", f"use 1..{MAX_SHARDS}")
        self.prefix = Path(prefix)
        self.num_shards = num_shards
        self.block_size = block_size
        self.entries: dict[str, TensorEntry] = {}
        self.files = [shard_path(self.prefix, i, num_shards).open("wb") for i in range(num_shards)]
        self.offsets = [0] * num_shards

    def add(
        self, name: str, array: np.ndarray, dtype: str | None = None, shard: int = 0
    ) -> TensorEntry:
        """Append ``array`` as variable ``name``; ``dtype="bfloat16"`` marks uint16 arrays holding bfloat16 bits."""
        assert name and name not in self.entries, f"empty or repeated variable name {name!r}"
        assert 0 <= shard < self.num_shards, f"shard {shard} of {self.num_shards}"
        if dtype == "bfloat16":
            assert array.dtype == np.uint16, f"{name}: bfloat16 bits must come as uint16"
        else:
            assert dtype in (None, array.dtype.name), (
                f"{name}: a {array.dtype} array given as {dtype}"
            )
            dtype = array.dtype.name
        if dtype not in DTYPE_CODES:
            raise InputError(None, f"variable {name} has dtype {dtype}", f"ptm writes {_SUPPORTED}")
        code = DTYPE_CODES[dtype]
        raw = np.ascontiguousarray(array, dtype=DTYPES[code][1]).reshape(-1).view(np.uint8)
        self.files[shard].write(raw.data)
        entry = TensorEntry(
            name,
            code,
            tuple(int(d) for d in array.shape),
            shard,
            self.offsets[shard],
            raw.size,
            mask_crc(crc32c(raw)),
        )
        self.offsets[shard] += raw.size
        self.entries[name] = entry
        return entry

    def finish(self) -> Path:
        """Close the data files and write the index; returns the index path."""
        self.close()
        items = [(b"", _encode_header(self.num_shards))]
        items += sorted((n.encode("utf-8"), _encode_entry(e)) for n, e in self.entries.items())
        index_path = Path(f"{self.prefix}.index")
        index_path.write_bytes(_encode_table(items, self.block_size))
        return index_path

    def close(self) -> None:
        for f in self.files:
            f.close()

    def __enter__(self) -> CheckpointWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_checkpoint_file(folder: Path, prefix_name: str) -> None:
    """The text ``checkpoint`` file TF's ``latest_checkpoint`` reads, naming ``prefix_name``."""
    line = f'model_checkpoint_path: "{prefix_name}"\nall_model_checkpoint_paths: "{prefix_name}"\n'
    (folder / "checkpoint").write_text(line, encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# Finding the checkpoint in what the user points at.
# ---------------------------------------------------------------------------------------------

_CKPT_LINE = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$')
_STEP = re.compile(r"^(.*)-(\d+)$")


def resolve_prefix(path: str | Path) -> Path:
    """A checkpoint folder, prefix or ``.index`` file -> the prefix of the checkpoint to read.

    In a folder the ``checkpoint`` file decides, as in TF's ``latest_checkpoint``; the path it
    records is often absolute on the training machine, so only its file name is looked up here.
    Without that file a folder must hold one checkpoint, or ``name-<step>`` ones (the highest step
    wins).
    """
    path = Path(path)
    if path.is_dir():
        return _prefix_in_folder(path)
    if path.name.endswith(".index") and path.is_file():
        return path.with_name(path.name[: -len(".index")])
    if Path(f"{path}.index").is_file():
        return path
    if path.is_file():
        raise InputError(
            path,
            "not a V2 checkpoint (no matching .index file); a single-file checkpoint is TF's old V1 format",
            "pass the prefix of a V2 checkpoint, or re-save it with tf.compat.v1.train.Saver()",
        )
    raise InputError(path, "no such checkpoint folder or prefix", "check input=")


def _prefix_in_folder(folder: Path) -> Path:
    record = folder / "checkpoint"
    if record.is_file():
        for number, line in enumerate(
            record.read_text(encoding="utf-8", errors="replace").splitlines(), 1
        ):
            match = _CKPT_LINE.match(line.strip())
            if match:
                name = os.path.basename(match.group(1).replace("\\", "/"))
                prefix = folder / name
                if not Path(f"{prefix}.index").is_file():
                    raise InputError(
                        record,
                        f"names {name}, but {prefix}.index does not exist",
                        "fix the file or pass input=<prefix>",
                        line=number,
                    )
                return prefix
        raise InputError(
            record, "no model_checkpoint_path line", "fix the file or pass input=<prefix>"
        )
    prefixes = sorted(p.with_name(p.name[: -len(".index")]) for p in folder.glob("*.index"))
    if len(prefixes) == 1:
        return prefixes[0]
    if not prefixes:
        raise InputError(
            folder,
            "no *.index file in this folder",
            "point input= at a TF checkpoint folder or prefix",
        )
    steps = [_STEP.match(p.name) for p in prefixes]
    stems = {m.group(1) for m in steps if m}
    if all(steps) and len(stems) == 1:
        return max(prefixes, key=lambda p: int(_STEP.match(p.name).group(2)))
    names = ", ".join(p.name for p in prefixes)
    raise InputError(
        folder, f"several checkpoints ({names}) and no `checkpoint` file", "pass input=<prefix>"
    )
