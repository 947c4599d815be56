"""The layout of TensorFlow's V2 checkpoint bundle without TensorFlow (or the protobuf package).

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

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ptm.tf.crc32c import crc32c, mask_crc

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


def shard_path(prefix: Path, shard: int, num_shards: int) -> Path:
    return Path(f"{prefix}.data-{shard:05d}-of-{num_shards:05d}")
