"""Google-format TensorFlow BERT checkpoints <-> Hugging Face model folders.

``tf2hf`` reads what Google's BERT code and the Chinese BERT-wwm releases leave (``bert_config.json``,
``vocab.txt``, ``*.index`` + ``*.data-*``) with `ptm.tf.reader` — no TensorFlow — and writes a
folder that ``AutoModelForMaskedLM.from_pretrained`` and ``pipeline("fill-mask")`` load with no
code of ours. ``hf2tf`` writes such a folder back as a Google checkpoint.

Decisions, and why:

* **No invented weights.** The architecture follows the heads the checkpoint really has:
  ``BertForPreTraining`` with MLM + NSP heads, ``BertForMaskedLM`` with only the MLM head,
  ``BertModel`` with neither. A head that is absent stays absent (transformers would fill it
  with random numbers and a "newly initialized" warning nobody reads).
* **The pooler of an MLM-only checkpoint is kept.** Google's ``BertModel`` always builds it, so
  the weights exist; ``AutoModel`` loads them, ``BertForMaskedLM`` ignores them. Without NSP it
  was never trained, which the report says.
* **Strict mapping.** Every variable is either mapped, or skipped as optimizer state / by a
  ``skip`` pattern, or the run stops naming it; every expected parameter must be present and of
  the shape ``bert_config.json`` implies. A wrong config never yields a half-right model.
* **Bounded memory.** ``model.safetensors`` is written tensor by tensor (its header is known
  from the index before any data is read), so memory stays near the largest tensor.
* **All or nothing.** Output is written under a temporary name and renamed at the end.
* A ``conversion_report.json`` in the output lists every variable: mapped to what, or skipped
  and why; a ``tf2hf`` folder also carries a model card (``README.md``, `ptm.models.card`) saying
  what it was converted from and how. (An ``hf2tf`` output is a TensorFlow checkpoint, not a
  model folder the Hub's card describes.)
"""

from __future__ import annotations

import json
import logging
import shlex
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from transformers import BertConfig, BertForPreTraining

from ptm.data.tokenizer import load_tokenizer, save_tokenizer, vocab_list
from ptm.errors import InputError
from ptm.files import disk_usage, written_aside
from ptm.models.card import CardInfo, write_card
from ptm.tf.google_bert import (
    HF_TIED,
    Param,
    google_config,
    hf_config_kwargs,
    parameters,
    skip_reason,
)
from ptm.tf.reader import CheckpointReader, resolve_prefix
from ptm.tf.writer import CheckpointWriter, write_checkpoint_file

log = logging.getLogger(__name__)
REPORT = "conversion_report.json"
DIRECTIONS = ("tf2hf", "hf2tf")
_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64"}
_TORCH_DTYPES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
}
_FIX_CONFIG = "use the bert_config.json that came with this checkpoint"


@dataclass(frozen=True, kw_only=True)
class ConvertConfig:
    """Everything ``python -m convert`` takes (see ``conf/convert.yaml``)."""

    input: str
    output: str
    direction: str
    shards: int  # hf2tf: number of .data-* files
    prefix: str  # hf2tf: checkpoint file name prefix
    gelu_approximation: str | None  # tf2hf: override "tanh" (Google today) / "none" (erf)
    skip: tuple[str, ...]  # extra fnmatch patterns of variables to leave out
    bert_config: str | None  # tf2hf: default <checkpoint folder>/bert_config.json
    vocab: str | None  # default <input folder>/vocab.txt (tf2hf) or its tokenizer (hf2tf)
    overwrite: bool

    def __post_init__(self) -> None:
        fix = "see conf/convert.yaml"
        if self.direction not in DIRECTIONS:
            raise InputError(None, f"direction={self.direction}", f"use one of {DIRECTIONS}")
        if not 1 <= self.shards <= 99_999:
            raise InputError(None, f"shards={self.shards}", "use 1 or more")
        if not self.prefix or "/" in self.prefix or self.prefix.endswith(".index"):
            raise InputError(None, f"prefix={self.prefix!r}", "use a file name such as model.ckpt")
        if self.gelu_approximation not in (None, "tanh", "none"):
            raise InputError(None, f"gelu_approximation={self.gelu_approximation}", fix)


def run(cfg: ConvertConfig, command: str | None = None) -> dict:
    """Convert ``cfg.input`` into the folder ``cfg.output``; returns the report's summary.
    ``command`` goes into the model card (None: the ``python -m convert`` command that this
    config spells)."""
    out = Path(cfg.output)
    _check_output(out, Path(cfg.input), cfg.overwrite)
    # The output holds the same weights as the input (the checkpoint's folder, or its files).
    source = Path(cfg.input)
    size = disk_usage(source if source.exists() else source.parent)
    with written_aside(out, expected_bytes=size) as tmp:
        report = (tf_to_hf if cfg.direction == "tf2hf" else hf_to_tf)(cfg, tmp)
        report["summary"]["output"] = str(out)
        (tmp / REPORT).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        if cfg.direction == "tf2hf":
            card = CardInfo(
                kind="convert",
                command=command or _command(cfg),
                metrics=report["summary"],
                notes=tuple(report["notes"]),
            )
            write_card(tmp, card)
    s = report["summary"]
    for note in report["notes"]:
        log.info("note: %s", note)
    log.info(
        "%s: %d variables converted (%d transposed), %d skipped %s -> %s (%s)",
        cfg.direction,
        s["mapped"],
        s["transposed"],
        s["skipped"],
        s["skipped_by_reason"] or "",
        out,
        s["architecture"],
    )
    return s


def _command(cfg: ConvertConfig) -> str:
    """``python -m convert input=... output=...`` with the settings this config has beyond the
    defaults that always apply (conf/convert.yaml)."""
    words = [f"input={cfg.input}", f"output={cfg.output}"]
    if cfg.gelu_approximation is not None:
        words.append(f"gelu_approximation={cfg.gelu_approximation}")
    words += [f"{k}={getattr(cfg, k)}" for k in ("bert_config", "vocab") if getattr(cfg, k)]
    if cfg.skip:
        words.append(f"skip=[{','.join(cfg.skip)}]")
    return "python -m convert " + " ".join(shlex.quote(w) for w in words)


def _check_output(out: Path, src: Path, overwrite: bool) -> None:
    out_r, src_r = out.resolve(), src.resolve()
    if out_r == src_r or out_r in src_r.parents or src_r in out_r.parents:
        raise InputError(out, "output overlaps the input", "write the conversion to another folder")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        if not overwrite:
            raise InputError(
                out, "output already exists", "pick a new output= or add overwrite=true"
            )
        if not (out / REPORT).is_file():
            raise InputError(
                out,
                f"exists and has no {REPORT}, so it is not ours to replace",
                "pick a new output=",
            )


# --- TensorFlow -> Hugging Face ----------------------------------------------------------------


def tf_to_hf(cfg: ConvertConfig, tmp: Path) -> dict:
    prefix = resolve_prefix(cfg.input)
    folder = prefix.parent
    config_path = Path(cfg.bert_config) if cfg.bert_config else folder / "bert_config.json"
    vocab_path = Path(cfg.vocab) if cfg.vocab else folder / "vocab.txt"
    kwargs, notes = hf_config_kwargs(_read_json(config_path), config_path, cfg.gelu_approximation)
    reader = CheckpointReader(prefix)
    index = reader.index_path
    if "_CHECKPOINTABLE_OBJECT_GRAPH" in reader.entries:
        raise InputError(
            index,
            "a TF2 object-based checkpoint (Keras / Model Garden names), not Google's BERT layout",
            "convert a checkpoint written by Google's TF1 BERT code (bert/encoder/layer_0/...)",
        )
    known = {p.google: p for p in parameters(kwargs["num_hidden_layers"])}
    rows, mapped, skipped, unmapped = [], {}, Counter(), []
    for name, entry in sorted(reader.entries.items()):
        reason = None if name in known else skip_reason(name, cfg.skip)
        if name in known:
            mapped[name] = known[name]
        elif reason:
            skipped[reason] += 1
            rows.append(
                {"tf": name, "dtype": entry.dtype, "shape": list(entry.shape), "skipped": reason}
            )
        else:
            unmapped.append(name)
    if unmapped:
        more = f" and {len(unmapped) - 3} more" if len(unmapped) > 3 else ""
        raise InputError(
            index,
            f"no transformers BERT parameter for variable(s) {', '.join(unmapped[:3])}{more}",
            "if they are not model weights (optimizer state, a task head) add skip='[pattern,...]'; "
            f"if they are extra layers, check num_hidden_layers in {config_path.name}",
        )
    parts = _check_parts(mapped.values(), set(known.values()), index, config_path)
    arch = _architecture(parts)
    shapes = _expected_shapes(kwargs, config_path)
    items, used = [], []
    for name, p in sorted(mapped.items(), key=lambda kv: kv[1].hf):
        e = reader.entries[name]
        shape = e.shape[::-1] if p.transposed else e.shape
        if shape != shapes[p.hf] or (p.transposed and len(e.shape) != 2):
            want = list(shapes[p.hf][::-1] if p.transposed else shapes[p.hf])
            raise InputError(
                index,
                f"variable {name} has shape {list(e.shape)}, {config_path.name} implies {want}",
                _FIX_CONFIG,
            )
        if e.dtype not in _SAFETENSORS_DTYPES:
            raise InputError(
                index,
                f"variable {name} is {e.dtype}, not floating point",
                "convert a BERT checkpoint",
            )
        items.append(_Tensor(p.hf, e.dtype, shape, e.size, _tf_reader(reader, p)))
        used.append(p)
        rows.append(
            {
                "tf": name,
                "dtype": e.dtype,
                "shape": list(e.shape),
                "hf": p.hf,
                "transposed": p.transposed,
            }
        )

    if not vocab_path.is_file():
        raise InputError(
            vocab_path, "no vocab.txt next to the checkpoint", "pass vocab=<path to vocab.txt>"
        )
    tokenizer = _tokenizer_from_vocab_txt(vocab_path, kwargs["max_position_embeddings"])
    n_vocab = len(tokenizer.get_vocab())
    if n_vocab > kwargs["vocab_size"]:
        raise InputError(
            vocab_path, f"{n_vocab} tokens but vocab_size={kwargs['vocab_size']}", _FIX_CONFIG
        )
    if n_vocab < kwargs["vocab_size"]:
        notes.append(
            f"vocab.txt has {n_vocab} tokens for vocab_size={kwargs['vocab_size']}: the rest are unused"
        )
    if "pooler" in parts and "nsp" not in parts:
        notes.append("pooler kept, but without an NSP head it was probably never trained")
    if arch == "BertModel":
        notes.append("no MLM head: the folder loads with AutoModel, not for fill-mask")

    dtype = reader.entries["bert/embeddings/word_embeddings"].dtype
    config = BertConfig(
        **kwargs, pad_token_id=tokenizer.pad_token_id, architectures=[arch], dtype=dtype
    )
    config.save_pretrained(tmp)
    _write_safetensors(tmp / "model.safetensors", items)
    save_tokenizer(tokenizer, tmp)
    summary = _summary("tf2hf", str(prefix), arch, used, skipped, sum(t.nbytes for t in items))
    summary["shards"] = reader.header.num_shards
    return {"summary": summary, "notes": notes, "variables": sorted(rows, key=lambda r: r["tf"])}


def _tokenizer_from_vocab_txt(path: Path, max_seq_len: int):
    """The tokenizer for ``vocab.txt``, checked to hold exactly its lines in order (token i = line i)."""
    tokenizer = load_tokenizer(path, max_seq_len=max_seq_len)  # text that is not UTF-8: one line
    lines = path.read_text(encoding="utf-8").splitlines()
    seen: dict[str, int] = {}
    for number, token in enumerate(lines, 1):
        if token in seen:
            raise InputError(
                path, f"{token!r} repeats line {seen[token]}", "keep each token once", line=number
            )
        seen[token] = number
    assert vocab_list(tokenizer) == lines, (
        f"load_tokenizer({path}) lost or reordered vocabulary entries"
    )
    return tokenizer


def _tf_reader(reader: CheckpointReader, p: Param) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        value = reader.read(p.google)
        return value.T if p.transposed else value

    return read


def _architecture(parts: set[str]) -> str:
    """The transformers class that holds exactly the parts present (no randomly initialized head)."""
    return (
        "BertForPreTraining"
        if "nsp" in parts
        else "BertForMaskedLM"
        if "mlm" in parts
        else "BertModel"
    )


def _check_parts(found, everything: set[Param], where: Path, config_path: Path) -> set[str]:
    """Which parts (pooler, heads) are present; each present part and the encoder must be whole."""
    found = set(found)
    parts = {p.part for p in found}
    if "nsp" in parts and not {"mlm", "pooler"} <= parts:
        raise InputError(
            where,
            "an NSP head without the MLM head or the pooler",
            "skip='[cls/seq_relationship/*]'",
        )
    missing = sorted(
        (p for p in everything - found if p.part in parts | {"embeddings", "encoder"}),
        key=lambda p: p.google,
    )
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise InputError(
            where,
            f"missing variable {missing[0].google} (for {missing[0].hf}){more}",
            f"check num_hidden_layers in {config_path.name}, or that every file was copied",
        )
    return parts


def _expected_shapes(kwargs: dict, config_path: Path) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of transformers' own BERT for this config (built on the meta device: no memory)."""
    try:
        with torch.device("meta"):
            model = BertForPreTraining(BertConfig(**kwargs))
    except ValueError as e:  # e.g. hidden_size not a multiple of num_attention_heads
        raise InputError(config_path, str(e), _FIX_CONFIG) from e
    return {n: tuple(t.shape) for n, t in model.named_parameters()}


@dataclass(frozen=True)
class _Tensor:
    """One tensor to write: where it goes, what it is, and how to read it when its turn comes."""

    name: str
    dtype: str  # float32 | float16 | bfloat16 | float64
    shape: tuple[int, ...]
    nbytes: int
    read: Callable[[], np.ndarray]


def _write_safetensors(path: Path, tensors: list[_Tensor]) -> None:
    """Write ``tensors`` as safetensors, one tensor in memory at a time.

    The format is an 8-byte little-endian header length, a JSON header (dtype, shape and byte
    range of every tensor) padded with spaces to 8 bytes, then the raw little-endian data.
    """
    header: dict = {"__metadata__": {"format": "pt"}}
    offset = 0
    for t in tensors:
        end = offset + t.nbytes
        header[t.name] = {
            "dtype": _SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)
    with path.open("wb") as f:
        f.write(len(blob).to_bytes(8, "little"))
        f.write(blob)
        for t in tensors:
            value = np.ascontiguousarray(t.read())
            assert value.shape == t.shape and value.nbytes == t.nbytes, f"{t.name}: {value.shape}"
            f.write(value.reshape(-1).view(np.uint8).data)


def _summary(
    direction: str, source: str, arch: str, mapped: list[Param], skipped: Counter, nbytes: int
) -> dict:
    return {
        "direction": direction,
        "input": source,
        "architecture": arch,
        "mapped": len(mapped),
        "transposed": sum(p.transposed for p in mapped),
        "skipped": sum(skipped.values()),
        "skipped_by_reason": dict(sorted(skipped.items())),
        "bytes": nbytes,
    }


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise InputError(
            path, "no such file", "point to the model's config (bert_config= for tf2hf)"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(path, f"invalid JSON: {e.msg}", "fix the file", line=e.lineno) from e
    if not isinstance(data, dict):
        raise InputError(path, "not a JSON object", "use the model's config file")
    return data


# --- Hugging Face -> TensorFlow ----------------------------------------------------------------


def hf_to_tf(cfg: ConvertConfig, tmp: Path) -> dict:
    src = Path(cfg.input)
    if not src.is_dir():
        raise InputError(
            src, "not a model folder", "hf2tf reads a folder written by save_pretrained"
        )
    config_path = src / "config.json"
    raw = _read_json(config_path)
    if raw.get("model_type") != "bert":
        raise InputError(
            config_path,
            f"model_type is {raw.get('model_type')!r}, not 'bert'",
            "convert a BERT model",
        )
    hf = BertConfig.from_dict(raw).to_dict()  # with BertConfig's defaults for keys left out
    google, notes = google_config(hf, config_path)
    tensors = _open_safetensors(src)
    known = {p.hf: p for p in parameters(google["num_hidden_layers"])}
    rows, mapped, skipped, unmapped, tied = [], {}, Counter(), [], []
    for key in sorted(tensors):
        name = f"bert.{key}" if key.split(".")[0] in ("embeddings", "encoder", "pooler") else key
        reason = None if name in known else skip_reason(name, cfg.skip)
        if name in known:
            mapped[name] = (known[name], key)
        elif reason:
            skipped[reason] += 1
            rows.append({"hf": key, "skipped": reason})
        elif name in HF_TIED:
            tied.append((name, key))
        else:
            unmapped.append(key)
    if unmapped:
        more = f" and {len(unmapped) - 3} more" if len(unmapped) > 3 else ""
        raise InputError(
            src,
            f"no Google BERT variable for parameter(s) {', '.join(unmapped[:3])}{more}",
            "if they are not part of BERT (a task head), add skip='[pattern,...]'",
        )
    for name, key in tied:  # a stored tied copy may be dropped only if it is a copy
        source = HF_TIED[name]
        if source not in mapped or not torch.equal(
            tensors[key].get_tensor(key), _get(tensors, mapped[source][1])
        ):
            raise InputError(
                src,
                f"{key} is not tied to {source}; Google's format has no separate decoder",
                f"tie them, or skip='[{key}]' to drop it",
            )
        skipped["tied copy"] += 1
        rows.append({"hf": key, "skipped": f"tied copy of {source}"})
    parts = _check_parts((p for p, _ in mapped.values()), set(known.values()), src, config_path)
    arch = _architecture(parts)
    shapes = _expected_shapes(hf_config_kwargs(google, config_path, None)[0], config_path)

    tokenizer = load_tokenizer(Path(cfg.vocab) if cfg.vocab else src)
    vocab = vocab_list(tokenizer)
    if len(vocab) > google["vocab_size"]:
        raise InputError(
            src, f"{len(vocab)} tokens but vocab_size={google['vocab_size']}", "fix the tokenizer"
        )

    plan = []
    for p, key in sorted(mapped.values(), key=lambda v: v[0].google):
        piece = tensors[key].get_slice(key)
        shape, dtype = tuple(piece.get_shape()), _dtype_name(piece.get_dtype())
        if shape != shapes[p.hf]:
            raise InputError(
                src,
                f"{key} has shape {list(shape)}, config.json implies {list(shapes[p.hf])}",
                "fix config.json",
            )
        if dtype is None:
            raise InputError(
                src,
                f"{key} is {piece.get_dtype()}, not floating point",
                "save the model in float32/16",
            )
        plan.append((p, key, shape, dtype))
        rows.append(
            {
                "hf": key,
                "dtype": dtype,
                "shape": list(shape),
                "tf": p.google,
                "transposed": p.transposed,
            }
        )
    nbytes = _write_tf(tmp / cfg.prefix, cfg.shards, tensors, plan)
    write_checkpoint_file(tmp, cfg.prefix)
    (tmp / "bert_config.json").write_text(json.dumps(google, indent=2) + "\n", encoding="utf-8")
    (tmp / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    summary = _summary("hf2tf", str(src), arch, [p for p, *_ in plan], skipped, nbytes)
    summary["shards"] = cfg.shards
    return {"summary": summary, "notes": notes, "variables": sorted(rows, key=lambda r: r["hf"])}


def _write_tf(prefix: Path, num_shards: int, tensors: dict, plan: list) -> int:
    """Write the planned tensors, each to the currently lightest shard (largest first)."""
    loads = [0] * num_shards
    shard_of = {}
    for p, _, shape, dtype in sorted(plan, key=lambda v: -_nbytes(v[2], v[3])):
        shard_of[p.google] = loads.index(min(loads))
        loads[shard_of[p.google]] += _nbytes(shape, dtype)
    with CheckpointWriter(prefix, num_shards) as writer:
        for p, key, _, dtype in plan:
            value = _get(tensors, key)
            if p.transposed:
                value = value.T
            value = value.contiguous()
            if dtype == "bfloat16":  # numpy has no bfloat16: hand over the bits
                writer.add(
                    p.google,
                    value.view(torch.int16).numpy().view(np.uint16),
                    "bfloat16",
                    shard_of[p.google],
                )
            else:
                writer.add(p.google, value.numpy(), shard=shard_of[p.google])
        writer.finish()
    return sum(loads)


def _nbytes(shape: tuple[int, ...], dtype: str) -> int:
    return int(np.prod(shape, dtype=np.int64)) * (
        8 if dtype == "float64" else 4 if dtype == "float32" else 2
    )


def _dtype_name(safetensors_dtype: str) -> str | None:
    return {v: k for k, v in _SAFETENSORS_DTYPES.items()}.get(safetensors_dtype)


def _get(tensors: dict, key: str) -> torch.Tensor:
    return tensors[key].get_tensor(key)


def _open_safetensors(src: Path) -> dict:
    """Key -> open safetensors file holding it (one file, or the shards of an index)."""
    single, index = src / "model.safetensors", src / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise InputError(index, "no weight_map", "re-save the model with save_pretrained")
        files = sorted({src / Path(str(f)).name for f in weight_map.values()})
    elif any(src.glob("*.bin")) or any(src.glob("*.pt")):
        raise InputError(
            src,
            "only pickled weights (.bin/.pt); ptm never unpickles files",
            "re-save with save_pretrained(safe_serialization=True)",
        )
    else:
        raise InputError(
            src, "no model.safetensors", "point input= at a folder written by save_pretrained"
        )
    out = {}
    for path in files:
        if not path.is_file():
            raise InputError(
                path,
                "missing weights file named by model.safetensors.index.json",
                "copy every shard",
            )
        try:
            handle = safe_open(str(path), framework="pt")
        except (OSError, SafetensorError) as e:
            raise InputError(path, f"unreadable safetensors file: {e}", "re-save the model") from e
        out.update(dict.fromkeys(handle.keys(), handle))
    return out
