"""GAN-based salient object detection: synthesize pairs, train a segmenter, evaluate it."""

__version__ = "0.1.0"
