"""Renderer core: text + RenderConfig -> pages (layout), pages -> pixels (backends)."""
