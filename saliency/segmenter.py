"""The segmenter: a segmentation-models-pytorch UNet with one logit channel, and its file format.

``segmenter.pt`` is the shippable artefact of ``saliency train-segmenter`` and the input of
``saliency evaluate --checkpoint``::

    {"format": "saliency.segmenter/1", "model": state_dict,
     "config": {"encoder", "encoder_depth", "decoder_channels", "image_size", "mean", "std", ...},
     "manifest": run_manifest(...)}

``load_segmenter`` rebuilds the network from ``config`` (never downloading encoder weights: the
file holds them) and returns a ``Segmenter`` whose ``predict`` maps any uint8 image to a saliency
map in [0, 1] at the image's own size, with the same normalisation as in training.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from discovery.errors import UserError

FORMAT = "saliency.segmenter/1"
TRAINING_FORMAT = "saliency.segmenter-training/1"  # checkpoint.pt of a run; load_segmenter reads it too
DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)
# smp encoders expect ImageNet statistics; we keep them for random init too so that
# `--encoder-weights imagenet` and random init share one input convention.
TTA_MODES = ("none", "flip")  # test-time augmentation of Segmenter: none, or averaging with the mirror image
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_SUGGESTED_ENCODERS = "resnet18, resnet34, mobilenet_v2, efficientnet-b0 or tu-<any timm model>"


def check_tta(tta: str) -> str:
    """``tta`` itself if it is one of TTA_MODES, else the one-line error naming ``--tta``."""
    if tta not in TTA_MODES:
        raise UserError(f"--tta {tta}: expected one of {', '.join(TTA_MODES)}")
    return tta


def default_decoder_channels(encoder_depth: int) -> tuple[int, ...]:
    """smp's default decoder widths, cut to the encoder depth (as smp requires one per level)."""
    return DEFAULT_DECODER_CHANNELS[:encoder_depth] if encoder_depth <= 5 else DEFAULT_DECODER_CHANNELS


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def build_segmenter(
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    *,
    encoder_depth: int = 5,
    decoder_channels: tuple[int, ...] | list[int] | None = None,
) -> nn.Module:
    """``smp.Unet(classes=1)`` returning logits (N, 1, H, W); H and W must be multiples of 2**depth.

    ``encoder_weights=None`` is random initialisation (works offline). ``"imagenet"`` (or any
    name smp knows for that encoder) is fetched from the Hugging Face hub or its local cache;
    without internet and without a cached copy it is a one-line UserError.
    """
    import segmentation_models_pytorch as smp

    if not 1 <= int(encoder_depth) <= 5:
        raise UserError(f"--encoder-depth {encoder_depth}: must be between 1 and 5")
    decoder_channels = tuple(int(c) for c in (decoder_channels or default_decoder_channels(encoder_depth)))
    if len(decoder_channels) != encoder_depth or min(decoder_channels) < 1:
        raise UserError(f"--decoder-channels {','.join(map(str, decoder_channels))}: need {encoder_depth} positive widths, one per encoder level")
    if encoder_weights in ("", "none", "None"):
        encoder_weights = None

    def construct():
        return smp.Unet(
            encoder_name=encoder,
            encoder_weights=encoder_weights,
            encoder_depth=int(encoder_depth),
            decoder_channels=decoder_channels,
            classes=1,
            activation=None,
        )

    if encoder_weights is None:
        try:
            return construct()
        except KeyError:
            raise UserError(f"--encoder {encoder}: not an encoder segmentation-models-pytorch knows (e.g. {_SUGGESTED_ENCODERS})") from None
        except (RuntimeError, ValueError) as exc:
            # timm rejects unknown "tu-" names with RuntimeError; smp rejects bad depths with ValueError
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"--encoder {encoder}: cannot build this UNet ({first})") from None

    # Pretrained encoder weights: read the cache when offline instead of retrying for half a minute.
    offline_patch = None
    if not _hub_reachable():
        try:
            from huggingface_hub import constants as hub_constants

            offline_patch = (hub_constants, hub_constants.HF_HUB_OFFLINE)
            hub_constants.HF_HUB_OFFLINE = True
        except Exception:  # an older or newer hub client without this switch: let it try
            offline_patch = None
    try:
        return construct()
    except KeyError as exc:
        message = str(exc).strip("'\"")
        if "weights" in message.lower():
            raise UserError(f"--encoder-weights {encoder_weights}: not available for encoder {encoder} ({message.splitlines()[0]})") from None
        raise UserError(f"--encoder {encoder}: not an encoder segmentation-models-pytorch knows (e.g. {_SUGGESTED_ENCODERS})") from None
    except Exception as exc:  # network and cache failures come in many types (OSError, hub errors, ValueError)
        raise UserError(
            f"--encoder-weights {encoder_weights}: could not load pretrained {encoder} weights "
            f"({type(exc).__name__}); they are downloaded from the Hugging Face hub, which needs internet "
            "(or a copy in the hub cache, HF_HOME); use the default random initialisation (no --encoder-weights) offline"
        ) from None
    finally:
        if offline_patch is not None:
            offline_patch[0].HF_HUB_OFFLINE = offline_patch[1]


def segmenter_config(
    encoder: str = "resnet18",
    encoder_weights: str | None = None,
    encoder_depth: int = 5,
    decoder_channels=None,
    image_size: int = 128,
    **extra,
) -> dict:
    """The architecture and input convention a segmenter file must record to be rebuilt."""
    return {
        "architecture": "smp.Unet",
        "encoder": encoder,
        "encoder_weights": encoder_weights,  # how it was initialised; loading never downloads
        "encoder_depth": int(encoder_depth),
        "decoder_channels": list(decoder_channels or default_decoder_channels(encoder_depth)),
        "image_size": int(image_size),
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        **extra,
    }


def normalize(images: torch.Tensor, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) network input; the one convention of training and prediction."""
    x = images.permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean_t) / std_t


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / torch.compile wrappers."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def save_segmenter(model: nn.Module, config: dict, path: str | Path, manifest: dict | None = None) -> None:
    """Write the shippable ``segmenter.pt`` atomically (CPU tensors, readable with weights_only)."""
    from discovery.io import atomic_torch_save

    import json

    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    # plain JSON types only (run_manifest's torch version is a str subclass that weights_only refuses)
    plain = json.loads(json.dumps({"config": dict(config), "manifest": manifest or {}}, default=str))
    atomic_torch_save({"format": FORMAT, "model": state, **plain}, path)


def as_rgb(image) -> np.ndarray:
    """Any uint8 image -> (H, W, 3) uint8: grey (H, W) or (H, W, 1) repeated, grey+alpha and RGBA
    composited on black (as ``discovery.images.read_image`` does for files)."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise TypeError(f"expected a uint8 image, got dtype {array.dtype}")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4) or array.shape[0] < 1 or array.shape[1] < 1:
        raise ValueError(f"expected an image (H, W), (H, W, 3) or (H, W, 4), got shape {array.shape}")
    channels = array.shape[2]
    if channels in (2, 4):
        alpha = array[:, :, -1:].astype(np.float32) / 255.0
        colour = array[:, :, :-1].astype(np.float32) * alpha
        array = np.clip(np.round(colour), 0, 255).astype(np.uint8)
        channels -= 1
    if channels == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def as_photo(image) -> np.ndarray:
    """A path, a PIL image or an array as uint8 (H, W, 3): EXIF orientation applied to files and PIL
    images, 16-bit and float arrays scaled (float arrays are taken to be in [0, 1])."""
    from discovery.images import read_image, to_8bit

    if isinstance(image, (str, Path)):
        return read_image(image, "RGB", exif=True)
    from PIL import Image, ImageOps

    if isinstance(image, Image.Image):
        return as_rgb(np.asarray(to_8bit(ImageOps.exif_transpose(image)).convert("RGBA" if "A" in image.mode else "RGB")))
    array = np.asarray(image)
    if array.dtype == np.uint16:
        array = np.round(array / 257.0).astype(np.uint8)
    elif array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise UserError("the image holds NaN or infinite values")
        array = np.round(np.clip(array, 0, 1) * 255).astype(np.uint8)
    return as_rgb(array)


class Segmenter:
    """A trained UNet ready for inference on images of any size.

    ``predict(image)`` takes a path, a PIL image or an array and returns the saliency map in [0, 1]
    at the image's own size; ``short_side="auto"`` predicts at the training resolution.
    ``tta="flip"`` averages the logits of each image and its mirror image (one more forward pass):
    the segmenter's errors are not mirror-symmetric, its object is."""

    def __init__(self, model: nn.Module, config: dict, device: torch.device | str = "cpu", manifest: dict | None = None,
                 tta: str = "none"):
        self.tta = check_tta(tta)
        self.device = torch.device(device)
        self.model = unwrap(model).to(self.device).eval()
        self.config = dict(config)
        self.manifest = manifest or {}
        self.multiple = 2 ** int(self.config.get("encoder_depth", 5))
        self.mean = tuple(self.config.get("mean", IMAGENET_MEAN))
        self.std = tuple(self.config.get("std", IMAGENET_STD))

    def __call__(self, image, short_side="auto") -> np.ndarray:
        return self.predict(image, short_side=short_side)

    @property
    def training_size(self) -> int:
        return int(self.config.get("image_size", 128))

    def resolve_short_side(self, short_side) -> int | None:
        """"auto" -> the training resolution; None or 0 -> full size; a number -> itself."""
        if short_side == "auto":
            return self.training_size
        return int(short_side) if short_side else None

    def prepare(self, image, short_side):
        """(network input (1, 3, h, w) padded to 2**depth, (h, w) before padding, the image's (H, W))."""
        rgb = as_photo(image)
        height, width = rgb.shape[:2]
        x = torch.from_numpy(np.ascontiguousarray(rgb) if rgb.flags.writeable else rgb.copy())[None].to(self.device)
        x = normalize(x, self.mean, self.std)
        if short_side:
            scale = float(short_side) / min(height, width)
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            if size != (height, width):
                x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
        h, w = x.shape[-2:]
        pad_h, pad_w = (-h) % self.multiple, (-w) % self.multiple
        if pad_h or pad_w:  # replicate the border: zero padding would look like a dark frame to the net
            x = F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")
        return x, (h, w), (height, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of a batch of prepared inputs."""
        # Photos come in many sizes: with cuDNN's autotuner on (training turns it on) every new
        # shape would be benchmarked first, seconds per image on a GPU. Off for inference.
        autotune, torch.backends.cudnn.benchmark = torch.backends.cudnn.benchmark, False
        try:
            logits = self.model(x)
            if self.tta == "flip":  # the padding moves to the left in the mirror image and back to the right after
                logits = (logits + self.model(x.flip(-1)).flip(-1)) / 2
            return logits
        finally:
            torch.backends.cudnn.benchmark = autotune

    @staticmethod
    def finish(logits: torch.Tensor, inner, outer) -> np.ndarray:
        """One image's logits (1, 1, h', w') -> its map in [0, 1] at (H, W)."""
        prob = torch.sigmoid(logits.float())[:, :, : inner[0], : inner[1]]
        if tuple(inner) != tuple(outer):
            prob = F.interpolate(prob, size=outer, mode="bilinear", align_corners=False)
        return prob[0, 0].clamp_(0, 1).cpu().numpy().astype(np.float32)

    @torch.no_grad()
    def predict(self, image, short_side="auto") -> np.ndarray:
        """A path, PIL image or array (H, W[, 1|3|4]) -> float32 (H, W) saliency in [0, 1].

        The image is resized so its shorter side is ``short_side`` ("auto": the training size,
        None: as is), padded to a multiple of 2**depth, segmented, cropped back and resized
        bilinearly to (H, W). The same code as ``predict_batch``, so both give the same maps."""
        return self.predict_batch([image], short_side=short_side, batch_size=1)[0]

    @torch.no_grad()
    def predict_batch(self, images, short_side="auto", batch_size: int = 32) -> list[np.ndarray]:
        """``predict`` for a list of images; same-shaped inputs share forward passes."""
        short_side = self.resolve_short_side(short_side)
        prepared = [self.prepare(image, short_side) for image in images]
        results: list[np.ndarray | None] = [None] * len(prepared)
        groups: dict[tuple, list[int]] = {}
        for i, (x, _, _) in enumerate(prepared):
            groups.setdefault(tuple(x.shape[-2:]), []).append(i)
        for members in groups.values():
            for start in range(0, len(members), batch_size):
                chunk = members[start : start + batch_size]
                logits = self.forward(torch.cat([prepared[i][0] for i in chunk]))
                for j, i in enumerate(chunk):
                    results[i] = self.finish(logits[j : j + 1], prepared[i][1], prepared[i][2])
        return results  # type: ignore[return-value]


def load_segmenter(path: str | Path, device="cpu", tta: str = "none") -> Segmenter:
    """Read ``segmenter.pt`` (or a training ``checkpoint.pt``); any unusable file is a one-line UserError."""
    from discovery.checkpoints import load_state_dict_strict, read_checkpoint

    expected = "a segmenter.pt written by `saliency train-segmenter`"
    data = read_checkpoint(path, expected)
    fmt = data.get("format")
    if fmt not in (FORMAT, TRAINING_FORMAT):
        raise UserError(f"{path}: not a segmenter file (format {fmt!r}, expected {FORMAT!r})")
    config = data.get("config")
    if not isinstance(config, dict) or "encoder" not in config or not isinstance(data.get("model"), dict):
        raise UserError(f"{path}: segmenter file without a usable 'config' or 'model' entry (truncated or hand-edited?)")
    model = build_segmenter(
        config["encoder"],
        None,
        encoder_depth=int(config.get("encoder_depth", 5)),
        decoder_channels=config.get("decoder_channels"),
    )
    try:
        load_state_dict_strict(model, data["model"], expected=f"the UNet its config describes (encoder {config['encoder']})")
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    if isinstance(device, str):
        from discovery.runtime import resolve_device

        device = resolve_device(device)
    return Segmenter(model, config, device, manifest=data.get("manifest"), tta=tta)
