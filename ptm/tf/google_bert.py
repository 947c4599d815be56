"""Google's BERT layout in transformers' terms: variable names and ``bert_config.json``.

Google's ``modeling.py`` / ``run_pretraining.py`` (and every release trained with them: Google's
BERT, the Chinese BERT-wwm / RoBERTa-wwm-ext) name variables by TF scope, e.g.
``bert/encoder/layer_3/attention/self/query/kernel``. Each maps to exactly one transformers BERT
parameter; the table below is the whole correspondence, so nothing is guessed from name patterns.

Three differences in arithmetic/storage matter:

* **Dense kernels** are stored ``[in, out]`` (``x @ kernel``); ``nn.Linear.weight`` is
  ``[out, in]``: transposed. The NSP ``output_weights`` are already ``[labels, hidden]`` (Google
  multiplies with ``transpose_b=True``): not transposed.
* **GELU.** Google's current ``modeling.py`` computes the *tanh approximation* although
  ``bert_config.json`` says ``"gelu"``; transformers' ``"gelu"`` is the exact erf form and
  ``"gelu_new"`` the tanh one (see ``transformers.activations.NewGELUActivation``). So ``"gelu"``
  becomes ``"gelu_new"``, and converted MLM logits match TensorFlow's to float32 rounding rather
  than to ~1e-3. (The first release of ``modeling.py``, Oct 2018, used erf: for checkpoints
  trained with it, pass ``gelu_approximation=none``.) Going back, ptm writes ``"gelu"`` plus a
  ``gelu_approximation`` key (ignored by Google's code, read by ours) so a round trip keeps the
  exact function.
* **LayerNorm epsilon** is fixed at 1e-12 in Google's code (``tf.contrib.layers.layer_norm``);
  that is also transformers' default.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from ptm.errors import InputError

# Google name -> (transformers name, transposed). ``{i}`` is the layer number.
_EMBEDDINGS = {
    "bert/embeddings/word_embeddings": ("bert.embeddings.word_embeddings.weight", False),
    "bert/embeddings/position_embeddings": ("bert.embeddings.position_embeddings.weight", False),
    "bert/embeddings/token_type_embeddings": (
        "bert.embeddings.token_type_embeddings.weight",
        False,
    ),
    "bert/embeddings/LayerNorm/gamma": ("bert.embeddings.LayerNorm.weight", False),
    "bert/embeddings/LayerNorm/beta": ("bert.embeddings.LayerNorm.bias", False),
}
_LAYER = {
    "attention/self/query/kernel": ("attention.self.query.weight", True),
    "attention/self/query/bias": ("attention.self.query.bias", False),
    "attention/self/key/kernel": ("attention.self.key.weight", True),
    "attention/self/key/bias": ("attention.self.key.bias", False),
    "attention/self/value/kernel": ("attention.self.value.weight", True),
    "attention/self/value/bias": ("attention.self.value.bias", False),
    "attention/output/dense/kernel": ("attention.output.dense.weight", True),
    "attention/output/dense/bias": ("attention.output.dense.bias", False),
    "attention/output/LayerNorm/gamma": ("attention.output.LayerNorm.weight", False),
    "attention/output/LayerNorm/beta": ("attention.output.LayerNorm.bias", False),
    "intermediate/dense/kernel": ("intermediate.dense.weight", True),
    "intermediate/dense/bias": ("intermediate.dense.bias", False),
    "output/dense/kernel": ("output.dense.weight", True),
    "output/dense/bias": ("output.dense.bias", False),
    "output/LayerNorm/gamma": ("output.LayerNorm.weight", False),
    "output/LayerNorm/beta": ("output.LayerNorm.bias", False),
}
_POOLER = {
    "bert/pooler/dense/kernel": ("bert.pooler.dense.weight", True),
    "bert/pooler/dense/bias": ("bert.pooler.dense.bias", False),
}
_MLM = {
    "cls/predictions/transform/dense/kernel": ("cls.predictions.transform.dense.weight", True),
    "cls/predictions/transform/dense/bias": ("cls.predictions.transform.dense.bias", False),
    "cls/predictions/transform/LayerNorm/gamma": (
        "cls.predictions.transform.LayerNorm.weight",
        False,
    ),
    "cls/predictions/transform/LayerNorm/beta": ("cls.predictions.transform.LayerNorm.bias", False),
    # The decoder matrix is the word embedding matrix (tied); only its bias is separate.
    "cls/predictions/output_bias": ("cls.predictions.bias", False),
}
_NSP = {
    "cls/seq_relationship/output_weights": ("cls.seq_relationship.weight", False),
    "cls/seq_relationship/output_bias": ("cls.seq_relationship.bias", False),
}

# Optimizer state and counters: Google's AdamWeightDecayOptimizer slots, tf.train.AdamOptimizer
# slots and its beta powers, the step counter. None of it is part of the model.
OPTIMIZER_PATTERNS = (
    "*/adam_m",
    "*/adam_v",
    "*/Adam",
    "*/Adam_[0-9]*",
    "beta1_power",
    "beta2_power",
    "global_step",
)
# Tied copies transformers may store; they must equal their source to be dropped.
HF_TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


@dataclass(frozen=True)
class Param:
    """One model parameter under both names."""

    google: str
    hf: str
    transposed: bool
    part: str  # embeddings | encoder | pooler | mlm | nsp


def parameters(num_layers: int) -> list[Param]:
    """Every parameter a Google BERT with ``num_layers`` layers and both heads can have."""
    out = [Param(g, h, t, "embeddings") for g, (h, t) in _EMBEDDINGS.items()]
    for i in range(num_layers):
        for g, (h, t) in _LAYER.items():
            out.append(
                Param(f"bert/encoder/layer_{i}/{g}", f"bert.encoder.layer.{i}.{h}", t, "encoder")
            )
    for part, table in (("pooler", _POOLER), ("mlm", _MLM), ("nsp", _NSP)):
        out += [Param(g, h, t, part) for g, (h, t) in table.items()]
    return out


def skip_reason(name: str, extra_patterns: tuple[str, ...] = ()) -> str | None:
    """Why ``name`` (a Google or transformers name) is left out, or None if it is not."""
    for pattern in OPTIMIZER_PATTERNS:
        if fnmatch.fnmatchcase(name, pattern):
            return f"optimizer state ({pattern})"
    for pattern in extra_patterns:
        if fnmatch.fnmatchcase(name, pattern):
            return f"skip pattern {pattern}"
    return None


# --- bert_config.json <-> transformers.BertConfig ----------------------------------------------

GOOGLE_KEYS = (
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
)
GOOGLE_LAYER_NORM_EPS = 1e-12
# Google's get_activation() names -> (transformers name, ...) for gelu per approximation.
_GELU_HF = {"tanh": "gelu_new", "none": "gelu"}
_SAME_ACT = ("relu", "tanh", "linear")
_HF_GELU_TANH = ("gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh")


def hf_config_kwargs(
    google: dict, path: object, gelu_approximation: str | None
) -> tuple[dict, list[str]]:
    """``BertConfig`` keyword arguments from a ``bert_config.json`` dict, and notes for the report."""
    missing = [k for k in GOOGLE_KEYS if k not in google]
    if missing:
        raise InputError(
            path,
            f"bert_config.json lacks {missing}",
            "use the config that came with the checkpoint",
        )
    notes = []
    kwargs = {k: google[k] for k in GOOGLE_KEYS}
    act = google["hidden_act"]
    if act == "gelu":
        approx = gelu_approximation or google.get("gelu_approximation", "tanh")
        if approx not in _GELU_HF:
            raise InputError(path, f"gelu_approximation={approx!r}", "use tanh or none")
        kwargs["hidden_act"] = _GELU_HF[approx]
        why = (
            "set by the gelu_approximation option"
            if gelu_approximation
            else "recorded in bert_config.json by ptm"
            if "gelu_approximation" in google
            else "Google's modeling.py computes gelu with the tanh approximation"
        )
        notes.append(f'hidden_act "gelu" -> "{kwargs["hidden_act"]}": {why}')
    elif act not in _SAME_ACT:
        raise InputError(
            path,
            f'hidden_act "{act}" is not one of Google\'s activations',
            "use gelu, relu, tanh or linear",
        )
    kwargs["layer_norm_eps"] = float(google.get("layer_norm_eps", GOOGLE_LAYER_NORM_EPS))
    ignored = sorted(set(google) - set(GOOGLE_KEYS) - {"gelu_approximation", "layer_norm_eps"})
    if ignored:
        notes.append(
            f"bert_config.json keys ignored (Google's modeling.py ignores them too): {ignored}"
        )
    return kwargs, notes


def google_config(hf: dict, path: object) -> tuple[dict, list[str]]:
    """A ``bert_config.json`` dict from a transformers BERT config dict, and notes for the report."""
    if hf.get("model_type") != "bert":
        raise InputError(
            path, f"model_type is {hf.get('model_type')!r}, not 'bert'", "convert a BERT model"
        )
    if hf.get("position_embedding_type", "absolute") != "absolute" or hf.get("is_decoder"):
        raise InputError(
            path, "not an encoder with absolute positions", "Google's BERT has no other kind"
        )
    notes = []
    out = {k: hf[k] for k in GOOGLE_KEYS}
    act = hf["hidden_act"]
    if act in _HF_GELU_TANH:
        out["hidden_act"], out["gelu_approximation"] = "gelu", "tanh"
    elif act == "gelu":
        out["hidden_act"], out["gelu_approximation"] = "gelu", "none"
        notes.append(
            "hidden_act is the exact (erf) gelu; Google's modeling.py would compute the tanh "
            "approximation (differences ~1e-3); the gelu_approximation key records the exact one"
        )
    elif act not in _SAME_ACT:
        raise InputError(
            path, f'hidden_act "{act}" has no Google equivalent', "use gelu, gelu_new, relu or tanh"
        )
    eps = float(hf.get("layer_norm_eps", GOOGLE_LAYER_NORM_EPS))
    if eps != GOOGLE_LAYER_NORM_EPS:
        out["layer_norm_eps"] = eps
        notes.append(f"layer_norm_eps={eps}: Google's modeling.py ignores it and uses 1e-12")
    return out, notes
