"""Training data: rendered shards -> task samples (OCR, interleaved LM, generation) -> model inputs."""
