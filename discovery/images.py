"""Conversions between generator tensors, uint8 arrays and image files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from discovery.errors import UserError


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    images = images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return images.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, rows: int, cols: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile (N, H, W, C) uint8 images row-major into one array, padded with ``fill``."""
    n, h, w, c = images.shape
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, dtype=np.uint8)
    for i in range(min(n, rows * cols)):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    return grid


def save_png(array: np.ndarray, path: str | Path) -> None:
    from discovery.io import atomic_write_bytes

    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    atomic_write_bytes(buffer.getvalue(), path)


def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """Read any image file as uint8 (H, W, 3) for RGB or (H, W) for L; corrupt files are user errors.

    Grey, palette and RGBA inputs are converted (alpha is composited on black, as the
    saliency benchmarks' few RGBA files expect)."""
    try:
        with Image.open(path) as image:
            image.load()
            if mode == "RGB" and image.mode in ("RGBA", "LA", "P"):
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (0, 0, 0, 255))
                image = Image.alpha_composite(background, image)
            return np.asarray(image.convert(mode))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({exc})") from None
