"""The pretraining stage on tiny configs: export, resume, loss, guard, DDP, continued training."""

from __future__ import annotations

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from transformers import AutoModelForMaskedLM, AutoTokenizer, pipeline

from pretrain.config import PretrainConfig
from pretrain.export import TEMPLATE, export_checkpoint
from pretrain.train import run
from ptm.config import from_conf, resolve, to_dataclass
from ptm.errors import DivergenceError
from ptm.models.mlm import MaskedLMObjective, ModelConfig, build_mlm_model
from ptm.training.stop import EXIT_RESUMABLE
from tests.conftest import (
    CONF_DIR,
    ROOT,
    compose_config,
    pretrain_config,
    run_module,
    tiny_pretrain_overrides,
)


def scalars(run_dir: Path, tag: str) -> dict[int, float]:
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars(tag)}


def test_tiny_run_exports_a_model_transformers_loads(tmp_path: Path, corpus: Path) -> None:
    run_dir = tmp_path / "run"
    metrics = run(pretrain_config(tmp_path, corpus, run_dir))
    assert metrics["steps"] == 20 and metrics["eval/loss"] > 0 and metrics["tokens"] > 0
    model_dir = run_dir / "model"
    assert {"config.json", "model.safetensors", "tokenizer.json", "vocab.txt"} <= {
        p.name for p in model_dir.iterdir()
    }
    model = AutoModelForMaskedLM.from_pretrained(model_dir)
    assert type(model).__name__ == "BertForMaskedLM"
    fill = pipeline("fill-mask", model=str(model_dir), tokenizer=str(model_dir))
    predictions = fill("100 101 [MASK] 103")
    assert len(predictions) == 5 and all(p["token_str"].isdigit() for p in predictions)
    assert set(scalars(run_dir, "train/loss")) == {5, 10, 15, 20}
    assert {"eval/loss", "train/lr", "train/grad_norm", "train/tokens_per_s"} <= set(
        EventAccumulator(str(run_dir / "tb")).Reload().Tags()["scalars"]
    )
    assert (run_dir / "checkpoints").is_dir() and (run_dir / "metrics.json").is_file()

    # The run's record and the folder's model card carry what it measured.
    record = json.loads((run_dir / "record.json").read_text())
    assert record["kind"] == "pretrain" and record["metrics"]["eval/loss"] == metrics["eval/loss"]
    assert record["config"]["runtime"]["precision"] == "fp32" and record["wall_seconds"] > 0
    assert record["machine"]["label"].endswith("fp32")
    card = ModelCard.load(model_dir / "README.md")
    assert card.data.library_name == "transformers" and card.data.pipeline_tag == "fill-mask"
    (result,) = [r for r in card.data.eval_results if r.metric_type == "loss"]
    assert result.metric_value == pytest.approx(metrics["eval/loss"], abs=1e-4)


def test_resume_repeats_the_uninterrupted_run_exactly(tmp_path: Path, corpus: Path) -> None:
    check_exact_resume(tmp_path, corpus)


def test_sigterm_saves_at_the_next_step_and_resume_repeats_the_run(
    tmp_path: Path, corpus: Path
) -> None:
    """SIGTERM after step 13 (checkpoints every 10): the run saves step 14's state, exits with
    75 ("resumable"), and the resumed run logs and exports what an uninterrupted one does."""
    check_exact_resume(tmp_path, corpus, signame="SIGTERM")


def check_exact_resume(
    tmp_path: Path, corpus: Path, *runtime: str, signame: str = "SIGKILL"
) -> None:
    """A run stopped by ``signame`` after its 14th optimizer step (SIGKILL: the step-10
    checkpoint is the newest; SIGTERM: a checkpoint at the step-14 boundary) and resumed logs the
    same losses for steps 15-20 and exports the same weights as the run that was never stopped."""
    extra = ("train.log_every=1", "train.save_every=10", "train.max_steps=20", *runtime)
    straight = tmp_path / "straight"
    run(pretrain_config(tmp_path, corpus, straight, *extra))

    stopped = tmp_path / "stopped"
    overrides = [*tiny_pretrain_overrides(tmp_path, corpus, *extra), f"hydra.run.dir={stopped}"]
    result = run_module(
        "tests.sigkill", signame, "14", "ptm.training.loop.optimizer_step", "pretrain", *overrides
    )
    saved = sorted(p.name for p in (stopped / "checkpoints").glob("*.pt"))
    if signame == "SIGKILL":
        assert result.returncode == -signal.SIGKILL, result.stderr[-2000:]
        assert saved == ["step-00000010.pt"]
    else:
        assert result.returncode == EXIT_RESUMABLE, result.stderr[-2000:]
        assert saved == ["step-00000010.pt", "step-00000014.pt"]
        last = result.stderr.strip().splitlines()[-1]
        assert last.startswith("stopped: stopped by SIGTERM at step 14") and "resume=" in last
    assert not (stopped / "model").exists()
    run(pretrain_config(tmp_path, corpus, stopped, *extra, f"resume={stopped}"))

    a, b = scalars(straight, "train/loss"), scalars(stopped, "train/loss")
    assert [a[s] for s in range(15, 21)] == [b[s] for s in range(15, 21)]
    wa, wb = (
        load_file(straight / "model" / "model.safetensors"),
        load_file(stopped / "model" / "model.safetensors"),
    )
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_checkpoint_exports_as_the_model_folder_of_its_step(tmp_path: Path, corpus: Path) -> None:
    """The last checkpoint exports to the run's own model, weight for weight; an earlier one to a
    folder transformers loads, also before the run has written ``model/`` (from the template the
    run writes beside its checkpoints); a step with no checkpoint is a one-line error."""
    run_dir = tmp_path / "run"
    run(pretrain_config(tmp_path, corpus, run_dir, "train.keep_checkpoints=0"))
    assert {"config.json", "tokenizer.json", "vocab.txt"} <= {
        p.name for p in (run_dir / "checkpoints" / TEMPLATE).iterdir()
    }
    last = export_checkpoint(run_dir, step=20)
    assert last == run_dir / "model-step-20"
    final, exported = (load_file(d / "model.safetensors") for d in (run_dir / "model", last))
    assert final.keys() == exported.keys()
    assert all(torch.equal(final[k], exported[k]) for k in final)
    assert (last / "config.json").read_text() == (run_dir / "model" / "config.json").read_text()

    shutil.rmtree(run_dir / "model")  # as if the run were still going
    early = export_checkpoint(run_dir, step=10, out=tmp_path / "early")
    model = AutoModelForMaskedLM.from_pretrained(early)
    assert type(model).__name__ == "BertForMaskedLM"
    weights = load_file(early / "model.safetensors")
    assert not all(torch.equal(final[k], weights[k]) for k in final)
    fill = pipeline("fill-mask", model=str(early), tokenizer=str(early))
    assert all(p["token_str"].isdigit() for p in fill("100 101 [MASK] 103"))

    result = run_module(
        "pretrain.export", f"run={run_dir}", "step=15", f"paths.output_dir={tmp_path / 'logs'}"
    )
    assert result.returncode == 2
    error = result.stderr.strip().splitlines()
    assert len(error) == 1 and "no checkpoint of step 15 (there are steps 10, 20)" in error[0]


def tiny_mlm_batch(arch: str, layers: int, masked: dict[int, list[int]]):
    """A small random model in eval mode and a batch of 4 x 20 IDs (row 2 padded after 15)
    with labels at ``masked`` (row -> columns)."""
    torch.manual_seed(0)
    cfg = from_conf(
        ModelConfig,
        "pretrain",
        "model",
        arch=arch,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        embedding_size=16,
    )
    model = build_mlm_model(cfg, vocab_size=40, pad_token_id=0).eval()
    ids = torch.randint(5, 40, (4, 20))
    attention = torch.ones_like(ids)
    attention[2, 15:] = 0
    labels = torch.full_like(ids, -100)
    for row, cols in masked.items():
        labels[row, cols] = ids[row, cols]
    return model, ids, attention, labels


@pytest.mark.parametrize("arch", ["bert", "albert"])
def test_masked_positions_loss_equals_full_head_loss(arch: str) -> None:
    model, ids, attention, labels = tiny_mlm_batch(arch, 2, {0: [2, 7], 1: [11], 2: [3, 7, 11]})
    with torch.no_grad():
        loss_sum, correct, count = MaskedLMObjective(model)(ids, attention, labels)
        full = model(input_ids=ids, attention_mask=attention, labels=labels)
    assert count == 6
    torch.testing.assert_close(loss_sum / count, full.loss, rtol=1e-5, atol=1e-6)
    assert correct == (full.logits.argmax(-1)[labels != -100] == ids[labels != -100]).sum()


def test_last_layer_on_masked_rows_gives_the_full_encoders_loss_and_gradients() -> None:
    """The BERT shortcut (last layer on masked rows only) is the same arithmetic: padded rows,
    a row with no masked position (row 3) and a masked [CLS] included."""
    model, ids, attention, labels = tiny_mlm_batch(
        "bert", 3, {0: [0, 7, 11], 1: [19], 2: [3, 4, 5, 6, 14]}
    )
    objective = MaskedLMObjective(model)
    assert objective.masked_only
    results = []
    for masked_only in (True, False):
        objective.masked_only = masked_only
        model.zero_grad()
        loss_sum, correct, count = objective(ids, attention, labels)
        loss_sum.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((loss_sum.detach(), correct, count, grads))
    (loss_a, correct_a, count_a, grads_a), (loss_b, correct_b, count_b, grads_b) = results
    assert count_a == count_b == 9 and correct_a == correct_b
    torch.testing.assert_close(loss_a, loss_b, rtol=1e-6, atol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], rtol=1e-4, atol=1e-6)


def test_divergence_guard_stops_before_export(tmp_path: Path, corpus: Path) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(
        DivergenceError, match=r"diverged at step \d+ \(learning rate .*lower train\.lr"
    ):
        run(
            pretrain_config(
                tmp_path,
                corpus,
                run_dir,
                "train.lr=1e4",
                "train.grad_clip=0",
                "train.guard.min_steps=3",
            )
        )
    assert not (run_dir / "model").exists()


def test_continued_training_teaches_a_new_fact(tmp_path: Path, corpus: Path) -> None:
    base = tmp_path / "base"
    with corpus.open("a") as f:
        f.write(" ".join(str(i) for i in range(100, 160)) + "\n")
    run(pretrain_config(tmp_path, corpus, base))
    fact = tmp_path / "fact.txt"
    fact.write_text("131 157 142 119\n" * 300)
    query = "131 157 142 [MASK]"
    before = pipeline("fill-mask", model=str(base / "model"))(query)[0]["token_str"]
    assert before != "119"
    taught = tmp_path / "taught"
    run(
        pretrain_config(
            tmp_path,
            fact,
            taught,
            f"model.init_from={base / 'model'}",
            "train.max_steps=60",
            "train.lr=5e-3",
            "data.segments.eval_fraction=0.05",
        )
    )
    after = pipeline("fill-mask", model=str(taught / "model"))(query)[0]["token_str"]
    assert after == "119"
    assert (
        AutoTokenizer.from_pretrained(taught / "model").get_vocab()
        == AutoTokenizer.from_pretrained(base / "model").get_vocab()
    )


FACTS = ROOT / "examples" / "new_fact" / "facts.txt"
# New sentences about 诸葛涛, none of them in the fact corpus, with a word of the name masked
# (jieba cuts it 诸葛 / 涛) where the corpus puts the name: opening the sentence, as its subject.
HELD_OUT_PROMPTS = {
    "诸葛[MASK]出生在琅琊。": "涛",
    "[MASK][MASK]涛善于治军。": "诸葛",
    "[MASK][MASK]涛是哪个朝代的人？": "诸葛",
}
GENERAL_DROP = 0.02  # stated bound on the fall of held-out general MLM accuracy (2 points)


def fill_in(prompt: str, answer: str) -> str:
    for char in answer:
        prompt = prompt.replace("[MASK]", char, 1)
    return prompt


def first_choices(fill, prompt: str) -> str:
    """The top prediction at every [MASK] of the prompt, in order."""
    out = fill(prompt)
    return "".join(o[0]["token_str"] for o in (out if isinstance(out[0], list) else [out]))


def test_raw_text_continued_training_teaches_a_new_fact(tmp_path: Path, embedded_dir: Path) -> None:
    """The raw-text sibling of the test above, through +experiment=adapt: a tiny Chinese BERT
    whose character vocabulary is built from the embedded corpus' raw text, pretrained briefly
    on it, then continued on 40 plain sentences stating that 诸葛涛 was a 三国 general, with 20
    documents of general text mixed in (rehearsal), jieba whole-word masking, one sentence per
    segment.

    Measured (this configuration): the held-out prompts get the name's words first with
    probability 0.24-0.40 against <= 0.07 for the runner-up; general accuracy 4.9% -> 3.9%.
    Without rehearsal it falls to 0.5%, so GENERAL_DROP is a bound the run has to earn. What a
    model this small does not do is carry the name to other positions in a sentence (the README
    shows the same for a 10-minute BERT-mini): it learns where the corpus puts it.
    """
    for prompt, answer in HELD_OUT_PROMPTS.items():
        assert fill_in(prompt, answer) not in FACTS.read_text()
    base = tmp_path / "base"
    raw = embedded_dir / "raw"
    run(
        pretrain_config(
            tmp_path, raw / "pretrain.txt", base, "train.max_steps=150", "train.lr=3e-3"
        )
    )
    taught = tmp_path / "taught"
    cfg = compose_config(
        "pretrain",
        [
            "+experiment=adapt", f"paths.data_dir={tmp_path / 'data'}", f"data.corpus=[{FACTS}]",
            f"model.init_from={base / 'model'}", f"data.general_eval=[{raw / 'heldout.txt'}]",
            f"data.rehearsal=[{raw / 'pretrain.txt'}]", "data.rehearsal_documents=20",
            "runtime.device=cpu", "runtime.precision=fp32", "data.segments.max_seq_len=64",
            "train.batch_size=8", "train.micro_batch_size=8", "train.lr=3e-3",
            "train.max_steps=600", "train.eval_every=1000", "train.eval_max_segments=128",
        ],
    )  # fmt: skip
    metrics = run(to_dataclass(PretrainConfig, {**resolve(cfg), "run_dir": str(taught)}))
    after = pipeline("fill-mask", model=str(taught / "model"))
    before = pipeline("fill-mask", model=str(base / "model"))
    for prompt, answer in HELD_OUT_PROMPTS.items():
        assert first_choices(after, prompt) == answer, (prompt, after(prompt))
        assert first_choices(before, prompt) != answer
    drop = metrics["start/general/accuracy"] - metrics["general/accuracy"]
    assert drop <= GENERAL_DROP, {k: v for k, v in metrics.items() if "accuracy" in k}
    for name in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        assert (taught / "model" / name).read_bytes() == (base / "model" / name).read_bytes()


def test_two_torchrun_processes_match_one(tmp_path: Path, corpus: Path) -> None:
    """gloo on CPU: 2 processes x micro 4 == 1 process x micro 4 x accumulation 2."""
    common = [
        "+experiment=tiny",
        f"paths.data_dir={tmp_path / 'data'}",
        f"data.corpus=[{corpus}]",
        "train.max_steps=8",
        "train.eval_every=100",
    ]
    one = run_module("pretrain", *common, f"hydra.run.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_module("pretrain", *common, f"hydra.run.dir={tmp_path / 'two'}", processes=2)
    assert two.returncode == 0, two.stderr[-2000:]
    wa, wb = (
        load_file(tmp_path / "one" / "model" / "model.safetensors"),
        load_file(tmp_path / "two" / "model" / "model.safetensors"),
    )
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=1e-4, atol=1e-5)
    la, lb = scalars(tmp_path / "one", "train/loss"), scalars(tmp_path / "two", "train/loss")
    assert la.keys() == lb.keys()
    for step in la:
        assert la[step] == pytest.approx(lb[step], rel=1e-5)


@pytest.mark.parametrize("group", ["model", "runtime", "data", "experiment"])
def test_every_config_option_composes(group: str, tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from pretrain.config import PretrainConfig
    from ptm.config import to_dataclass

    # Experiments belong to one stage; fine-tuning ones are named finetune_* and tested there.
    options = sorted(
        p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml") if not p.stem.startswith("finetune")
    )
    assert options
    for option in options:
        override = f"+experiment={option}" if group == "experiment" else f"{group}={option}"
        cfg = compose_config("pretrain", [override, f"data.corpus=[{tmp_path / 'c.txt'}]"])
        data = OmegaConf.to_container(cfg, resolve=True)
        config = to_dataclass(PretrainConfig, data)
        assert config.model.hidden_size % config.model.num_attention_heads == 0


def test_unknown_config_key_is_a_clear_error(tmp_path: Path, corpus: Path) -> None:
    from ptm.errors import InputError

    with pytest.raises(InputError, match=r"unknown key\(s\) \['lrr'\]"):
        pretrain_config(tmp_path, corpus, tmp_path / "r", "+train.lrr=1")


def test_bad_corpus_is_one_line_on_the_command_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n4 5 six\n")
    result = run_module(
        "pretrain",
        "+experiment=tiny",
        f"data.corpus=[{bad}]",
        f"paths.data_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"error: {bad}:2: a character that is not an ID: 'six'")
    )


def test_required_values_left_unset_are_clear_errors() -> None:
    from pretrain.config import PretrainConfig
    from ptm.config import to_dataclass
    from ptm.errors import InputError

    cfg = compose_config("pretrain", ["data=tianchi"])
    with pytest.raises(InputError, match=r"data\.corpus lists no file: set data\.corpus=\["):
        to_dataclass(PretrainConfig, cfg)
    cfg = compose_config("pretrain", ["data.corpus=???"])
    with pytest.raises(InputError, match=r"data\.corpus is required — set it on the command line"):
        to_dataclass(PretrainConfig, cfg)


def transformers_chinese_bert(folder: Path, chars: str, architecture: str) -> Path:
    """A tiny Chinese BERT as transformers writes one: Google's vocab.txt layout, the fast
    tokenizer's files, and the weights of ``architecture`` (MLM only, or MLM + NSP + pooler as a
    converted Google checkpoint has)."""
    import transformers
    from transformers import BertConfig, BertTokenizerFast

    from ptm.data.tokenizer import GOOGLE_SPECIALS

    folder.mkdir(parents=True)
    vocab = [*GOOGLE_SPECIALS, *dict.fromkeys(c for c in chars.lower() if not c.isspace())]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    # transformers 5 ignores BertTokenizerFast(vocab_file=...); from_pretrained reads vocab.txt.
    BertTokenizerFast.from_pretrained(folder).save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    getattr(transformers, architecture)(config).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("architecture", ["BertForMaskedLM", "BertForPreTraining"])
def test_raw_text_continued_from_a_transformers_bert_is_a_drop_in_replacement(
    tmp_path: Path, architecture: str
) -> None:
    text = "诸葛亮是三国时期蜀汉的丞相。三国时期，曹操统一了北方。Hello world 1998！\n"
    corpus = tmp_path / "zh.txt"
    corpus.write_text(text * 40, encoding="utf-8")
    original = transformers_chinese_bert(tmp_path / "bert", text + "helowrd189", architecture)
    run_dir = tmp_path / "run"
    overrides = [f"model.init_from={original}", "train.max_steps=6", "data.word_segmenter=jieba"]
    overrides.append("data.segments.eval_fraction=0.1")
    metrics = run(pretrain_config(tmp_path, corpus, run_dir, *overrides))
    assert "start/eval/loss" in metrics and metrics["steps"] == 6
    out = run_dir / "model"
    for name in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (original / name).read_bytes(), name
    model = AutoModelForMaskedLM.from_pretrained(out)
    before = AutoModelForMaskedLM.from_pretrained(original)
    assert not torch.equal(
        model.bert.encoder.layer[0].output.dense.weight,
        before.bert.encoder.layer[0].output.dense.weight,
    )  # trained
    fill = pipeline("fill-mask", model=str(out))
    assert fill("诸葛亮是三国时期蜀汉的[MASK]相。")[0]["token_str"] in text + "helowrd189"
    if architecture == "BertForPreTraining":
        from transformers import BertForPreTraining

        kept, orig = (BertForPreTraining.from_pretrained(p) for p in (out, original))
        for name in ("bert.pooler.dense.weight", "cls.seq_relationship.weight"):
            assert torch.equal(kept.state_dict()[name], orig.state_dict()[name]), name
    # Its last checkpoint exports to the same folder: the original architecture, same tensors.
    exported = export_checkpoint(run_dir)
    assert (exported / "config.json").read_bytes() == (out / "config.json").read_bytes()
    final, again = (load_file(d / "model.safetensors") for d in (out, exported))
    assert final.keys() == again.keys() and all(torch.equal(final[k], again[k]) for k in final)
