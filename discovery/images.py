"""Conversions between generator tensors, uint8 arrays and image files."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from discovery.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")  # what the package reads as photos


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


def to_8bit(image):
    """A PIL image of any depth as an 8-bit mode: 16-bit and 32-bit grey are scaled, not clipped."""
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        array = np.asarray(image, dtype=np.float64) / 65535.0
    elif image.mode == "I":  # 32-bit integers; 16-bit PNGs open this way too
        array = np.asarray(image, dtype=np.float64)
        array = array / (65535.0 if array.max(initial=0) > 255 else 255.0)
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        array = array / (255.0 if array.max(initial=0) > 1.0 else 1.0)
    else:
        return image
    return Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8), mode="L")


def read_image(path: str | Path, mode: str = "RGB", exif: bool = False) -> np.ndarray:
    """Read any image file as uint8 (H, W, 3) for RGB or (H, W) for L; unreadable files are user errors.

    Grey, palette and RGBA inputs are converted (alpha is composited on black, as the saliency
    benchmarks' few RGBA files expect); 16-bit files are scaled to 8 bits; with ``exif`` the
    camera's orientation tag is applied (photos come out upright)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as image:
            image.load()
            if exif:
                image = ImageOps.exif_transpose(image)
            image = to_8bit(image)
            if mode == "RGB" and (image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)):
                image = image.convert("RGBA")
                background = Image.new("RGBA", image.size, (0, 0, 0, 255))
                image = Image.alpha_composite(background, image)
            return np.asarray(image.convert(mode))
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    except Image.DecompressionBombError as exc:
        raise UserError(f"{path}: refused, too many pixels for an image ({exc})") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: not a readable image ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from None
