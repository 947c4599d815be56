"""Small models and labelled files for the fine-tuning tests, written in ``tmp_path`` in
milliseconds: a random tiny BERT folder with an ID tokenizer, and tasks a tiny model learns in a
few dozen steps (the label is decided by which marker IDs a text contains)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from transformers import AlbertConfig, AlbertForMaskedLM, BertConfig, BertForMaskedLM

from ptm.data.tokenizer import SPECIAL_TOKENS, build_tokenizer, save_tokenizer
from tests.conftest import compose_config, run_module

FIRST_ID, N_IDS = 100, 60  # corpus IDs 100..159
MARKERS = {"neg": 150, "pos": 151, "third": 152}
PERSON = (140, 141)  # a two-ID name: B-PER I-PER
PLACE = 145  # a one-ID place: B-LOC


def tiny_model_dir(
    folder: Path, vocab_extra: int = 0, max_positions: int = 64, seed: int = 0, arch: str = "bert"
) -> Path:
    """A random tiny masked LM + its ID tokenizer, laid out as `make pretrain` writes it."""
    torch.manual_seed(seed)
    vocab = [*SPECIAL_TOKENS, *(str(i) for i in range(FIRST_ID, FIRST_ID + N_IDS + vocab_extra))]
    tokenizer = build_tokenizer(vocab, max_positions)
    config = tiny_config(len(vocab), max_positions, tokenizer.pad_token_id, arch)
    model_class = BertForMaskedLM if arch == "bert" else AlbertForMaskedLM
    model_class(config).save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    return folder


def tiny_config(vocab_size: int, max_positions: int, pad_id: int, arch: str = "bert"):
    """The tiny encoder the fine-tuning tests train: 2 layers of width 32."""
    return (BertConfig if arch == "bert" else AlbertConfig)(
        vocab_size=vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=max_positions,
        pad_token_id=pad_id,
        **({"embedding_size": 16} if arch == "albert" else {}),
    )


def _text(rng: np.random.Generator, n: int) -> list[int]:
    return [int(x) for x in rng.integers(FIRST_ID, FIRST_ID + 40, n)]


def classification_rows(n: int, seed: int, classes: int = 2) -> list[tuple[str, str]]:
    """``(label, text)``: class ``c`` texts contain the marker of ``c`` somewhere."""
    rng = np.random.default_rng(seed)
    names = ["neg", "pos", "third"][:classes]
    rows = []
    for i in range(n):
        c = i % classes
        ids = _text(rng, int(rng.integers(4, 30)))
        ids.insert(int(rng.integers(0, len(ids))), MARKERS[names[c]])
        rows.append((names[c], " ".join(map(str, ids))))
    return rows


def write_classification(folder: Path, n_train: int = 160, classes: int = 2) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, n, seed in (("train", n_train, 1), ("dev", 40, 2)):
        rows = classification_rows(n, seed, classes)
        path = folder / f"{name}.csv"
        path.write_text("label\ttext\n" + "".join(f"{lab}\t{t}\n" for lab, t in rows))
        files[name] = path
    test = classification_rows(30, 3, classes)
    files["test"] = folder / "test.csv"
    files["test"].write_text("text\n" + "".join(f"{t}\n" for _, t in test))
    files["test_labels"] = folder / "test_labels.csv"
    files["test_labels"].write_text("label\n" + "".join(f"{lab}\n" for lab, _ in test))
    return files


def multilabel_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """``(labels, text)``: a text carries the marker of each of its labels (one to three of
    ``neg``, ``pos``, ``third``), labels joined by commas."""
    rng = np.random.default_rng(seed)
    names = ["neg", "pos", "third"]
    rows = []
    for i in range(n):
        chosen = [c for c in names if rng.random() < 0.4] or [names[i % 3]]
        ids = _text(rng, int(rng.integers(4, 30)))
        for c in chosen:
            ids.insert(int(rng.integers(0, len(ids))), MARKERS[c])
        rows.append((",".join(chosen), " ".join(map(str, ids))))
    return rows


def write_multilabel(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, n, seed in (("train", 160, 1), ("dev", 40, 2)):
        path = folder / f"{name}.csv"
        path.write_text(
            "label\ttext\n" + "".join(f"{a}\t{t}\n" for a, t in multilabel_rows(n, seed))
        )
        files[name] = path
    test = multilabel_rows(30, 3)
    files["test"] = folder / "test.csv"
    files["test"].write_text("text\n" + "".join(f"{t}\n" for _, t in test))
    files["test_labels"] = folder / "test_labels.csv"
    files["test_labels"].write_text("label\n" + "".join(f"{a}\n" for a, _ in test))
    return files


def write_pairs(folder: Path) -> dict[str, Path]:
    """``text_a\ttext_b\tlabel``: ``first`` or ``second`` — which text holds the marker, so the
    model must tell the two texts apart (token types, [SEP])."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, n, seed in (("train", 160, 1), ("dev", 40, 2), ("test", 20, 3)):
        rng = np.random.default_rng(seed)
        lines = ["text_a\ttext_b" + ("" if name == "test" else "\tlabel")]
        for i in range(n):
            a, b = _text(rng, int(rng.integers(3, 12))), _text(rng, int(rng.integers(3, 12)))
            side = a if i % 2 == 0 else b
            side.insert(int(rng.integers(0, len(side))), MARKERS["neg"])
            row = f"{' '.join(map(str, a))}\t{' '.join(map(str, b))}"
            label = "first" if i % 2 == 0 else "second"
            lines.append(row if name == "test" else f"{row}\t{label}")
        files[name] = folder / f"{name}.csv"
        files[name].write_text("\n".join(lines) + "\n")
    return files


def tag_rows(n: int, seed: int, long_every: int = 0) -> list[tuple[str, str]]:
    """``(text, tags)``: the PERSON pair is B-PER I-PER, PLACE is B-LOC, the rest O."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        length = 100 if long_every and i % long_every == 0 else int(rng.integers(5, 20))
        ids = _text(rng, length)
        tags = ["O"] * len(ids)
        at = int(rng.integers(0, len(ids) - 2))
        if i % 2 == 0:
            ids[at : at + 2], tags[at : at + 2] = list(PERSON), ["B-PER", "I-PER"]
        else:
            ids[at], tags[at] = PLACE, "B-LOC"
        rows.append((" ".join(map(str, ids)), " ".join(tags)))
    return rows


def write_tags(folder: Path, long_every: int = 0) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, n, seed in (("train", 160, 1), ("dev", 40, 2), ("test", 30, 3)):
        files[name] = folder / f"{name}.csv"
        files[name].write_text(
            "text\ttags\n"
            + "".join(
                f"{t}\t{g}\n" for t, g in tag_rows(n, seed, long_every if name != "train" else 0)
            )
        )
    return files


def task_overrides(name: str, files: dict[str, Path], kind: str, **extra) -> list[str]:
    """Command-line overrides defining task ``name`` over ``files`` (replacing the default task):
    a task without a file starts from conf/task/_base.yaml, as a user's would."""
    out = [f"+task@tasks.{name}=_base", f"tasks.{name}.kind={kind}"]
    for key in ("train", "dev", "test", "test_labels"):
        if key in files:
            out.append(f"tasks.{name}.{key}={files[key]}")
    out += [f"tasks.{name}.{k}={v}" for k, v in extra.items()]
    return out


def finetune_overrides(tmp_path: Path, model_dir: Path, *overrides: str) -> list[str]:
    """The real Hydra config shrunk to a seconds-long CPU run (tasks given in ``overrides``)."""
    return [
        "+experiment=finetune_tiny",
        "~task",
        f"paths.output_dir={tmp_path / 'out'}",
        f"model.path={model_dir}",
        "train.limit_examples=null",
        "train.epochs=4",
        "train.batch_size=16",
        "train.micro_batch_size=16",
        "train.lr=2e-3",
        "train.log_every=1",
        "train.patience=null",
        *overrides,
    ]


def finetune_config(tmp_path: Path, model_dir: Path, run_dir: Path, *overrides: str):
    """`finetune_overrides` composed into the typed config of a run in ``run_dir``."""
    from finetune.config import build_config

    cfg = compose_config("finetune", finetune_overrides(tmp_path, model_dir, *overrides))
    data = OmegaConf.to_container(cfg, resolve=True)
    data["run_dir"] = str(run_dir)
    return build_config(data)


def run_finetune_sweep(
    tmp_path: Path, *overrides: str, task: str = "cls"
) -> subprocess.CompletedProcess:
    """``python -m finetune -m`` in a subprocess, as a user runs a sweep, on the tiny marker task
    named ``task`` (a few seconds a job); outputs under ``tmp_path``, the sweep in
    ``tmp_path/finetune-multirun``."""
    model = tiny_model_dir(tmp_path / "base")
    files = write_classification(tmp_path / "data")
    return run_module(
        "finetune", "-m", "+experiment=finetune_tiny", "~task",
        f"model.path={model}", *task_overrides(task, files, "classification", max_seq_len=64),
        f"paths.output_dir={tmp_path}", "train.limit_examples=null", "train.epochs=4",
        "train.patience=null", "train.micro_batch_size=16", *overrides,
        timeout=300,
    )  # fmt: skip


def the_sweep(tmp_path: Path) -> Path:
    """The one sweep folder a test made under ``tmp_path``."""
    (sweep,) = (tmp_path / "finetune-multirun").iterdir()
    return sweep
