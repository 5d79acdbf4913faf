"""Unit budgets in visual tokens: how many tokens a text takes at a render config, from layout alone.

Counting needs no pixels: the layout gives each page's lines, the auto-crop
options give its final size, and the vision rule turns size into tokens. So
a unit can be sized to fit, say, a 128K-token context at the best config.
"""

from __future__ import annotations

from pipeline.render.backends import crop_box
from pipeline.render.config import RenderConfig
from pipeline.render.layout import Paginator
from pipeline.render.tokens import GLM41V, VisionTokenRule


class VisualTokenBudget:
    def __init__(self, cfg: RenderConfig, max_tokens: int, rule: VisionTokenRule = GLM41V):
        if max_tokens < 1:
            raise ValueError(f"max-visual-tokens: must be >= 1, got {max_tokens}")
        self.cfg, self.max_tokens, self.rule = cfg, max_tokens, rule
        self.paginator = Paginator(cfg)
        self.chars_per_token = 4.0  # first guess; learned from every unit measured

    def tokens(self, text: str) -> int:
        """Visual tokens of `text` rendered with the config (what the Renderer would report)."""
        pages = self.paginator.paginate(text)
        width, height = self.cfg.page_pixels
        size = (max(1, int(width * self.cfg.horizontal_scale)), height)
        return sum(self.rule.tokens(*crop_box(self.cfg, page, page is pages[-1], size)) for page in pages)

    def max_chars(self) -> int:
        return max(1, int(self.max_tokens * self.chars_per_token))

    def fits(self, unit: str) -> bool:
        """Whether `unit` is within budget; when it is not, lower the estimate so the next cut is shorter."""
        tokens = self.tokens(unit)
        if tokens <= self.max_tokens or len(unit) <= 1:
            if tokens:  # learn the text's real density, so the next cut aims at the budget
                self.chars_per_token = len(unit) / tokens
            return True
        self.chars_per_token = len(unit) / tokens * 0.97
        return False
