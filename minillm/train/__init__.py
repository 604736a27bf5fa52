"""Training: the shared loop, MLM pretraining, fine-tuning and evaluation, the demo."""
