"""Fine-tuning stage: classification, sentence pairs, token tagging and multi-task."""
