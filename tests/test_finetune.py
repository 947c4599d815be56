"""The fine-tuning stage on tiny configs: every task kind, outputs, export/reload, selection,
early stopping, guards and bad input."""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from finetune.train import run
from ptm.config import from_conf
from ptm.errors import DivergenceError, InputError
from ptm.models.finetuned import MEAN_POOLED, load_finetuned
from ptm.models.heads import TaskModel
from ptm.tasks.kinds import Classification
from ptm.training.llrd import layer_decay_groups
from tests.conftest import CONF_DIR, compose_config, run_module
from tests.finetune_helpers import (
    finetune_config,
    task_overrides,
    tiny_model_dir,
    write_classification,
    write_multilabel,
    write_pairs,
    write_tags,
)


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tiny_model_dir(tmp_path / "base")


def read_column(path: Path) -> tuple[list[str], list[str]]:
    rows = list(csv.reader(path.open(), delimiter="\t"))
    return rows[0], [r[0] for r in rows[1:]]


def texts_of(path: Path, column: int = 0) -> list[str]:
    return [line.split("\t")[column] for line in path.read_text().splitlines()[1:]]


def cls_config(tmp_path: Path, model_dir: Path, *extra: str, name: str = "cls"):
    files = write_classification(tmp_path / "data")
    overrides = task_overrides(name, files, "classification", max_seq_len=64)
    return finetune_config(tmp_path, model_dir, tmp_path / "run", *overrides, *extra), files


def test_classification_outputs_and_a_model_transformers_loads(
    tmp_path: Path, model_dir: Path
) -> None:
    cfg, files = cls_config(tmp_path, model_dir)
    metrics = run(cfg)
    run_dir = tmp_path / "run"
    entry = metrics["tasks"]["cls"]
    assert entry["metric"] == "macro_f1" and entry["labels"] == ["neg", "pos"]
    assert entry["dev"]["macro_f1"] > 0.8 and entry["test"]["macro_f1"] > 0.8
    assert set(entry["dev"]["per_class"]["pos"]) == {"precision", "recall", "f1", "support"}
    assert (
        json.loads((run_dir / "metrics.json").read_text())["tasks"]["cls"]["test"] == entry["test"]
    )

    # Submission: the competition's format, one row per test row, in order.
    header, labels = read_column(run_dir / "predictions" / "cls" / "submission.csv")
    test_texts = texts_of(files["test"])
    assert header == ["label"] and len(labels) == len(test_texts) == 30
    probs = np.loadtxt(run_dir / "predictions" / "cls" / "probabilities.csv", skiprows=1)
    assert probs.shape == (30, 2) and np.allclose(probs.sum(1), 1, atol=1e-4)
    assert [["neg", "pos"][i] for i in probs.argmax(1)] == labels

    # The folder is a BertForSequenceClassification computing our [CLS]-state head.
    model_out = run_dir / "model"
    hf = AutoModelForSequenceClassification.from_pretrained(model_out).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_out)
    assert type(hf).__name__ == "BertForSequenceClassification"
    assert hf.config.id2label == {0: "neg", 1: "pos"}
    ours, _, meta = load_finetuned(model_out)
    assert meta["hf_class"] == "BertForSequenceClassification"
    for i in (0, 7, 29):  # row by row: the submission is in file order
        enc = tokenizer(test_texts[i], return_tensors="pt")
        with torch.no_grad():
            hf_logits = hf(**enc).logits[0]
            our_logits = ours("cls", **enc)[0]
        torch.testing.assert_close(hf_logits, our_logits, rtol=1e-5, atol=1e-5)
        assert hf.config.id2label[int(hf_logits.argmax())] == labels[i]
        np.testing.assert_allclose(torch.softmax(hf_logits, -1).numpy(), probs[i], atol=1e-5)

    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    tags = acc.Tags()
    assert {"dev/cls/macro_f1", "dev/cls/accuracy", "train/loss", "train/lr"} <= set(
        tags["scalars"]
    )
    assert "dev/cls/confusion_matrix" in tags["images"]
    assert (run_dir / "run.json").is_file() and (tmp_path / "latest").is_symlink()
    # A CPU run repeats exactly on the same number of threads: the summary says how many.
    assert json.loads((run_dir / "run.json").read_text())["summary"]["threads"] == 1
    # The run's record and the folder's model card carry the dev and test scores.
    record = json.loads((run_dir / "record.json").read_text())
    assert (
        record["kind"] == "finetune" and record["metrics"]["tasks"]["cls"]["test"] == entry["test"]
    )
    card = ModelCard.load(model_out / "README.md")
    assert card.data.pipeline_tag == "text-classification"
    scores = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert scores[("test", "f1")] == pytest.approx(entry["test"]["macro_f1"], abs=1e-4)


@pytest.mark.parametrize("pooling", ["pooler", "mean"])
def test_other_poolings_export_faithfully(tmp_path: Path, model_dir: Path, pooling: str) -> None:
    cfg, files = cls_config(tmp_path, model_dir, f"head={pooling}", "train.epochs=2")
    metrics = run(cfg)
    folder = tmp_path / "run" / "model"
    ours, tokenizer, meta = load_finetuned(folder)
    enc = tokenizer(texts_of(files["test"])[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = torch.softmax(ours("cls", **enc), -1)
    probs = np.loadtxt(tmp_path / "run" / "predictions" / "cls" / "probabilities.csv", skiprows=1)
    np.testing.assert_allclose(expected.numpy(), probs[:4], atol=1e-5)
    if pooling == "pooler":
        assert metrics["model"]["hf_class"] == "BertForSequenceClassification"
        hf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
        with torch.no_grad():
            torch.testing.assert_close(torch.softmax(hf(**enc).logits, -1), expected)
    else:  # transformers has no mean-pooling classifier: ours travels in the folder
        assert metrics["model"]["hf_class"] == meta["hf_class"] == MEAN_POOLED
        assert "trust_remote_code=True" in meta["loads_with"]
        assert (folder / "modeling_mean_pooling.py").is_file()
        # Loaded where ptm cannot be imported, padded batch and all: what a user without ptm gets.
        script = (
            "import sys, json, torch; sys.modules['ptm'] = None\n"
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline\n"
            f"folder, texts = {str(folder)!r}, {texts_of(files['test'])[:4]!r}\n"
            "hf = AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True).eval()\n"
            "enc = AutoTokenizer.from_pretrained(folder)(texts, padding=True, return_tensors='pt')\n"
            "with torch.no_grad():\n"
            "    probs = torch.softmax(hf(**enc).logits, -1).tolist()\n"
            "top = pipeline('text-classification', model=folder, trust_remote_code=True)(texts[0])[0]\n"
            "print(json.dumps({'class': type(hf).__name__, 'probs': probs, 'top': top}))\n"
        )
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
        )
        assert out.returncode == 0, out.stderr[-2000:]
        loaded = json.loads(out.stdout.strip().splitlines()[-1])
        assert loaded["class"] == MEAN_POOLED
        np.testing.assert_allclose(loaded["probs"], expected.numpy(), atol=1e-5)
        assert loaded["top"]["label"] == ["neg", "pos"][int(expected[0].argmax())]
        assert type(AutoModel.from_pretrained(folder)).__name__ == "BertModel"


def test_an_albert_cls_head_exports_to_its_transformers_class(tmp_path: Path) -> None:
    model_dir = tiny_model_dir(tmp_path / "albert", arch="albert")
    cfg, files = cls_config(tmp_path, model_dir, "train.epochs=2")
    assert run(cfg)["model"]["hf_class"] == "AlbertForSequenceClassification"
    folder = tmp_path / "run" / "model"
    ours, tokenizer, _ = load_finetuned(folder)
    hf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    enc = tokenizer(texts_of(files["test"])[:4], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(hf(**enc).logits, ours("cls", **enc), rtol=1e-5, atol=1e-5)


def test_token_task_windows_long_rows_and_exports(tmp_path: Path, model_dir: Path) -> None:
    files = write_tags(tmp_path / "tags", long_every=5)  # dev/test rows of 100 IDs > 32 positions
    cfg = finetune_config(
        tmp_path,
        model_dir,
        tmp_path / "run",
        *task_overrides("ner", files, "tokens", label_column="tags", max_seq_len=32),
        "train.epochs=10",
    )
    metrics = run(cfg)
    entry = metrics["tasks"]["ner"]
    assert entry["metric"] == "entity_f1" and entry["dev"]["entity_f1"] > 0.8
    assert set(entry["test"]["per_type"]) == {"LOC", "PER"}
    header, rows = read_column(tmp_path / "run" / "predictions" / "ner" / "submission.csv")
    texts = texts_of(files["test"])
    assert header == ["tags"] and len(rows) == len(texts)
    assert [len(r.split()) for r in rows] == [len(t.split()) for t in texts]
    assert len(texts[0].split()) == 100  # a windowed row got a tag for every ID
    hf = AutoModelForTokenClassification.from_pretrained(tmp_path / "run" / "model")
    assert type(hf).__name__ == "BertForTokenClassification"
    assert set(hf.config.label2id) == set(entry["labels"])


def test_pair_task_learns_which_text_holds_the_marker(tmp_path: Path, model_dir: Path) -> None:
    files = write_pairs(tmp_path / "pairs")
    cfg = finetune_config(
        tmp_path,
        model_dir,
        tmp_path / "run",
        *task_overrides("nli", files, "pair", text_column="text_a", max_seq_len=32),
        "train.epochs=10",
    )
    metrics = run(cfg)
    assert metrics["tasks"]["nli"]["dev"]["macro_f1"] > 0.9
    assert "test" not in metrics["tasks"]["nli"]  # no answers for the test file
    _, rows = read_column(tmp_path / "run" / "predictions" / "nli" / "submission.csv")
    assert len(rows) == 20 and set(rows) <= {"first", "second"}
    hf = AutoModelForSequenceClassification.from_pretrained(tmp_path / "run" / "model").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "run" / "model")
    a, b = texts_of(files["dev"], 0)[1], texts_of(files["dev"], 1)[1]
    enc = tokenizer(a, b, return_tensors="pt")
    assert enc["token_type_ids"][0, -1] == 1
    with torch.no_grad():
        assert hf.config.id2label[int(hf(**enc).logits.argmax())] == "second"


def test_multi_label_task_learns_every_label_of_a_text_and_exports(
    tmp_path: Path, model_dir: Path
) -> None:
    files = write_multilabel(tmp_path / "ml")
    cfg = finetune_config(
        tmp_path,
        model_dir,
        tmp_path / "run",
        *task_overrides("tags", files, "multi_label", max_seq_len=64),
        "train.epochs=15",
    )
    metrics = run(cfg)
    entry = metrics["tasks"]["tags"]
    assert entry["kind"] == "multi_label" and entry["metric"] == "macro_f1"
    assert entry["labels"] == ["neg", "pos", "third"]
    assert entry["dev"]["macro_f1"] > 0.9 and entry["test"]["micro_f1"] > 0.9
    threshold = entry["dev"]["threshold"]
    assert entry["test"]["threshold"] == threshold and 0.05 <= threshold <= 0.95

    # Submission: each row's labels joined by the separator, in test order, from the
    # probabilities and the dev threshold (the most probable label where none reaches it).
    header, rows = read_column(tmp_path / "run" / "predictions" / "tags" / "submission.csv")
    probs = np.loadtxt(tmp_path / "run" / "predictions" / "tags" / "probabilities.csv", skiprows=1)
    assert header == ["label"] and len(rows) == 30 and probs.shape == (30, 3)
    for row, p in zip(rows, probs, strict=True):
        chosen = [lab for lab, q in zip(entry["labels"], p, strict=True) if q >= threshold]
        assert row.split(",") == (chosen or [entry["labels"][int(p.argmax())]])
    truth = texts_of(files["test_labels"])
    assert sum(r == t for r, t in zip(rows, truth, strict=True)) >= 24

    # transformers loads it as a multi-label classifier computing the same sigmoid outputs.
    folder = tmp_path / "run" / "model"
    hf = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    assert hf.config.problem_type == "multi_label_classification"
    assert hf.config.id2label == {0: "neg", 1: "pos", 2: "third"}
    tokenizer = AutoTokenizer.from_pretrained(folder)
    enc = tokenizer(texts_of(files["test"])[:5], padding=True, return_tensors="pt")
    with torch.no_grad():
        np.testing.assert_allclose(torch.sigmoid(hf(**enc).logits).numpy(), probs[:5], atol=1e-5)
    _, _, meta = load_finetuned(folder)
    assert meta["tasks"]["tags"]["decision"] == {"threshold": threshold}
    assert meta["tasks"]["tags"]["label_separator"] == ","


def test_multitask_shares_one_encoder_and_scores_each_task(tmp_path: Path, model_dir: Path) -> None:
    cls_files = write_classification(tmp_path / "cls")
    tag_files = write_tags(tmp_path / "tags")
    cfg = finetune_config(
        tmp_path,
        model_dir,
        tmp_path / "run",
        *task_overrides("cls", cls_files, "classification", max_seq_len=64),
        *task_overrides("ner", tag_files, "tokens", label_column="tags", max_seq_len=32),
        "train.epochs=6",
        "train.mix_temperature=1000",  # ~uniform over the two tasks
    )
    metrics = run(cfg)
    assert metrics["tasks"]["cls"]["metric"] == "macro_f1"
    assert metrics["tasks"]["ner"]["metric"] == "entity_f1"
    assert metrics["tasks"]["cls"]["dev"]["macro_f1"] > 0.8
    assert metrics["tasks"]["ner"]["dev"]["entity_f1"] > 0.5
    assert "mean" in metrics["selected_on"]
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    mix = {k: v["mix"] for k, v in run_json["summary"]["tasks"].items()}
    assert mix["cls"] == pytest.approx(0.5, abs=0.01)

    folder = tmp_path / "run" / "model"
    ours, tokenizer, meta = load_finetuned(folder)
    assert meta["hf_class"] is None and set(meta["tasks"]) == {"cls", "ner"}
    assert isinstance(ours, TaskModel) and set(ours.heads) == {"cls", "ner"}
    enc = tokenizer(texts_of(cls_files["test"])[:3], padding=True, return_tensors="pt")
    probs = np.loadtxt(tmp_path / "run" / "predictions" / "cls" / "probabilities.csv", skiprows=1)
    with torch.no_grad():
        np.testing.assert_allclose(
            torch.softmax(ours("cls", **enc), -1).numpy(), probs[:3], atol=1e-5
        )
    acc = EventAccumulator(str(tmp_path / "run" / "tb"))
    acc.Reload()
    assert {"train/cls/loss", "train/ner/loss", "dev/ner/entity_f1"} <= set(acc.Tags()["scalars"])


def test_the_best_checkpoint_is_chosen_on_dev_macro_f1(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Macro-F1 peaks at the 3rd evaluation; accuracy and loss are best elsewhere."""
    macro = [0.2, 0.3, 0.9, 0.4, 0.5, 0.6, 0.7, 0.8]
    accuracy = [0.9, 0.95, 0.5, 0.96, 0.97, 0.98, 0.99, 0.995]
    heads_at: list[dict] = []
    real_score, real_predict = Classification.score, Classification.predict

    def scripted(self, task, split, prediction, decision):
        out = real_score(self, task, split, prediction, decision)
        if split.name == "dev":
            i = len(heads_at) - 1
            out |= {"macro_f1": macro[i], "accuracy": accuracy[i], "loss": 1.0 - accuracy[i]}
        return out

    def spying(self, model, task, split, *args, **kwargs):
        if split.name == "dev":
            heads_at.append({k: v.clone() for k, v in model.heads.state_dict().items()})
        return real_predict(self, model, task, split, *args, **kwargs)

    monkeypatch.setattr(Classification, "score", scripted)
    monkeypatch.setattr(Classification, "predict", spying)
    cfg, _ = cls_config(tmp_path, model_dir, "train.eval_every=5", "train.epochs=4")
    metrics = run(cfg)
    # Eight evaluations, then the best model's dev probabilities (dev_probabilities.csv).
    assert len(heads_at) == 9
    assert metrics["best"]["step"] == 15 and metrics["best"]["dev_score"] == 0.9
    assert metrics["tasks"]["cls"]["dev"]["macro_f1"] == 0.9
    exported = load_file(tmp_path / "run" / "model" / "heads.safetensors")
    for k, v in exported.items():
        torch.testing.assert_close(v, heads_at[2][k])
        torch.testing.assert_close(v, heads_at[8][k])
        assert not torch.equal(v, heads_at[7][k])


def test_early_stopping_after_patience_evaluations(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_score = Classification.score
    calls = []

    def worse_and_worse(self, task, split, prediction, decision):
        out = real_score(self, task, split, prediction, decision)
        calls.append(1)
        return out | {"macro_f1": 1.0 / len(calls)} if split.name == "dev" else out

    monkeypatch.setattr(Classification, "score", worse_and_worse)
    cfg, _ = cls_config(tmp_path, model_dir, "train.eval_every=5", "train.patience=2")
    metrics = run(cfg)
    assert metrics["stopped"] == "early_stopping"
    assert metrics["steps"] == 15 and metrics["best"]["step"] == 5


def test_from_scratch_baseline_reinitialises_the_encoder(tmp_path: Path, model_dir: Path) -> None:
    cfg, _ = cls_config(tmp_path, model_dir, "model.init=scratch", "train.epochs=1")
    run(cfg)
    base = AutoModel.from_pretrained(model_dir)
    ours, _, meta = load_finetuned(tmp_path / "run" / "model")
    assert meta["init"] == "scratch"
    name = "embeddings.word_embeddings.weight"
    assert not torch.allclose(base.state_dict()[name], ours.encoder.state_dict()[name], atol=1e-2)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_model_dropout_sets_every_dropout_and_keeps_the_weights(
    model_dir: Path, dropout: float
) -> None:
    """model.dropout: a model pretrained without dropout fine-tunes with it (cramming), and a
    model saved with 0.1 (the tiny one, Google's) can fine-tune without; the weights stay."""
    from ptm.models.heads import HeadConfig, build_head, load_encoder

    plain = load_encoder(model_dir, pretrained=True, with_pooler=False)
    encoder = load_encoder(model_dir, pretrained=True, with_pooler=False, dropout=dropout)
    assert plain.config.hidden_dropout_prob == 0.1
    for name, tensor in plain.state_dict().items():
        assert torch.equal(encoder.state_dict()[name], tensor), name
    assert {m.p for m in encoder.modules() if isinstance(m, torch.nn.Dropout)} == {dropout}
    head = build_head("sequence", encoder.config, 2, from_conf(HeadConfig, "finetune", "head"))
    assert head.dropout.p == dropout
    torch.manual_seed(0)
    ids = torch.randint(5, 50, (2, 16))
    with torch.no_grad():
        first, second = (encoder.train()(input_ids=ids).last_hidden_state for _ in range(2))
    assert torch.equal(first, second) == (dropout == 0.0)


def test_model_dropout_reaches_the_run_and_the_saved_model(tmp_path: Path, model_dir: Path) -> None:
    cfg, _ = cls_config(tmp_path, model_dir, "model.dropout=0.0", "train.epochs=1")
    run(cfg)
    saved = AutoConfig.from_pretrained(tmp_path / "run" / "model")
    assert saved.hidden_dropout_prob == saved.attention_probs_dropout_prob == 0.0


def test_a_model_dropout_outside_0_1_is_refused(tmp_path: Path, model_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"model.dropout=1.0; use a value in \[0, 1\)"):
        cls_config(tmp_path, model_dir, "model.dropout=1.0")


def test_a_far_too_high_learning_rate_stops_with_a_clear_message(
    tmp_path: Path, model_dir: Path
) -> None:
    """The tiny model collapses to one class at chance loss (no NaN). At 0.05 it does for every
    seed tried; at 0.01, as BERT-mini does, only for some. Its training loss never falls clearly
    below chance, which is also how a healthy model starts: the guard waits ``stall_steps``."""
    cfg, _ = cls_config(
        tmp_path,
        model_dir,
        "train.lr=0.05",
        "train.epochs=10",
        "train.collapse.min_steps=30",
        "train.collapse.window=20",
        "train.collapse.stall_steps=40",
    )
    with pytest.raises(DivergenceError) as caught:
        run(cfg)
    message = str(caught.value)
    assert "training collapsed at step" in message and "peak train.lr=0.05" in message
    assert "no better than predicting the class frequencies" in message
    assert "lower train.lr=0.05 (try 1e-4 or below" in message
    assert not (tmp_path / "run" / "model").exists()


def test_a_diverging_loss_stops_before_export(tmp_path: Path, model_dir: Path) -> None:
    cfg, _ = cls_config(
        tmp_path, model_dir, "train.lr=1e4", "train.grad_clip=0", "train.guard.min_steps=3"
    )
    with pytest.raises(DivergenceError, match=r"diverged at step \d+ .*lower train\.lr"):
        run(cfg)
    assert not (tmp_path / "run" / "model").exists()


def deferring_guards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs set up as on a GPU: the guards read the losses at log steps only."""
    import finetune.train as train_module

    real = train_module.setup

    def setup(*args):
        f, state = real(*args)
        return dataclasses.replace(f, deferred_checks=True), state

    monkeypatch.setattr(train_module, "setup", setup)


def test_guards_read_at_log_steps_only_still_stop_at_the_step_that_diverged(
    tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a GPU run does (no step waits for the loss of the one before): the same run gives
    the same numbers, and a divergence is still named at its own step, before any export."""
    cfg, _ = cls_config(tmp_path, model_dir, "train.log_every=7", "train.epochs=2")
    straight = run(cfg)
    deferring_guards(monkeypatch)
    deferred = run(dataclasses.replace(cfg, run_dir=tmp_path / "deferred"))
    assert deferred["tasks"] == json.loads(json.dumps(straight["tasks"]).replace(
        str(tmp_path / "run"), str(tmp_path / "deferred")))  # fmt: skip

    bad, _ = cls_config(
        tmp_path, model_dir, "train.lr=1e4", "train.grad_clip=0", "train.guard.min_steps=3",
        "train.log_every=50",
    )  # fmt: skip
    monkeypatch.undo()
    with pytest.raises(DivergenceError) as eager:
        run(dataclasses.replace(bad, run_dir=tmp_path / "eager"))
    deferring_guards(monkeypatch)
    with pytest.raises(DivergenceError) as late:
        run(dataclasses.replace(bad, run_dir=tmp_path / "late"))
    assert str(late.value) == str(eager.value) and "diverged at step" in str(late.value)
    assert not (tmp_path / "late" / "model").exists()


def test_a_tokenizer_that_does_not_match_the_model_is_refused(
    tmp_path: Path, model_dir: Path
) -> None:
    other = tiny_model_dir(tmp_path / "other", vocab_extra=300)
    cfg, _ = cls_config(tmp_path, model_dir, f"model.tokenizer={other}")
    with pytest.raises(InputError, match=r"the tokenizer has 365 entries but the model's vocab"):
        run(cfg)


def test_a_missing_pretrained_model_says_to_run_make_pretrain(tmp_path: Path) -> None:
    cfg, _ = cls_config(tmp_path, tmp_path / "out" / "pretrain" / "latest" / "model")
    with pytest.raises(InputError, match=r"no such model folder — run `make pretrain` first"):
        run(cfg)


def test_bad_input_is_one_line_on_the_command_line(tmp_path: Path, model_dir: Path) -> None:
    files = write_classification(tmp_path / "data")
    files["test"].write_text("label\ttext\nneg\t100 150\n")
    result = run_module(
        "finetune",
        "+experiment=finetune_tiny",
        "~task",
        f"model.path={model_dir}",
        *task_overrides("cls", files, "classification"),
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {files['test']}:1: the test file has a 'label' column")


def test_layer_wise_lr_decay_scales_each_depth(model_dir: Path) -> None:
    from ptm.models.heads import HeadConfig, build_head, load_encoder

    encoder = load_encoder(model_dir, pretrained=True, with_pooler=False)
    model = TaskModel(
        encoder,
        {"t": build_head("sequence", encoder.config, 2, from_conf(HeadConfig, "finetune", "head"))},
    )
    groups = layer_decay_groups(model, n_layers=2, decay=0.5, weight_decay=0.01)
    scale = {}
    for g in groups:
        for p in g["params"]:
            scale[id(p)] = (g["lr_scale"], g["weight_decay"])
    named = dict(model.named_parameters())
    assert scale[id(named["heads.t.classifier.weight"])] == (1.0, 0.01)
    assert scale[id(named["heads.t.classifier.bias"])] == (1.0, 0.0)
    assert scale[id(named["encoder.encoder.layer.1.output.dense.weight"])] == (0.5, 0.01)
    assert scale[id(named["encoder.encoder.layer.0.output.dense.weight"])] == (0.25, 0.01)
    assert scale[id(named["encoder.embeddings.word_embeddings.weight"])] == (0.125, 0.01)
    assert scale[id(named["encoder.embeddings.LayerNorm.weight"])] == (0.125, 0.0)
    assert sum(len(g["params"]) for g in groups) == len(named)
    plain = layer_decay_groups(model, n_layers=2, decay=1.0, weight_decay=0.01)
    assert len(plain) == 2 and all(g["lr_scale"] == 1.0 for g in plain)


@pytest.mark.parametrize("group", ["task", "head", "experiment"])
def test_every_finetune_config_option_composes(group: str, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from finetune.config import build_config

    # conf/task/_base.yaml is what task files extend, not a task to choose.
    options = sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml") if p.stem[0] != "_")
    if group == "experiment":
        options = [o for o in options if o.startswith("finetune")]
    assert options
    for option in options:
        override = f"+experiment={option}" if group == "experiment" else f"{group}={option}"
        extra = []
        if group == "task":  # required files: every task of the file whose train is ???
            spec = OmegaConf.load(Path(CONF_DIR) / group / f"{option}.yaml")
            extra = [
                f"tasks.{name}.train={tmp_path / 'train.csv'}"
                for name, task in spec.items()
                if name != "defaults" and OmegaConf.is_missing(task, "train")
            ]
        cfg = compose_config("finetune", [override, *extra])
        config = build_config(OmegaConf.to_container(cfg, resolve=True))
        assert config.tasks and config.train.lr > 0
        if option == "multitask":
            assert [t.name for t in config.tasks] == ["sentiment", "names"]
        if option == "tianchi_multitask":
            assert [t.name for t in config.tasks] == ["ocnli", "ocemotion", "tnews"]


def test_a_task_brings_its_own_defaults_and_the_command_line_wins() -> None:
    """conf/task_defaults/: names trains at its measured learning rate, sentiment with dropout
    0.1; multitask (both were measured alone) and a task with no file there (tianchi) keep
    conf/finetune_train's rate and the model's own dropout (null)."""
    default = yaml.safe_load((Path(CONF_DIR) / "finetune_train" / "default.yaml").read_text())
    own = {
        task: yaml.safe_load((Path(CONF_DIR) / "task_defaults" / f"{task}.yaml").read_text())
        for task in ("names", "sentiment")
    }
    names_lr, sentiment_dropout = own["names"]["train"]["lr"], own["sentiment"]["model"]["dropout"]
    assert names_lr > default["lr"] and sentiment_dropout > 0
    configs = {
        task: compose_config("finetune", [f"task={task}", *extra])
        for task, extra in (
            ("sentiment", []),
            ("names", []),
            ("multitask", []),
            ("tianchi", ["tasks.tianchi.train=x.csv"]),
        )
    }
    assert {t: (c.train.lr, c.model.dropout) for t, c in configs.items()} == {
        "sentiment": (default["lr"], sentiment_dropout),
        "names": (names_lr, None),
        "multitask": (default["lr"], None),
        "tianchi": (default["lr"], None),
    }
    assert compose_config("finetune", ["task=names", "train.lr=2e-4"]).train.lr == 2e-4
    assert compose_config("finetune", ["task=names"]).train.epochs == default["epochs"]
    assert (
        compose_config("finetune", ["task=sentiment", "model.dropout=null"]).model.dropout is None
    )


def test_every_task_defaults_file_names_a_task() -> None:
    """finetune.yaml picks conf/task_defaults/<task>.yaml as an optional default, so a file whose
    name matches no task would be skipped without a word: each must match a conf/task/ file."""
    conf = Path(CONF_DIR)
    defaults = {p.stem for p in (conf / "task_defaults").glob("*.yaml")}
    assert defaults and defaults <= {p.stem for p in (conf / "task").glob("*.yaml")}


@pytest.mark.slow
def test_two_torchrun_processes_finetune(tmp_path: Path, model_dir: Path) -> None:
    """gloo on CPU: 2 processes x micro 8 share the global batch of 16, multi-task included."""
    cls_files = write_classification(tmp_path / "cls")
    tag_files = write_tags(tmp_path / "tags")
    common = [
        "+experiment=finetune_tiny",
        "~task",
        f"model.path={model_dir}",
        *task_overrides("cls", cls_files, "classification", max_seq_len=64),
        *task_overrides("ner", tag_files, "tokens", label_column="tags", max_seq_len=32),
        "train.limit_examples=null",
        "train.batch_size=16",
        "train.micro_batch_size=8",
        "train.epochs=2",
    ]
    result = run_module("finetune", *common, f"hydra.run.dir={tmp_path / 'two'}", processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"cls", "ner"} and metrics["steps"] > 0


def test_latest_names_the_newest_run_but_not_inside_a_sweep(tmp_path: Path) -> None:
    from ptm.training.rundir import point_latest

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        point_latest(tmp_path / name)
    assert (tmp_path / "latest").resolve() == (tmp_path / "b").resolve()
    sweep = tmp_path / "sweep"
    (sweep / "0").mkdir(parents=True)
    (sweep / "multirun.yaml").write_text("{}\n")
    point_latest(sweep / "0")
    assert not (sweep / "latest").exists()
    study = tmp_path / "study"  # an Optuna sweep: no multirun.yaml, Hydra's job folders only
    (study / "0" / ".hydra").mkdir(parents=True)
    point_latest(study / "0")
    assert not (study / "latest").exists()


def test_a_task_length_follows_the_model(
    tmp_path: Path, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``max_seq_len: null`` (conf/task/_base.yaml) is the model's positions; a length the tiny
    model (64 positions) has no room for is capped at them, with a log line."""
    caplog.set_level(logging.INFO, logger="finetune.train")
    files = write_classification(tmp_path / "data")
    for length, run_dir in ((128, tmp_path / "long"), (None, tmp_path / "model_length")):
        extra = {} if length is None else {"max_seq_len": length}
        overrides = task_overrides("cls", files, "classification", **extra)
        run(finetune_config(tmp_path, model_dir, run_dir, *overrides, "train.epochs=1"))
        meta = json.loads((run_dir / "model" / "finetune.json").read_text())
        assert meta["tasks"]["cls"]["max_seq_len"] == 64
    assert caplog.text.count("task cls: max_seq_len 128 capped at the model's 64 positions") == 1
