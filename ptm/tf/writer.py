"""Writing a TensorFlow V2 checkpoint (see `ptm.tf.bundle` for the format) that TensorFlow and
Google's BERT code read."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ptm.errors import InputError
from ptm.tf.bundle import (
    _SUPPORTED,
    BUNDLE_VERSION,
    DTYPE_CODES,
    DTYPES,
    MAX_SHARDS,
    TABLE_MAGIC,
    TensorEntry,
    shard_path,
)
from ptm.tf.crc32c import crc32c, mask_crc

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
