"""ptm: pretrain-then-finetune for BERT-style models on anonymized token-ID corpora."""

__version__ = "0.1.0"
