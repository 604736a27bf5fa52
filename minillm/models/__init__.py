"""Models built on minillm: BERT and its heads."""
