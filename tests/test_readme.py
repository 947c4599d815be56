"""The README is the contract: every command it shows is run here, or is run on a tiny input by
the test named for it below, and every one still parses.

Commands are read from its ``bash`` blocks and from inline code that starts with ``make``,
``python -m`` or ``torchrun``. The quick ones run here for real (``make help``, the summary and
TensorBoard commands over a tiny sweep this file makes, ``make docs``, ``make lint``, a
collection by ``make test-full``), their outputs sent to ``tmp_path``. The long ones are listed in
``COVERED`` with the test that runs their code path (or CI, or only composition where nothing
shorter exists). Every ``make`` command is expanded with ``make -n`` and every ``python -m`` /
``torchrun`` command it gives composes against the real Hydra config and, for the modules in
``TYPED``, builds the typed config the module runs, so a renamed key or option (or one handed to
the wrong module by a ``make`` target) fails here rather than in a reader's first try. A command
that is neither run nor listed fails.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep

from finetune.config import build_config
from finetune.report import ReportConfig
from pretrain.config import PretrainConfig
from ptm.config import resolve, to_dataclass
from ptm.data.embedded import EmbeddedConfig
from tests.conftest import compose_config
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
    "convert": "convert",
    "sweeps.summary": "summary",
    "sweeps.serve_tensorboard": "tensorboard",
    "docs.config_reference": "config_reference",
    "bench": "bench",
}
# Modules that take plain arguments, not a Hydra config: nothing to compose.
PLAIN_MODULES = ("pytest", "docs.render", "ptm.records")
CI = "CI"  # .ci/run runs `make test`, which installs first
COMPOSED = "composed"  # nothing shorter runs it: composing its config is the check
E2E = "tests/test_end_to_end.py::test_pretrain_then_finetune_on_the_embedded_corpus"
RAW_FACT = "tests/test_pretrain.py::test_raw_text_continued_training_teaches_a_new_fact"
# How the README's long commands are exercised: the test that runs their code path on a tiny
# input, CI, or composition only.
COVERED = {
    "make install": CI,
    "make test": CI,
    "make data": "tests/test_embedded.py::test_same_seed_same_bytes",
    "python -m pretrain.corpus": "tests/test_embedded.py::test_same_seed_same_bytes",
    "make overlap": "tests/test_overlap.py::test_report_counts_test_text_a_tianchi_corpus_contains",
    "python -m pretrain.overlap data=tianchi 'data.corpus=[train_set.csv,test_a.csv]' task=tianchi tasks.tianchi.train=train_set.csv tasks.tianchi.test=test_a.csv": (
        "tests/test_overlap.py::test_report_counts_test_text_a_tianchi_corpus_contains"
    ),
    "make pretrain": E2E,
    "python -m pretrain": E2E,
    "make pretrain ARGS=+experiment=payoff": COMPOSED,  # about 50 minutes: the tiny runs cover its path
    "python -m pretrain +experiment=tiny": (
        "tests/test_pretrain.py::test_tiny_run_exports_a_model_transformers_loads"
    ),
    "python -m pretrain model=bert_small train.max_steps=2000": COMPOSED,
    "python -m pretrain train.max_minutes=60 train.max_steps=null": COMPOSED,
    "python -m pretrain resume=outputs/pretrain/latest": (
        "tests/test_pretrain.py::test_resume_repeats_the_uninterrupted_run_exactly"
    ),
    "python -m pretrain.export": (
        "tests/test_pretrain.py::test_a_checkpoint_exports_as_the_model_folder_of_its_step"
    ),
    "python -m pretrain.export run=outputs/pretrain/latest step=1600": (
        "tests/test_pretrain.py::test_a_checkpoint_exports_as_the_model_folder_of_its_step"
    ),
    "python -m pretrain model.init_from=PATH 'data.corpus=[my_corpus.txt]'": (
        "tests/test_pretrain.py::test_continued_training_teaches_a_new_fact"
    ),
    "python -m pretrain data=tianchi 'data.corpus=[train_set.csv,test_a.csv]'": (
        "tests/test_segment_builder.py::test_tianchi_table_and_existing_tokenizer"
    ),
    "torchrun --nproc_per_node=4 -m pretrain train.micro_batch_size=64": (
        "tests/test_pretrain.py::test_two_torchrun_processes_match_one"
    ),
    "torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --rdzv_endpoint=HOST:29500 -m pretrain": (
        COMPOSED
    ),
    "make finetune": E2E,
    "python -m finetune": E2E,
    "python -m finetune +experiment=finetune_tiny": E2E,
    "python -m finetune task=names model.path=MODEL": (
        "tests/test_finetune.py::test_token_task_windows_long_rows_and_exports"
    ),
    "python -m finetune task=names train.lr=2e-4": (
        "tests/test_finetune.py::test_token_task_windows_long_rows_and_exports"
    ),
    "python -m finetune task=names model.path=MODEL train.limit_examples=8000 train.epochs=3 train.eval_every=125 train.patience=null train.seed=1 train.lr=1e-3 tasks.names.test=null": (
        "tests/test_finetune.py::test_token_task_windows_long_rows_and_exports"
    ),
    "python -m finetune task=multilabel tasks.multilabel.train=train.csv tasks.multilabel.dev=dev.csv": (
        "tests/test_finetune.py::test_multi_label_task_learns_every_label_of_a_text_and_exports"
    ),
    "python -m finetune task=tianchi_multitask model.path=outputs/models/bert-wwm-ext tasks.ocnli.train=OCNLI_train1128.csv tasks.ocnli.test=OCNLI_a.csv tasks.ocemotion.train=OCEMOTION_train1128.csv tasks.ocemotion.test=OCEMOTION_a.csv tasks.tnews.train=TNEWS_train1128.csv tasks.tnews.test=TNEWS_a.csv": (
        "tests/test_tianchi_multitask.py::"
        "test_the_competition_run_scores_each_task_and_zips_the_submission"
    ),
    "python -m finetune resume=outputs/finetune/latest": (
        "tests/test_finetune_resume.py::"
        "test_a_run_killed_mid_epoch_resumes_to_the_same_metrics_and_weights"
    ),
    "python -m finetune model.init=scratch": (
        "tests/test_finetune.py::test_from_scratch_baseline_reinitialises_the_encoder"
    ),
    "make report": "tests/test_finetune_report.py::test_report_runs_every_mode_and_writes_the_table",
    "python -m finetune.report": (
        "tests/test_finetune_report.py::test_report_runs_every_mode_and_writes_the_table"
    ),
    "python -m finetune.report 'budgets=[100,1000,null]' 'finetune_overrides=[\"train.epochs=1\"]'": (
        "tests/test_finetune_report.py::test_report_runs_every_mode_and_writes_the_table"
    ),
    "python -m finetune.report 'tasks=[sentiment]' 'budgets=[100,1000,null]' 'modes=[pretrained,scratch]' 'finetune_overrides=[\"train.epochs=1\",\"model.dropout=0.1\",\"head=mean\"]'": (
        "tests/test_finetune_report.py::test_report_runs_every_mode_and_writes_the_table"
    ),
    "python -m finetune.report 'tasks=[sentiment]' 'budgets=[null]' 'modes=[pretrained,scratch]' 'finetune_overrides=[\"model.dropout=0.1\",\"train.lr=2e-4\"]'": (
        "tests/test_finetune_report.py::test_report_runs_every_mode_and_writes_the_table"
    ),
    "python -m finetune.report 'tasks=[sentiment]' 'budgets=[null]' 'modes=[pretrained]'": (
        "tests/test_finetune_report.py::test_report_runs_every_mode_and_writes_the_table"
    ),
    "python -m finetune.report 'tasks=[sentiment]' 'budgets=[null]' 'modes=[pretrained]' 'finetune_overrides=[\"model.dropout=null\"]'": (
        "tests/test_finetune_report.py::test_report_runs_every_mode_and_writes_the_table"
    ),
    "make convert": "tests/test_convert.py::test_command_line",
    "make convert CKPT=chinese_roberta_wwm_ext_L-12_H-768_A-12 OUT=outputs/models/roberta-wwm-ext": (
        "tests/test_convert_then_finetune.py::test_converted_checkpoint_fine_tunes"
    ),
    "python -m convert input=path/to/model.ckpt-100000 output=outputs/models/mine": (
        "tests/test_convert.py::test_command_line"
    ),
    "python -m convert direction=hf2tf input=outputs/pretrain/latest/model output=outputs/tf/mine shards=2": (
        "tests/test_convert.py::test_hf_tf_hf_round_trip_is_exact"
    ),
    "make sweep": "tests/test_sweep.py::test_finetune_sweep_ranks_by_dev_score_failed_jobs_last",
    'make sweep SWEEP="train.lr=5e-5,1e-4,2e-4 train.max_steps=300"': (
        "tests/test_sweep.py::test_finetune_sweep_ranks_by_dev_score_failed_jobs_last"
    ),
    "python -m pretrain -m train.lr=5e-4,1e-3 train.warmup_fraction=0.06,0.1": (
        "tests/test_sweep.py::test_pretrain_sweep_with_a_diverging_job"
    ),
    "python -m finetune -m +search=optuna": (
        "tests/test_search.py::test_a_study_maximises_the_dev_score_and_survives_a_diverging_trial"
    ),
    "python -m finetune -m +search=optuna hydra.sweeper.n_trials=40 'train.lr=tag(log, interval(1e-5, 3e-4))' hydra.sweeper.sampler.seed=1": (
        "tests/test_search.py::test_the_search_space_is_optuna_distributions_over_real_keys"
    ),
    "python -m pretrain -m +search=optuna_pretrain train.max_minutes=30": (
        "tests/test_search.py::test_a_pretraining_study_minimises_the_held_out_loss"
    ),
    "python -m finetune -m +launcher=gpus train.lr=1e-4,2e-4,3e-4,5e-4 train.seed=1,2": (
        "tests/test_gpus.py::test_a_joblib_sweep_gives_each_worker_its_own_gpu"
    ),
    "python -m finetune -m +launcher=gpus +search=optuna": COMPOSED,
    "python -m finetune -m +launcher=slurm hydra.launcher.partition=gpu train.lr=1e-4,2e-4,3e-4 train.seed=1,2,3": (
        "tests/test_launchers.py::test_the_slurm_preset_asks_for_one_gpu_per_job"
    ),
    "python -m finetune -m +launcher=slurm hydra.launcher.partition=gpu +search=optuna hydra.sweeper.n_jobs=8": (
        COMPOSED
    ),
    "python -m finetune -m +launcher=local train.lr=1e-4,3e-4": (
        "tests/test_launchers.py::test_a_submitit_sweep_runs_each_job_in_its_own_process"
    ),
    "make test-gpu": "tests/test_gpu.py::test_tiny_pretraining_in_bf16_exports_a_model_transformers_loads",
    "make bench": COMPOSED,  # the benchmarks take minutes and are never part of the tests
    "python -m pretrain data=embedded_raw": RAW_FACT,
    "python -m pretrain data=embedded_raw train.max_steps=1000 train.max_minutes=null train.batch_size=16 train.micro_batch_size=16 data.masking.rate=0.15 model.hidden_dropout_prob=0.1 model.attention_probs_dropout_prob=0.1": (
        RAW_FACT
    ),
    "python -m pretrain +experiment=adapt model.init_from=outputs/pretrain/latest/model 'data.corpus=[examples/new_fact/facts.txt]' train.lr=1e-3": (
        RAW_FACT
    ),
    "python -m pretrain model.init_from=outputs/models/roberta-wwm-ext 'data.corpus=[my_text.txt]' data.word_segmenter=jieba": (
        "tests/test_pretrain.py::test_raw_text_continued_from_a_transformers_bert_is_a_drop_in_replacement"
    ),
    "python -m pretrain.segments data=embedded_raw data.word_segmenter=jieba": (
        "tests/test_rawtext.py::test_raw_text_segments_from_scratch"
    ),
}
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


def python_calls(command: str) -> list[list[str]]:
    """The ``python -m`` / ``torchrun`` command lines a README command runs, as words: itself,
    or what ``make -n`` says a ``make`` command would run."""
    words = shlex.split(re.sub(r"<(\w+)>", r"\1", command))  # <time> and such: any name
    if words[0] != "make":
        return [words]
    dry = make("-n", *words[1:])
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
    if where == COMPOSED:
        return  # test_commands_compose composes every command
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
        cfg = compose_config(CONFIG_OF_MODULE[module], first_combination(arguments))
        if module in TYPED:
            TYPED[module](resolve(cfg))


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
