"""Every reader of every stage against damaged files: text that is not UTF-8, NUL bytes, empty
and header-only tables, truncated or corrupt model, tokenizer and checkpoint files. Each must end
in one `InputError` naming the file (and the line, for text) — never a traceback from deep inside
a library, and never data silently changed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from finetune.train import run
from ptm.data.tokenizer import SPECIAL_TOKENS, build_tokenizer, load_tokenizer
from ptm.errors import InputError
from ptm.models.heads import encoder_config, load_encoder
from ptm.models.mlm import load_mlm_model
from ptm.tasks.tables import Table
from tests.conftest import run_module
from tests.finetune_helpers import (
    finetune_config,
    task_overrides,
    tiny_model_dir,
    write_classification,
)

GOOD = b"label\ttext\npos\t100 101\nneg\t102 103\n"


def read_all(path: Path) -> list[list[str]]:
    return [row for _, rows in Table(path).batches() for row in rows]


@pytest.mark.parametrize(
    ("content", "line", "message"),
    [
        (GOOD.replace(b"101", b"1\xe901"), 2, "not UTF-8 text: byte 0xe9 at column 10"),
        (b"lab\xe9l\ttext\npos\t100\n", 1, "not UTF-8 text: byte 0xe9 at column 4"),
        (GOOD + b"neg\t104 \xff\n", 4, "not UTF-8 text: byte 0xff at column 9"),
        (GOOD.decode().encode("utf-16"), 1, "UTF-16 text: byte 0xff at column 1"),
        (GOOD.replace(b"\nneg", b"\nn\x00eg"), 3, "a NUL byte at column 2"),
        (b"", 1, "the file is empty"),
        (b"\n\n", 1, "the file is empty"),
    ],
)
def test_a_task_table_that_is_not_clean_text_names_its_line(
    tmp_path: Path, content: bytes, line: int, message: str
) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as caught:
        read_all(path)
    assert caught.value.path == path and caught.value.line == line


def test_bad_bytes_in_rows_a_limit_skips_are_still_found(tmp_path: Path) -> None:
    """A smoke run keeps some rows only; the others are still read and checked, in any order."""
    path = tmp_path / "train.csv"
    rows = b"".join(b"pos\t%d\n" % (100 + i) for i in range(10_000))
    path.write_bytes(b"label\ttext\n" + rows + b"neg\t\xff\n")
    table = Table(path)
    with pytest.raises(InputError, match="not UTF-8 text") as caught:
        list(table.batches(table.spread(3)))
    assert caught.value.line == 10_002


def test_a_bom_and_crlf_line_ends_are_still_accepted(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.replace(b"\n", b"\r\n"))
    assert Table(path).header == ["label", "text"]
    assert read_all(path) == [["pos", "100 101"], ["neg", "102 103"]]


def damaged_copy(model: Path, where: Path, name: str, cut: float | bytes) -> Path:
    """A copy of the model folder with file ``name`` cut to a share of its size, or replaced."""
    shutil.copytree(model, where)
    data = (where / name).read_bytes()
    (where / name).write_bytes(cut if isinstance(cut, bytes) else data[: int(len(data) * cut)])
    return where


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory.mktemp("model") / "base")


@pytest.mark.parametrize(
    ("name", "cut", "message"),
    [
        ("model.safetensors", 0.5, "unreadable weights"),
        ("model.safetensors", b"", "unreadable weights"),
        ("model.safetensors", b"\x00" * 64, "unreadable weights"),
        ("config.json", 0.5, "not a readable model config"),
        ("config.json", b"\xff\xfe{}", "not a readable model config"),
    ],
)
def test_a_truncated_or_corrupt_model_folder_is_one_line(
    tmp_path: Path, model_dir: Path, name: str, cut: float | bytes, message: str
) -> None:
    folder = damaged_copy(model_dir, tmp_path / "damaged", name, cut)
    for load in (  # fine-tuning's encoder and pretraining's init_from read the same folder
        lambda: load_encoder(folder, pretrained=True, with_pooler=False),
        lambda: load_mlm_model(folder),
    ):
        with pytest.raises(InputError, match=message) as caught:
            load()
        assert caught.value.path == folder / name
    if name == "model.safetensors":
        encoder_config(folder)  # the config alone is still readable


@pytest.mark.parametrize(
    ("name", "cut"),
    [("tokenizer.json", 0.5), ("tokenizer.json", b""), ("tokenizer_config.json", b"\xff{")],
)
def test_a_truncated_or_corrupt_tokenizer_is_one_line(
    tmp_path: Path, model_dir: Path, name: str, cut: float | bytes
) -> None:
    folder = damaged_copy(model_dir, tmp_path / "damaged", name, cut)
    for target in (folder, folder / name) if name == "tokenizer.json" else (folder,):
        with pytest.raises(InputError, match="not a readable JSON file") as caught:
            load_tokenizer(target)
        assert caught.value.path == folder / name


def test_a_vocab_txt_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes("\n".join(SPECIAL_TOKENS).encode() + b"\n100\n\xff\n")
    with pytest.raises(InputError, match="not UTF-8 text") as caught:
        load_tokenizer(vocab)
    assert caught.value.line == 7
    vocab.write_bytes("\n".join(SPECIAL_TOKENS).encode() + b"\n1\x0000\n")
    with pytest.raises(InputError, match="a NUL byte") as caught:
        load_tokenizer(vocab)
    assert caught.value.line == 6
    assert len(build_tokenizer([*SPECIAL_TOKENS, "100"], 8)) == 6


def test_the_command_line_reports_a_truncated_model_in_one_line(
    tmp_path: Path, model_dir: Path
) -> None:
    """The issue's case as a user meets it: `python -m finetune model.path=<cut copy>`."""
    files = write_classification(tmp_path / "data")
    folder = damaged_copy(model_dir, tmp_path / "damaged", "model.safetensors", 0.5)
    result = run_module(
        "finetune", "+experiment=finetune_tiny", "~task", f"model.path={folder}",
        *task_overrides("cls", files, "classification", max_seq_len=64),
        f"hydra.run.dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {folder / 'model.safetensors'}: unreadable weights"), last


def test_a_latin1_task_file_stops_the_run_naming_its_line(tmp_path: Path, model_dir: Path) -> None:
    files = write_classification(tmp_path / "data")
    files["train"].write_bytes(files["train"].read_bytes().replace(b"pos\t", b"p\xf6s\t", 1))
    overrides = task_overrides("cls", files, "classification", max_seq_len=64)
    cfg = finetune_config(tmp_path, model_dir, tmp_path / "run", *overrides)
    with pytest.raises(InputError, match="not UTF-8 text: byte 0xf6 at column 2") as caught:
        run(cfg)
    assert (caught.value.path, caught.value.line) == (files["train"], 3)


@pytest.fixture(scope="module")
def segments(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ptm.data.segment_builder import build_segments
    from tests.conftest import segment_config, write_corpus

    tmp = tmp_path_factory.mktemp("segments")
    corpus = write_corpus(tmp / "corpus.txt", 40)
    build_segments([corpus], tmp / "seg", segment_config(max_seq_len=32))
    return tmp / "seg"


@pytest.mark.parametrize(
    ("name", "cut", "message"),
    [
        ("meta.json", 0.5, "meta.json: damaged"),
        ("train.tokens.bin", 0.5, "train.tokens.bin: damaged"),
        ("train.tokens.bin", 0.33, "damaged"),  # not a whole number of tokens
        ("train.offsets.bin", b"\x00" * 12, "train.offsets.bin: damaged: 12 bytes"),
    ],
)
def test_a_damaged_segment_cache_says_to_rebuild_it(
    tmp_path: Path, segments: Path, name: str, cut: float | bytes, message: str
) -> None:
    from ptm.data.segment_store import SegmentData

    folder = damaged_copy(segments, tmp_path / "seg", name, cut)
    with pytest.raises(InputError, match=message) as caught:
        SegmentData(folder, "train")
    assert f"delete {folder} and run again" in str(caught.value)
    SegmentData(segments, "train")  # the intact folder still reads


def test_a_tf_vocab_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    from ptm.tf.convert import _tokenizer_from_vocab_txt

    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes("\n".join([*SPECIAL_TOKENS, "100", "##a"]).encode() + b"\n\xe9\n")
    with pytest.raises(InputError, match="not UTF-8 text") as caught:
        _tokenizer_from_vocab_txt(vocab, 32)
    assert (caught.value.path, caught.value.line) == (vocab, 8)


def test_a_fine_tuned_folder_with_damaged_heads_or_meta_is_one_line(
    tmp_path: Path, model_dir: Path
) -> None:
    from ptm.models.finetuned import load_finetuned

    files = write_classification(tmp_path / "data")
    overrides = task_overrides("cls", files, "classification", max_seq_len=64)
    run(finetune_config(tmp_path, model_dir, tmp_path / "run", *overrides, "train.epochs=1"))
    exported = tmp_path / "run" / "model"
    for name, message in (
        ("heads.safetensors", "unreadable weights"),
        ("finetune.json", "not readable JSON"),
    ):
        folder = damaged_copy(exported, tmp_path / name, name, 0.5)
        with pytest.raises(InputError, match=message) as caught:
            load_finetuned(folder)
        assert caught.value.path == folder / name


def test_an_unreadable_job_file_leaves_the_sweep_summary_standing(tmp_path: Path) -> None:
    from sweeps.jobs import read_job

    job = tmp_path / "0"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("- train.lr=1e-4\n")
    (job / "metrics.json").write_bytes(b'{"best": "\xff"}')
    assert read_job(job).status == "incomplete" and "unreadable" in read_job(job).error
    (job / ".hydra" / "overrides.yaml").write_bytes(b"- train.lr=\xff\n")
    with pytest.raises(InputError, match="not valid YAML"):
        read_job(job)
