"""The README is the contract: every command it shows runs, here or in the test named for it
below, and every one still parses.

Commands are read from its ``bash`` blocks and from inline code that starts with ``make``,
``python -m`` or ``torchrun``. Each is one of:

* **run here as written**, in a fresh working directory that holds what the command names (the
  files of ``my_ids.txt``, ``train_set.csv``, ``my_text.txt``, a Google-format Chinese BERT
  checkpoint, the embedded corpus under ``outputs/data/embedded``, the runs an earlier command of
  the same workflow wrote), with only sizes and budgets added on the command line (``SHRINK``:
  a tiny model, a few steps, CPU and fp32) — a ``make`` command runs the recipe ``make -n``
  prints for it, ``<name>`` placeholders read as names. The quick ones (the continued-MLM
  commands on a corpus of the user's own) are in ``make test``; the workflows over the embedded
  corpus, the Tianchi files and the benchmarks are ``slow`` (``make test-full``);
* **covered** (``COVERED``): run on a tiny input by the named test, which runs the command's
  own code path (or by CI: ``make test``);
* **run here for real** (``RUN_HERE``): ``make help``, the summary and TensorBoard commands over a
  tiny sweep, ``make docs``, ``make lint``, a collection by ``make test-full``.

Besides, every ``make`` command is expanded with ``make -n`` and every ``python -m`` /
``torchrun`` command it gives composes against the real Hydra config and, for the modules in
``TYPED``, builds the typed config the module runs, so a renamed key or option (or one handed to
the wrong module by a ``make`` target) fails here rather than in a reader's first try. A command
that is neither run nor covered fails.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep
from omegaconf import DictConfig, open_dict

from finetune.config import build_config
from finetune.ensemble import EnsembleConfig
from finetune.predict import PredictConfig
from finetune.report import ReportConfig
from pretrain.config import PretrainConfig
from ptm.config import register_resolvers, resolve, to_dataclass
from ptm.data.embedded import EmbeddedConfig
from tests.conftest import CONF_DIR, write_corpus
from tests.finetune_helpers import run_finetune_sweep, the_sweep
from tests.tensorboard_server import Server

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)  # make's VENV: the interpreter running these tests
CONFIG_OF_MODULE = {
    "pretrain": "pretrain",
    "pretrain.corpus": "corpus",
    "pretrain.overlap": "overlap",
    "pretrain.segments": "pretrain",
    "pretrain.export": "export",
    "finetune": "finetune",
    "finetune.report": "report",
    "finetune.predict": "predict",
    "finetune.ensemble": "ensemble",
    "convert": "convert",
    "sweeps.summary": "summary",
    "sweeps.serve_tensorboard": "tensorboard",
    "docs.config_reference": "config_reference",
    "bench": "bench",
}
# Modules that take plain arguments, not a Hydra config: nothing to compose.
PLAIN_MODULES = ("pytest", "docs.render", "ptm.records")
CI = "CI"  # .ci/run runs `make test`, which installs first
E2E = "tests/test_end_to_end.py::test_pretrain_then_finetune_on_the_embedded_corpus"
HERE = "tests/test_readme.py::"
OWN_IDS = HERE + "test_an_id_corpus_of_yours_pretrains_as_written"
RAW_TEXT = HERE + "test_raw_chinese_text_from_a_converted_chinese_bert_as_written"
TIANCHI = HERE + "test_the_tianchi_workflow_runs_as_written"
EMBEDDED = HERE + "test_the_embedded_corpus_workflow_runs_as_written"
RECORD = HERE + "test_make_record_copies_a_record_into_results"
BENCH = HERE + "test_make_bench_runs_as_written"
REPORT = "tests/test_finetune_report.py::test_report_runs_every_mode_and_writes_the_table"
# How the README's commands are exercised: a test of this file that runs them as written, or
# the test elsewhere that runs their code path on a tiny input, or CI.
COVERED = {
    "make install": CI,
    "make test": CI,
    "make data": "tests/test_embedded.py::test_same_seed_same_bytes",
    "python -m pretrain.corpus": "tests/test_embedded.py::test_same_seed_same_bytes",
    "make overlap": "tests/test_overlap.py::test_report_counts_test_text_a_tianchi_corpus_contains",
    "make pretrain": E2E,
    "python -m pretrain": E2E,
    "make finetune": E2E,
    "python -m finetune": EMBEDDED,
    "python -m finetune +experiment=finetune_tiny": E2E,
    "python -m pretrain 'data.corpus=[my_ids.txt]'": OWN_IDS,
    "python -m pretrain data=tianchi 'data.corpus=[train_set.csv,test_a.csv]'": TIANCHI,
    "python -m pretrain.overlap data=tianchi 'data.corpus=[train_set.csv,test_a.csv]' task=tianchi tasks.tianchi.train=train_set.csv tasks.tianchi.test=test_a.csv": TIANCHI,
    "python -m finetune task=tianchi tasks.tianchi.train=train_set.csv tasks.tianchi.test=test_a.csv": TIANCHI,
    "python -m finetune.predict run=outputs/finetune/latest 'inputs=[test_b.csv]' output=outputs/test_b": TIANCHI,
    "make convert": RAW_TEXT,
    "make convert CKPT=chinese_roberta_wwm_ext_L-12_H-768_A-12 OUT=outputs/models/roberta-wwm-ext": RAW_TEXT,
    "python -m pretrain model.init_from=outputs/models/roberta-wwm-ext 'data.corpus=[my_text.txt]' data.word_segmenter=jieba data.masking.whole_word=true": RAW_TEXT,
    "python -m finetune model.path=outputs/models/roberta-wwm-ext '~task' +task@tasks.mine=_base tasks.mine.kind=classification tasks.mine.train=my_train.csv tasks.mine.test=my_test.csv": RAW_TEXT,
    "python -m pretrain +experiment=tiny": (
        "tests/test_pretrain.py::test_tiny_run_exports_a_model_transformers_loads"
    ),
    "make pretrain ARGS=+experiment=payoff": EMBEDDED,
    "python -m pretrain.export run=outputs/pretrain/latest step=1600": (
        "tests/test_pretrain.py::test_a_checkpoint_exports_as_the_model_folder_of_its_step"
    ),
    "python -m convert direction=hf2tf input=outputs/pretrain/latest/model output=outputs/tf/mine shards=2": EMBEDDED,
    "python -m finetune task=names": EMBEDDED,
    "python -m finetune model.init=scratch": EMBEDDED,
    "python -m finetune task=tianchi_multitask model.path=outputs/models/bert-wwm-ext tasks.ocnli.train=OCNLI_train1128.csv tasks.ocnli.test=OCNLI_a.csv tasks.ocemotion.train=OCEMOTION_train1128.csv tasks.ocemotion.test=OCEMOTION_a.csv tasks.tnews.train=TNEWS_train1128.csv tasks.tnews.test=TNEWS_a.csv": (
        "tests/test_tianchi_multitask.py::"
        "test_the_competition_run_scores_each_task_and_zips_the_submission"
    ),
    "make predict": "tests/test_predict.py::test_make_predict_and_the_command_line",
    "python -m finetune.predict": "tests/test_predict.py::test_make_predict_and_the_command_line",
    "python -m finetune cv.folds=5": EMBEDDED,
    # The same command on a CV run: its folds predict, averaged, in a subprocess as written.
    "python -m finetune.predict run=outputs/finetune/latest 'inputs=[test_b.csv]'": (
        "tests/test_cv.py::test_cross_validation_predicts_every_training_row_once_and_averages_the_test"
    ),
    "python -m finetune.ensemble 'runs=[outputs/finetune/<run1>,outputs/finetune/<run2>]'": EMBEDDED,
    "make report": REPORT,
    "python -m finetune.report": REPORT,
    "python -m finetune.report 'budgets=[100,1000,null]' 'finetune_overrides=[\"train.epochs=1\"]'": REPORT,
    "make sweep": "tests/test_sweep.py::test_finetune_sweep_ranks_by_dev_score_failed_jobs_last",
    "python -m finetune -m +search=optuna": (
        "tests/test_search.py::test_a_study_maximises_the_dev_score_and_survives_a_diverging_trial"
    ),
    "python -m finetune -m +launcher=slurm hydra.launcher.partition=gpu train.lr=1e-4,2e-4,3e-4 train.seed=1,2,3": (
        "tests/test_launchers.py::test_the_slurm_preset_asks_for_one_gpu_per_job"
    ),
    "python -m pretrain resume=outputs/pretrain/latest": (
        "tests/test_pretrain.py::test_sigterm_saves_at_the_next_step_and_resume_repeats_the_run"
    ),
    "python -m finetune resume=outputs/finetune/latest": (
        "tests/test_finetune_resume.py::"
        "test_sigterm_mid_epoch_saves_at_the_next_step_and_resumes_to_the_same_outcome"
    ),
    "make record RUN=<run> NAME=<name>": RECORD,
    "make test-gpu": "tests/test_gpu.py::test_tiny_pretraining_in_bf16_exports_a_model_transformers_loads",
    "make bench": BENCH,
}  # fmt: skip
# The commands the tests below run for real.
RUN_HERE = {
    "make help",
    "make summary",
    'make summary ARGS="metric=tasks.sentiment.test.macro_f1 mode=max"',
    "make tensorboard",
    "make tensorboard ARGS=logdir=outputs/finetune-multirun/<time>",
    "make docs",
    "make lint",
    "make test-full",
}
# What shrinks a command to seconds, added after the README's own words: sizes and budgets,
# never what the command does.
TINY_MODEL = (
    "model.hidden_size=32",
    "model.num_hidden_layers=1",
    "model.num_attention_heads=2",
    "model.intermediate_size=64",
)
FEW_STEPS = (
    "train.max_steps=2",
    "train.batch_size=4",
    "train.micro_batch_size=4",
    "train.eval_max_segments=8",
    "runtime.device=cpu",
    "runtime.precision=fp32",
)
SHORT_FINETUNING = ("+experiment=finetune_tiny", "train.max_steps=3")
NO_PROBE_LINE = "no downstream probe: its tasks (sentiment, names) come from"


def readme_commands() -> list[str]:
    """Every command the README shows, in order, each once."""
    text = (ROOT / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            commands.append(line.split(" #", 1)[0].strip())
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    commands += re.findall(r"`((?:make|python -m|torchrun) [^`]+)`", prose)
    return list(dict.fromkeys(c for c in commands if c and not c.startswith("#")))


COMMANDS = readme_commands()


def make(*words: str, args: str = "", **kwargs) -> subprocess.CompletedProcess:
    """``make`` as the README runs it, with this interpreter's environment, never reinstalling
    it, and ``args`` added to the command's own ``ARGS``."""
    words = [w for w in words if not w.startswith("ARGS=")] + [
        "ARGS=" + " ".join([*(w[5:] for w in words if w.startswith("ARGS=")), args]).strip()
    ]
    return subprocess.run(
        ["make", "-s", "-o", f"{VENV}/.installed", f"VENV={VENV}", *words],
        cwd=ROOT, capture_output=True, text=True, timeout=300, **kwargs,
    )  # fmt: skip


def make_targets() -> set[str]:
    return set(re.findall(r"^([a-zA-Z_-]+):", (ROOT / "Makefile").read_text(), flags=re.M))


def python_calls(command: str, *make_options: str) -> list[list[str]]:
    """The ``python -m`` / ``torchrun`` command lines a README command runs, as words: itself,
    or what ``make -n`` says a ``make`` command would run (``make_options`` such as
    ``-o data``: a prerequisite not to remake)."""
    words = shlex.split(re.sub(r"<(\w+)>", r"\1", command))  # <time> and such: any name
    if words[0] != "make":
        return [words]
    dry = make("-n", *make_options, *words[1:])
    assert dry.returncode == 0, f"`make -n` of README's `{command}`: {dry.stderr}"
    calls = []
    for line in dry.stdout.splitlines():
        found = re.match(r"\S*python\S* (-m .*)$", line.strip())
        if found:
            calls.append(["python", *shlex.split(found.group(1))])
    return calls


# How each module turns its composed config into the typed one it runs (an unknown key or a wrong
# type is an error there, after Hydra composed the config without complaint).
TYPED = {
    "pretrain": lambda data: to_dataclass(PretrainConfig, {**data, "run_dir": "run"}),
    "pretrain.corpus": lambda data: to_dataclass(EmbeddedConfig, data),
    "finetune": lambda data: build_config({**data, "run_dir": "run"}),
    "finetune.report": lambda data: to_dataclass(ReportConfig, {**data, "run_dir": "run"}),
    "finetune.predict": lambda data: to_dataclass(PredictConfig, {**data, "run_dir": "run"}),
    "finetune.ensemble": lambda data: to_dataclass(EnsembleConfig, {**data, "run_dir": "run"}),
}


def first_combination(overrides: list[str]) -> list[str]:
    """A sweep's overrides with every swept key at its first value (what one job composes)."""
    out = []
    for override in OverridesParser.create().parse_overrides(overrides):
        if not override.is_sweep_override():
            out.append(override.input_line)
            continue
        value = override.value()
        first = value.start if isinstance(value, IntervalSweep) else None
        first = first if first is not None else next(iter(override.sweep_string_iterator()))
        out.append(f"{override.get_key_element()}={first}")
    return out


def hydra_call(words: list[str]) -> tuple[str, list[str]] | None:
    """``(module, arguments)`` of a ``python -m``/``torchrun -m`` command, else None."""
    if "-m" not in words or words[0] not in {"python", "torchrun"}:
        return None
    at = words.index("-m")
    return words[at + 1], [w for w in words[at + 2 :] if w != "-m"]


def composed_as_a_job(config_name: str, overrides: list[str]) -> DictConfig:
    """The config one job of the command runs with: ``${hydra:runtime.output_dir}`` (the
    launchers' ``resume``) resolves as in a run, to the job's folder."""
    register_resolvers()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "run"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def run_as_written(command: str, cwd: Path, *shrink: str, timeout: int = 600) -> str:
    """Run a README command in ``cwd`` (a user's working directory), ``shrink`` added after its
    own arguments; returns what it printed. A ``make`` command runs the recipe ``make -n``
    prints for it (`make data`, a prerequisite of several targets, is left out: the test
    provides the corpus)."""
    assert command in COMMANDS, f"no longer in the README: {command}"
    (words,) = python_calls(command, "-o", "data")
    done = subprocess.run(
        [sys.executable, *words[1:], *shrink],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"`{command}` failed:\n{output[-4000:]}"
    return output


def test_readme_has_the_two_setup_commands() -> None:
    quickstart = (ROOT / "README.md").read_text().split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert "make pretrain" in quickstart and "make test" in quickstart
    assert "make test" in (ROOT / ".ci" / "run").read_text()


def test_every_command_is_run_here_or_covered_by_a_named_test() -> None:
    missing = [c for c in COMMANDS if c not in RUN_HERE and c not in COVERED]
    assert not missing, f"README commands neither run nor covered (add them to COVERED): {missing}"
    stale = sorted((RUN_HERE | set(COVERED)) - set(COMMANDS))
    assert not stale, f"listed here but no longer in the README: {stale}"


@pytest.mark.parametrize("where", sorted(set(COVERED.values())))
def test_the_covering_tests_exist(where: str) -> None:
    if where == CI:
        assert "make test" in (ROOT / ".ci" / "run").read_text()
        assert re.search(r"^test: install\b", (ROOT / "Makefile").read_text(), flags=re.M)
        return
    path, name = where.split("::")
    assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), flags=re.M), where


@pytest.mark.parametrize("command", [c for c in COMMANDS if c.startswith("make ")])
def test_make_targets_exist(command: str) -> None:
    target = shlex.split(command)[1]
    assert target in make_targets(), f"README runs `{command}` but the Makefile has no {target}"


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_compose(command: str) -> None:
    for words in python_calls(command):
        call = hydra_call(words)
        if call is None or call[0] in PLAIN_MODULES:  # make test / test-full run pytest
            continue
        module, arguments = call
        assert module in CONFIG_OF_MODULE, f"README runs an unknown module: {command}"
        try:
            cfg = composed_as_a_job(CONFIG_OF_MODULE[module], first_combination(arguments))
            if module in TYPED:
                TYPED[module](resolve(cfg))
        finally:
            HydraConfig.instance().cfg = None


# The quick commands, run.


def test_make_help_lists_every_target() -> None:
    result = make("help")
    assert result.returncode == 0, result.stderr
    described = re.findall(r"^([a-zA-Z_-]+):.*## ", (ROOT / "Makefile").read_text(), flags=re.M)
    listed = re.findall(r"^\s+(?:\x1b\[\d+m)?([a-zA-Z_-]+)", result.stdout, flags=re.M)
    assert listed == described and "pretrain" in listed


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished two-job fine-tuning sweep on a task named ``sentiment``, like `make sweep`'s."""
    out = tmp_path_factory.mktemp("outputs")
    result = run_finetune_sweep(
        out, "train.epochs=1", "train.batch_size=16", "train.lr=1e-3,3e-3", task="sentiment"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return the_sweep(out)


def test_the_summary_commands_rank_the_newest_sweep(sweep: Path) -> None:
    outputs = f"paths.output_dir={sweep.parents[1]}"
    newest = make("summary", args=outputs)
    assert newest.returncode == 0, newest.stderr
    assert newest.stdout.startswith(f"# Sweep {sweep}\n")
    assert "ranked by `best.dev_score` (dev sentiment macro-F1), higher is better" in newest.stdout
    best = (
        rf"^Best: job [01] \(best.dev_score [\d.]+\) — model: {re.escape(str(sweep))}/[01]/model$"
    )
    assert re.search(best, newest.stdout, flags=re.M), newest.stdout

    words = shlex.split('make summary ARGS="metric=tasks.sentiment.test.macro_f1 mode=max"')
    other = make(*words[1:], args=outputs)
    assert other.returncode == 0, other.stderr
    assert "ranked by `tasks.sentiment.test.macro_f1`, higher is better" in other.stdout
    assert "| tasks.sentiment.test.macro_f1 ↑ |" in other.stdout


@pytest.mark.parametrize(
    "command", ["make tensorboard", "make tensorboard ARGS=logdir=outputs/finetune-multirun/<time>"]
)
def test_the_tensorboard_commands_serve_the_sweep(sweep: Path, command: str) -> None:
    outputs = sweep.parents[1]
    words = shlex.split(command.replace("outputs/", f"{outputs}/").replace("<time>", sweep.name))
    # port=0: any free port, as the tests may run beside a TensorBoard on 6006.
    args = " ".join([*(w[5:] for w in words if w.startswith("ARGS=")),
                     f"paths.output_dir={outputs}", "port=0"])  # fmt: skip
    server = Server(command=["make", "-s", "-o", f"{VENV}/.installed", f"VENV={VENV}", words[1],
                             f"ARGS={args}"])  # fmt: skip
    try:
        url = server.url()
        assert url.startswith("http://127.0.0.1:")
        inside = "" if "logdir=" in command else f"finetune-multirun/{sweep.name}/"
        expected = {f"{inside}0/tb", f"{inside}1/tb"}
        assert expected <= set(server.runs(url, expected))
    finally:
        server.stop()


def test_make_docs_writes_the_committed_reference(tmp_path: Path) -> None:
    written = tmp_path / "CONFIGURATION.md"
    result = make("docs", args=f"output={written} paths.output_dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert written.read_text() == (ROOT / "docs" / "CONFIGURATION.md").read_text()


def test_make_lint_passes() -> None:
    result = make("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_make_test_full_includes_the_slow_tests() -> None:
    """Collection only (running them is what the target is for): the slow torchrun test that
    `make test` leaves out is among them."""
    result = make("test-full", args="--collect-only tests/test_finetune.py")
    assert result.returncode == 0, result.stdout[-2000:]
    assert "tests/test_finetune.py::test_two_torchrun_processes_finetune" in result.stdout


def test_make_record_copies_a_record_into_results(tmp_path: Path) -> None:
    """`make record RUN=<run> NAME=<name>`, into a results folder of the test's own (the
    repository's results/ is what the docs render)."""
    run = tmp_path / "run"
    run.mkdir()
    record = {"schema": 1, "kind": "pretrain", "command": "python -m pretrain", "metrics": {}}
    (run / "record.json").write_text(json.dumps(record))
    results = tmp_path / "results"
    run_as_written("make record RUN=<run> NAME=<name>", tmp_path, "--results", str(results))
    assert json.loads((results / "name.json").read_text()) == record


# Your own data, as written: the continued-MLM commands on a corpus of the user's own.

CHINESE = [
    "诸葛亮是三国时期蜀汉的丞相。",
    "三国时期，曹操统一了北方。",
    "刘备在成都建立了蜀汉。",
    "这家店的服务很好，菜也好吃。",
    "东西质量太差了，不会再买。",
    "快递很快，包装也很好，满意。",
    "价格太贵，味道一般，不推荐。",
    "孙权在江东称帝，建立了吴国。",
]
POSITIVE = {3, 5}  # CHINESE rows that are good reviews; the other reviews are bad


def google_chinese_bert(folder: Path, text: str) -> Path:
    """A tiny Chinese BERT in the format Google's and HFL's releases ship: ``bert_config.json``,
    a ``vocab.txt`` laid out as theirs, ``bert_model.ckpt.*`` with the MLM, next-sentence and
    pooler weights, 128 positions — written by ptm's hf2tf from a random transformers model."""
    import torch
    from transformers import BertConfig, BertForPreTraining, BertTokenizerFast

    from ptm.config import from_conf
    from ptm.data.tokenizer import GOOGLE_SPECIALS
    from ptm.tf.convert import ConvertConfig
    from ptm.tf.convert import run as convert

    hf = folder.with_name(folder.name + "-hf")
    hf.mkdir(parents=True)
    vocab = [*GOOGLE_SPECIALS, *dict.fromkeys(c for c in text if not c.isspace())]
    (hf / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    BertTokenizerFast.from_pretrained(hf).save_pretrained(hf)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    torch.manual_seed(0)
    BertForPreTraining(config).save_pretrained(hf)
    convert(
        from_conf(
            ConvertConfig, "convert", overrides=("input=x", "output=y"),
            direction="hf2tf", input=str(hf), output=str(folder), prefix="bert_model.ckpt",
        )
    )  # fmt: skip
    return folder


def test_an_id_corpus_of_yours_pretrains_as_written(tmp_path: Path) -> None:
    """`data.corpus` alone: the embedded corpus's probe stays off for it, with a log line."""
    write_corpus(tmp_path / "my_ids.txt", 60)
    said = run_as_written(
        "python -m pretrain 'data.corpus=[my_ids.txt]'", tmp_path, *TINY_MODEL, *FEW_STEPS
    )
    assert NO_PROBE_LINE in said
    metrics = json.loads((tmp_path / "outputs/pretrain/latest/metrics.json").read_text())
    assert metrics["steps"] == 2 and "probe" not in metrics
    assert (tmp_path / "outputs/pretrain/latest/model/config.json").is_file()


def test_raw_chinese_text_from_a_converted_chinese_bert_as_written(tmp_path: Path) -> None:
    """The seed workflow of the README's raw-text paragraph: a Google-format checkpoint is
    converted, continued on plain text with jieba whole-word masking, and fine-tuned on a task
    without a file of its own."""
    google_chinese_bert(tmp_path / "chinese_roberta_wwm_ext_L-12_H-768_A-12", "".join(CHINESE))
    (tmp_path / "my_text.txt").write_text("\n".join(CHINESE * 5) + "\n", encoding="utf-8")
    reviews = [(int(i in POSITIVE), t) for i, t in enumerate(CHINESE) if i >= 3]
    (tmp_path / "my_train.csv").write_text(
        "label\ttext\n" + "".join(f"{y}\t{t}\n" for y, t in reviews * 8), encoding="utf-8"
    )
    (tmp_path / "my_test.csv").write_text(
        "text\n" + "".join(f"{t}\n" for _, t in reviews * 2), encoding="utf-8"
    )

    run_as_written(
        "make convert CKPT=chinese_roberta_wwm_ext_L-12_H-768_A-12 OUT=outputs/models/roberta-wwm-ext",
        tmp_path,
    )
    converted = tmp_path / "outputs/models/roberta-wwm-ext"
    assert json.loads((converted / "config.json").read_text())["architectures"] == [
        "BertForPreTraining"
    ]
    said = run_as_written(
        "python -m pretrain model.init_from=outputs/models/roberta-wwm-ext "
        "'data.corpus=[my_text.txt]' data.word_segmenter=jieba data.masking.whole_word=true",
        tmp_path,
        *FEW_STEPS,
    )
    assert NO_PROBE_LINE in said
    continued = tmp_path / "outputs/pretrain/latest/model"
    for name in ("config.json", "vocab.txt"):  # a drop-in replacement for the converted model
        assert (continued / name).read_bytes() == (converted / name).read_bytes(), name

    run_as_written(
        "python -m finetune model.path=outputs/models/roberta-wwm-ext '~task' "
        "+task@tasks.mine=_base tasks.mine.kind=classification tasks.mine.train=my_train.csv "
        "tasks.mine.test=my_test.csv",
        tmp_path,
        *SHORT_FINETUNING,
    )
    submission = tmp_path / "outputs/finetune/latest/predictions/mine/submission.csv"
    assert submission.read_text().splitlines()[0] == "label"
    assert len(submission.read_text().splitlines()) == 1 + 2 * len(reviews)


# Longer workflows, as written: the Tianchi files, the embedded corpus, the benchmarks.


def write_tianchi(folder: Path) -> None:
    """``train_set.csv`` (label\\ttext) and ``test_a.csv`` / ``test_b.csv`` (text): three classes
    told apart by a marker ID, as the competition's files are laid out."""
    lines = write_corpus(folder / "docs.txt", 90, seed=1).read_text().splitlines()
    rows = [(i % 3, f"{150 + i % 3} {line}") for i, line in enumerate(lines)]
    (folder / "train_set.csv").write_text(
        "label\ttext\n" + "".join(f"{y}\t{t}\n" for y, t in rows[:60])
    )
    (folder / "test_a.csv").write_text("text\n" + "".join(f"{t}\n" for _, t in rows[60:78]))
    (folder / "test_b.csv").write_text("text\n" + "".join(f"{t}\n" for _, t in rows[78:]))


@pytest.mark.slow
def test_the_tianchi_workflow_runs_as_written(tmp_path: Path) -> None:
    write_tianchi(tmp_path)
    said = run_as_written(
        "python -m pretrain data=tianchi 'data.corpus=[train_set.csv,test_a.csv]'",
        tmp_path, *TINY_MODEL, *FEW_STEPS,
    )  # fmt: skip
    assert NO_PROBE_LINE not in said  # data=tianchi has no probe to turn off
    run_as_written(
        "python -m pretrain.overlap data=tianchi 'data.corpus=[train_set.csv,test_a.csv]' "
        "task=tianchi tasks.tianchi.train=train_set.csv tasks.tianchi.test=test_a.csv",
        tmp_path,
    )
    (overlap,) = (tmp_path / "outputs").glob("**/overlap.json")
    assert "tianchi" in overlap.read_text()
    run_as_written(
        "python -m finetune task=tianchi tasks.tianchi.train=train_set.csv "
        "tasks.tianchi.test=test_a.csv",
        tmp_path, *SHORT_FINETUNING,
    )  # fmt: skip
    latest = tmp_path / "outputs/finetune/latest"
    assert len((latest / "predictions/tianchi/submission.csv").read_text().splitlines()) == 19
    run_as_written(
        "python -m finetune.predict run=outputs/finetune/latest 'inputs=[test_b.csv]' "
        "output=outputs/test_b",
        tmp_path,
    )
    predicted = (tmp_path / "outputs/test_b/tianchi/submission.csv").read_text().splitlines()
    assert predicted[0] == "label" and len(predicted) == 1 + 12


@pytest.mark.slow
def test_the_embedded_corpus_workflow_runs_as_written(tmp_path: Path, embedded_dir: Path) -> None:
    """The payoff recipe, its export to TensorFlow, fine-tuning (names, from scratch, the
    default), an ensemble of two runs and a 5-fold cross-validation, in one working directory
    whose ``outputs/data/embedded`` is the embedded corpus."""
    (tmp_path / "outputs/data").mkdir(parents=True)
    (tmp_path / "outputs/data/embedded").symlink_to(embedded_dir, target_is_directory=True)
    small_probe = ("data.probe.train_rows=16", "data.probe.dev_rows=16")
    said = run_as_written(
        "make pretrain ARGS=+experiment=payoff", tmp_path, *TINY_MODEL, *FEW_STEPS, *small_probe
    )
    assert NO_PROBE_LINE not in said  # the embedded corpus keeps its probe
    metrics = json.loads((tmp_path / "outputs/pretrain/latest/metrics.json").read_text())
    assert metrics["steps"] == 2 and "probe" in metrics

    run_as_written(
        "python -m convert direction=hf2tf input=outputs/pretrain/latest/model "
        "output=outputs/tf/mine shards=2",
        tmp_path,
    )
    assert len(list((tmp_path / "outputs/tf/mine").glob("model.ckpt.data-0000?-of-00002"))) == 2

    run_as_written("python -m finetune task=names", tmp_path, *SHORT_FINETUNING)
    names = json.loads((tmp_path / "outputs/finetune/latest/metrics.json").read_text())
    assert set(names["tasks"]) == {"names"}

    finetune = tmp_path / "outputs/finetune"
    run_as_written(
        "python -m finetune model.init=scratch", tmp_path, *SHORT_FINETUNING,
        f"hydra.run.dir={finetune / 'run1'}",
    )  # fmt: skip
    run_as_written(
        "python -m finetune", tmp_path, *SHORT_FINETUNING, "train.seed=2",
        f"hydra.run.dir={finetune / 'run2'}",
    )  # fmt: skip
    run_as_written(
        "python -m finetune.ensemble 'runs=[outputs/finetune/<run1>,outputs/finetune/<run2>]'",
        tmp_path,
    )
    (ensemble,) = (tmp_path / "outputs/ensemble").glob("*/record.json")
    assert json.loads(ensemble.read_text())["kind"] == "ensemble"

    run_as_written("python -m finetune cv.folds=5", tmp_path, *SHORT_FINETUNING)
    (cv,) = [
        m["cv"] for m in map(json.loads, map(Path.read_text, finetune.glob("*/metrics.json")))
        if "cv" in m
    ]  # fmt: skip
    assert cv["folds"] == 5 and "oof" in cv["tasks"]["sentiment"]


@pytest.mark.slow
def test_make_bench_runs_as_written(tmp_path: Path) -> None:
    """One benchmark for a fraction of a second, its row and table written beside the test. The
    benchmarks render their table with the repository's docs/ code, so they run where `make`
    runs them: in the repository."""
    run_as_written(
        "make bench", ROOT, "only=[attention]", "attention.seconds=0.2",
        "attention.precisions=[fp32]", f"results={tmp_path / 'b.json'}",
        f"report={tmp_path / 'b.md'}", f"paths.output_dir={tmp_path}",
    )  # fmt: skip
    rows = json.loads((tmp_path / "b.json").read_text())
    assert list(rows) == ["attention: CPU training, forward + backward (fp32)"]
    assert "attention: CPU training" in (tmp_path / "b.md").read_text()
