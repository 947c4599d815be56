"""Reading a TensorFlow V2 checkpoint (see `ptm.tf.bundle` for the format), and finding it in
what the user points at."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from ptm.errors import InputError
from ptm.tf.bundle import (
    _SUPPORTED,
    BUNDLE_VERSION,
    DTYPES,
    MAX_SHARDS,
    TensorEntry,
    _Malformed,
    _parse_entry,
    _parse_header,
    _table_items,
    shard_path,
)
from ptm.tf.crc32c import crc32c, mask_crc

# ---------------------------------------------------------------------------------------------
# Reading.
# ---------------------------------------------------------------------------------------------


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
