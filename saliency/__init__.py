"""GAN-based salient object detection: synthesize pairs, train a segmenter, evaluate it.

One library call per stage, each taking its whole configuration as keyword arguments (the
command line and ``saliency pipeline`` only call these)::

    import discovery, saliency
    discovery.discover("horse-64", method="sefa", out="runs/d")
    saliency.synthesize("runs/d/directions.pt", "runs/pairs", n=3000, rule_options={"smooth": 3})
    saliency.train_segmenter("runs/seg", data="runs/pairs", steps=600, image_size=64)
    saliency.evaluate("weizmann-horse", checkpoint="runs/seg/segmenter.pt", out="runs/eval")
    saliency.predict("my_photos/", checkpoint="runs/seg/segmenter.pt", out="cutouts", types="rgba,mask")
    saliency.load_segmenter("runs/seg/segmenter.pt").predict("photo.jpg")  # float map in [0, 1]
"""

__version__ = "0.1.0"

# Lazy, so that `import saliency` (and `saliency --help`) does not import torch.
_EXPORTS = {
    "synthesize": "saliency.synthesis",
    "train_segmenter": "saliency.segmenter_training",
    "self_train": "saliency.self_training",
    "evaluate": "saliency.evaluation",
    "load_segmenter": "saliency.segmenter",
    "predict": "saliency.prediction",
    "export_segmenter": "saliency.export",
    "run_pipeline": "saliency.pipeline",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'saliency' has no attribute {name!r}")
