"""Mask rules: turn an image and its background-shifted twin into a saliency mask, or reject the pair.

Two rules from the papers this package follows, each a small object whose fields are its whole
configuration:

``IntensityMaskRule`` (Voynov & Babenko, ICML 2020, section 5). One large shift along the
background-removal direction pushes the background of ``G(z + r d)`` towards white while the
object keeps its colours. Foreground is therefore where the *shifted* image stays dark:
``mask = intensity(G(z + r d)) < threshold`` with intensity the luma in [0, 1]
(threshold 0.95). A pair is kept when the mask covers a fraction of the image strictly inside
``(min_area, max_area)`` = (0.05, 0.5): an almost empty mask means the shift whitened the
object too, an almost full one that the background never turned white.

``LightingMaskRule`` (Voynov, Morozov & Babenko, ICML 2021, BigBiGAN). A moderate shift
(r = 5) along a direction that darkens the background and lightens the object; foreground is
where the shifted image became brighter: ``mask = gray(G(z)) < gray(G(z + r d))``. The official
code (``anvoynov/BigGANsAreWatching``: ``gan_mask_gen.py``, ``postprocessing.py``,
``train_segmentation.py``) then, in this order: keeps the connected components (8-connected)
whose area exceeds ``component_ratio`` (0.2) of the largest one; rejects masks covering
``max_area`` (0.5) or more of the image; rejects pairs whose shifted image has a unimodal
histogram (12 bins over [-1, 1], all channels, smoothed by a sum over 3 neighbouring bins;
kept with at least two local maxima). One deliberate difference: the official peak count
compares neighbours with ``>=``, so an empty bin at either end of the histogram, or a flat top
spanning two bins, counts as a peak and a flat grey image passes; here a peak is a maximal run
of equal, non-empty bins higher than both neighbouring runs, so a unimodal histogram is
rejected whatever its empty tails. Empty masks are rejected too (``min_area`` = 0, strict).

Two options that are in neither paper, off by default: ``max_border`` rejects masks that cover
more than that fraction of the image border (a background mask usually does), and ``smooth``
replaces each mask pixel by the majority of its ``smooth`` x ``smooth`` window before any other
filter. A small GAN's shifted image differs from the original by pixel noise as well as by the
lighting change, and a per-pixel comparison turns that noise into specks and pinholes.

Both rules take shifts in the units of the directions file. ``shift=None`` means the rule's
paper value (26 and 5) scaled by the direction's typical shift / 6 (``stats["shift_scales"]``
entry, else the file's ``shift_scale``): the papers' directions were trained with shifts of up
to 6 (Voynov-Babenko's default), so a file with that scale gets the paper values and a file
whose unit step is larger or smaller gets a proportional shift.

A rule runs in two stages so that a pipeline can keep the device busy: ``propose`` (on the
device: thresholds, histograms, area checks that need no host work) and ``refine`` (on the host:
connected components, then the area checks that must follow them). ``evaluate`` runs both;
``rule(original, shifted)`` returns ``(masks, keep)`` as the interface promises.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from discovery.errors import UserError
from discovery.registry import Registry

REFERENCE_SHIFT_SCALE = 6.0  # shift scale of the directions the papers' shift values refer to

# Why a candidate pair was rejected; 0 means kept. The order is the order the filters run in.
REASONS = ("kept", "area_too_small", "area_too_large", "not_bimodal", "touches_border")
KEPT, AREA_TOO_SMALL, AREA_TOO_LARGE, NOT_BIMODAL, TOUCHES_BORDER = range(len(REASONS))


class MaskResult(NamedTuple):
    masks: torch.Tensor  # bool (N, H, W): True on the foreground
    keep: torch.Tensor  # bool (N,)
    reasons: torch.Tensor  # int8 (N,): index into REASONS


def luma(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W) ITU-R 601 luma in [0, 1]."""
    weights = images.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return ((images.float().clamp(-1, 1) + 1) * 0.5 * weights).sum(1)


def area_reasons(area: torch.Tensor | np.ndarray, min_area: float, max_area: float):
    """Reason codes for mask area fractions: kept only strictly inside (min_area, max_area).

    Written with ``where`` (no boolean-mask assignment) so that it never waits for the device.
    """
    lib = torch if isinstance(area, torch.Tensor) else np
    reasons = lib.where(area <= min_area, AREA_TOO_SMALL, lib.where(area >= max_area, AREA_TOO_LARGE, KEPT))
    return reasons.to(torch.int8) if lib is torch else reasons.astype(np.int8)


def border_coverage(masks: torch.Tensor) -> torch.Tensor:
    """Fraction of the one-pixel image border that each (N, H, W) mask covers.

    Objects sit inside the frame and backgrounds run into it, so a mask that covers much of the
    border has most likely marked the background (a wrong sign, or a direction that also moves
    the background); the sign chooser and the optional ``max_border`` filter both use this.
    """
    masks = masks.float()
    border = torch.cat([masks[:, 0], masks[:, -1], masks[:, 1:-1, 0], masks[:, 1:-1, -1]], dim=1)
    return border.mean(1)


def majority_filter(masks: torch.Tensor, size: int) -> torch.Tensor:
    """Each pixel takes the majority vote of its ``size`` x ``size`` window (0 or 1: unchanged).

    A per-pixel comparison of two GAN images flips isolated pixels wherever the two differ by
    noise; the vote removes those specks and fills pinholes without moving real edges by more
    than size // 2 pixels. Windows are cut at the image border (no padding votes).
    """
    if size <= 1:
        return masks
    votes = F.avg_pool2d(masks[:, None].float(), size, stride=1, padding=size // 2, count_include_pad=False)
    return votes[:, 0] > 0.5


def smoothed_histograms(images: torch.Tensor, bins: int = 12, window: int = 3) -> torch.Tensor:
    """Per-image histogram of all channel values over [-1, 1], smoothed by a box sum: (N, bins)."""
    n = images.shape[0]
    values = images.detach().float().reshape(n, -1)
    index = ((values.clamp(-1, 1) + 1) * (bins / 2)).long().clamp_(0, bins - 1)
    counts = torch.zeros(n, bins, device=images.device, dtype=torch.float32)
    counts.scatter_add_(1, index, torch.ones_like(values))
    if window > 1:
        kernel = torch.ones(1, 1, window, device=images.device)
        counts = F.conv1d(counts[:, None], kernel, padding=window // 2)[:, 0]
    return counts


def count_peaks(histograms: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Local maxima per row; a flat top (a run of equal values) counts once, empty bins never.

    Vectorised on the rows' device (no host round trip): with the signs of the differences
    between neighbouring bins, a peak is a fall whose last preceding non-zero sign is a rise
    (or that has none: a peak at the start), plus a final rise (a peak at the end), plus one
    for a flat, non-empty histogram.
    """
    as_numpy = not isinstance(histograms, torch.Tensor)
    h = torch.as_tensor(np.asarray(histograms, dtype=np.float64) if as_numpy else histograms)
    if h.shape[1] < 2:
        peaks = (h[:, 0] > 0).long() if h.shape[1] else torch.zeros(len(h), dtype=torch.long)
        return peaks.numpy() if as_numpy else peaks
    change = torch.sign(h[:, 1:] - h[:, :-1])
    positions = torch.arange(change.shape[1], device=h.device).expand_as(change)
    last = torch.where(change != 0, positions, torch.full_like(positions, -1)).cummax(dim=1).values
    filled = torch.where(last >= 0, change.gather(1, last.clamp(min=0)), torch.zeros_like(change))
    before = torch.cat([torch.zeros_like(filled[:, :1]), filled[:, :-1]], dim=1)
    peaks = ((change < 0) & (before >= 0)).sum(1) + (filled[:, -1] > 0).long() + ((filled[:, -1] == 0) & (h[:, 0] > 0)).long()
    return peaks.numpy() if as_numpy else peaks


def connected_components_filter(mask: np.ndarray, ratio: float) -> np.ndarray:
    """Keep the 8-connected components of one (H, W) mask larger than ``ratio`` x the largest one."""
    import cv2

    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    if count <= 2:  # empty, or a single component: nothing to drop
        return mask.astype(bool)
    areas = stats[1:, cv2.CC_STAT_AREA].astype(np.float64)
    lookup = np.zeros(count, dtype=bool)
    lookup[1:] = areas > ratio * areas.max()
    return lookup[labels]


def direction_scale(directions, index: int | None = None) -> float:
    """Typical shift magnitude of direction ``index`` in its file's units."""
    stats = getattr(directions, "stats", None)
    scales = stats.get("shift_scales") if isinstance(stats, dict) else None
    if index is not None and isinstance(scales, (list, tuple)) and len(scales) == directions.count:
        try:
            value = float(scales[index])
        except (TypeError, ValueError):
            value = float("nan")
        if np.isfinite(value) and value > 0:
            return value
    scale = float(getattr(directions, "shift_scale", REFERENCE_SHIFT_SCALE) or REFERENCE_SHIFT_SCALE)
    return scale if scale > 0 else REFERENCE_SHIFT_SCALE


def option(default, help: str):
    """A mask-rule field with its one-line help (the command line's flags come from these)."""
    return field(default=default, metadata={"help": help})


MASK_RULES = Registry("mask rule", "--rule")


def register_mask_rule(cls):
    """Class decorator: register a ``MaskRule`` subclass under its ``name``."""
    MASK_RULES.add(cls.name, cls)
    return cls


@dataclass(frozen=True)
class MaskRule:
    """Base of the mask rules; subclasses set ``name`` and ``default_shift`` and implement ``propose``.

    The dataclass fields are a rule's whole configuration, each with its help in the field
    metadata; ``__post_init__`` checks the values of the fields every rule shares.
    """

    name = "rule"
    default_shift = 1.0
    needs_host = False  # whether ``refine`` does work (connected components) on the host
    brightens_background = False  # True: the rule wants the shift that whitens the background
    uses_partner = False  # True: compares the image shifted along the direction with one shifted along its partner

    shift: float | None = option(None, "latent shift along the direction (default: the rule's paper value x shift_scale / 6)")
    max_border: float | None = option(None, "not in the papers: reject masks covering more than this fraction of the image border (default: off)")

    def __post_init__(self):
        values = dataclasses.asdict(self)
        if values.get("shift") is not None and not values["shift"] > 0:
            raise UserError(f"--shift {values['shift']}: must be positive (use --sign -1 to shift the other way)")
        if "threshold" in values and not 0 < values["threshold"] <= 1:
            raise UserError(f"--threshold {values['threshold']}: must be in (0, 1] (luma of the shifted image)")
        for key in ("min_area", "max_border"):
            if values.get(key) is not None and not 0 <= values[key] <= 1:
                raise UserError(f"--{key.replace('_', '-')} {values[key]}: must be a fraction of the image in [0, 1]")
        if "max_area" in values and not values["max_area"] > 0:  # above 1: no upper limit
            raise UserError(f"--max-area {values['max_area']}: must be a positive fraction of the image (above 1: no limit)")
        if "component_ratio" in values and not 0 <= values["component_ratio"] < 1:
            raise UserError(f"--component-ratio {values['component_ratio']}: must be in [0, 1)")
        if "bimodality" in values and values["bimodality"] < 0:
            raise UserError(f"--bimodality {values['bimodality']}: must be 0 (off) or a number of histogram peaks")
        smooth = values.get("smooth")
        if smooth is not None and (smooth < 0 or (smooth > 1 and smooth % 2 == 0)):
            raise UserError(f"--smooth {smooth}: must be 0 (off) or an odd window size such as 3 or 5")
        if "min_area" in values and "max_area" in values and values["min_area"] >= values["max_area"]:
            raise UserError(f"--min-area {values['min_area']} / --max-area {values['max_area']}: the minimum must be below the maximum")

    def for_directions(self, directions, index: int | None = None) -> "MaskRule":
        """This rule with ``shift`` resolved for a directions file (``None`` -> scaled paper value).

        The scale is the direction's own ``stats["shift_scales"][index]`` when the file has one
        (as ``discovery.background`` reads it), else the file's ``shift_scale``.
        """
        if self.shift is not None:
            return self
        return dataclasses.replace(self, shift=self.default_shift * direction_scale(directions, index) / REFERENCE_SHIFT_SCALE)

    def propose(self, original: torch.Tensor, shifted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Device stage: (masks bool (N, H, W), reasons int8 (N,)) from images in [-1, 1]."""
        raise NotImplementedError

    def refine_one(self, mask: np.ndarray, reason: int) -> tuple[np.ndarray, int]:
        """Host stage for one sample; the default keeps the device stage's verdict."""
        return mask, reason

    @property
    def host_stage(self) -> bool:
        """Whether ``finish_one`` has work to do on the host."""
        return self.needs_host or self.max_border is not None

    def finish_one(self, mask: np.ndarray, reason: int) -> tuple[np.ndarray, int]:
        """Host stage for one sample: the rule's own refinement, then the optional border filter."""
        if self.needs_host:
            mask, reason = self.refine_one(mask, reason)
        if reason == KEPT and self.max_border is not None:
            if float(border_coverage(torch.from_numpy(np.asarray(mask)[None]))[0]) > self.max_border:
                reason = TOUCHES_BORDER
        return mask, reason

    def refine(self, masks: np.ndarray, reasons: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks, reasons = np.array(masks, dtype=bool), np.array(reasons, dtype=np.int8)
        for i in range(len(masks)):
            masks[i], reasons[i] = self.finish_one(masks[i], int(reasons[i]))
        return masks, reasons

    @torch.no_grad()
    def evaluate(self, original: torch.Tensor, shifted: torch.Tensor) -> MaskResult:
        if original.shape != shifted.shape or original.ndim != 4 or original.shape[1] != 3:
            raise ValueError(f"expected two (N, 3, H, W) batches, got {tuple(original.shape)} and {tuple(shifted.shape)}")
        masks, reasons = self.propose(original, shifted)
        if self.host_stage:
            host_masks, host_reasons = self.refine(masks.cpu().numpy(), reasons.cpu().numpy())
            masks = torch.from_numpy(host_masks).to(original.device)
            reasons = torch.from_numpy(host_reasons).to(original.device)
        return MaskResult(masks, reasons == KEPT, reasons)

    def __call__(self, original: torch.Tensor, shifted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        result = self.evaluate(original, shifted)
        return result.masks, result.keep

    def config(self) -> dict:
        return {"name": self.name, **dataclasses.asdict(self)}


@register_mask_rule
@dataclass(frozen=True)
class IntensityMaskRule(MaskRule):
    """Voynov & Babenko 2020: foreground where the background-whitened image stays darker than ``threshold``."""

    name = "intensity"
    default_shift = 26.0
    brightens_background = True  # wants the shift that whitens the background (the others dim it)

    shift: float | None = option(None, "latent shift along the direction (default: 26 x shift_scale / 6)")
    threshold: float = option(0.95, "luma in [0, 1] under which a pixel of the shifted image is foreground")
    min_area: float = option(0.05, "reject masks covering this fraction of the image or less")
    max_area: float = option(0.5, "reject masks covering this fraction of the image or more")
    max_border: float | None = option(None, "not in the paper: reject masks covering more than this fraction of the image border (default: off)")
    smooth: int = option(0, "not in the paper: majority vote of each mask pixel over an odd SMOOTH x SMOOTH window (0: off)")

    def propose(self, original, shifted):
        masks = majority_filter(luma(shifted) < self.threshold, self.smooth)
        area = masks.flatten(1).float().mean(1)
        return masks, area_reasons(area, self.min_area, self.max_area)


@register_mask_rule
@dataclass(frozen=True)
class LightingMaskRule(MaskRule):
    """Voynov, Morozov & Babenko 2021: foreground where the shift made the image brighter."""

    name = "lighting"
    default_shift = 5.0
    needs_host = True

    shift: float | None = option(None, "latent shift along the direction (default: 5 x shift_scale / 6)")
    max_area: float = option(0.5, "reject masks (after the component filter) covering this fraction or more")
    min_area: float = option(0.0, "reject masks covering this fraction or less (0: only empty masks)")
    bimodality: int = option(2, "least number of peaks in the shifted image's smoothed histogram (0: off)")
    component_ratio: float = option(0.2, "keep connected components larger than this fraction of the largest (0: keep all)")
    max_border: float | None = option(None, "not in the paper: reject masks covering more than this fraction of the image border (default: off)")
    smooth: int = option(0, "not in the paper: majority vote of each mask pixel over an odd SMOOTH x SMOOTH window (0: off)")
    histogram_bins: int = option(12, "bins of the bimodality histogram over [-1, 1]")
    histogram_window: int = option(3, "neighbouring bins summed to smooth that histogram")

    def propose(self, original, shifted):
        masks = majority_filter(luma(original) < luma(shifted), self.smooth)
        reasons = torch.zeros(len(masks), dtype=torch.int8, device=masks.device)
        if self.bimodality > 0:
            peaks = count_peaks(smoothed_histograms(shifted, self.histogram_bins, self.histogram_window))
            reasons = torch.where(peaks < self.bimodality, NOT_BIMODAL, KEPT).to(torch.int8)
        return masks, reasons

    def refine_one(self, mask, reason):
        if self.component_ratio > 0:
            mask = connected_components_filter(mask, self.component_ratio)
        area_reason = int(area_reasons(np.array([mask.mean()]), self.min_area, self.max_area)[0])
        # The area filter runs before the histogram filter (official order), so its verdict wins.
        return mask, area_reason if area_reason != KEPT else reason


@register_mask_rule
@dataclass(frozen=True)
class TwoDirectionMaskRule(LightingMaskRule):
    """Melas-Kyriazi et al. 2022: foreground where G(z + r v_l) is brighter than G(z + r v_d)."""

    # The synthesizer passes G(z + r v_d) (the partner direction's image) where the lighting rule
    # gets G(z); the comparison and the filters (components, area, bimodality of G(z + r v_l)) are
    # the lighting rule's.
    name = "two-direction"
    uses_partner = True


def rule_options(name: str) -> dict[str, dataclasses.Field]:
    """The configurable fields of a registered rule, by name."""
    return {f.name: f for f in dataclasses.fields(MASK_RULES.get(name))}


def build_rule(name: str, **options) -> MaskRule:
    """A registered rule by name with the options a user set (None keeps the rule's default); bad values are UserErrors."""
    cls = MASK_RULES.get(name)
    fields = rule_options(name)
    for key, value in options.items():
        if value is not None and key not in fields:
            raise UserError(f"--{key.replace('_', '-')}: does not apply to the {name} rule (its options: {', '.join(fields)})")
    return cls(**{k: v for k, v in options.items() if v is not None})


def rule_from_config(config: dict) -> MaskRule:
    """Inverse of ``rule.config()`` (used to read manifests)."""
    config = dict(config)
    return MASK_RULES.get(config.pop("name"))(**config)
