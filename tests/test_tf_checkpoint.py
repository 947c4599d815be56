"""The TF V2 bundle reader/writer: CRC32C, exact round trips, real TF files, and hostile files.

Only numpy, hypothesis and `ptm.tf` are imported, so this file also runs in a
TensorFlow venv, where the cross-checks against ``tf.train.load_checkpoint`` are not skipped.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptm.errors import InputError
from ptm.tf.bundle import TensorEntry
from ptm.tf.crc32c import crc32c, mask_crc
from ptm.tf.reader import CheckpointReader, resolve_prefix
from ptm.tf.writer import CheckpointWriter, _encode_entry, _encode_header, _encode_table

FIXTURES = Path(__file__).parent / "fixtures" / "tf_bert"


def crc32c_reference(data: bytes) -> int:
    """Bit-at-a-time CRC32C straight from the definition (reflected polynomial 0x82F63B78)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_known_values():
    # RFC 3720 (iSCSI) appendix B.4 test vectors, and the classic check value.
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(bytes(range(31, -1, -1))) == 0x113FDB5C


@pytest.mark.parametrize("n", [1, 3, 127, 128, 129, 1000, 4096 + 7, 70_001])
def test_crc32c_lanes_match_the_definition(n):
    data = np.random.default_rng(n).integers(0, 256, n, dtype=np.uint8).tobytes()
    assert crc32c(data) == crc32c_reference(data)
    cut = n // 3  # continuing from a previous CRC equals one pass
    assert crc32c(data[cut:], crc32c(data[:cut])) == crc32c(data)
    assert crc32c(np.frombuffer(data, np.uint8)) == crc32c(data)


def test_mask_is_leveldbs():
    # LevelDB's crc32c_test: masking changes the value, twice differs again.
    crc = crc32c(b"foo")
    assert mask_crc(crc) != crc
    assert mask_crc(mask_crc(crc)) != crc
    assert mask_crc(0) == 0xA282EAD8


def sample_tensors() -> dict[str, tuple[np.ndarray, str | None]]:
    rng = np.random.default_rng(0)
    return {
        "bert/a/kernel": (rng.standard_normal((3, 5)).astype(np.float32), None),
        "bert/a/bias": (rng.standard_normal(5).astype(np.float16), None),
        "bert/b": (rng.integers(0, 1 << 16, (2, 3), dtype=np.uint16), "bfloat16"),
        "double": (rng.standard_normal((2, 2)), None),
        "global_step": (np.array(12345678901, dtype=np.int64), None),
        "ints": (np.arange(7, dtype=np.int32), None),
        "empty": (np.zeros((0, 4), np.float32), None),
        "naïve/ünïcode": (np.ones(2, np.float32), None),
    }


def write_sample(prefix: Path, shards: int = 1, block_size: int = 256 * 1024) -> dict:
    tensors = sample_tensors()
    with CheckpointWriter(prefix, shards, block_size=block_size) as w:
        for i, (name, (value, dtype)) in enumerate(tensors.items()):
            w.add(name, value, dtype, shard=i % shards)
        w.finish()
    return tensors


@pytest.mark.parametrize(("shards", "block_size"), [(1, 256 * 1024), (2, 64), (3, 1)])
def test_write_read_round_trip_is_exact(tmp_path, shards, block_size):
    tensors = write_sample(tmp_path / "m.ckpt", shards, block_size)
    reader = CheckpointReader(tmp_path / "m.ckpt")
    assert reader.header.num_shards == shards
    assert set(reader.entries) == set(tensors)
    for name, (value, dtype) in tensors.items():
        got = reader.read(name)
        assert reader.entries[name].dtype == (dtype or value.dtype.name)
        assert got.dtype == value.dtype and got.shape == value.shape
        assert got.tobytes() == value.tobytes()


def test_reads_tensorflow_fixtures():
    reader = CheckpointReader(resolve_prefix(FIXTURES / "pretraining"))
    assert reader.prefix.name == "model.ckpt-2"  # the `checkpoint` file names the newest step
    assert int(reader.read("global_step")) == 2
    assert reader.read("bert/embeddings/word_embeddings").shape == (30, 16)
    sharded = CheckpointReader(resolve_prefix(FIXTURES / "sharded"))
    assert sharded.header.num_shards == 2
    assert {e.shard for e in sharded.entries.values()} == {0, 1}
    for name in sharded.entries:
        sharded.read(name)


def test_resolve_prefix(tmp_path):
    assert resolve_prefix(FIXTURES / "mlm_only").name == "bert_model.ckpt"
    index = FIXTURES / "mlm_only" / "bert_model.ckpt.index"
    assert resolve_prefix(index) == index.with_suffix("")
    for step in (3, 20, 100):  # no `checkpoint` file: the highest step wins
        write_sample(tmp_path / f"model.ckpt-{step}")
    assert resolve_prefix(tmp_path).name == "model.ckpt-100"
    write_sample(tmp_path / "other.ckpt")
    with pytest.raises(InputError, match="several checkpoints"):
        resolve_prefix(tmp_path)
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "gs://bucket/run/model.ckpt-7"\n')
    with pytest.raises(InputError, match=r"checkpoint:1: names model.ckpt-7"):
        resolve_prefix(tmp_path)
    (tmp_path / "model.ckpt").write_bytes(b"V1")
    with pytest.raises(InputError, match="V1"):
        resolve_prefix(tmp_path / "model.ckpt")


# --- Corruption ------------------------------------------------------------------------------


@pytest.fixture
def sample(tmp_path) -> Path:
    write_sample(tmp_path / "m.ckpt", shards=2)
    return tmp_path / "m.ckpt"


def read_all(prefix: Path) -> dict[str, bytes]:
    reader = CheckpointReader(prefix)
    return {name: reader.read(name).tobytes() for name in reader.entries}


def test_truncated_data(sample):
    data = Path(f"{sample}.data-00000-of-00002")
    data.write_bytes(data.read_bytes()[:-3])
    with pytest.raises(InputError, match=r"data-00000-of-00002: truncated: variable"):
        CheckpointReader(sample)


def test_bad_tensor_checksum(sample):
    reader = CheckpointReader(sample)
    entry = reader.entries["bert/a/kernel"]
    data = Path(f"{sample}.data-{entry.shard:05d}-of-00002")
    raw = bytearray(data.read_bytes())
    raw[entry.offset + 5] ^= 0x10
    data.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="checksum mismatch in variable bert/a/kernel"):
        reader.read("bert/a/kernel")


def test_missing_shard(sample):
    Path(f"{sample}.data-00001-of-00002").unlink()
    with pytest.raises(InputError, match=r"data-00001-of-00002: missing data shard"):
        CheckpointReader(sample)


def test_bad_index_magic(sample):
    index = Path(f"{sample}.index")
    raw = bytearray(index.read_bytes())
    raw[-1] ^= 0xFF
    index.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="bad magic number"):
        CheckpointReader(sample)


def test_bad_index_block_checksum(sample):
    index = Path(f"{sample}.index")
    raw = bytearray(index.read_bytes())
    raw[12] ^= 0x01  # inside the first data block
    index.write_bytes(bytes(raw))
    with pytest.raises(InputError, match="checksum mismatch in the block"):
        CheckpointReader(sample)


def write_index(prefix: Path, entries: list[TensorEntry], block_type: int = 0) -> None:
    items = [
        (b"", _encode_header(1)),
        *sorted((e.name.encode(), _encode_entry(e)) for e in entries),
    ]
    table = bytearray(_encode_table(items, 1 << 20))
    if block_type:  # re-label the first block and fix its checksum, as a snappy writer would
        size = _first_block_size(bytes(table))
        table[size] = block_type
        table[size + 1 : size + 5] = mask_crc(crc32c(bytes(table[: size + 1]))).to_bytes(
            4, "little"
        )
    Path(f"{prefix}.index").write_bytes(bytes(table))
    Path(f"{prefix}.data-00000-of-00001").write_bytes(bytes(64))


def _first_block_size(table: bytes) -> int:
    """Size of the first block, read from the index block's first handle."""
    from ptm.tf.bundle import _block_entries, _handle

    footer = table[-48:]
    _, pos = _handle(footer, 0, 40)
    (offset, size), _ = _handle(footer, pos, 40)
    (_, first_value) = next(_block_entries(table[offset : offset + size]))
    (_, first_size), _ = _handle(first_value, 0, len(first_value))
    return first_size


def test_snappy_index_is_refused(tmp_path):
    entry = TensorEntry("x", 1, (2,), 0, 0, 8, mask_crc(crc32c(bytes(8))))
    write_index(tmp_path / "m", [entry], block_type=1)
    with pytest.raises(InputError, match="snappy-compressed"):
        CheckpointReader(tmp_path / "m")


def test_unsupported_dtype_is_refused_on_read(tmp_path):
    entry = TensorEntry("names", 7, (2,), 0, 0, 8, mask_crc(crc32c(bytes(8))))  # DT_STRING
    write_index(tmp_path / "m", [entry])
    reader = CheckpointReader(tmp_path / "m")
    with pytest.raises(InputError, match="variable names has dtype string"):
        reader.read("names")


def test_size_must_match_shape(tmp_path):
    entry = TensorEntry("x", 1, (1 << 40,), 0, 0, 8, 0)  # claims 4 TiB in a 64-byte file
    write_index(tmp_path / "m", [entry])
    with pytest.raises(InputError, match="8 bytes for shape"):
        CheckpointReader(tmp_path / "m")


@settings(
    max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    target=st.sampled_from(["index", "data-00000-of-00002", "data-00001-of-00002"]),
    how=st.sampled_from(["flip", "truncate", "garbage"]),
    position=st.floats(0.0, 1.0, exclude_max=True),
    value=st.integers(1, 255),
    garbage=st.binary(max_size=200),
)
def test_corrupt_files_give_input_errors_only(tmp_path, target, how, position, value, garbage):
    clean = tmp_path / "clean"  # hypothesis reuses one tmp_path for all examples
    if not clean.is_dir():
        clean.mkdir()
        write_sample(clean / "m.ckpt", shards=2, block_size=64)
    work = tmp_path / "work"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(clean, work)
    path = work / f"m.ckpt.{target}"
    raw = bytearray(path.read_bytes())
    at = int(position * len(raw))
    if how == "flip":
        raw[at] ^= value
    elif how == "truncate":
        del raw[at:]
    else:
        raw[at:] = garbage
    path.write_bytes(bytes(raw))
    try:
        got = read_all(work / "m.ckpt")
    except InputError:
        return
    # A change that went unnoticed (e.g. in the footer's padding) must change nothing.
    assert got == {name: value.tobytes() for name, (value, _) in sample_tensors().items()}


# --- Cross-checks with TensorFlow itself (skipped unless tensorflow imports) -------------------


def test_tensorflow_reads_the_same_values():
    tf = pytest.importorskip("tensorflow")
    for variant in ("mlm_only", "pretraining", "sharded"):
        prefix = resolve_prefix(FIXTURES / variant)
        ours = CheckpointReader(prefix)
        theirs = tf.train.load_checkpoint(str(prefix))
        assert set(theirs.get_variable_to_shape_map()) == set(ours.entries)
        for name in ours.entries:
            assert np.asarray(theirs.get_tensor(name)).tobytes() == ours.read(name).tobytes()


def test_tensorflow_reads_what_we_write(tmp_path):
    tf = pytest.importorskip("tensorflow")
    tensors = write_sample(tmp_path / "m.ckpt", shards=2, block_size=64)
    theirs = tf.train.load_checkpoint(str(tmp_path / "m.ckpt"))
    for name, (value, dtype) in tensors.items():
        got = theirs.get_tensor(name)
        if dtype == "bfloat16":
            got = np.asarray(got).view(np.uint16)
        assert np.asarray(got).tobytes() == value.tobytes(), name


def test_big_endian_bundles_are_read(tmp_path):
    value = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    raw = value.astype(">f4").tobytes()
    entry = TensorEntry("x", 1, (3,), 0, 0, len(raw), mask_crc(crc32c(raw)))
    header = bytes([0x08, 0x01, 0x10, 0x01, 0x1A, 0x02, 0x08, 0x01])  # 1 shard, BIG, version 1
    table = _encode_table([(b"", header), (b"x", _encode_entry(entry))], 1 << 20)
    Path(f"{tmp_path / 'm'}.index").write_bytes(table)
    Path(f"{tmp_path / 'm'}.data-00000-of-00001").write_bytes(raw)
    got = CheckpointReader(tmp_path / "m").read("x")
    assert got.dtype == np.float32 and got.tolist() == value.tolist()
