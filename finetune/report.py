"""Honest evaluation: does pretraining help on the embedded tasks? (``make report``)

For every task and seed it fine-tunes the pretrained model, fine-tunes the same architecture
from random weights (everything else equal), and fits a classical baseline; then it writes a
markdown table of the median and spread (min-max over seeds) of each task's metric — macro-F1 for
classification, entity F1 for names — on the held-out test split, which no run looked at, with
dev beside it. When the pretrained model does not beat the one trained from scratch, the report
says so in as many words.

The classical baselines (scikit-learn):
* classification — TF-IDF of ID unigrams and bigrams + logistic regression, C chosen on dev;
* tokens — per-ID logistic regression (SGD) on hashed features of the ID and its neighbours
  (+-2 IDs and the two bigrams around it), the classic window tagger.

python -m finetune.report                                   # = make report
python -m finetune.report 'seeds=[1,2,3,4,5]' 'tasks=[sentiment]'
python -m finetune.report 'finetune_overrides=["train.epochs=2","head=mean"]' model_path=PATH
"""

from __future__ import annotations

import json
import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from finetune.config import build_config
from finetune.train import run as finetune
from ptm.config import PathsConfig, register_resolvers, resolve, to_dataclass
from ptm.errors import InputError, exit_on_input_error
from ptm.tasks.loading import TaskConfig, natural_order, tag_order, task_table
from ptm.tasks.metrics import classification_metrics, primary, token_metrics
from ptm.tasks.tables import Table
from ptm.training.rundir import point_latest

log = logging.getLogger(__name__)
MODES = {
    "pretrained": "pretrained -> fine-tuned",
    "scratch": "same model from scratch",
    "tfidf": "classical baseline",
}
BASELINES = {
    "classification": "TF-IDF + logistic regression",
    "pair": "TF-IDF + logistic regression",
    "tokens": "window features + logistic regression",
}
METRIC_NAMES = {"macro_f1": "macro-F1", "entity_f1": "entity F1"}


@dataclass(frozen=True)
class ReportConfig:
    paths: PathsConfig
    model_path: Path
    tasks: list[str] = field(default_factory=lambda: ["sentiment", "names"])
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    modes: list[str] = field(default_factory=lambda: list(MODES))
    finetune_overrides: list[str] = field(default_factory=list)
    run_dir: Path = Path(".")

    def __post_init__(self) -> None:
        unknown = sorted(set(self.modes) - set(MODES))
        if unknown:
            raise ValueError(f"modes {unknown} are unknown; use some of {list(MODES)}")
        if not self.seeds:
            raise ValueError("give at least one seed")


Compose = Callable[[list[str]], dict[str, Any]]


def run(cfg: ReportConfig, compose: Compose) -> dict:
    """Every (task, mode, seed) run, then ``report.md`` / ``report.json`` in ``cfg.run_dir``.

    ``compose`` turns fine-tuning overrides into the resolved fine-tuning config (Hydra's compose
    API in the entry point, the test helper in tests)."""
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    results: list[dict] = []
    for task_name in cfg.tasks:
        for mode in cfg.modes:
            for seed in cfg.seeds:
                data = compose(
                    [
                        f"task={task_name}",
                        f"paths.root={cfg.paths.root}",
                        f"paths.data_dir={cfg.paths.data_dir}",
                        f"paths.output_dir={cfg.paths.output_dir}",
                        f"model.path={cfg.model_path}",
                        f"model.init={'scratch' if mode == 'scratch' else 'pretrained'}",
                        f"train.seed={seed}",
                        *overrides_for(task_name, cfg.finetune_overrides),
                    ]
                )
                data["run_dir"] = str(run_dir / task_name / mode / f"seed-{seed}")
                ft = build_config(data)
                task = next(t for t in ft.tasks if t.name == task_name)
                start = time.perf_counter()
                log.info("report: %s, %s, seed %d ...", task_name, MODES[mode], seed)
                if mode == "tfidf":
                    scores = classical_baseline(task, seed, ft.train.limit_examples)
                else:
                    metrics = finetune(ft)["tasks"][task_name]
                    scores = {
                        s: metrics[s][metrics["metric"]] for s in ("dev", "test") if s in metrics
                    }
                results.append(
                    {
                        "task": task_name,
                        "kind": task.kind,
                        "mode": mode,
                        "seed": seed,
                        **scores,
                        "seconds": round(time.perf_counter() - start, 1),
                    }
                )
                log.info("report: %s", json.dumps(results[-1]))
                (run_dir / "report.json").write_text(json.dumps(results, indent=2) + "\n")
    text = render(results, cfg)
    (run_dir / "report.md").write_text(text)
    point_latest(run_dir)
    log.info("report written to %s\n%s", run_dir / "report.md", text)
    return {"results": results, "report": str(run_dir / "report.md")}


def overrides_for(task: str, overrides: list[str]) -> list[str]:
    """The overrides that apply to ``task``'s runs: ``tasks.<other>.*`` ones are left out, so one
    list can tune every task (``tasks.sentiment.max_seq_len=64``, ``tasks.names.max_seq_len=64``)."""
    keep = []
    for item in overrides:
        key = item.lstrip("+~").split("=", 1)[0]
        if key.startswith("tasks.") and not key.startswith(f"tasks.{task}."):
            continue
        keep.append(item)
    return keep


# ----------------------------------------------------------------------------- the table


def _stats(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def render(results: list[dict], cfg: ReportConfig) -> str:
    split = "test" if all("test" in r for r in results) else "dev"
    lines = [
        "# Does pretraining help? An honest evaluation",
        "",
        f"Pretrained model: `{cfg.model_path}`; seeds {', '.join(map(str, cfg.seeds))}. Every "
        "fine-tuning run keeps its checkpoint with the best dev score, so dev numbers are "
        f"optimistic; the headline is the **{split}** split, which no run looked at. Spread = "
        "min-max over seeds. Fine-tuning overrides: "
        f"`{' '.join(cfg.finetune_overrides) or 'none (the defaults)'}`. The TF-IDF model "
        "(lbfgs) is deterministic, so its seeds agree; the window tagger (SGD) is seeded.",
        "",
        f"| task | metric | model | {split} median | {split} spread | dev median | "
        f"per-seed {split} | seconds / run |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for task in dict.fromkeys(r["task"] for r in results):
        rows = [r for r in results if r["task"] == task]
        metric = METRIC_NAMES[primary(rows[0]["kind"])]
        medians = {}
        for mode in dict.fromkeys(r["mode"] for r in rows):
            runs = [r for r in rows if r["mode"] == mode]
            med, lo, hi = _stats([r[split] for r in runs])
            dev_med = statistics.median(r["dev"] for r in runs)
            medians[mode] = (med, [r[split] for r in runs])
            name = BASELINES[rows[0]["kind"]] if mode == "tfidf" else MODES[mode]
            lines.append(
                f"| {task} | {metric} | {name} | {med:.4f} | {lo:.4f}–{hi:.4f} | "
                f"{dev_med:.4f} | {', '.join(f'{r[split]:.4f}' for r in runs)} | "
                f"{statistics.median(r['seconds'] for r in runs):.0f} |"
            )
        verdicts.append(_verdict(task, metric, split, medians))
    lines += ["", "## Verdict", "", *verdicts, ""]
    return "\n".join(lines)


def _verdict(task: str, metric: str, split: str, medians: dict) -> str:
    """ "Helps" only when every pretrained seed beats every from-scratch seed: a median ahead by
    less than the seed-to-seed spread is noise, and is reported as such."""
    if "pretrained" not in medians or "scratch" not in medians:
        return f"- {task}: pretrained and from-scratch runs are both needed for a verdict."
    (pre, pre_runs), (scr, scr_runs) = medians["pretrained"], medians["scratch"]
    wins = sum(p > s for p, s in zip(pre_runs, scr_runs, strict=True))
    numbers = (
        f"{split} {metric} {pre:.4f} against {scr:.4f} from scratch ({pre - scr:+.4f} median; "
        f"ahead in {wins} of {len(pre_runs)} seeds)"
    )
    base = ""
    if "tfidf" in medians:
        tf = medians["tfidf"][0]
        base = (
            f" The classical baseline scores {tf:.4f}: the pretrained model is "
            f"{'above' if pre > tf else '**not above**'} it ({pre - tf:+.4f})."
        )
    advice = " Pretrain longer, or check that the pretraining corpus matches this task."
    if min(pre_runs) > max(scr_runs):
        return f"- {task}: pretraining helps: {numbers}, beyond the spread of the seeds.{base}"
    if pre > scr:
        return (
            f"- {task}: **pretraining does not clearly beat training from scratch**: {numbers} — "
            f"within the spread of the seeds.{advice}{base}"
        )
    return (
        f"- {task}: **pretraining does not beat training from scratch**: {numbers}.{advice}{base}"
    )


# ----------------------------------------------------------------------------- baselines


def _read(table: Table, columns: list[str], keep: np.ndarray | None = None) -> list[list[str]]:
    idx = [table.column(c) for c in columns]
    return [[row[i] for i in idx] for _, rows in table.batches(keep) for row in rows]


def _split_rows(task: TaskConfig, limit: int | None) -> dict[str, list[list[str]]]:
    """Raw ``[text, answer]`` rows of train / dev / test, as the fine-tuning runs see them."""
    text, answer = task.text_column, task.label_column
    if task.kind == "pair":
        raise InputError(None, f"task {task.name}: no classical baseline for pairs", "drop tfidf")
    spread = {p: task_table(task, p).spread(limit) for p in (task.train, task.dev, task.test) if p}
    rows = {"train": _read(task_table(task, task.train), [text, answer], spread[task.train])}
    if task.dev is None:
        raise InputError(None, f"task {task.name} has no dev file", "give tasks.<name>.dev")
    rows["dev"] = _read(task_table(task, task.dev), [text, answer], spread[task.dev])
    if task.test is not None and (task.kind == "tokens" or task.test_labels is not None):
        if task.kind == "tokens":
            rows["test"] = _read(task_table(task, task.test), [text, answer], spread[task.test])
        else:
            texts = _read(task_table(task, task.test), [text], spread[task.test])
            labels = _read(Table(task.test_labels), [answer], spread[task.test])
            rows["test"] = [[t[0], a[0]] for t, a in zip(texts, labels, strict=True)]
    return rows


def classical_baseline(task: TaskConfig, seed: int, limit: int | None = None) -> dict[str, float]:
    rows = _split_rows(task, limit)
    if task.kind == "tokens":
        return _window_tagger(rows, seed)
    return _tfidf(rows, seed)


def _tfidf(rows: dict[str, list[list[str]]], seed: int) -> dict[str, float]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    labels = natural_order({r[1] for r in rows["train"]})
    index = {label: i for i, label in enumerate(labels)}
    vectorizer = TfidfVectorizer(
        token_pattern=r"[^ _]+", ngram_range=(1, 2), sublinear_tf=True, min_df=2
    )
    x = {
        s: (vectorizer.fit_transform if s == "train" else vectorizer.transform)([r[0] for r in v])
        for s, v in rows.items()
    }
    y = {s: np.array([index.get(r[1], -1) for r in v]) for s, v in rows.items()}
    best, best_dev = None, -1.0
    for c in (0.25, 1.0, 4.0, 16.0):  # C chosen on dev, as the fine-tuned models choose a step
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(
            x["train"], y["train"]
        )
        dev = classification_metrics(y["dev"], model.predict(x["dev"]), labels)["macro_f1"]
        if dev > best_dev:
            best, best_dev = model, dev
    out = {"dev": best_dev}
    if "test" in x:
        out["test"] = classification_metrics(y["test"], best.predict(x["test"]), labels)["macro_f1"]
    return out


def _window_features(ids: list[str]) -> list[list[str]]:
    padded = ["<s>", "<s>", *ids, "</s>", "</s>"]
    out = []
    for i in range(2, len(padded) - 2):
        w = padded[i - 2 : i + 3]
        out.append(
            [f"w{k - 2}={w[k]}" for k in range(5)] + [f"b-={w[1]}_{w[2]}", f"b+={w[2]}_{w[3]}"]
        )
    return out


def _window_tagger(rows: dict[str, list[list[str]]], seed: int) -> dict[str, float]:
    from sklearn.feature_extraction import FeatureHasher
    from sklearn.linear_model import SGDClassifier

    tags = tag_order({t for r in rows["train"] for t in r[1].split()} | {"O"})
    index = {t: i for i, t in enumerate(tags)}
    hasher = FeatureHasher(n_features=1 << 20, input_type="string", alternate_sign=False)

    def featurize(split_rows):
        feats = [f for r in split_rows for f in _window_features(r[0].split())]
        return hasher.transform(feats), [r[1].split() for r in split_rows]

    x_train, y_train = featurize(rows["train"])
    model = SGDClassifier(loss="log_loss", alpha=1e-6, max_iter=10, tol=None, random_state=seed)
    model.fit(x_train, [index[t] for row in y_train for t in row])
    out = {}
    for split in ("dev", "test"):
        if split not in rows:
            continue
        x, truth = featurize(rows[split])
        flat = model.predict(x)
        guess, at = [], 0
        for row in truth:
            guess.append([tags[i] for i in flat[at : at + len(row)]])
            at += len(row)
        out[split] = token_metrics(truth, guess, tags)["entity_f1"]
    return out


# ----------------------------------------------------------------------------- entry point


@hydra.main(version_base="1.3", config_path="../conf", config_name="report")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    data = resolve(cfg)
    data["run_dir"] = HydraConfig.get().runtime.output_dir

    def compose(overrides: list[str]) -> dict[str, Any]:
        return resolve(hydra.compose(config_name="finetune", overrides=overrides))

    run(to_dataclass(ReportConfig, data), compose)


if __name__ == "__main__":
    register_resolvers()
    main()
