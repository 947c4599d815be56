"""Layer-wise learning-rate decay (LLRD) parameter groups for fine-tuning.

The top of the network (heads, pooler) gets the full learning rate and every layer below it
``decay`` times the rate of the layer above, down to the embeddings: lower layers hold the more
general features and should move less (Howard & Ruder, ULMFiT 2018; Clark et al., ELECTRA 2020,
used 0.8 for base models; Sun et al. 2019 found 0.95 best for BERT-base). ``decay=1`` gives the
ordinary two groups. Biases and LayerNorm weights (every 1-D parameter) get no weight decay, as in
BERT. Each group carries ``lr_scale``; the loop sets ``lr = peak * schedule * lr_scale``.
"""

from __future__ import annotations

import re

from torch import nn

_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def depth_of(name: str, n_layers: int) -> int:
    """0 for the embeddings, ``i + 1`` for encoder layer ``i``, ``n_layers + 1`` for the top.

    Encoder parameters are named ``encoder.embeddings.*`` / ``encoder.encoder.layer.<i>.*`` (BERT
    and its relatives). ALBERT shares one set of layer weights across the depth; it is treated as
    the top layer. Anything else (pooler, heads) is the top.
    """
    if not name.startswith("encoder."):
        return n_layers + 1
    if ".embeddings." in name or "embedding_hidden_mapping_in" in name:
        return 0
    match = _LAYER.search(name)
    return int(match.group(1)) + 1 if match else n_layers + 1


def layer_decay_groups(
    model: nn.Module, n_layers: int, decay: float, weight_decay: float
) -> list[dict]:
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        depth = depth_of(name, n_layers)
        no_decay = p.ndim < 2
        key = (depth, no_decay)
        if key not in groups:
            groups[key] = {
                "params": [],
                "weight_decay": 0.0 if no_decay else weight_decay,
                "lr_scale": decay ** (n_layers + 1 - depth),
                "depth": depth,
            }
        groups[key]["params"].append(p)
    if decay == 1.0:  # one scale: merge into the usual decay / no-decay pair
        merged: dict[bool, dict] = {}
        for (_, no_decay), g in sorted(groups.items()):
            m = merged.setdefault(no_decay, {**g, "params": [], "depth": -1})
            m["params"] += g["params"]
        return list(merged.values())
    return [groups[k] for k in sorted(groups)]
