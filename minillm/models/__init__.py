"""Models built on minillm: BERT and GPT-2 with their heads, and the model-agnostic checkpoint code."""
