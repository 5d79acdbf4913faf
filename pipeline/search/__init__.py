"""The rendering-config search: a genetic algorithm over RenderConfig with an LLM critic."""
