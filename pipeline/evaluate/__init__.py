"""Long-context evaluation: scoring, OpenAI-compatible VLM client, harness, needle-in-a-haystack items."""
