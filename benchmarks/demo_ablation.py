"""The ablations of benchmarks/results/demo.md: each lever's checkpoint on the val and test splits.

Two tables, each from its own runs (CPU, seed 0, in this order):

``2026-12-01`` (the previous demos; writes results/demo_ablation.json)::

    git show 37759ea:saliency/configs/demo.yaml > /tmp/old-demo.yaml   # the SeFa demo (lighting masks)
    saliency pipeline --config /tmp/old-demo.yaml --out outputs/demo --device cpu
    saliency self-train --checkpoint outputs/demo/train-segmenter/segmenter.pt --images ../shared/data/weizmann-horse/images \\
        --list data/manifests/weizmann-horse.train-unlabelled.txt --synthetic outputs/demo/synthesize --out outputs/st1 --rounds 2
    # saliency/configs/demo.yaml of 4286f70 without its self_train section (evaluate split: val):
    saliency pipeline --config /tmp/mk.yaml --out outputs/mkpipe --device cpu
    saliency self-train --checkpoint outputs/mkpipe/train-segmenter/segmenter.pt --images ../shared/data/weizmann-horse/images \\
        --list data/manifests/weizmann-horse.train-unlabelled.txt --synthetic outputs/mkpipe/synthesize --out outputs/st2 --rounds 2

``2026-12-02`` (from the demo of 4286f70 to today's; writes results/demo_ablation_2026-12-02.json)::

    git show 4286f70:saliency/configs/demo.yaml | sed 's/^  split: test/  split: val/' > /tmp/demo-val.yaml
    saliency pipeline --config /tmp/demo-val.yaml --out outputs/dval --device cpu    # the 4286f70 demo, scored on val
    ST="saliency self-train --checkpoint outputs/dval/train-segmenter/segmenter.pt --images ../shared/data/weizmann-horse/images
        --list data/manifests/weizmann-horse.train-unlabelled.txt --synthetic outputs/dval/synthesize --device cpu"
    $ST --out outputs/s1 --rounds 4 --refine crf --tta flip               # labels: crf + flip (today's demo: rounds 1-3)
    $ST --out outputs/s2 --rounds 3 --refine bilateral --tta flip         # labels: bilateral + flip
    $ST --out outputs/s3 --rounds 3 --refine crf --tta flip --keep 0.75   # labels: crf + flip, three quarters kept

Usage: python benchmarks/demo_ablation.py [2026-12-01|2026-12-02]   (default: 2026-12-02)
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)
import saliency  # noqa: E402

TABLES = {
    "2026-12-01": ("demo_ablation.json", [
        ("today's demo: SeFa direction, lighting masks", "outputs/demo/train-segmenter/segmenter.pt", "none", "none"),
        ("+ bilateral refinement at evaluation", "outputs/demo/train-segmenter/segmenter.pt", "bilateral", "none"),
        ("+ self-training, 2 rounds (SeFa chain)", "outputs/st1/segmenter.pt", "none", "none"),
        ("optimised direction + two-direction masks", "outputs/mkpipe/train-segmenter/segmenter.pt", "none", "none"),
        ("  + bilateral refinement", "outputs/mkpipe/train-segmenter/segmenter.pt", "bilateral", "none"),
        ("  + dense-CRF refinement", "outputs/mkpipe/train-segmenter/segmenter.pt", "crf", "none"),
        ("  + self-training round 1", "outputs/st2/round-01/train/segmenter.pt", "none", "none"),
        ("  + self-training round 1 + bilateral (the demo)", "outputs/st2/round-01/train/segmenter.pt", "bilateral", "none"),
        ("  + self-training round 1 + dense CRF", "outputs/st2/round-01/train/segmenter.pt", "crf", "none"),
        ("  + self-training round 2 + bilateral", "outputs/st2/segmenter.pt", "bilateral", "none"),
    ]),
    "2026-12-02": ("demo_ablation_2026-12-02.json", [
        ("the 4286f70 demo: 1 round (bilateral labels), bilateral", "outputs/dval/self-train/segmenter.pt", "bilateral", "none"),
        ("  + flip averaging at evaluation", "outputs/dval/self-train/segmenter.pt", "bilateral", "flip"),
        ("  + flip averaging, dense CRF at evaluation", "outputs/dval/self-train/segmenter.pt", "crf", "flip"),
        ("no self-training, crf + flip at evaluation", "outputs/dval/train-segmenter/segmenter.pt", "crf", "flip"),
        ("labels by crf + flip: round 1", "outputs/s1/round-01/train/segmenter.pt", "crf", "flip"),
        ("labels by crf + flip: round 2", "outputs/s1/round-02/train/segmenter.pt", "crf", "flip"),
        ("labels by crf + flip: round 3 (today's demo)", "outputs/s1/round-03/train/segmenter.pt", "crf", "flip"),
        ("  round 3, bilateral + flip at evaluation", "outputs/s1/round-03/train/segmenter.pt", "bilateral", "flip"),
        ("  round 3, crf without flip at evaluation", "outputs/s1/round-03/train/segmenter.pt", "crf", "none"),
        ("labels by crf + flip: round 4", "outputs/s1/round-04/train/segmenter.pt", "crf", "flip"),
        ("labels by bilateral + flip: round 3", "outputs/s2/round-03/train/segmenter.pt", "crf", "flip"),
        ("labels by crf + flip, keep 0.75: round 3", "outputs/s3/round-03/train/segmenter.pt", "crf", "flip"),
    ]),
}
table = sys.argv[1] if len(sys.argv) > 1 else "2026-12-02"
filename, rows = TABLES[table]
KEYS = ("iou", "max_f_beta", "accuracy", "mae")
root = "../shared/data/weizmann-horse"
out = []
for name, ckpt, refine, tta in rows:
    entry = {"lever": name, "checkpoint": ckpt, "refine": refine, "tta": tta}
    for split in ("val", "test"):
        r = saliency.evaluate("weizmann-horse", out=f"outputs/ablation/{split}", root=root, checkpoint=ckpt, split=split, short_side=64,
                              refine=refine, tta=tta, progress=False, workers=1, device="cpu")
        entry[split] = {k: r["metrics"][k] for k in KEYS}
    out.append(entry)
    print(" | ".join([name, refine, tta] + [f"{entry[s][k]:.3f}" for s in ("val", "test") for k in KEYS[:3]]), flush=True)
for split in ("val", "test"):
    r = saliency.evaluate("weizmann-horse", out=f"outputs/ablation/center-prior-{split}", root=root, baseline="center-prior", split=split,
                          progress=False, workers=1)
    out.append({"lever": "centred Gaussian prior (baseline)", split: {k: r["metrics"][k] for k in KEYS}})
(ROOT / "benchmarks" / "results" / filename).write_text(json.dumps(out, indent=2) + "\n")
