"""Tools over finished and running jobs: sweep summaries, TensorBoard, the configuration reference."""
