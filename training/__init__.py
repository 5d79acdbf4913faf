"""Training stages (continual pre-training, SFT, GRPO) on rendered shards. See issue #4."""
