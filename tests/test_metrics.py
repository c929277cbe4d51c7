"""saliency.metrics: hand-computed cases, a literal re-implementation of the papers' max_f_beta, and
equality with pysodmetrics 1.6 on every toolbox metric they share."""

import warnings

import numpy as np
import pytest

from discovery.errors import UserError
from saliency import metrics as M


def _blob(rng, h, w):
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w
    ry, rx = rng.uniform(0.15, 0.35) * h, rng.uniform(0.15, 0.35) * w
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1


def _pairs(n=8, seed=0):
    """Blob masks of assorted sizes with noisy, blurred predictions, plus the degenerate cases."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(n):
        h, w = int(rng.integers(30, 70)), int(rng.integers(30, 90))
        gt = _blob(rng, h, w)
        pred = gaussian_filter(gt.astype(float), 2 + i % 3) + rng.normal(0, 0.15, (h, w))
        if i % 4 == 3:
            pred = 1 - pred  # a bad prediction too
        pairs.append((np.clip(pred, 0, 1), gt))
    for i in range(2):  # two objects, one cut by the image border
        h, w = 40, 56
        gt = _blob(rng, h, w) | _blob(rng, h, w)
        gt[:, : 4 + 6 * i] = True
        pairs.append((np.clip(gaussian_filter(gt.astype(float), 3) + rng.normal(0, 0.1, (h, w)), 0, 1), gt))
    h, w = 24, 32
    gt = _blob(rng, h, w)
    pairs += [
        (np.zeros((h, w)), gt),  # empty prediction
        (np.ones((h, w)), gt),  # all-ones prediction
        (rng.random((h, w)), np.zeros((h, w), bool)),  # empty GT
        (np.zeros((h, w)), np.zeros((h, w), bool)),  # empty prediction and GT
        (rng.random((h, w)), np.ones((h, w), bool)),  # all-object GT
        (np.full((h, w), 0.5), gt),  # constant prediction
    ]
    return pairs


def _reference_max_f_beta(pairs, beta2=0.3):
    """The papers' code path, written out: a loop over thresholds and images."""
    thresholds = np.arange(0.0, 1.0, 1.0 / 255)
    f = np.zeros((len(pairs), len(thresholds)))
    for i, (pred, gt) in enumerate(pairs):
        for k, t in enumerate(thresholds):
            mask = pred > t
            tp = np.sum(mask & gt)
            p = 1.0 if mask.sum() == 0 else tp / mask.sum()
            r = 1.0 if gt.sum() == 0 else tp / gt.sum()
            with np.errstate(invalid="ignore", divide="ignore"):
                value = (1 + beta2) * p * r / (beta2 * p + r)
            f[i, k] = 0.0 if np.isnan(value) else value
    return f.mean(0).max()


def _computed(pairs):
    acc = M.SaliencyMetrics()
    for pred, gt in pairs:
        acc.update(pred, gt)
    return acc.compute()["metrics"]


# ---------------------------------------------------------------------------------------------
# Hand-computed cases


def test_two_by_two_by_hand():
    pred = np.array([[0.9, 0.6], [0.3, 0.1]])
    gt = np.array([[1, 0], [1, 0]], dtype=bool)
    m = _computed([(pred, gt)])
    # thresholds in [0.6, 0.9): only 0.9 is positive -> P = 1, R = 0.5 -> F = 1.3 * 0.5 / 0.8
    assert m["max_f_beta"] == pytest.approx(1.3 * 0.5 / 0.8)
    assert m["iou"] == pytest.approx(1 / 3)  # {0.9, 0.6} vs {0.9, 0.3}
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["mae"] == pytest.approx((0.1 + 0.6 + 0.7 + 0.1) / 4)


def test_empty_prediction():
    gt = np.zeros((10, 10), bool)
    gt[2:6, 3:8] = True  # 20 of 100 pixels
    m = _computed([(np.zeros((10, 10)), gt)])
    assert m["max_f_beta"] == 0.0  # P = 1 (empty), R = 0 -> F = 0
    assert m["iou"] == 0.0
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["mae"] == pytest.approx(0.2)
    # the toolbox's lowest threshold (pred >= 0) takes every pixel: P = 0.2, R = 1
    assert m["max_f"] == pytest.approx(1.3 * 0.2 / (0.3 * 0.2 + 1))
    assert m["adaptive_f"] == pytest.approx(1.3 * 0.2 / (0.3 * 0.2 + 1))  # 2 * mean = 0 -> pred >= 0


def test_empty_gt():
    gt = np.zeros((8, 8), bool)
    both_empty = _computed([(np.zeros((8, 8)), gt)])
    assert both_empty["max_f_beta"] == 1.0  # P = 1, R = 1
    assert both_empty["iou"] == 1.0 and both_empty["accuracy"] == 1.0
    assert both_empty["mae"] == 0.0 and both_empty["s_measure"] == 1.0
    assert both_empty["weighted_f"] == 0.0  # the toolbox scores an empty GT 0
    all_on = _computed([(np.ones((8, 8)), gt)])
    assert all_on["max_f_beta"] == 0.0  # P = 0, R = 1 -> F = 0
    assert all_on["iou"] == 0.0 and all_on["accuracy"] == 0.0
    assert all_on["mae"] == 1.0 and all_on["s_measure"] == 0.0


def test_all_ones_prediction():
    gt = np.zeros((10, 20), bool)
    gt[:, :5] = True  # a = 0.25
    m = _computed([(np.ones((10, 20)), gt)])
    a = 0.25
    assert m["max_f_beta"] == pytest.approx(1.3 * a / (0.3 * a + 1))
    assert m["iou"] == pytest.approx(a) and m["accuracy"] == pytest.approx(a)
    assert m["mae"] == pytest.approx(1 - a)


def test_perfect_prediction():
    gt = _blob(np.random.default_rng(1), 40, 50)
    m = _computed([(gt.astype(float), gt), ((gt * 255).astype(np.uint8), gt)])
    for key in ("max_f_beta", "iou", "accuracy", "max_f", "adaptive_f", "s_measure", "weighted_f", "max_iou"):
        assert m[key] == pytest.approx(1.0, abs=1e-9), key
    assert m["mae"] == 0.0
    assert m["max_e"] == pytest.approx(gt.size / (gt.size - 1))  # the toolbox divides by N - 1


def test_max_f_beta_matches_the_papers_loop():
    pairs = _pairs(6, seed=3)
    assert _computed(pairs)["max_f_beta"] == pytest.approx(_reference_max_f_beta(pairs), abs=1e-12)
    # uint8 maps take the look-up-table path; same answer as their float values
    as_u8 = [((p * 255).round().astype(np.uint8), g) for p, g in pairs]
    as_float = [(p / 255.0, g) for p, g in as_u8]
    assert _computed(as_u8)["max_f_beta"] == pytest.approx(_reference_max_f_beta(as_float), abs=1e-12)


def test_paper_bins_are_exact_at_threshold_boundaries():
    grid = np.arange(256) / 255
    values = np.concatenate([grid, np.nextafter(grid, 2), np.nextafter(grid, -1), M.PAPER_THRESHOLDS, np.random.default_rng(0).random(5000)])
    values = np.clip(values, 0, 1)
    assert np.array_equal(M._paper_bins(values), np.searchsorted(M.PAPER_THRESHOLDS, values, side="left"))


# ---------------------------------------------------------------------------------------------
# pysodmetrics


def _pysod(pairs):
    import py_sod_metrics as P

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fm, mae, sm, em, wfm = P.Fmeasure(), P.MAE(), P.Smeasure(), P.Emeasure(), P.WeightedFmeasure()
        iou = P.FmeasureV2({"iou": P.IOUHandler(with_dynamic=True, with_adaptive=False)})
        for pred, gt in pairs:
            for metric in (fm, mae, sm, em, wfm, iou):
                metric.step(pred.astype(np.float64), gt, normalize=False)
        f = fm.get_results()
        e = em.get_results()["em"]
        return {
            "max_f": M._f_of(f["pr"]["p"], f["pr"]["r"]).max(),
            "mean_f": f["fm"]["curve"].mean(),
            "max_f_of_mean_curve": f["fm"]["curve"].max(),
            "adaptive_f": f["fm"]["adp"],
            "mae": mae.get_results()["mae"],
            "s_measure": sm.get_results()["sm"],
            "mean_e": e["curve"].mean(),
            "max_e": e["curve"].max(),
            "adaptive_e": e["adp"],
            "weighted_f": wfm.get_results()["wfm"],
            "max_iou": iou.get_results()["iou"]["dynamic"].max(),
            "pr": f["pr"],
        }


@pytest.mark.parametrize("kind", ["float", "uint8"])
def test_toolbox_metrics_match_pysodmetrics(kind):
    pairs = _pairs(8)
    if kind == "uint8":
        ours_in = [((p * 255).astype(np.uint8), g) for p, g in pairs]
        ref_in = [(u / 255.0, g) for u, g in ours_in]
    else:
        ours_in = ref_in = pairs
    acc = M.SaliencyMetrics()
    for pred, gt in ours_in:
        acc.update(pred, gt)
    result = acc.compute()
    ref = _pysod(ref_in)
    for key, value in ref.items():
        if key != "pr":
            assert result["metrics"][key] == pytest.approx(value, abs=1e-6), key
    # curves in ascending threshold order; pysodmetrics stores them descending
    assert np.allclose(result["curves"]["precision"], ref["pr"]["p"][::-1], atol=1e-9)
    assert np.allclose(result["curves"]["recall"], ref["pr"]["r"][::-1], atol=1e-9)


def test_single_metric_accumulators_agree_with_the_composite():
    pairs = _pairs(4, seed=5)
    composite = _computed(pairs)
    for cls in (M.MaxFBeta, M.IoUAccuracy, M.FMeasure, M.MAE, M.SMeasure, M.EMeasure, M.WeightedFMeasure, M.MaxIoU):
        metric = cls()
        for pred, gt in pairs:
            metric.update(pred, gt)
        for key, value in metric.compute().items():
            assert value == pytest.approx(composite[key], abs=1e-12), (cls.__name__, key)
        metric.reset()
        assert len(metric) == 0


def test_s_measure_is_finite_when_the_centroid_hits_the_border():
    gt = np.zeros((6, 6), bool)
    gt[:, 5] = True  # centroid in the last column: pysodmetrics gives NaN here
    stats = M.image_statistics(np.random.default_rng(0).random((6, 6)), gt)
    assert np.isfinite(stats["s_measure"])


# ---------------------------------------------------------------------------------------------
# Inputs


def test_masks_binarised_at_128():
    gt = np.array([[127, 128], [255, 0]], dtype=np.uint8)
    assert M.binarize_mask(gt).tolist() == [[False, True], [True, False]]


def test_bad_inputs_are_user_errors():
    gt = np.zeros((4, 4), bool)
    with pytest.raises(UserError, match="differs"):
        M.image_statistics(np.zeros((4, 5)), gt)
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        M.image_statistics(np.full((4, 4), 3.0), gt)
    with pytest.raises(UserError, match="NaN"):
        M.image_statistics(np.full((4, 4), np.nan), gt)
    with pytest.raises(UserError, match="HxW"):
        M.image_statistics(np.zeros((4, 4, 3)), gt)
    with pytest.raises(ValueError):
        M.MAE().compute()


def test_minmax_normalisation():
    pred = np.array([[0.2, 0.4], [0.4, 0.6]])
    gt = np.array([[0, 1], [1, 1]], dtype=bool)
    plain = M.image_statistics(pred, gt, parts={"mae"})["mae"]
    stretched = M.image_statistics(pred, gt, parts={"mae"}, normalize="minmax")["mae"]
    assert plain == pytest.approx((0.2 + 0.6 + 0.6 + 0.4) / 4)
    assert stretched == pytest.approx((0 + 0.5 + 0.5 + 0) / 4)
