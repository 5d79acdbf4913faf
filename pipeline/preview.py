"""Contact sheet: the first pages of a run side by side, to check a render at a glance."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

THUMB_HEIGHT = 280


def contact_sheet(pages: list[np.ndarray], columns: int = 6, pad: int = 8) -> Image.Image:
    if not pages:
        return Image.new("RGB", (THUMB_HEIGHT, THUMB_HEIGHT), "white")
    thumbs = []
    for pixels in pages:
        image = Image.fromarray(pixels).convert("RGB")
        scale = THUMB_HEIGHT / image.height
        thumbs.append(image.resize((max(1, round(image.width * scale)), THUMB_HEIGHT), Image.Resampling.LANCZOS))
    columns = min(columns, len(thumbs))
    rows = math.ceil(len(thumbs) / columns)
    cell = max(t.width for t in thumbs)
    sheet = Image.new("RGB", (columns * (cell + pad) + pad, rows * (THUMB_HEIGHT + pad) + pad), (128, 128, 128))
    for index, thumb in enumerate(thumbs):
        row, col = divmod(index, columns)
        sheet.paste(thumb, (pad + col * (cell + pad), pad + row * (THUMB_HEIGHT + pad)))
    return sheet
