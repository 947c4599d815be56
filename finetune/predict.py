"""Predict new files with a fine-tuned model: test B, which arrives after training.

A run's exported ``model/`` folder is all it needs (a copy of that folder alone works): its
``finetune.json`` names every task's kind, columns (a headerless file's ``columns``, the
``id_column``), ``max_seq_len``, truncation, labels and what the run chose on dev (the
multi-label threshold); the input files are read, checked, encoded and predicted exactly as
the run did its test file, a chunk of rows at a time (`ptm.tasks.streaming`: memory stays flat
in the file's size), and written in the same files: ``<task>/submission.csv`` (and
``probabilities.csv``; the JSON lines of a ``submission_format: jsonl`` task, zipped into
``submission.zip`` as the Tianchi multi-task competition takes them).

Which file goes to which task (``inputs``):

* null — the run's own test files (a check: the output equals the run's ``predictions/``);
* a list — a one-task model predicts every file (each into ``<output>/<file name>/`` when there
  are several); a multi-task model takes one file per task, in the order ``finetune.json`` lists
  the tasks (the order of the run's config);
* a mapping ``{task: file}`` — by name; any subset of the model's tasks.

A cross-validation run (`finetune.cv`) predicts with all its folds' models, their class
probabilities averaged chunk by chunk: the fold-averaged submission for test B, as the CV run
wrote it for test A.

The output folder (``output=``; by default ``<run>/predict-<time>``) is written aside and
renamed into place, so a bad row at line 40,000 leaves no half submission; an existing folder is
replaced only when it holds earlier predictions (its ``predict.json``).

Default (make predict):  python -m finetune.predict   # outputs/finetune/latest on its test files
Test B:                  python -m finetune.predict run=outputs/finetune/latest \\
                             'inputs=[test_b.csv]' output=outputs/test_b
A copied model folder:   python -m finetune.predict run=/models/tianchi/model 'inputs=[test_b.csv]'
The folds of a CV run:   python -m finetune.predict run=outputs/finetune/<cv run> 'inputs=[test_b.csv]'
Multi-task (by name):    python -m finetune.predict run=outputs/finetune/latest \\
                             'inputs={ocnli: OCNLI_b.csv, ocemotion: OCEMOTION_b.csv, tnews: TNEWS_b.csv}'
One GPU:                 python -m finetune.predict runtime.device=cuda 'inputs=[test_b.csv]'
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import yaml
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from ptm.config import CONF_DIR, PathsConfig, register_resolvers, resolve, to_dataclass
from ptm.errors import InputError, exit_on_input_error
from ptm.files import written_aside
from ptm.models.finetuned import META, load_finetuned
from ptm.progress import format_count
from ptm.records import RunClock
from ptm.tasks.config import TaskConfig
from ptm.tasks.kinds import kind_of
from ptm.tasks.splits import TaskData
from ptm.tasks.streaming import FileResult, predict_file
from ptm.tasks.submission import ZIP_NAME, zip_submissions
from ptm.training import loop
from ptm.training.rundir import point_latest
from ptm.training.runtime import RuntimeConfig

log = logging.getLogger(__name__)
# In every output folder: what made it, and the mark that it holds predictions it may replace.
SUMMARY = "predict.json"
# The task settings finetune.json carries (`TaskKind.export_meta`); the others are
# conf/task/_base.yaml's (prediction does not use them).
FROM_META = (
    "columns",
    "id_column",
    "text_column",
    "text_b_column",
    "label_column",
    "label_separator",
    "max_seq_len",
    "truncation",
    "head_fraction",
    "submission_format",
    "submission_name",
)
# Settings older folders' finetune.json lacks, taken from the run's config when the run is there.
FROM_RUN = ("submission_format", "submission_name")


@dataclass(frozen=True, kw_only=True)
class PredictConfig:
    paths: PathsConfig
    run: Path  # a fine-tuning run folder, its model/ folder, or a cross-validation run
    inputs: list[str] | dict[str, str] | None  # null: the run's test files (see the docstring)
    output: Path | None  # null: <run>/predict-<time>
    batch_size: int
    chunk_rows: int
    runtime: RuntimeConfig
    run_dir: Path = Path(".")  # Hydra's folder for the log and record; set by the entry point

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.chunk_rows < 1:
            raise ValueError(
                f"batch_size={self.batch_size}, chunk_rows={self.chunk_rows}: use positive numbers"
            )


def run(cfg: PredictConfig) -> dict:
    """Predict every input file; returns the metrics (also in the record)."""
    started = RunClock.start()
    model_dirs, run_folder = locate(cfg.run)
    home = Path(cfg.run).resolve() if len(model_dirs) > 1 else run_folder  # a CV run's own folder
    model_dir = model_dirs[0]
    with loop.session(cfg.runtime) as session:
        if session.info.world_size > 1:
            raise InputError(None, "prediction runs in one process", "start it without torchrun")
        models, tokenizer, meta = _load_models(model_dirs, session.device)
        run_tasks = _run_tasks(run_folder)
        tasks = {
            name: _task(name, entry, run_tasks.get(name, {}))
            for name, entry in meta["tasks"].items()
        }
        sets = input_sets(cfg.inputs, list(tasks), run_tasks)
        output = Path(cfg.output) if cfg.output else _default_output(cfg, home)
        _check_output(output)
        log.info(
            "predicting with %s (%s, %s): %s -> %s",
            model_dir,
            session.device,
            session.precision,
            ", ".join(f"{t} {p}" for s in sets for t, p in s.items()),
            output,
        )
        with written_aside(output) as tmp:
            settings = {
                "tokenizer": tokenizer,
                "device": session.device,
                "precision": session.precision,
                "batch_size": cfg.batch_size,
                "chunk_rows": cfg.chunk_rows,
                "padding": cfg.runtime.padding,
            }
            results, zips = _predict_sets(models, meta, tasks, sets, tmp, settings)
            metrics = _metrics(results, zips, output, tmp)
            summary = {
                "model": str(model_dir) if len(model_dirs) == 1 else [str(m) for m in model_dirs],
                "run": str(run_folder) if run_folder else None,
                **metrics,
            }
            (tmp / SUMMARY).write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
        config = loop.resolved_config(cfg, session)
        loop.write_record(Path(cfg.run_dir), "predict", config, metrics, started, session)
    point_latest(Path(cfg.run_dir))
    _report(metrics)
    return metrics


def _predict_sets(
    models: list[Any], meta: dict, tasks: dict[str, TaskData], sets: list[dict[str, Path]], tmp: Path,
    settings: dict[str, Any],
) -> tuple[list[tuple[str, FileResult]], list[str]]:  # fmt: skip
    """Every set's files predicted into its folder under ``tmp``, and each set's JSON lines
    zipped; returns ``[(folder, result)]`` and the zips."""
    results: list[tuple[str, FileResult]] = []
    zips: list[str] = []
    for files in sets:
        where = _set_folder(files, len(sets))
        jsonl = []
        for name, path in files.items():
            decision = meta["tasks"][name].get("decision", {})
            result = predict_file(
                models, tasks[name], decision, path, tmp / where / name, **settings
            )
            results.append((where, result))
            if "submission_jsonl" in result.files:
                jsonl.append(result.files["submission_jsonl"])
        zips += filter(None, [zip_submissions(tmp / where / ZIP_NAME, jsonl)])
    return results, zips


def locate(path: Path) -> tuple[list[Path], Path | None]:
    """``(model folders, run folder or None)`` of ``run=``: a fine-tuning run folder (its
    ``model/``), a model folder (inside its run, or copied away alone), or a cross-validation
    run (`finetune.cv`: its folds' models, which predict together; the first fold's run folder
    names the tasks' files)."""
    path = Path(path).resolve()  # outputs/finetune/latest: the run it names
    if (path / META).is_file():
        parent = path.parent
        return [path], parent if (parent / "run.json").is_file() else None
    if (path / "model" / META).is_file():
        return [path / "model"], path
    folds = sorted(p for p in path.glob("fold-*") if (p / "model" / META).is_file())
    if folds:
        _check_every_fold(path, folds)
        return [f / "model" for f in folds], folds[0]
    if not path.exists():
        fix = (
            "run `make finetune` first, or give run=<a fine-tuning run folder or its model/>"
            if "finetune" in str(path)
            else "check run= (a fine-tuning run folder or its model/)"
        )
        raise InputError(path, "no such folder", fix)
    raise InputError(
        path,
        f"neither a fine-tuning run folder nor a model folder (no {META} in it or its model/)",
        "give run=<a fine-tuning run folder, its model/ or a cross-validation run>",
    )


def _check_every_fold(path: Path, folds: list[Path]) -> None:
    """A CV run predicts with all its folds or not at all: fewer would be another ensemble
    than the one its out-of-fold score describes."""
    try:
        planned = json.loads((folds[0] / "run.json").read_text())["config"]["cv"]["folds"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(folds[0], f"not a cross-validation fold ({e})", "check run=") from e
    if planned != len(folds):
        raise InputError(
            path,
            f"{len(folds)} of its {planned} folds have finished",
            f"finish the CV run first (python -m finetune cv.folds={planned} resume={path})",
        )


def _load_models(model_dirs: list[Path], device) -> tuple[list[Any], Any, dict]:
    """The models of ``model_dirs`` on ``device`` with the first one's tokenizer and
    ``finetune.json``; several (a cross-validation's folds) must predict the same tasks, labels
    and inputs, and a kind whose predictions do not average (`TaskKind.averaged`) is refused."""
    models, tokenizer, meta = [], None, None
    for folder in model_dirs:
        model, tok, this = load_finetuned(folder)
        models.append(model.to(device))
        if meta is None:
            tokenizer, meta = tok, this
        elif _task_settings(this) != _task_settings(meta):
            raise InputError(
                folder,
                f"its tasks differ from {model_dirs[0]}'s (labels or settings)",
                "predict with the folds of one cross-validation run",
            )
    if len(models) > 1:
        for name, entry in meta["tasks"].items():
            if not kind_of(name, entry).averaged:
                raise InputError(
                    model_dirs[0].parent.parent,
                    f"task {name} is of kind {entry['kind']}: the folds' predictions do not "
                    "average",
                    "predict with one fold's run",
                )
    return models, tokenizer, meta


def _task_settings(meta: dict) -> dict:
    """What must agree between folds: every task's kind, labels and the settings that read and
    encode its files (not what each model learnt or chose on dev)."""
    return {
        name: {k: entry.get(k) for k in ("kind", "labels", *FROM_META)}
        for name, entry in meta["tasks"].items()
    }


def _run_tasks(run_folder: Path | None) -> dict[str, dict]:
    """The run's task settings by name, from its ``run.json`` (empty without the run)."""
    if run_folder is None:
        return {}
    path = run_folder / "run.json"
    try:
        tasks = json.loads(path.read_text(encoding="utf-8"))["config"]["tasks"]
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError) as e:
        raise InputError(path, f"not a run's summary ({e})", "give run= the model/ folder") from e
    return {t["name"]: t for t in tasks} if isinstance(tasks, list) else dict(tasks)


def _task(name: str, entry: dict, from_run: dict) -> TaskData:
    """A task as the model's ``finetune.json`` describes it: its kind, labels and every setting
    that reads and encodes a file (`FROM_META`); the rest, which prediction does not use, are
    conf/task/_base.yaml's."""
    base = yaml.safe_load((CONF_DIR / "task" / "_base.yaml").read_text(encoding="utf-8"))
    values = {**base, "name": name, "kind": entry.get("kind"), "labels": entry["labels"]}
    values["train"] = "-"  # never read: prediction reads the files it is given
    for key in FROM_META:
        if entry.get(key) is not None:
            values[key] = entry[key]
        elif key in FROM_RUN and from_run.get(key) is not None:
            values[key] = from_run[key]
    if "submission_format" not in entry and entry.get("id_column") and not from_run:
        log.warning(  # only a task with ids can be a jsonl task
            "task %s: its finetune.json does not say its submission format (a folder exported "
            "before it did) and its run is not beside it: writing submission.csv only — give "
            "run=<the run folder> for a jsonl task's JSON lines",
            name,
        )
    kind = kind_of(name, values)
    cfg = to_dataclass(TaskConfig, values)
    return TaskData(cfg, kind, list(entry["labels"]), {}, chance_loss=float("nan"))


def input_sets(
    inputs: list[str] | dict[str, str] | None, tasks: list[str], run_tasks: dict[str, dict]
) -> list[dict[str, Path]]:
    """Which file each task predicts: one mapping task -> file per output folder (see the module
    docstring)."""
    order = f"one file per task in the order {tasks}, or by name: 'inputs={{{tasks[0]}: a.csv}}'"
    if inputs is None:
        tests = {t: Path(run_tasks[t]["test"]) for t in tasks if run_tasks.get(t, {}).get("test")}
        if not tests:
            raise InputError(
                None,
                "inputs is not set and there is no run with test files to default to",
                f"give the files to predict: 'inputs=[test_b.csv]' ({order})",
            )
        return [tests]
    if isinstance(inputs, dict):
        unknown = sorted(set(inputs) - set(tasks))
        if unknown or not inputs:
            raise InputError(
                None, f"inputs names task(s) {unknown} the model does not have", f"use {tasks}"
            )
        return [{t: Path(p) for t, p in inputs.items()}]
    files = [Path(p) for p in inputs]
    if len(tasks) == 1 and files:
        stems = [f.name for f in files]
        if len(set(stems)) < len(stems):
            raise InputError(
                None,
                f"inputs {stems} repeat a file name; each file's predictions go to a folder "
                "of its name",
                "give files of different names",
            )
        return [{tasks[0]: f} for f in files]
    if len(files) != len(tasks):
        raise InputError(
            None, f"{len(files)} input file(s) for a model of {len(tasks)} tasks", f"give {order}"
        )
    return [dict(zip(tasks, files, strict=True))]


def _set_folder(files: dict[str, Path], n_sets: int) -> str:
    """Where a set of files' predictions go inside the output: the output itself, or a folder
    named for the file when a one-task model predicts several."""
    return "" if n_sets == 1 else next(iter(files.values())).name


def _default_output(cfg: PredictConfig, run_folder: Path | None) -> Path:
    stamp = Path(cfg.run_dir).name
    return run_folder / f"predict-{stamp}" if run_folder else Path(cfg.run_dir) / "predictions"


def _check_output(output: Path) -> None:
    """Never replace a folder that holds anything but earlier predictions."""
    if output.is_file() or (
        output.is_dir() and any(output.iterdir()) and not (output / SUMMARY).is_file()
    ):
        raise InputError(
            output,
            "exists and is not a folder of predictions",
            "give output= a new folder (one holding earlier predictions is replaced)",
        )


def _metrics(
    results: list[tuple[str, FileResult]], zips: list[str], output: Path, tmp: Path
) -> dict[str, Any]:
    """Rows and rows/s in all and per file, with the files as they are named once in place."""
    rows = sum(r.rows for _, r in results)
    seconds = sum(r.seconds for _, r in results)

    def placed(path: str) -> str:
        return str(output / Path(path).relative_to(tmp))

    return {
        "rows": rows,
        "rows_per_s": round(rows / max(seconds, 1e-9), 1),
        "seconds": round(seconds, 2),
        "output": str(output),
        "files": [
            {
                "task": r.task,
                "input": str(r.path),
                "folder": str(output / where) if where else str(output),
                "rows": r.rows,
                "rows_per_s": round(r.rows_per_s, 1),
                "outputs": {what: placed(p) for what, p in r.files.items()},
                "stats": r.stats,
            }
            for where, r in results
        ],
        "submission_zips": [placed(z) for z in zips],
    }


def _report(metrics: dict) -> None:
    for entry in metrics["files"]:
        log.info(
            "%s: %d rows of %s at %s rows/s", entry["task"], entry["rows"], entry["input"],
            format_count(entry["rows_per_s"]),
        )  # fmt: skip
        for what, path in entry["outputs"].items():
            log.info("%-14s %s", what + ":", path)
    for path in metrics["submission_zips"]:
        log.info("%-14s %s", "zip:", path)
    log.info("%d rows at %s rows/s -> %s", metrics["rows"], format_count(metrics["rows_per_s"]),
             metrics["output"])  # fmt: skip


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    data = resolve(cfg)
    data["run_dir"] = HydraConfig.get().runtime.output_dir
    run(to_dataclass(PredictConfig, data))


if __name__ == "__main__":
    register_resolvers()
    main()
