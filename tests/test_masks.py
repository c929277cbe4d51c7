"""Mask rules on constructed images: the masks they must give and the pairs they must reject."""

import numpy as np
import pytest
import torch

from discovery.directions import Directions
from discovery.errors import UserError
from saliency.masks import (
    AREA_TOO_LARGE,
    AREA_TOO_SMALL,
    KEPT,
    NOT_BIMODAL,
    TOUCHES_BORDER,
    IntensityMaskRule,
    LightingMaskRule,
    border_coverage,
    build_rule,
    connected_components_filter,
    count_peaks,
    rule_from_config,
    smoothed_histograms,
)

H = W = 32


def grey(value: np.ndarray) -> torch.Tensor:
    """(N, H, W) values in [-1, 1] -> (N, 3, H, W) grey images."""
    return torch.as_tensor(value, dtype=torch.float32)[:, None].repeat(1, 3, 1, 1)


def square(size: int, top: int = 4, left: int = 4) -> np.ndarray:
    mask = np.zeros((H, W), dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


# ----------------------------------------------------------------------------- intensity
def test_intensity_rule_foreground_is_what_stays_dark_after_whitening():
    objects = [square(14), square(4), square(28, 0, 0)]  # areas 0.19, 0.016, 0.77
    shifted = grey(np.stack([np.where(m, -0.2, 1.0) for m in objects]))  # background pushed to white
    original = grey(np.stack([np.where(m, -0.2, -0.6) for m in objects]))
    result = IntensityMaskRule(shift=1.0).evaluate(original, shifted)
    for mask, expected in zip(result.masks.numpy(), objects):
        np.testing.assert_array_equal(mask, expected)
    assert result.reasons.tolist() == [KEPT, AREA_TOO_SMALL, AREA_TOO_LARGE]
    masks, keep = IntensityMaskRule(shift=1.0)(original, shifted)
    assert masks.dtype == torch.bool and masks.shape == (3, H, W) and keep.tolist() == [True, False, False]


def test_intensity_threshold_is_on_luma_in_unit_range_and_overridable():
    obj = square(12)
    # Background at luma 0.9 (0.8 in [-1, 1]): not white enough for the paper's 0.95.
    shifted = grey(np.where(obj, -0.5, 0.8)[None])
    assert not IntensityMaskRule(shift=1.0)(shifted, shifted)[1].item()  # everything "foreground": too large
    masks, keep = IntensityMaskRule(shift=1.0, threshold=0.85)(shifted, shifted)
    assert keep.item()
    np.testing.assert_array_equal(masks[0].numpy(), obj)
    # Colour counts through ITU-R 601 luma: pure blue (luma 0.114) is dark, pure yellow (0.886) is not.
    image = torch.full((1, 3, H, W), 1.0)
    image[0, :2, :8, :8] = -1.0  # blue block
    image[0, 2, 8:16, :8] = -1.0  # yellow block
    masks = IntensityMaskRule(shift=1.0, threshold=0.5)(image, image)[0][0]
    assert masks[:8, :8].all() and not masks[8:16, :8].any()


# ----------------------------------------------------------------------------- lighting
def lighting_pair(objects: list[np.ndarray], step: float = 0.4):
    """Original at mid grey; the shift lightens objects and darkens the background."""
    original = np.zeros((len(objects), H, W))
    shifted = np.stack([np.where(m, step, -step) for m in objects])
    return grey(original), grey(shifted)


def test_lighting_rule_foreground_is_what_got_brighter():
    obj = square(12)
    original, shifted = lighting_pair([obj])
    result = LightingMaskRule(shift=5.0).evaluate(original, shifted)
    np.testing.assert_array_equal(result.masks[0].numpy(), obj)
    assert result.reasons.tolist() == [KEPT]
    # The other sign (background lighter) marks the background: too large, rejected.
    result = LightingMaskRule(shift=5.0).evaluate(shifted, original)
    assert result.reasons.tolist() == [AREA_TOO_LARGE]


def test_border_filter_rejects_masks_running_into_the_frame_and_is_off_by_default():
    inside, edge = square(10, top=8, left=8), square(10, top=0, left=0)
    assert border_coverage(torch.from_numpy(np.stack([inside, edge]))).tolist() == pytest.approx([0.0, 19 / 124])
    original, shifted = lighting_pair([inside, edge])
    assert LightingMaskRule(shift=5.0).evaluate(original, shifted).reasons.tolist() == [KEPT, KEPT]
    strict = build_rule("lighting", shift=5.0, max_border=0.1)
    assert strict.evaluate(original, shifted).reasons.tolist() == [KEPT, TOUCHES_BORDER]
    # The intensity rule gets the same filter through the shared host stage.
    whitened = grey(np.where(np.stack([inside, edge]), -0.5, 1.0))
    assert IntensityMaskRule(shift=26.0, max_border=0.1).evaluate(whitened, whitened).reasons.tolist() == [KEPT, TOUCHES_BORDER]


def test_smoothing_votes_away_specks_and_pinholes_and_is_off_by_default():
    obj = square(12, top=8, left=8)
    noisy = obj.copy()
    noisy[10, 10] = noisy[14, 15] = False  # pinholes inside the object
    noisy[2, 25] = noisy[28, 3] = True  # isolated specks in the background
    original, shifted = lighting_pair([noisy])
    np.testing.assert_array_equal(LightingMaskRule(shift=5.0, component_ratio=0.0).evaluate(original, shifted).masks[0].numpy(), noisy)
    smoothed = build_rule("lighting", shift=5.0, component_ratio=0.0, smooth=3).evaluate(original, shifted).masks[0].numpy()
    # Specks (1 vote of 9) and pinholes (8 of 9) go; of the square only the corners (4 of 9) change.
    corners = np.zeros_like(obj)
    corners[[8, 8, 19, 19], [8, 19, 8, 19]] = True
    np.testing.assert_array_equal(smoothed, obj & ~corners)
    whitened = grey(np.where(noisy[None], -0.5, 1.0))
    intensity = build_rule("intensity", shift=26.0, smooth=3).evaluate(whitened, whitened).masks[0].numpy()
    np.testing.assert_array_equal(intensity, obj & ~corners)


def test_lighting_connected_components_drop_specks_and_keep_large_parts():
    big, second, speck = square(10, 2, 2), square(6, 20, 20), square(2, 2, 26)  # 100, 36, 4 pixels
    obj = big | second | speck
    original, shifted = lighting_pair([obj])
    masks, keep = LightingMaskRule(shift=5.0)(original, shifted)
    assert keep.item()
    np.testing.assert_array_equal(masks[0].numpy(), big | second)  # 36 > 0.2 x 100 kept, 4 dropped
    masks, _ = LightingMaskRule(shift=5.0, component_ratio=0.5)(original, shifted)
    np.testing.assert_array_equal(masks[0].numpy(), big)
    masks, _ = LightingMaskRule(shift=5.0, component_ratio=0.0)(original, shifted)
    np.testing.assert_array_equal(masks[0].numpy(), obj)
    # Diagonal neighbours are one component (8-connectivity, as skimage's default labelling).
    diagonal = np.zeros((H, W), dtype=bool)
    diagonal[np.arange(10), np.arange(10)] = True
    np.testing.assert_array_equal(connected_components_filter(diagonal | square(2, 20, 20), 0.5), diagonal)


def test_lighting_rejects_large_empty_and_unimodal():
    large, ok = square(24, 0, 0), square(10)  # 0.56 and 0.1 of the image
    original, shifted = lighting_pair([large, ok, np.zeros((H, W), bool)])
    result = LightingMaskRule(shift=5.0).evaluate(original, shifted)
    assert result.reasons.tolist() == [AREA_TOO_LARGE, KEPT, AREA_TOO_SMALL]
    # Unimodal: the shift brightens the object only a hair, so every value sits in one histogram mode.
    original, shifted = lighting_pair([ok], step=0.01)
    result = LightingMaskRule(shift=5.0).evaluate(original, shifted)
    np.testing.assert_array_equal(result.masks[0].numpy(), ok)
    assert result.reasons.tolist() == [NOT_BIMODAL]
    assert LightingMaskRule(shift=5.0, bimodality=0)(original, shifted)[1].item()
    assert not LightingMaskRule(shift=5.0, max_area=0.05)(*lighting_pair([ok]))[1].item()


def test_histogram_matches_torch_histc_and_peaks_count_modes():
    images = torch.rand(3, 3, 16, 16) * 2 - 1
    raw = smoothed_histograms(images, bins=12, window=1)
    for image, histogram in zip(images, raw):
        np.testing.assert_array_equal(histogram.numpy(), torch.histc(image, 12, -1, 1).numpy())
    smoothed = smoothed_histograms(images, bins=12, window=3)
    padded = torch.nn.functional.pad(raw, (1, 1))
    np.testing.assert_allclose(smoothed.numpy(), (padded[:, :-2] + padded[:, 1:-1] + padded[:, 2:]).numpy())
    cases = {
        (0, 0, 5, 10, 5, 0, 0): 1,  # the official >= comparison would count the empty ends too (3)
        (5, 1, 5): 2,
        (0, 5, 5, 0): 1,  # a flat top counts once
        (3, 3, 3): 1,
        (0, 0, 0): 0,
        (10, 5, 1): 1,
        (1, 5, 10): 1,
        (4, 0, 0, 4): 2,
        (1, 3, 2, 2, 5, 1): 2,
    }
    for histogram, peaks in cases.items():
        assert count_peaks(np.array([histogram]))[0] == peaks, histogram


# ----------------------------------------------------------------------------- options
def test_shift_defaults_scale_with_the_directions_file():
    directions = Directions(torch.eye(4), generator="procedural", method="test", shift_scale=3.0)
    assert IntensityMaskRule().for_directions(directions).shift == pytest.approx(13.0)
    assert LightingMaskRule().for_directions(directions).shift == pytest.approx(2.5)
    assert LightingMaskRule(shift=7.0).for_directions(directions).shift == 7.0
    per_direction = Directions(torch.eye(4), generator="procedural", method="hessian", shift_scale=3.0,
                               stats={"shift_scales": [12.0, float("nan"), 0.0, 1.2]})
    assert LightingMaskRule().for_directions(per_direction, 0).shift == pytest.approx(10.0)
    assert LightingMaskRule().for_directions(per_direction, 1).shift == pytest.approx(2.5)  # invalid entry: file scale
    assert LightingMaskRule().for_directions(per_direction, 3).shift == pytest.approx(1.0)
    rule = build_rule("lighting", max_area=0.4, component_ratio=0.1, bimodality=3)
    assert rule_from_config(rule.config()) == rule


@pytest.mark.parametrize(
    "name, options",
    [
        ("watershed", {}),
        ("lighting", {"threshold": 0.9}),
        ("intensity", {"component_ratio": 0.2}),
        ("intensity", {"threshold": 1.5}),
        ("intensity", {"min_area": 0.6, "max_area": 0.5}),
        ("lighting", {"max_area": -0.1}),
        ("lighting", {"shift": -5.0}),
        ("lighting", {"bimodality": -1}),
        ("lighting", {"component_ratio": 1.0}),
        ("lighting", {"max_border": 1.5}),
        ("lighting", {"smooth": 4}),
        ("intensity", {"smooth": -1}),
    ],
)
def test_bad_rule_options_are_user_errors(name, options):
    with pytest.raises(UserError):
        build_rule(name, **options)
