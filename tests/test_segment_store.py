"""Reading a segment folder: a pass over every token reads the file in chunks, never the memory
map (whose pages would stay resident in the process), and counts what the map holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ptm.data.segment_builder import build_segments
from ptm.data.segment_store import SegmentData, unigram_entropy
from tests.conftest import segment_config, write_corpus


class Untouchable:
    """Stands in for the memory map: any read through it fails the test."""

    def __getitem__(self, key):
        raise AssertionError("read through the memory map")

    def __array__(self, *args, **kwargs):
        raise AssertionError("read through the memory map")

    def __len__(self):
        raise AssertionError("read through the memory map")


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("store")
    corpus = write_corpus(folder / "c.txt", 200, words=True)
    build_segments([corpus], folder / "seg", segment_config(max_seq_len=64, eval_fraction=0.1))
    return folder / "seg"


@pytest.mark.parametrize("size", [1, 7, 1 << 24])
def test_token_chunks_are_the_tokens_in_order(segments: Path, size: int) -> None:
    data = SegmentData(segments, "train")
    chunks = list(data.token_chunks(size))
    assert all(len(c) == size for c in chunks[:-1]) and 0 < len(chunks[-1]) <= size
    assert np.array_equal(np.concatenate(chunks), np.asarray(data.tokens))
    assert chunks[0].dtype == data.tokens.dtype


def test_the_unigram_entropy_reads_the_file_not_the_map(segments: Path) -> None:
    data = SegmentData(segments, "train")
    tokens = np.asarray(data.tokens).astype(np.int64)
    special = [0, 1, 2, 3]
    counts = np.bincount(tokens, minlength=int(tokens.max()) + 1)
    counts[special] = 0
    p = counts[counts > 0] / counts.sum()
    expected = float(-(p * np.log(p)).sum())
    data.tokens = Untouchable()
    assert unigram_entropy(data, special, len(counts)) == pytest.approx(expected, rel=1e-12)
