"""A contact sheet of synthetic samples (the README's picture of the dataset)."""

import numpy as np
from PIL import Image

from .render import render_sample
from .spec import CLASS_NAMES, DEFAULT_SEED, MAX_SIDE, NUM_CLASSES, class_colors, sample_rng

__all__ = ["save_sample_sheet"]


def save_sample_sheet(path: str, seed: int = DEFAULT_SEED, num: int = 8, cols: int = 4) -> None:
    """Save a grid of training images, each above its colour-coded mask, with a class legend.

    Stored as a 256-colour PNG to keep the file small enough to commit.
    """
    from PIL import ImageDraw

    cell = MAX_SIDE + 8
    samples = [render_sample(sample_rng(seed, "train", i)) for i in range(num)]
    rows = (num + cols - 1) // cols
    legend_h = 18 * ((NUM_CLASSES + 1 + 3) // 4) + 8
    sheet = Image.new("RGB", (cols * cell, rows * 2 * cell + legend_h), (255, 255, 255))
    colors = np.array(class_colors(), dtype=np.uint8)
    for k, s in enumerate(samples):
        r, c = divmod(k, cols)
        x, y = c * cell + 4, r * 2 * cell + 4
        sheet.paste(Image.fromarray(s.image), (x, y))
        colored = colors[s.mask]
        colored[s.context_mask] = (60, 60, 60)  # show where the context strip is (background)
        sheet.paste(Image.fromarray(colored), (x, y + cell))
    draw = ImageDraw.Draw(sheet)
    names = CLASS_NAMES + ["context strip (bg)"]
    swatches = [tuple(int(v) for v in col) for col in colors] + [(60, 60, 60)]
    for i, (name, col) in enumerate(zip(names, swatches)):
        r, c = divmod(i, 4)
        x, y = 6 + c * (cols * cell // 4), rows * 2 * cell + 4 + 18 * r
        draw.rectangle([x, y + 2, x + 12, y + 14], fill=col, outline=(0, 0, 0))
        draw.text((x + 17, y + 2), name, fill=(0, 0, 0))
    sheet.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
