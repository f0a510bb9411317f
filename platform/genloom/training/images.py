"""Sample grids as PNG files (Pillow)."""

from __future__ import annotations

import math
from pathlib import Path


def grid_image(images, *, nrow: int | None = None, pad: int = 2, scale: int | None = None):
    """N×C×H×W floats in [0, 1] → one PIL image, nrow images per row (default ≈ √N), upscaled when tiny."""
    import numpy as np
    from PIL import Image

    arr = images.detach().float().clamp(0, 1).cpu().numpy() if hasattr(images, "detach") else np.asarray(images)
    n, c, h, w = arr.shape
    nrow = nrow or max(1, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / nrow)
    canvas = np.ones((c, rows * (h + pad) + pad, nrow * (w + pad) + pad), dtype=np.float32) * 0.5
    for i in range(n):
        r, col = divmod(i, nrow)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[:, y : y + h, x : x + w] = arr[i]
    pixels = (canvas * 255).round().astype("uint8")
    img = Image.fromarray(pixels[0] if c == 1 else pixels.transpose(1, 2, 0)[:, :, :3])
    scale = scale or (4 if h <= 16 else 2 if h <= 32 else 1)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    return img


def save_grid(images, path: Path, **kwargs) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid_image(images, **kwargs).save(path)
    return path
