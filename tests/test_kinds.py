"""Each kind of task on tiny tensors (`ptm.tasks.kinds`): its loss as a sum over items, the items
it counts, what it predicted, what it chooses on dev, its scores and its submission rows; and the
registry's refusal to guess a kind."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import BertConfig

from ptm.errors import InputError
from ptm.models.heads import HEADS, HeadConfig
from ptm.tasks.inference import Prediction
from ptm.tasks.kinds import KINDS, Classification, MultiLabel, Pair, TaskKind, Tokens, kind_of
from ptm.tasks.splits import IGNORE, Split, TaskData
from tests.conftest import task_config


def task_of(kind, labels: list[str], split: Split, **cfg) -> TaskData:
    config = task_config(kind=kind.name, train=Path("train.csv"), **cfg)
    return TaskData(config, kind, labels, {"dev": split}, chance_loss=0.0)


def split_of(n_rows: int, **answers) -> Split:
    ids = [np.array([2, 7, 3], np.int32)] * n_rows
    rows = np.arange(n_rows)
    return Split("dev", Path("dev.csv"), ids, np.full(n_rows, 3), rows, rows + 2, **answers)


# ----------------------------------------------------------------------------- softmax kinds


@pytest.mark.parametrize("kind", [Classification(), Tokens()])
def test_softmax_kinds_sum_cross_entropy_over_labelled_items(kind) -> None:
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]], [[0.5, 0.5, 3.0], [1.0, 0, 0]]])
    labels = torch.tensor([[0, IGNORE], [2, 1]])
    assert kind.count_items(labels) == 3
    logp = torch.log_softmax(logits, -1)
    by_hand = -(logp[0, 0, 0] + logp[1, 0, 2] + logp[1, 1, 1])
    assert torch.allclose(kind.loss_sum(logits, labels), by_hand)
    assert kind.predicted_counts(logits, labels).tolist() == [2.0, 0.0, 1.0]  # argmax: 0, 2, 0


def test_classification_scores_the_argmax_and_submits_label_names(tmp_path: Path) -> None:
    kind = KINDS["classification"]
    split = split_of(4, labels=np.array([0, 1, 1, 2]))
    task = task_of(kind, ["a", "b", "c"], split)
    probs = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.6, 0.3, 0.1], [0.1, 0.1, 0.8]])
    prediction = Prediction(0.5, np.array([2, 1, 1]), probs=probs)
    assert kind.tune(task, split, prediction) == {}
    scores = kind.score(task, split, prediction, {})
    assert scores["loss"] == 0.5 and scores["accuracy"] == 0.75
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    assert scores["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert kind.submission_rows(task, prediction, {}) == ["a", "b", "a", "c"]
    files = kind.write_submission(tmp_path, task, prediction, {})
    assert Path(files["submission"]).read_text() == "label\na\nb\na\nc\n"
    assert Path(files["probabilities"]).read_text().splitlines()[:2] == [
        "a\tb\tc",
        "0.800000\t0.100000\t0.100000",
    ]


def test_tokens_score_entities_and_submit_a_tag_per_word() -> None:
    kind = KINDS["tokens"]
    tags = ["O", "B-PER", "I-PER", "B-LOC"]
    truth = [np.array([1, 2, 0]), np.array([3, 0])]
    split = split_of(2, row_answers=truth)
    task = task_of(kind, tags, split, label_column="tags")
    prediction = Prediction(None, np.zeros(4), row_tags=[np.array([1, 2, 0]), np.array([0, 0])])
    scores = kind.score(task, split, prediction, {})
    assert scores["entity_precision"] == 1.0 and scores["entity_recall"] == 0.5
    assert scores["entity_f1"] == pytest.approx(2 / 3) and scores["tag_accuracy"] == 0.8
    assert kind.submission_rows(task, prediction, {}) == ["B-PER I-PER O", "O O"]


# ----------------------------------------------------------------------------- multi-label


def test_multi_label_sums_binary_cross_entropy_over_every_cell() -> None:
    kind = KINDS["multi_label"]
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([[1, 0, 1], [0, 1, 0]])
    assert kind.count_items(labels) == 6
    p = torch.sigmoid(logits)
    by_hand = -(labels * p.log() + (1 - labels) * (1 - p).log()).sum()
    assert torch.allclose(kind.loss_sum(logits, labels), by_hand)
    assert kind.predicted_counts(logits, labels).tolist() == [1.0, 1.0, 0.0]  # most probable


def test_multi_label_chooses_the_dev_threshold_and_decides_every_row_something() -> None:
    kind = KINDS["multi_label"]
    truth = np.array([[1, 0], [0, 1], [1, 1]])
    probs = np.array([[0.35, 0.1], [0.2, 0.9], [0.4, 0.3]])
    # Every label right needs a threshold in (0.2, 0.3]: 0.25 and 0.3 tie, 0.3 is nearer 0.5.
    split = split_of(3, labels=truth)
    task = task_of(kind, ["x", "y"], split, label_separator=";")
    prediction = Prediction(0.1, np.zeros(2), probs=probs)
    assert kind.tune(task, split, prediction) == {"threshold": 0.3}
    assert kind.decide(np.array([[0.1, 0.2]]), 0.5).tolist() == [[0, 1]]  # none: the likeliest
    scores = kind.score(task, split, prediction, {"threshold": 0.3})
    assert list(scores) == [
        "loss", "macro_f1", "micro_f1", "exact_match", "threshold", "per_class",
    ]  # fmt: skip
    assert scores["macro_f1"] == scores["exact_match"] == 1.0
    assert kind.submission_rows(task, prediction, {"threshold": 0.3}) == ["x", "y", "x;y"]
    meta = kind.export_meta(task, HeadConfig(pooling="cls", dropout=None), {"threshold": 0.3})
    assert meta["decision"] == {"threshold": 0.3} and meta["label_separator"] == ";"


# ----------------------------------------------------------------------------- what kinds differ in


def test_kinds_say_which_columns_hold_text_and_how_a_budget_is_drawn() -> None:
    cfg = task_config(kind="pair", train=Path("x"), text_column="a", text_b_column="b")
    assert Pair().text_columns(cfg) == ["a", "b"]
    assert [KINDS[k].text_columns(cfg) for k in ("classification", "tokens", "multi_label")] == [
        ["a"]
    ] * 3
    answers = ["n", "p", "n", "q"]
    assert Classification().budget_strata(answers).tolist() == [0, 1, 0, 2]
    assert Tokens().budget_strata(answers) is None and MultiLabel().budget_strata(answers) is None
    assert [k for k, kind in KINDS.items() if kind.linear_probe] == ["classification", "tokens"]


def test_a_pair_task_needs_a_second_token_type() -> None:
    task = task_of(Pair(), ["a", "b"], split_of(1))
    Pair().check_model(task, BertConfig(type_vocab_size=2))
    with pytest.raises(InputError, match="no second token type"):
        Pair().check_model(task, BertConfig(type_vocab_size=1))


def test_a_task_names_its_kind_or_is_refused_in_one_line() -> None:
    assert kind_of("ml", {"kind": "multi_label"}) is KINDS["multi_label"]
    with pytest.raises(InputError, match=r"tasks\.mine names no kind — add kind: .*'tokens'"):
        kind_of("mine", {"train": "t.csv"})
    with pytest.raises(InputError, match=r"tasks\.mine\.kind='tags' is unknown"):
        kind_of("mine", {"kind": "tags"})


def test_the_config_refuses_a_task_without_a_kind() -> None:
    from finetune.config import build_config

    with pytest.raises(InputError, match=r"tasks\.mine names no kind"):
        build_config({"tasks": {"mine": {"train": "t.csv"}}})


# ----------------------------------------------------------------------------- only kinds know kind names


def kind_name_branches(source: str) -> list[str]:
    """What in ``source`` decides by a kind's name: a comparison with one (``==``, ``!=``,
    ``in (...)``; ``match``), a table keyed by two or more, or a fallback kind
    (``settings.get("kind", "classification")``). The same words meaning something else —
    ``stats["tokens"]``, a model config's ``problem_type`` — pass."""

    def is_name(node: ast.AST) -> bool:
        return isinstance(node, ast.Constant) and node.value in KINDS

    def holds_name(node: ast.AST) -> bool:
        elts = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else []
        return is_name(node) or any(map(is_name, elts))

    def says_kind(node: ast.AST) -> bool:
        return any(
            (isinstance(n, ast.Name) and "kind" in n.id)
            or (isinstance(n, ast.Attribute) and "kind" in n.attr)
            or (isinstance(n, ast.Constant) and n.value == "kind")
            for n in ast.walk(node)
        )

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            hit = any(map(holds_name, [node.left, *node.comparators]))
        elif isinstance(node, ast.MatchValue):
            hit = is_name(node.value)
        elif isinstance(node, ast.Dict):
            hit = sum(k is not None and is_name(k) for k in node.keys) >= 2
        elif isinstance(node, ast.Call):
            args = [*node.args, *(k.value for k in node.keywords)]
            hit = any(map(is_name, args)) and any(says_kind(a) for a in args if not is_name(a))
        else:
            hit = False
        if hit:
            found.append(f"line {node.lineno}: {ast.unparse(node)[:80]}")
    return found


def test_every_kind_keeps_the_protocol_and_only_kinds_know_kind_names() -> None:
    """Every module of the library and the stages asks a task's kind
    (`ptm.tasks.kinds.TaskKind`) and never decides by its name: a new kind is one class in
    kinds.py (and its baseline, if any, in baselines.py), not a hunt for branches."""
    root = Path(__file__).resolve().parents[1]
    for name, kind in KINDS.items():
        assert isinstance(kind, TaskKind) and kind.name == name
        assert kind.head in HEADS
    modules = [
        path
        for folder in ("ptm", "pretrain", "finetune", "sweeps")
        for path in sorted((root / folder).rglob("*.py"))
        if path != root / "ptm" / "tasks" / "kinds.py"
    ]
    assert len(modules) > 50 and root / "finetune" / "report.py" in modules
    for path in modules:
        text = path.read_text()
        found = kind_name_branches(text)
        assert not found, f"{path} decides by a kind's name ({found[0]}): ask the kind instead"
        assert "is_tokens" not in text, f"{path} asks is_tokens: ask the kind instead"


@pytest.mark.parametrize(
    "source",
    [
        'if task.kind == "tokens":\n    pass',
        'x = 1 if "pair" != cfg.kind else 2',
        'ok = task.kind in ("classification", "multi_label")',
        'match kind.name:\n    case "tokens":\n        pass',
        'NAMES = {"classification": "TF-IDF", "tokens": "window"}',
        'kind = settings.get("kind", "classification")',
    ],
)
def test_the_kind_name_check_catches_each_way_of_deciding_by_name(source: str) -> None:
    assert kind_name_branches(source)


def test_the_kind_name_check_passes_the_same_words_meaning_something_else() -> None:
    source = (
        'files = {n: open(n) for n in ("tokens", "word_start")}\n'
        'share = stats.get("tokens", 1)\n'
        'state = {"model": m, "tokens": t}\n'
        'if kind == "regression":\n    pass\n'
    )
    assert kind_name_branches(source) == []
