"""Make docs/predict-example.jpg: overlays (top) and cut-outs (bottom) of the first three test photos.

    python docs/make_predict_example.py outputs/demo/self-train/segmenter.pt

It runs ``saliency.predict`` with the demo's evaluation settings (``--refine crf --tta flip``) on
horse003, horse004 and horse013 (the first three names of the test list, not picked by result)
and lays the outputs out on a checkerboard, each photo scaled to 240 px wide.
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import saliency  # noqa: E402

HORSES = ROOT.parent / "shared" / "data" / "weizmann-horse"
NAMES = [line.strip() for line in (HORSES / "test.txt").read_text().splitlines() if line.strip()][:3]
WIDTH, GAP = 240, 6


def checkerboard(size, cell=12):
    w, h = size
    y, x = np.mgrid[:h, :w]
    return Image.fromarray(np.where(((x // cell + y // cell) % 2)[..., None] == 0, 255, 204).repeat(3, 2).astype(np.uint8))


def main(checkpoint):
    out = ROOT / "outputs" / "predict-example"
    saliency.predict([HORSES / "images" / f"{n}.jpg" for n in NAMES], checkpoint=checkpoint, out=out, types="overlay,rgba",
                     refine="crf", tta="flip", device="cpu", progress=False)
    rows = [[], []]
    for name in NAMES:
        overlay, rgba = Image.open(out / f"{name}_overlay.png").convert("RGB"), Image.open(out / f"{name}_rgba.png")
        size = (WIDTH, round(overlay.height * WIDTH / overlay.width))
        rows[0].append(overlay.resize(size, Image.LANCZOS))
        cut = checkerboard(size)
        cut.paste(rgba.resize(size, Image.LANCZOS), (0, 0), rgba.resize(size, Image.LANCZOS))
        rows[1].append(cut)
    height = max(im.height for im in rows[0])
    sheet = Image.new("RGB", (3 * WIDTH + 2 * GAP, 2 * height + GAP), "white")
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            sheet.paste(im, (c * (WIDTH + GAP), r * (height + GAP)))
    sheet.save(ROOT / "docs" / "predict-example.jpg", quality=85)


if __name__ == "__main__":
    main(sys.argv[1])
