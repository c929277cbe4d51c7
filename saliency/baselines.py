"""Reference predictors scored by the same evaluation code as the GAN segmenter.

Each maps an image (uint8 HxWx3; grey and RGBA are accepted) to a float32 HxW map in [0, 1]:

* ``all_foreground``: every pixel salient. Its IoU is the object's area fraction and its max F_beta
  the F of "everything" -- the floor any method has to clear.
* ``center_prior``: a centred Gaussian (sigma a quarter of each side), the photographer's centre bias
  that many salient-object benchmarks reward.
* ``classical_saliency``: frequency-tuned salient region detection (Achanta, Hemami, Estrada and
  Suesstrunk, "Frequency-tuned Salient Region Detection", CVPR 2009): the distance in CIE Lab between
  each pixel of a slightly blurred image and the image's mean colour. Training-free and unsupervised,
  the classical method the F-measure protocol was introduced with.
"""

from __future__ import annotations

import numpy as np

BASELINES = ("all-foreground", "center-prior", "classical")


def _rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {image.shape}")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.shape[2] == 4:  # composite on black, as saliency.datasets.read_rgb does
        alpha = image[:, :, 3:4].astype(np.float32) / 255
        image = np.round(image[:, :, :3] * alpha).astype(np.uint8)
    return image


def all_foreground(image: np.ndarray) -> np.ndarray:
    """Every pixel salient (1.0)."""
    h, w = np.asarray(image).shape[:2]
    return np.ones((h, w), dtype=np.float32)


def center_prior(image: np.ndarray, sigma: float = 0.25) -> np.ndarray:
    """exp(-((x - cx)^2 / (2 (sigma W)^2) + (y - cy)^2 / (2 (sigma H)^2))): 1 at the centre."""
    h, w = np.asarray(image).shape[:2]
    y = (np.arange(h, dtype=np.float32) + 0.5 - h / 2) / (sigma * h)
    x = (np.arange(w, dtype=np.float32) + 0.5 - w / 2) / (sigma * w)
    return np.exp(-0.5 * (y[:, None] ** 2 + x[None, :] ** 2)).astype(np.float32)


_BINOMIAL_5 = np.array([1, 4, 6, 4, 1], dtype=np.float32) / 16


def classical_saliency(image: np.ndarray) -> np.ndarray:
    """Frequency-tuned saliency (Achanta et al., CVPR 2009): ||mean Lab - blurred Lab|| per pixel,
    blurred with the paper's 5x5 binomial filter, scaled so the maximum is 1."""
    import cv2

    rgb = _rgb(image).astype(np.float32) / 255
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2Lab)  # L in [0, 100], a and b about [-127, 127]
    blurred = cv2.sepFilter2D(lab, -1, _BINOMIAL_5, _BINOMIAL_5, borderType=cv2.BORDER_REFLECT)
    mean = lab.reshape(-1, 3).mean(axis=0)
    saliency = np.sqrt(((blurred - mean) ** 2).sum(axis=2))
    peak = float(saliency.max())
    if peak <= 0:
        return np.zeros(saliency.shape, dtype=np.float32)
    return (saliency / peak).astype(np.float32)


def get_baseline(name: str):
    """The predictor called ``name`` (one of ``BASELINES``)."""
    table = {"all-foreground": all_foreground, "center-prior": center_prior, "classical": classical_saliency}
    try:
        return table[name]
    except KeyError:
        raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}") from None
