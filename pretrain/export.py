"""Writing the trained model: a Hugging Face folder that transformers loads as it is — at the end
of a run, or from any of its checkpoints.

python -m pretrain.export run=outputs/pretrain/latest step=1000   # -> <run>/model-step-1000
python -m pretrain.export run=outputs/pretrain/latest              # its newest checkpoint

Every model folder carries a model card (``README.md``, `ptm.models.card`): the end-of-run export
with the run's metrics and recipe (the loop passes them as a `CardInfo`), a checkpoint's export
with the run's recipe and the step it holds.

Which step of a run fine-tunes best is a question the MLM loss does not answer (the downstream
probe is a first hint), and a long run is worth fine-tuning from before it ends: a checkpoint
becomes a model folder like the end-of-run one. A checkpoint holds the weights only; the run
writes the rest — ``config.json`` and the tokenizer — once, to ``checkpoints/template/``, so a
run that is still going or was stopped exports too. Once the run has ended, its ``model/`` folder
is the template instead, so a continued Google or HFL checkpoint keeps its original architecture
(the pooler and next-sentence head, which masked-LM training leaves as they were); before, it
exports as the masked-LM model alone.

A run continued from a model (``model.init_from``) gives a drop-in replacement for that folder:
its ``config.json`` and tokenizer files are copied unchanged (the vocabulary, lower-casing and
Chinese-character settings a user's code relies on), and weights the masked-LM model does not
train — the pooler and next-sentence head of a converted Google checkpoint — are kept as they
were, in the original architecture, rather than dropped.
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
from pathlib import Path

import hydra
import torch
import transformers
from omegaconf import DictConfig
from transformers import AutoConfig, AutoModelForMaskedLM, PreTrainedModel, PreTrainedTokenizerBase

from ptm.config import register_resolvers, resolve
from ptm.data.tokenizer import load_tokenizer, save_tokenizer
from ptm.errors import InputError, exit_on_input_error
from ptm.files import tensor_bytes, written_aside
from ptm.models.card import CardInfo, write_card
from ptm.models.folder import read_config
from ptm.records import command_line
from ptm.training.checkpoint import (
    checkpoint_path,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    named_step,
)

log = logging.getLogger(__name__)

# What a model folder holds besides weights and stays as it was (weights in other formats —
# pytorch_model.bin, tf_model.h5, TF checkpoints — would be stale and are not copied).
KEPT_FILES = (
    "config.json",
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
TOKENIZER_FILES = KEPT_FILES[1:]
TEMPLATE = "template"  # under checkpoints/: what a checkpoint needs besides its weights


def export_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out: Path,
    init_from: str | None = None,
    card: CardInfo | None = None,
) -> None:
    """Write ``out``, aside first and renamed at the end, so it is never half there, with its
    model card (``card``: the run's config, metrics and command; None: the folder alone)."""
    with written_aside(out, expected_bytes=tensor_bytes(model)) as tmp:
        if init_from is None:
            model.save_pretrained(tmp)
            save_tokenizer(tokenizer, tmp)
        else:
            _export_continued(model, tokenizer, Path(init_from), tmp)
        write_card(tmp, card or CardInfo(kind="pretrain"))


def _export_continued(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, source: Path, tmp: Path
) -> None:
    architectures = AutoConfig.from_pretrained(source, local_files_only=True).architectures
    arch = architectures[0] if architectures else type(model).__name__
    if arch == type(model).__name__:
        model.save_pretrained(tmp)
    else:
        # The original class (BertForPreTraining, say) with the trained tensors copied in by
        # name: every tensor of the MLM model has its place there; the rest keep their values.
        full = getattr(transformers, arch).from_pretrained(source, local_files_only=True)
        target = full.state_dict()
        trained = model.state_dict()
        foreign = sorted(set(trained) - set(target))
        if foreign:
            raise AssertionError(f"{arch} has no place for the trained tensors {foreign[:5]}")
        with torch.no_grad():
            for name, tensor in trained.items():
                target[name].copy_(tensor)
        full.save_pretrained(tmp)
    if not any((source / name).is_file() for name in TOKENIZER_FILES):
        save_tokenizer(tokenizer, tmp)  # the model came without one: the run's tokenizer
    for name in KEPT_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, tmp / name)


def write_checkpoint_template(checkpoints: Path, model: PreTrainedModel, tokenizer) -> None:
    """``checkpoints/template/``: the model's ``config.json`` and the tokenizer, no weights (a few
    kilobytes), so that `export_checkpoint` works before the run has written ``model/``."""
    config = copy.deepcopy(model.config)
    config.architectures = [type(model).__name__]
    with written_aside(checkpoints / TEMPLATE) as tmp:
        config.save_pretrained(tmp)
        save_tokenizer(tokenizer, tmp)


def export_checkpoint(
    run: Path, step: int | None = None, out: Path | None = None, command: str | None = None
) -> Path:
    """The checkpoint of ``step`` (None: the newest intact one) of the pretraining run folder
    ``run`` as a model folder, ``out`` or ``<run>/model-step-<step>``; returns where it went.
    Its model card gives the run's recipe (from ``run.json``), the step, and ``command``."""
    folder = run / "checkpoints"
    found = list_checkpoints(folder)
    if not found:
        raise InputError(
            folder,
            "no checkpoint here",
            "point run= at a pretraining run folder (outputs/pretrain/...)",
        )
    path = latest_checkpoint(folder) if step is None else checkpoint_path(folder, step)
    if path is None:
        raise InputError(
            folder, "every checkpoint here is cut short", "resume the run to write one"
        )
    if not path.is_file():
        steps = ", ".join(str(named_step(p)) for p in found)
        raise InputError(
            folder,
            f"no checkpoint of step {step} (there are steps {steps})",
            "pick one of those; train.save_every and train.keep_checkpoints (0 keeps every one) "
            "choose which a run keeps",
        )
    template = run / "model" if (run / "model" / "config.json").is_file() else folder / TEMPLATE
    config = read_config(
        template, "finish the run (python -m pretrain resume=RUN), or re-run it with this ptm"
    )
    state = load_checkpoint(path)
    model = AutoModelForMaskedLM.from_config(config)
    missing, unexpected = model.load_state_dict(state["model"], strict=False)
    if missing or unexpected:
        raise InputError(
            path,
            f"its weights do not fit {template / 'config.json'} (missing {sorted(missing)[:3]}, "
            f"unexpected {sorted(unexpected)[:3]})",
            "export a checkpoint of the run that wrote this folder",
        )
    out = out or run / f"model-step-{state['step']}"
    card = CardInfo(
        kind="pretrain",
        command=command,
        config=_run_config(run),
        metrics={"steps": state["step"]},
        notes=(
            f"Step {state['step']:,} of the pretraining run `{run.name}`, exported from its "
            "checkpoint: the run's held-out loss at this step is in its TensorBoard log (`tb/`).",
        ),
    )
    export_model(model, load_tokenizer(template), out, init_from=str(template), card=card)
    log.info("step %d of %s written to %s", state["step"], run, out)
    return out


def _run_config(run: Path) -> dict:
    """The resolved config the run wrote to ``run.json`` ({} when it has none)."""
    path = run / "run.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8")).get("config", {})
    except json.JSONDecodeError as e:
        raise InputError(path, f"not readable JSON ({e.msg})", "re-run or resume the run") from e


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@exit_on_input_error
def main(cfg: DictConfig) -> None:
    data = resolve(cfg)
    out = Path(data["out"]) if data["out"] else None
    export_checkpoint(Path(data["run"]), data["step"], out, command=command_line())


if __name__ == "__main__":
    register_resolvers()
    main()
