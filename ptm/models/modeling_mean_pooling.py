"""A BERT sequence classifier on the mean of the final states, for transformers.

transformers has no mean-pooling classifier for BERT (`BertForSequenceClassification` reads the
pooler, which masked-LM pretraining never trains), and ptm's ``head=mean`` gains 1-4 points
over the ``[CLS]`` state at a few hundred or thousand labelled rows (docs/RECIPES.md). `ptm.models.finetuned.export` saves
such a model with this class: transformers copies this file into the folder and names it in
``config.json``'s ``auto_map``, so the folder loads with no ptm installed::

    AutoModelForSequenceClassification.from_pretrained(folder, trust_remote_code=True)
    pipeline("text-classification", model=folder, trust_remote_code=True)

Without ``trust_remote_code=True`` transformers falls back to `BertForSequenceClassification`
with a newly initialised pooler (it only warns): always pass it. Because it travels alone, this
file imports torch and transformers only (a test checks it).
The mean is over real positions (``attention_mask`` 1), as ptm's ``SequenceHead`` computes it.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import BertConfig, BertModel, BertPreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class BertForMeanPooledSequenceClassification(BertPreTrainedModel):
    """`BertForSequenceClassification` with the pooler replaced by the masked mean of the final
    states: same weight names (``bert.*``, ``classifier.*``), same losses per ``problem_type``."""

    config_class = BertConfig

    def __init__(self, config: BertConfig) -> None:
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = BertModel(config, add_pooling_layer=False)
        p = config.classifier_dropout
        self.dropout = nn.Dropout(config.hidden_dropout_prob if p is None else p)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> SequenceClassifierOutput | tuple:
        return_dict = kwargs.pop("return_dict", None)
        out = self.bert(
            input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            return_dict=True,
            **kwargs,
        )
        states = out.last_hidden_state  # (B, L, H)
        if attention_mask is None:
            attention_mask = torch.ones(states.shape[:2], device=states.device)
        mask = attention_mask.unsqueeze(-1).to(states.dtype)  # (B, L, 1)
        pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        result = SequenceClassifierOutput(
            loss=None if labels is None else self._loss(logits, labels),
            logits=logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        return result.to_tuple() if return_dict is False else result

    def _loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss `BertForSequenceClassification` computes for ``config.problem_type``."""
        kind = self.config.problem_type
        if kind is None:
            if self.num_labels == 1:
                kind = "regression"
            elif labels.dtype in (torch.long, torch.int):
                kind = "single_label_classification"
            else:
                kind = "multi_label_classification"
        if kind == "regression":
            return nn.functional.mse_loss(logits.squeeze(-1), labels.squeeze(-1).to(logits.dtype))
        if kind == "single_label_classification":
            return nn.functional.cross_entropy(logits.view(-1, self.num_labels), labels.view(-1))
        return nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


BertForMeanPooledSequenceClassification.register_for_auto_class(
    "AutoModelForSequenceClassification"
)
