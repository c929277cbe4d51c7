"""Which direction and which shift sign a mask rule uses: ``--index I|auto`` and ``--sign 1|-1|auto``.

The background direction itself is decided in one place, ``discovery.background.choose_background``
(the file's recorded decision, else a ranking). What is left here is the mask rule's side: the
intensity rule wants the background brightened, the lighting rule wants it dimmed, and a short
probe checks that the chosen sign's masks look like objects (they stay off the image border).
"""

from __future__ import annotations

import torch

from discovery.errors import UserError
from saliency.masks import MaskRule, border_coverage


def rule_sign(rule: MaskRule, dimming_sign: int) -> int:
    """The shift sign a rule wants, from the sign that dims the background (discovery.background's)."""
    return -dimming_sign if getattr(rule, "brightens_background", False) else dimming_sign


def choose_sign(generator, directions, index: int, rule: MaskRule, *, seed: int = 0, samples: int = 64,
                batch_size: int = 32, device=None, prefer: int = 1, margin: float = 0.05) -> tuple[int, dict]:
    """The shift sign whose masks look like objects rather than backgrounds, from ``samples`` probe latents.

    A wrong sign makes the rule mark the background instead of the object, and backgrounds
    run into the image border while objects mostly sit inside it; so the sign whose kept
    masks cover less of the border wins. ``prefer`` (e.g. from the background ranking) wins
    unless the other sign's border coverage is lower by more than ``margin``, or it keeps
    no mask at all. Keep rates are reported but not used: with large objects a correct sign
    is often rejected more (area above the limit) than a wrong one.
    """
    from saliency.synthesis import PairSynthesizer

    probe = {}
    for sign in (1, -1):
        synthesizer = PairSynthesizer(generator, directions, index, rule, device, sign=sign)
        kept = total = 0
        border_sum = 0.0
        stream = torch.Generator().manual_seed(seed + 7919)  # the same probe latents for both signs
        while total < samples:
            _, masks, keep = synthesizer.sample(min(batch_size, samples - total), stream)
            border_sum += float(border_coverage(masks[keep]).sum())
            kept += int(keep.sum())
            total += len(keep)
        probe[f"{sign:+d}"] = {"keep_rate": kept / total, "border_coverage": border_sum / kept if kept else 1.0}
    mine, other = probe[f"{prefer:+d}"], probe[f"{-prefer:+d}"]
    switch = (mine["keep_rate"] == 0 and other["keep_rate"] > 0) or other["border_coverage"] + margin < mine["border_coverage"]
    return (-prefer if switch else prefer), probe


def parse_sign(sign) -> int | str:
    if sign == "auto":
        return sign
    try:
        value = int(sign)
    except (TypeError, ValueError):
        value = 0
    if value not in (1, -1):
        raise UserError(f"--sign {sign!r}: expected 1, -1 or auto")
    return value


def resolve_direction(generator, directions, rule: MaskRule, *, index="auto", sign="auto", seed: int = 0,
                      device=None, probe_samples: int = 64) -> tuple[int, int, dict]:
    """``(index, sign, provenance)`` for ``index`` = a row or "auto" and ``sign`` = 1, -1 or "auto".

    ``probe_samples`` latents per sign check the automatic sign (a fixed cost: callers making few
    pairs pass fewer)."""
    from discovery.background import choose_background

    provenance: dict = {}
    if index == "auto":
        index, dimming_sign, source = choose_background(generator, directions, seed=seed)
        provenance["index_choice"] = {"source": source, "index": index, "background_dimming_sign": dimming_sign}
    else:
        try:
            index = int(index)
        except (TypeError, ValueError):
            raise UserError(f"--index {index!r}: expected a direction number or 'auto'") from None
        directions.direction(index)  # range check, one-line error
        recorded = directions.background
        signs = directions.stats.get("background_sign")
        if recorded is not None and recorded["index"] == index:
            dimming_sign = recorded["sign"]
        elif isinstance(signs, (list, tuple)) and len(signs) == directions.count and signs[index] in (1, -1):
            dimming_sign = int(signs[index])
        else:
            dimming_sign = None
    sign = parse_sign(sign)
    if sign == "auto":
        prefer = rule_sign(rule, dimming_sign) if dimming_sign else 1
        sign, probe = choose_sign(generator, directions, index, rule, seed=seed, device=device, prefer=prefer, samples=probe_samples)
        provenance["sign_choice"] = {"rule": rule.name, "preferred": prefer, "probe": probe, "sign": sign}
    return int(index), int(sign), provenance
