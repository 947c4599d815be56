"""The pretraining stage: embedded corpus, segments, masked-LM training."""
