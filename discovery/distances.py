"""Image distances for the Hessian method: D(reference, images) -> one scalar per pair.

``"mse"``: mean squared pixel difference of images in [-1, 1]. ``"feature"``: mean squared
difference of a feature network's outputs (a module the caller passes, or a TorchScript file;
a pickled module file only when trusted, since unpickling runs its code). ``"lpips"``: the LPIPS
package, when installed and its backbone weights are on disk. Any callable ``D(reference,
images)`` returning a scalar works too.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from discovery.errors import UserError

DISTANCES = ("mse", "feature", "lpips")

# File names torchvision gives the LPIPS backbones in its hub cache.
_LPIPS_BACKBONES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def make_distance(distance="mse", feature_net: nn.Module | None = None, *, lpips_net: str = "alex") -> Callable:
    """``D(reference, images) -> scalar``: the image distance whose Hessian is the metric.

    ``reference`` and ``images`` are (N, C, H, W) in [-1, 1]; D is averaged over the batch.
    """
    if callable(distance) and not isinstance(distance, str):
        if feature_net is not None:
            raise UserError("feature_net is only used with distance='feature'")
        return distance
    if distance == "features":  # the command line's spelling
        distance = "feature"
    if distance not in DISTANCES:
        raise UserError(f"--distance {distance!r}: unknown distance (known: {', '.join(DISTANCES)})")
    if feature_net is not None and distance != "feature":
        raise UserError(f"a feature network was given with --distance {distance}; use --distance feature to use it")
    if distance == "mse":
        return _mse
    if distance == "feature":
        if isinstance(feature_net, (str, Path)):
            feature_net = load_feature_net(feature_net)
        if feature_net is None:
            raise UserError("--distance feature needs a feature network (feature_net: an nn.Module mapping images in [-1, 1] to features)")
        feature_net = feature_net.eval()
        return _FeatureDistance(feature_net)
    return _lpips_distance(lpips_net)


def load_feature_net(path, trust: bool = False) -> nn.Module:
    """A feature network from a file: TorchScript (``torch.jit.save``), which runs no Python code
    when loaded; a pickled ``nn.Module`` only with ``trust=True``, since unpickling runs the file's code."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--feature-net {path}: file not found (expected a TorchScript module, torch.jit.save)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            net = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        if not trust:
            raise UserError(f"--feature-net {path}: not a TorchScript module ({type(exc).__name__}); save it with "
                            "torch.jit.save, or pass --trust-feature-net to unpickle a module you made yourself") from None
        try:
            net = torch.load(path, map_location="cpu", weights_only=False)  # the user asked for it: their own file
        except Exception as exc2:
            raise UserError(f"--feature-net {path}: not a readable TorchScript or pickled module ({type(exc2).__name__})") from None
    if not isinstance(net, nn.Module):
        raise UserError(f"--feature-net {path}: holds a {type(net).__name__}, not an nn.Module")
    for parameter in net.parameters():
        parameter.requires_grad_(False)
    return net.eval()


def _mse(reference: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    return (images - reference).pow(2).mean()


class _FeatureDistance:
    """Mean squared difference of ``net(images)`` (a tensor or a tuple/list/dict of tensors)."""

    def __init__(self, net: nn.Module):
        self.net = net

    def __call__(self, reference, images):
        return _feature_mse(self.net(reference), self.net(images))


def _feature_mse(a, b) -> torch.Tensor:
    return sum((x - y).pow(2).mean() for x, y in zip(_groups(a), _groups(b), strict=True))


def lpips_weights_path(net: str = "alex") -> Path:
    """Where torchvision (and so LPIPS) looks for the backbone weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _LPIPS_BACKBONES[net]


def _lpips_distance(net: str):
    if net not in _LPIPS_BACKBONES:
        raise UserError(f"LPIPS backbone {net!r}: unknown (known: {', '.join(_LPIPS_BACKBONES)})")
    try:
        import lpips
    except ImportError:
        raise UserError("--distance lpips needs the lpips package: pip install 'saliency[lpips]' (or use --distance mse / feature)") from None
    path = lpips_weights_path(net)
    if not path.is_file():
        raise UserError(
            f"--distance lpips: the {net} backbone weights are not on this machine; put {_LPIPS_BACKBONES[net]} "
            f"(torchvision's ImageNet weights) at {path} (or set TORCH_HOME), or use --distance mse / feature"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = lpips.LPIPS(net=net, verbose=False).eval().requires_grad_(False)
    for module in model.modules():  # in-place ReLUs do not mix with torch.func transforms
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return _LpipsDistance(model)


class _LpipsDistance:
    def __init__(self, model):
        self.net = model  # named like _FeatureDistance so .to(device) finds it

    def __call__(self, reference, images):
        return self.net(reference, images, normalize=False).mean()


def _distance_modules(distance_fn) -> list[nn.Module]:
    net = getattr(distance_fn, "net", None)
    return [net] if isinstance(net, nn.Module) else []


def _groups(features) -> tuple:
    """A feature network's output (a tensor or a tuple/list/dict of tensors) as a flat tuple of tensors."""
    if isinstance(features, torch.Tensor):
        return (features,)
    if isinstance(features, dict):
        return tuple(t for key in features for t in _groups(features[key]))
    if isinstance(features, (list, tuple)):
        return tuple(t for item in features for t in _groups(item))
    raise UserError(f"the feature network returned {type(features).__name__}; expected a tensor or a tuple/list/dict of tensors")
