"""The ablation of benchmarks/results/demo.md: each lever's checkpoint on the val and test splits.

The checkpoints come from these runs (CPU, seed 0), in this order:

    git show 37759ea:saliency/configs/demo.yaml > /tmp/old-demo.yaml   # the previous demo (SeFa, lighting)
    saliency pipeline --config /tmp/old-demo.yaml --out outputs/demo --device cpu
    saliency self-train --checkpoint outputs/demo/train-segmenter/segmenter.pt --images ../shared/data/weizmann-horse/images \
        --list data/manifests/weizmann-horse.train-unlabelled.txt --synthetic outputs/demo/synthesize --out outputs/st1 --rounds 2
    # saliency/configs/demo.yaml without its self_train section (evaluate split: val):
    saliency pipeline --config /tmp/mk.yaml --out outputs/mkpipe --device cpu
    saliency self-train --checkpoint outputs/mkpipe/train-segmenter/segmenter.pt --images ../shared/data/weizmann-horse/images \
        --list data/manifests/weizmann-horse.train-unlabelled.txt --synthetic outputs/mkpipe/synthesize --out outputs/st2 --rounds 2

Usage: python benchmarks/demo_ablation.py   (writes benchmarks/results/demo_ablation.json)
"""

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.chdir(ROOT)
import saliency  # noqa: E402
rows = [
    ("today's demo: SeFa direction, lighting masks", "outputs/demo/train-segmenter/segmenter.pt", "none"),
    ("+ bilateral refinement at evaluation", "outputs/demo/train-segmenter/segmenter.pt", "bilateral"),
    ("+ self-training, 2 rounds (SeFa chain)", "outputs/st1/segmenter.pt", "none"),
    ("optimised direction + two-direction masks", "outputs/mkpipe/train-segmenter/segmenter.pt", "none"),
    ("  + bilateral refinement", "outputs/mkpipe/train-segmenter/segmenter.pt", "bilateral"),
    ("  + dense-CRF refinement", "outputs/mkpipe/train-segmenter/segmenter.pt", "crf"),
    ("  + self-training round 1", "outputs/st2/round-01/train/segmenter.pt", "none"),
    ("  + self-training round 1 + bilateral (the demo)", "outputs/st2/round-01/train/segmenter.pt", "bilateral"),
    ("  + self-training round 1 + dense CRF", "outputs/st2/round-01/train/segmenter.pt", "crf"),
    ("  + self-training round 2 + bilateral", "outputs/st2/segmenter.pt", "bilateral"),
]
out = []
for name, ckpt, refine in rows:
    entry = {"lever": name, "checkpoint": ckpt, "refine": refine}
    for split in ("val", "test"):
        r = saliency.evaluate("weizmann-horse", out=f"outputs/ablation/{split}", checkpoint=ckpt, split=split, short_side=64, refine=refine,
                              progress=False, workers=1, device="cpu")
        entry[split] = {k: r["metrics"][k] for k in ("iou", "max_f_beta", "accuracy", "mae")}
    out.append(entry)
    print(name, entry["val"], entry["test"], flush=True)
for split in ("val", "test"):
    r = saliency.evaluate("weizmann-horse", out=f"outputs/ablation/center-prior-{split}", baseline="center-prior", split=split, progress=False, workers=1)
    out.append({"lever": "centred Gaussian prior (baseline)", split: {k: r["metrics"][k] for k in ("iou", "max_f_beta", "accuracy", "mae")}})
json.dump(out, open(ROOT / 'benchmarks' / 'results' / 'demo_ablation.json', 'w'), indent=2)
