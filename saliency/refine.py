"""Refinement of a saliency map with the photo it came from: one stage shared by ``predict`` and ``evaluate``.

A refiner maps ``(prob (H, W) float32 in [0, 1], image (H, W, 3) uint8)`` to a refined map of the
same size. Registered refiners (``REFINERS``; ``none`` is the papers' protocol and the default):

``bilateral``  The fast bilateral solver (Barron & Poole, ECCV 2016), as TokenCut and FOUND apply
               it to their coarse masks: the map is smoothed on a bilateral grid of the photo (pixel
               position, luma and chroma), solving ``(lam * (Dm - Dn B Dn) + diag(S c)) y = S (c t)``
               with preconditioned conjugate gradients, then sliced back to pixels; edges of the photo
               stop the smoothing. Written on scipy.sparse because OpenCV contrib's
               ``ximgproc.fastBilateralSolverFilter`` in the PyPI wheels raises "needs to be compiled
               with EIGEN". Settings: TokenCut's (sigma_spatial 16, sigma_luma 16, sigma_chroma 8,
               lam 128, 25 CG iterations), not tuned here.
``crf``        A fully connected CRF (Krähenbühl & Koltun 2011, the ``pydensecrf2`` package): unary
               from the map, a Gaussian smoothness kernel and an appearance kernel on the photo;
               the common settings of the saliency literature (sxy 3 / compat 3, sxy 60, srgb 10 /
               compat 5, 5 mean-field iterations).
``components`` Largest-component clean-up: the mask at 0.5 keeps its largest connected component
               (and components at least ``keep_ratio`` of it), holes are filled, and the map is
               zeroed outside what was kept (inside it keeps its values).

Refiners return soft maps wherever their method gives one (bilateral, crf), so threshold-free
metrics stay meaningful.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from discovery.errors import UserError
from discovery.registry import Registry

REFINERS = Registry("refinement", "--refine")


def register_refiner(name: str) -> Callable:
    return REFINERS.register(name)


def require_refiner(method: str) -> Callable:
    """The registered refiner ``method``, run once on a 4 x 4 map first: a refiner whose package is
    missing (crf without pydensecrf2) is a one-line error before any long work, not after it."""
    function = REFINERS.get(method)
    function(np.full((4, 4), 0.5, dtype=np.float32), np.zeros((4, 4, 3), dtype=np.uint8))
    return function


def refine(prob: np.ndarray, image: np.ndarray, method: str = "none", **options) -> np.ndarray:
    """``prob`` refined by the registered ``method`` with the photo ``image`` (same height and width)."""
    function = REFINERS.get(method)
    prob = np.asarray(prob, dtype=np.float32)
    if method == "none":
        return prob
    image = np.asarray(image)
    if image.shape[:2] != prob.shape:
        raise UserError(f"refine: the map is {prob.shape} but the photo {image.shape[:2]}")
    out = function(prob, image, **options)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def refined(predict: Callable, method: str = "none", options: dict | None = None) -> Callable:
    """``predict(image[, short_side])`` followed by ``refine`` with the same image (the evaluation's predictor)."""
    if method == "none":
        return predict
    import inspect

    from saliency.segmenter import as_photo

    takes = "short_side" in inspect.signature(predict).parameters

    def run(image, short_side=None):
        prob = predict(image, short_side=short_side) if takes else predict(image)
        return refine(prob, as_photo(image), method, **(options or {}))

    run.__qualname__ = f"{getattr(predict, '__qualname__', 'predict')} + {method}"
    return run


@register_refiner("none")
def refine_none(prob, image):
    return prob


# ----------------------------------------------------------------------------- components
@register_refiner("components")
def refine_components(prob, image, *, threshold: float = 0.5, keep_ratio: float = 1.0, fill_holes: bool = True):
    import cv2
    from scipy import ndimage

    mask = (prob >= threshold).astype(np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 1:
        return prob * 0
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.flatnonzero(areas >= keep_ratio * areas.max()) + 1
    kept = np.isin(labels, keep)
    if fill_holes:
        kept = ndimage.binary_fill_holes(kept)
    return np.where(kept, np.maximum(prob, threshold), 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- fast bilateral solver
def _rgb_to_yuv(image: np.ndarray) -> np.ndarray:
    rgb = image.astype(np.float64)
    y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    u = -0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2] + 128
    v = 0.5 * rgb[..., 0] - 0.418688 * rgb[..., 1] - 0.081312 * rgb[..., 2] + 128
    return np.stack([y, u, v], axis=-1)


class BilateralGrid:
    """Pixels splatted to the vertices of a 5-d grid (x, y, luma, u, v) scaled by the sigmas."""

    def __init__(self, image: np.ndarray, sigma_spatial: float, sigma_luma: float, sigma_chroma: float):
        from scipy import sparse

        yuv = _rgb_to_yuv(image)
        rows, cols = np.mgrid[: image.shape[0], : image.shape[1]]
        coords = np.stack([cols // sigma_spatial, rows // sigma_spatial, yuv[..., 0] // sigma_luma,
                           yuv[..., 1] // sigma_chroma, yuv[..., 2] // sigma_chroma], axis=-1).reshape(-1, 5).astype(np.int64)
        self.dim = coords.shape[1]
        self.npixels = coords.shape[0]
        self._base = int(coords.max()) + 3  # a radix larger than any coordinate (+1 neighbour)
        keys = self._hash(coords)
        unique, first, pixel_vertex = np.unique(keys, return_index=True, return_inverse=True)
        self.nvertices = len(unique)
        self.S = sparse.csr_matrix((np.ones(self.npixels), (pixel_vertex.ravel(), np.arange(self.npixels))),
                                   shape=(self.nvertices, self.npixels))
        vertex_coords = coords[first]
        self.blurs = []
        for d in range(self.dim):
            step = np.zeros(self.dim, dtype=np.int64)
            step[d] = 1
            blur = sparse.csr_matrix((self.nvertices, self.nvertices))
            for sign in (-1, 1):
                neighbours = self._hash(vertex_coords + sign * step)
                position = np.searchsorted(unique, neighbours)
                position = np.minimum(position, len(unique) - 1)
                valid = unique[position] == neighbours
                blur = blur + sparse.csr_matrix((np.ones(int(valid.sum())), (np.flatnonzero(valid), position[valid])),
                                                shape=(self.nvertices, self.nvertices))
            self.blurs.append(blur)

    def _hash(self, coords: np.ndarray) -> np.ndarray:
        shifted = coords + 1  # neighbours at -1 stay non-negative
        return (shifted * (self._base ** np.arange(self.dim, dtype=np.int64))).sum(axis=1)

    def splat(self, x):
        return self.S @ x

    def slice(self, y):
        return self.S.T @ y

    def blur(self, x):
        out = 2 * self.dim * x
        for blur in self.blurs:
            out = out + blur @ x
        return out


def _bistochastize(grid: BilateralGrid, iterations: int = 10):
    """Vertex weights n making the grid's blur doubly stochastic for the splatted pixel mass m."""
    m = grid.splat(np.ones(grid.npixels))
    n = np.ones(grid.nvertices)
    for _ in range(iterations):
        n = np.sqrt(n * m / grid.blur(n))
    return n, n * grid.blur(n)


@register_refiner("bilateral")
def refine_bilateral(prob, image, *, sigma_spatial: float = 16, sigma_luma: float = 16, sigma_chroma: float = 8, lam: float = 128.0,
                     cg_iterations: int = 25, cg_tolerance: float = 1e-5, confidence=None):
    from scipy import sparse
    from scipy.sparse.linalg import cg

    grid = BilateralGrid(image, sigma_spatial, sigma_luma, sigma_chroma)
    target = prob.reshape(-1).astype(np.float64)
    weight = np.ones_like(target) if confidence is None else np.asarray(confidence, dtype=np.float64).reshape(-1)
    n, m = _bistochastize(grid)
    Dn = sparse.diags(n)
    blurred_Dn = 2 * grid.dim * Dn
    for blur in grid.blurs:
        blurred_Dn = blurred_Dn + blur @ Dn
    A = lam * (sparse.diags(m) - Dn @ blurred_Dn) + sparse.diags(grid.splat(weight))
    b = grid.splat(weight * target)
    preconditioner = sparse.diags(1.0 / np.maximum(A.diagonal(), 1e-5))
    start = b / np.maximum(grid.splat(weight), 1e-10)
    y, _ = cg(A.tocsr(), b, x0=start, M=preconditioner, maxiter=cg_iterations, rtol=cg_tolerance)
    return grid.slice(y).reshape(prob.shape)


# ----------------------------------------------------------------------------- dense CRF
@register_refiner("crf")
def refine_crf(prob, image, *, iterations: int = 5, gaussian_sxy: float = 3, gaussian_compat: float = 3, bilateral_sxy: float = 60,
               bilateral_srgb: float = 10, bilateral_compat: float = 5):
    try:
        import pydensecrf.densecrf as dcrf
        from pydensecrf.utils import unary_from_softmax
    except ImportError:
        raise UserError("--refine crf needs the pydensecrf2 package: pip install 'saliency[crf]'") from None
    height, width = prob.shape
    p = np.clip(prob.astype(np.float32), 1e-5, 1 - 1e-5)
    crf = dcrf.DenseCRF2D(width, height, 2)
    crf.setUnaryEnergy(np.ascontiguousarray(unary_from_softmax(np.stack([1 - p, p]))))
    crf.addPairwiseGaussian(sxy=gaussian_sxy, compat=gaussian_compat)
    crf.addPairwiseBilateral(sxy=bilateral_sxy, srgb=bilateral_srgb, rgbim=np.ascontiguousarray(image[..., :3].astype(np.uint8)),
                             compat=bilateral_compat)
    q = np.array(crf.inference(iterations)).reshape(2, height, width)
    return q[1]
