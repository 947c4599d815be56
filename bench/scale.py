"""Competition scale, measured: a Tianchi-shaped corpus through the whole path (``make scale``).

    python -m bench.scale                          # 1x: 200,000 + 50,000 documents
    python -m bench.scale scale=5x                 # 1,000,000 + 50,000
    python -m bench.scale scale=1x stage=corpus    # only write the corpus (the first stage)

Users hold the Tianchi news corpus (~181 M IDs) or corpora ten times its size, and ptm must
take them from text to a submission with memory that does not grow where a stage streams. Each
stage runs in a process of its own, so its peak memory is its own (the peak resident set size
``os.wait4`` reports for that process and those it waited for), and each is timed from start to
exit, interpreter and imports included:

1. **corpus** — ``python -m bench.scale stage=corpus``: ``train.csv`` (``label\\ttext``), a
   small labelled ``dev.csv`` and ``test.csv`` (``text``), a chunk of documents at a time;
2. **segments** — ``python -m pretrain.segments data=tianchi`` over train + test;
3. **pretrain** — ``python -m pretrain data=tianchi`` for a few hundred steps of BERT-mini (it
   finds the segments built by stage 2 in the cache);
4. **load** — ``python -m bench.scale stage=load``: ``finetune.train.load_tasks`` reading and
   encoding the Tianchi task as a user configures it (train, 10% of it held out as dev, test);
5. **finetune** — ``python -m finetune task=tianchi`` for a few steps on every training row,
   selecting on the small dev file, then exporting the model;
6. **predict** — ``python -m finetune.predict`` on ``test.csv`` with that run.

The record (``results/scale-<scale>.json``, kind ``scale``) holds every stage's command, wall
seconds, peak RSS, work done and throughput (over the stage's own clock where it reports one:
the corpus and load stages time their work, pretraining and prediction log theirs), and the
disk the files took; BENCHMARKS.md's ``scale`` block (`docs.render`) shows the scales side by
side. Everything generated goes under ``work_dir`` (``outputs/scale/<scale>``), never into git;
a rerun first removes what an earlier one left there (the files and folders above, by name).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from ptm.config import PathsConfig, override_key, register_resolvers, to_dataclass
from ptm.errors import InputError, exit_on_input_error

log = logging.getLogger(__name__)
MARKER = ".bench-scale"  # in a work folder this benchmark made: its files may be replaced
# (name, what it does, whether it streams: memory flat in the corpus's size). Pretraining reads
# memory-mapped segments; fine-tuning keeps the (truncated) rows it trains on, by design.
STAGES = (
    ("corpus", "write the corpus", True),
    ("segments", "build pretraining segments", True),
    ("pretrain", "pretrain BERT-mini", True),
    ("load", "read and encode the fine-tuning task", False),
    ("finetune", "fine-tune a few steps", False),
    ("predict", "predict the test file", True),
)
CHILD_STAGES = ("corpus", "load")  # run by this module in a child process (stage=...)


# ----------------------------------------------------------------------------- config


@dataclass(frozen=True)
class CorpusShape:
    """The synthetic corpus's statistics (conf/scale.yaml ``corpus:``)."""

    mean_len: float
    sigma: float
    min_len: int
    max_len: int
    distinct: int
    id_space: int
    zipf_s: float
    zipf_q: float
    labels: int
    label_ratio: float
    topic_ids: int
    topic_share: float
    chunk_docs: int
    seed: int


@dataclass(frozen=True)
class Size:
    """Documents per file and the training stages' steps of one scale."""

    name: str
    train: int
    test: int
    dev: int
    pretrain_steps: int
    finetune_steps: int


@dataclass(frozen=True)
class ScaleConfig:
    paths: PathsConfig
    scale: str
    sizes: list[Size]
    stage: str | None
    work_dir: Path
    record: Path | None
    report: Path | None
    device: str
    precision: str
    corpus: CorpusShape

    def size(self) -> Size:
        found = [s for s in self.sizes if s.name == self.scale]
        if not found:
            raise InputError(
                None,
                f"scale={self.scale} is not one of sizes: {[s.name for s in self.sizes]}",
                "choose one, or add yours: '+sizes.mine={train: ..., test: ..., dev: ..., "
                "pretrain_steps: ..., finetune_steps: ...}' scale=mine",
            )
        return found[0]


# ----------------------------------------------------------------------------- the corpus


@dataclass(frozen=True)
class Vocabulary:
    """What documents are drawn from: IDs by frequency rank, and each class's topic IDs."""

    words: Any  # (distinct,) object array: the text of the ID at each frequency rank, as bytes
    cdf: Any  # (distinct,) cumulative Zipf-Mandelbrot probability of the ranks
    topics: Any  # (labels, topic_ids) the ranks each class over-uses
    label_p: Any  # (labels,) class probabilities, label 0 the largest (as Tianchi's)


def vocabulary(shape: CorpusShape, rng: Any) -> Vocabulary:
    import numpy as np

    ids = rng.choice(shape.id_space, shape.distinct, replace=False)  # frequent IDs scattered
    ranks = np.arange(1, shape.distinct + 1)
    p = (ranks + shape.zipf_q) ** -shape.zipf_s
    lo, hi = min(100, shape.distinct - shape.topic_ids), min(2000, shape.distinct)
    topics = np.stack(
        [rng.choice(np.arange(lo, hi), shape.topic_ids, replace=False) for _ in range(shape.labels)]
    )
    label_p = shape.label_ratio ** -(np.arange(shape.labels) / max(shape.labels - 1, 1))
    return Vocabulary(
        words=np.array([str(i).encode() for i in ids], dtype=object),
        cdf=np.cumsum(p / p.sum()),
        topics=topics,
        label_p=label_p / label_p.sum(),
    )


def documents(n: int, vocab: Vocabulary, shape: CorpusShape, rng: Any):
    """``(labels, [document bytes])`` of ``n`` documents: lognormal lengths, Zipf IDs, and a
    ``topic_share`` of each document's IDs drawn from its class's topic IDs instead."""
    import numpy as np

    labels = rng.choice(shape.labels, n, p=vocab.label_p)
    mu = np.log(shape.mean_len) - shape.sigma**2 / 2  # the lognormal's mean is mean_len
    lengths = np.clip(np.rint(rng.lognormal(mu, shape.sigma, n)), shape.min_len, shape.max_len)
    lengths = lengths.astype(np.int64)
    ranks = np.searchsorted(vocab.cdf, rng.random(int(lengths.sum())), side="right")
    ranks = np.minimum(ranks, shape.distinct - 1)  # the cdf's last value may round below 1
    topical = rng.random(len(ranks)) < shape.topic_share
    owner = np.repeat(labels, lengths)[topical]
    ranks[topical] = vocab.topics[owner, rng.integers(0, shape.topic_ids, len(owner))]
    texts = np.split(vocab.words[ranks], np.cumsum(lengths)[:-1])
    return labels, [b" ".join(t) for t in texts]


def write_corpus(shape: CorpusShape, size: Size, out: Path) -> dict[str, Any]:
    """``train.csv``, ``dev.csv`` (``label\\ttext``) and ``test.csv`` (``text``) under ``out``,
    ``shape.chunk_docs`` documents at a time; returns what was written, per file."""
    import numpy as np

    rng = np.random.default_rng(shape.seed)
    vocab = vocabulary(shape, rng)
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, n, labelled in (
        ("train", size.train, True),
        ("dev", size.dev, True),
        ("test", size.test, False),
    ):
        path = out / f"{name}.csv"
        ids, per_label = 0, np.zeros(shape.labels, np.int64)
        with path.open("wb") as f:
            f.write(b"label\ttext\n" if labelled else b"text\n")
            for lo in range(0, n, shape.chunk_docs):
                labels, texts = documents(min(shape.chunk_docs, n - lo), vocab, shape, rng)
                ids += sum(t.count(b" ") + 1 for t in texts)
                per_label += np.bincount(labels, minlength=shape.labels)
                prefixes = [b"%d\t" % k for k in labels] if labelled else [b""] * len(texts)
                f.write(b"".join(p + t + b"\n" for p, t in zip(prefixes, texts, strict=True)))
        files[name] = {
            "path": str(path),
            "documents": n,
            "ids": ids,
            "bytes": path.stat().st_size,
            **({"per_label": per_label.tolist()} if labelled else {}),
        }
    return files


# ----------------------------------------------------------------------------- child stages


def corpus_stage(cfg: ScaleConfig) -> None:
    """stage=corpus: write the corpus; its counts and work time go to ``stages/corpus.json``."""
    start = time.perf_counter()
    files = write_corpus(cfg.corpus, cfg.size(), cfg.work_dir)
    seconds = time.perf_counter() - start
    _write_json(_stage_file(cfg, "corpus"), {"files": files, "seconds": round(seconds, 3)})
    log.info("corpus in %s: %s", cfg.work_dir, {k: v["documents"] for k, v in files.items()})


def load_stage(cfg: ScaleConfig) -> None:
    """stage=load: the Tianchi task read and encoded as fine-tuning reads it (train with 10%
    held out as dev, and test), timed after the imports; counts to ``stages/load.json``."""
    from finetune.config import build_config
    from finetune.train import load_tasks
    from ptm.config import compose

    data = compose("finetune", tuple(finetune_overrides(cfg, test=True)))
    data["run_dir"] = str(cfg.work_dir / "logs" / "load")
    ft = build_config(data)
    start = time.perf_counter()
    _, _, tasks = load_tasks(ft)
    seconds = time.perf_counter() - start
    splits = tasks[0].splits
    _write_json(
        _stage_file(cfg, "load"),
        {
            "seconds": round(seconds, 3),
            "rows": {name: s.n_rows for name, s in splits.items()},
            "ids_kept": {name: int(s.lengths.sum()) for name, s in splits.items()},
        },
    )


# ----------------------------------------------------------------------------- the harness


def finetune_overrides(cfg: ScaleConfig, test: bool) -> list[str]:
    w = cfg.work_dir
    return [
        "task=tianchi",
        f"tasks.tianchi.train={w / 'train.csv'}",
        f"tasks.tianchi.test={w / 'test.csv'}" if test else f"tasks.tianchi.dev={w / 'dev.csv'}",
        f"model.path={w / 'pretrain' / 'run' / 'model'}",
        *_runtime(cfg),
    ]


def stage_commands(cfg: ScaleConfig, size: Size, forwarded: list[str]) -> dict[str, list[str]]:
    """Every stage's command line (``python`` first), as run."""
    w = cfg.work_dir
    corpus = f"data.corpus=[{w / 'train.csv'},{w / 'test.csv'}]"
    segments = [
        "data=tianchi",
        corpus,
        f"data.cache_dir={w / 'segments'}",
    ]

    def child(stage: str) -> list[str]:
        return ["python", "-m", "bench.scale", *forwarded, f"stage={stage}", _log_dir(w, stage)]

    return {
        "corpus": child("corpus"),
        "segments": ["python", "-m", "pretrain.segments", *segments, _log_dir(w, "segments")],
        "pretrain": [
            "python", "-m", "pretrain", *segments,
            f"train.max_steps={size.pretrain_steps}", "train.max_minutes=null",
            *_runtime(cfg), f"hydra.run.dir={w / 'pretrain' / 'run'}",
        ],
        "load": child("load"),
        "finetune": [
            "python", "-m", "finetune", *finetune_overrides(cfg, test=False),
            f"train.max_steps={size.finetune_steps}",
            f"hydra.run.dir={w / 'finetune' / 'run'}",
        ],
        "predict": [
            "python", "-m", "finetune.predict", f"run={w / 'finetune' / 'run'}",
            f"inputs=[{w / 'test.csv'}]", f"output={w / 'predict' / 'out'}", *_runtime(cfg),
            f"hydra.run.dir={w / 'predict' / 'run'}",
        ],
    }  # fmt: skip


def run_process(command: list[str], log_path: Path) -> tuple[float, float, str | None]:
    """Run ``command`` (``python`` is this interpreter) to its end, its output to ``log_path``;
    ``(wall seconds, peak RSS in MB, what went wrong or None)`` of it and the processes it
    waited for. A process the kernel killed for memory still reports the peak it reached."""
    argv = [sys.executable, *command[1:]] if command[0] == "python" else command
    log_path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with log_path.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this process's own rusage, not all children's
    seconds = time.perf_counter() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    error = None
    if code < 0:
        error = f"killed by signal {-code}" + (" (out of memory?)" if -code == 9 else "")
    elif code > 0:
        error = f"exit status {code}"
    return seconds, usage.ru_maxrss / 1024, error  # kilobytes on Linux


def measure(cfg: ScaleConfig, forwarded: list[str]) -> dict[str, Any]:
    """Every stage in turn, in a fresh work folder, until one fails; the record's metrics."""
    size = cfg.size()
    w = cfg.work_dir
    marker = w / MARKER
    if w.is_dir() and any(w.iterdir()) and not marker.is_file():
        raise InputError(
            w,
            "is not a folder this benchmark made (no .bench-scale in it): its files would be "
            "deleted",
            "give work_dir= a new or empty folder",
        )
    w.mkdir(parents=True, exist_ok=True)
    marker.touch()
    for stale in ("train.csv", "dev.csv", "test.csv", "segments", "pretrain", "finetune",
                  "predict", "stages", "logs"):  # fmt: skip
        path = w / stale
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    commands = stage_commands(cfg, size, forwarded)
    stages = []
    for name, what, streams in STAGES:
        log.info("scale %s: %s ...", cfg.scale, name)
        log_path = w / "logs" / f"{name}.log"
        seconds, peak, error = run_process(commands[name], log_path)
        entry = {
            "stage": name,
            "what": what,
            "streams": streams,
            "command": _shown(commands[name]),
            "seconds": round(seconds, 2),
            "peak_rss_mb": round(peak, 1),
        }
        stages.append(entry)
        if error is not None:
            entry.update(error=error, log=str(log_path))
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            log.error("scale %s: %s failed (%s); its log: %s\n%s", cfg.scale, name, error,
                      log_path, tail)  # fmt: skip
            break
        amount, unit, work_seconds, detail = _work(name, cfg)
        work_seconds = work_seconds or seconds
        entry.update(
            amount=amount,
            unit=unit,
            work_seconds=round(work_seconds, 2),
            rate=round(amount / work_seconds, 1),
            detail=detail,
        )
        log.info(
            "scale %s: %s took %.1f s, peak %.0f MB, %s %s", cfg.scale, name, seconds, peak,
            f"{amount:,}", unit,
        )  # fmt: skip
    corpus_file = _stage_file(cfg, "corpus")
    corpus = json.loads(corpus_file.read_text())["files"] if corpus_file.is_file() else {}
    return {
        "scale": cfg.scale,
        "documents": {"train": size.train, "dev": size.dev, "test": size.test},
        "ids": {k: v["ids"] for k, v in corpus.items()},
        "stages": stages,
        "disk_mb": {
            "corpus": round(sum(v["bytes"] for v in corpus.values()) / 2**20, 1),
            "segments": round(_size(w / "segments") / 2**20, 1),
            "work_dir": round(_size(w) / 2**20, 1),
        },
    }


def _work(name: str, cfg: ScaleConfig) -> tuple[int, str, float | None, dict[str, Any]]:
    """``(amount, unit, the stage's own seconds or None, details)`` from what the stage wrote."""
    w = cfg.work_dir
    if name == "corpus":
        out = json.loads(_stage_file(cfg, "corpus").read_text())
        ids = sum(f["ids"] for f in out["files"].values())
        return ids, "IDs", out["seconds"], {"per_label": out["files"]["train"]["per_label"]}
    if name == "segments":
        (meta_path,) = (w / "segments").glob("*/meta.json")  # a fresh cache holds one build
        meta = json.loads(meta_path.read_text())
        counts = meta["counts"]
        return counts["ids"], "IDs", None, {"segments": counts["segments"], "dtype": meta["dtype"]}
    if name == "pretrain":
        m = json.loads((w / "pretrain" / "run" / "metrics.json").read_text())
        detail = {k: m.get(k) for k in ("steps", "eval/loss", "mfu")}
        return m["tokens"], "tokens", m["wall_seconds"], detail
    if name == "load":
        out = json.loads(_stage_file(cfg, "load").read_text())
        detail = {"rows": out["rows"], "ids_kept": out["ids_kept"]}
        return sum(out["rows"].values()), "rows", out["seconds"], detail
    if name == "finetune":
        m = json.loads((w / "finetune" / "run" / "metrics.json").read_text())
        task = m["tasks"]["tianchi"]
        rows = cfg.size().train + cfg.size().dev
        return rows, "rows", None, {"steps": m.get("steps"), "dev": task.get("dev")}
    assert name == "predict", name
    m = json.loads((w / "predict" / "run" / "record.json").read_text())["metrics"]
    return m["rows"], "rows", m["seconds"], {}


def _record(cfg: ScaleConfig, metrics: dict[str, Any], forwarded: list[str], clock) -> dict:
    from ptm.records import machine, make_record, plain

    # The device and precision pretraining resolved (auto) name the machine, where it ran.
    pretrained = cfg.work_dir / "pretrain" / "run" / "record.json"
    ran = json.loads(pretrained.read_text())["machine"] if pretrained.is_file() else {}
    # What a user types to get the same corpus: where the record goes is not part of it.
    shape = [a for a in forwarded if override_key(a) not in ("record", "report")]
    corpus = _shown(["python", "-m", "bench.scale", *shape, "stage=corpus"])
    return make_record(
        kind="scale",
        config=plain(cfg),
        metrics=metrics,
        clock=clock,
        machine_info=machine(ran.get("device"), ran.get("precision")),
        extra={"corpus_command": corpus},
    )


def harness(cfg: ScaleConfig, overrides: list[str]) -> dict[str, Any]:
    """Measure every stage, write the record and render the report; ``overrides``: this run's
    command-line overrides, handed on to the stages this module runs (corpus, load)."""
    from ptm.records import RunClock, dump

    forwarded = [a for a in overrides if override_key(a) != "stage" and not a.startswith("hydra.")]
    clock = RunClock.start()
    metrics = measure(cfg, forwarded)
    record = _record(cfg, metrics, forwarded, clock)
    if cfg.record is not None:
        dump(cfg.record, record)
        log.info("wrote %s", cfg.record)
    if cfg.report is not None:
        _render(cfg.report, cfg.record)
    failed = [s for s in metrics["stages"] if "error" in s]
    if failed:
        raise SystemExit(
            f"scale {cfg.scale}: stage {failed[0]['stage']} failed ({failed[0]['error']}); "
            f"its log: {failed[0]['log']} (the stages before it are in the record)"
        )
    return record


def _render(report: Path, record: Path | None) -> None:
    from docs.render import ROOT, parse_blocks, render_file

    text = report.read_text(encoding="utf-8") if report.is_file() else ""
    named = [b for b in parse_blocks(text, report) if b.name == "scale"]
    if record is None or not any(
        (ROOT / a).resolve() == record.resolve() for b in named for a in b.args
    ):
        log.warning(
            "%s has no scale block naming %s: add '<!-- generated: scale %s -->' and "
            "'<!-- /generated -->' lines to show it",
            report,
            record,
            record,
        )
        return
    render_file(report)


# ----------------------------------------------------------------------------- helpers


def _runtime(cfg: ScaleConfig) -> list[str]:
    return [f"runtime.device={cfg.device}", f"runtime.precision={cfg.precision}"]


def _log_dir(work: Path, stage: str) -> str:
    return f"hydra.run.dir={work / 'logs' / stage}"


def _stage_file(cfg: ScaleConfig, stage: str) -> Path:
    return cfg.work_dir / "stages" / f"{stage}.json"


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")


def _shown(command: list[str]) -> str:
    from ptm.records import command_line

    return command_line(command)


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


@hydra.main(version_base="1.3", config_path="../conf", config_name="scale")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    c = to_dataclass(ScaleConfig, cfg)
    if c.stage == "corpus":
        corpus_stage(c)
    elif c.stage == "load":
        load_stage(c)
    elif c.stage is None:
        harness(c, sys.argv[1:])
    else:
        raise InputError(None, f"stage={c.stage}", f"use one of {list(CHILD_STAGES)}, or none")


if __name__ == "__main__":
    register_resolvers()
    main()
