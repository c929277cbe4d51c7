"""Reading the StyleGAN checkpoints people hold, without their code and without running any of it.

* NVlabs network pickles (stylegan2-ada-pytorch, stylegan3): every network is pickled through
  ``torch_utils.persistence``, as a record of its class name, its module's *source code* and its
  state. ``PersistenceUnpickler`` resolves only a fixed list of globals (tensor rebuilding, numpy
  arrays, ``OrderedDict``) and turns each persistent record into a ``PersistedModule`` (class name,
  init kwargs, parameters, buffers, children); the embedded source is never imported or executed,
  and any other global refuses the file.
* rosinality/stylegan2-pytorch checkpoints (``.pt``, a ``g_ema`` state dict): read with
  ``torch.load(weights_only=True)`` (its training checkpoints hold an ``argparse.Namespace``, the
  one extra class allowed) and renamed onto the NVlabs layout.

Both give a ``StyleGANCheckpoint``: the architecture, its constructor kwargs and a state dict in
the NVlabs layout, which ``build()`` loads strictly into this package's own modules.
"""

from __future__ import annotations

import argparse
import collections
import io
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from discovery.errors import UserError


@dataclass
class PersistedModule:
    """What a ``torch_utils.persistence`` record holds, as plain data."""

    class_name: str
    init_args: tuple
    init_kwargs: dict
    state: dict

    def tensors(self, prefix: str = "") -> dict[str, torch.Tensor]:
        """The module's state dict (parameters and persistent buffers, recursively)."""
        out = {}
        skipped = set(self.state.get("_non_persistent_buffers_set") or ())
        for name, value in (self.state.get("_parameters") or {}).items():
            if value is not None:
                out[prefix + name] = value.detach() if isinstance(value, torch.Tensor) else value
        for name, value in (self.state.get("_buffers") or {}).items():
            if value is not None and name not in skipped:
                out[prefix + name] = value
        for name, child in (self.state.get("_modules") or {}).items():
            if isinstance(child, PersistedModule):
                out.update(child.tensors(f"{prefix}{name}."))
            elif child is not None:
                raise UserError(f"the pickle holds a {type(child).__name__} inside {self.class_name}; expected persisted modules only")
        return out

    def child(self, name: str) -> "PersistedModule | None":
        value = (self.state.get("_modules") or {}).get(name)
        return value if isinstance(value, PersistedModule) else None

    def attribute(self, name: str, default=None):
        return self.state.get(name, default)


def _persisted_record(meta) -> PersistedModule:
    """Stands in for ``torch_utils.persistence._reconstruct_persistent_obj``: keeps the record, runs nothing."""
    meta = dict(meta)
    if meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError("a persistence record that is not a class record")
    state = dict(meta["state"])
    return PersistedModule(str(meta.get("class_name")), tuple(state.get("_init_args") or ()), dict(state.get("_init_kwargs") or {}), state)


def _load_storage_bytes(data: bytes):
    """``torch.storage._load_from_bytes``, but with ``weights_only`` (the bytes are a legacy torch.save of one storage)."""
    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _numpy_global(name: str):
    import numpy.core.multiarray as multiarray  # noqa: the pickles name numpy.core (numpy 1) or numpy._core (numpy 2)

    return getattr(multiarray, name)


_ALLOWED_GLOBALS = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persisted_record,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): dict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch.storage", "_load_from_bytes"): _load_storage_bytes,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED_GLOBALS[(_module, "_reconstruct")] = _numpy_global("_reconstruct")
    _ALLOWED_GLOBALS[(_module, "scalar")] = _numpy_global("scalar")


class RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class PersistenceUnpickler(pickle.Unpickler):
    """An unpickler for NVlabs network pickles that resolves only the globals such a pickle needs."""

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not used by network pickles")


@dataclass
class StyleGANCheckpoint:
    """A StyleGAN generator read from a file: its architecture, constructor kwargs and NVlabs-layout state dict."""

    architecture: str  # "stylegan2" or "stylegan3"
    kwargs: dict
    state_dict: dict
    source: str  # "nvlabs-pickle" or "rosinality"
    config: str = ""  # "T" / "R" for StyleGAN3
    notes: list = field(default_factory=list)
    estimate_w_avg: bool = False  # the file has no w_avg (rosinality training checkpoints)

    def build(self):
        from discovery.checkpoints import load_state_dict_strict
        from discovery.generators.stylegan2 import StyleGAN2Generator
        from discovery.generators.stylegan3 import StyleGAN3Generator

        cls = StyleGAN2Generator if self.architecture == "stylegan2" else StyleGAN3Generator
        try:
            module = cls(**self.kwargs)
        except (TypeError, ValueError) as exc:
            raise UserError(f"{self.source} {self.architecture}: cannot build the network from its recorded settings ({exc})") from None
        for key, value in self.state_dict.items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                raise UserError(f"{self.source} {self.architecture}: {key} holds NaN or infinite values")
        state = {k: v.float() if v.is_floating_point() else v for k, v in self.state_dict.items()}
        try:
            load_state_dict_strict(module, state, expected=f"the {self.architecture} network its recorded settings describe")
        except UserError as exc:
            raise UserError(f"{self.source}: {str(exc).removeprefix('state dict: ')}") from None
        if self.estimate_w_avg:
            with torch.no_grad():  # rosinality's mean_latent: the mean of mapped latents, here 10,000 with a fixed seed
                z = torch.randn(10_000, module.z_dim, generator=torch.Generator().manual_seed(0))
                module.mapping.w_avg.copy_(module.mapping(z)[:, 0].mean(dim=0))
        return module


# --- NVlabs pickles -------------------------------------------------------------------------------------------

_SG2_SYNTHESIS_KEYS = {"channel_base", "channel_max", "num_fp16_res", "conv_clamp"}
_SG2_IGNORED = {"fp16_channels_last", "fused_modconv_default", "use_noise", "kernel_size"}
_SG3_SYNTHESIS_KEYS = {"channel_base", "channel_max", "num_layers", "num_critical", "first_cutoff", "first_stopband",
                       "last_stopband_rel", "margin_size", "output_scale", "num_fp16_res", "conv_kernel", "filter_size",
                       "lrelu_upsampling", "use_radial_filters", "conv_clamp", "magnitude_ema_beta"}
_MAPPING_KEYS = {"num_layers", "embed_features", "layer_features", "lr_multiplier", "w_avg_beta", "activation"}
_GENERATOR_KEYS = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _generator_kwargs(record: PersistedModule, path: Path, network_key: str) -> tuple[str, dict, str]:
    where = f"{path} [{network_key}]"
    kwargs = _plain(record.init_kwargs)
    if record.init_args:
        names = list(_GENERATOR_KEYS) + ["mapping_kwargs", "synthesis_kwargs"]
        kwargs.update(dict(zip(names, _plain(list(record.init_args)))))
    missing = [k for k in _GENERATOR_KEYS if k not in kwargs]
    if missing:
        raise UserError(f"{where}: a {record.class_name} without {', '.join(missing)}; expected a StyleGAN2/3 Generator")
    synthesis = record.child("synthesis")
    if synthesis is None:
        raise UserError(f"{where}: {record.class_name} has no synthesis network; expected a StyleGAN2/3 Generator")
    synthesis_kwargs = dict(kwargs.pop("synthesis_kwargs", None) or {})
    mapping_kwargs = dict(kwargs.pop("mapping_kwargs", None) or {})
    synthesis_kwargs.update({k: kwargs.pop(k) for k in list(kwargs) if k not in _GENERATOR_KEYS})
    unknown_mapping = set(mapping_kwargs) - _MAPPING_KEYS
    if unknown_mapping or mapping_kwargs.get("activation", "lrelu") != "lrelu":
        raise UserError(f"{where}: mapping settings {sorted(unknown_mapping) or mapping_kwargs.get('activation')} are not supported")
    mapping_kwargs.pop("activation", None)
    mapping_kwargs.pop("w_avg_beta", None)
    if synthesis.child("input") is not None:
        architecture = "stylegan3"
        unknown = set(synthesis_kwargs) - _SG3_SYNTHESIS_KEYS
        config = "R" if synthesis_kwargs.get("use_radial_filters") else "T"
    elif synthesis.child("b4") is not None:
        architecture, config = "stylegan2", ""
        architecture_kind = synthesis_kwargs.pop("architecture", "skip")
        if architecture_kind != "skip":
            raise UserError(f"{where}: a StyleGAN2 generator with the {architecture_kind!r} architecture; only 'skip' is supported")
        filter_taps = synthesis_kwargs.pop("resample_filter", [1, 3, 3, 1])
        if list(filter_taps) != [1, 3, 3, 1]:
            raise UserError(f"{where}: resample filter {filter_taps} is not supported (expected [1, 3, 3, 1])")
        unknown = set(synthesis_kwargs) - _SG2_SYNTHESIS_KEYS - _SG2_IGNORED
        for key in _SG2_IGNORED:
            synthesis_kwargs.pop(key, None)
        # the conv clamp in effect is what the layers stored (its default differs between the two NVlabs repositories)
        block = synthesis.child("b4")
        layer = block.child("conv1") if block is not None else None
        if layer is not None and "conv_clamp" in layer.state:
            synthesis_kwargs["conv_clamp"] = layer.attribute("conv_clamp")
        if any(layer.attribute("use_noise", True) is False for layer in _sg2_layers(synthesis)):
            raise UserError(f"{where}: a StyleGAN2 generator without noise inputs is not supported")
    else:
        raise UserError(f"{where}: the synthesis network is neither StyleGAN2 (b4, b8, ...) nor StyleGAN3 (input, L0_...)")
    if unknown:
        raise UserError(f"{where}: {architecture} settings {sorted(unknown)} are not supported by this package")
    return architecture, {**{k: kwargs[k] for k in _GENERATOR_KEYS}, "mapping_kwargs": mapping_kwargs, **synthesis_kwargs}, config


def _sg2_layers(synthesis: PersistedModule):
    for block in (synthesis.state.get("_modules") or {}).values():
        if isinstance(block, PersistedModule):
            for name in ("conv0", "conv1"):
                if block.child(name) is not None:
                    yield block.child(name)


def read_network_pickle(path: Path, network_key: str = "G_ema") -> StyleGANCheckpoint:
    """The generator ``network_key`` of an NVlabs network pickle, read without running any code."""
    try:
        with open(path, "rb") as handle:
            data = PersistenceUnpickler(handle).load()
    except RefusedGlobal as refused:
        if refused.module.startswith("dnnlib.tflib"):
            raise UserError(f"{path}: a TensorFlow StyleGAN pickle; convert it first with NVlabs' legacy.py "
                            "(python legacy.py --source=FILE.pkl --dest=FILE-pytorch.pkl in stylegan2-ada-pytorch)") from None
        raise UserError(f"{path}: refused to load: the pickle names {refused.module}.{refused.name}, which a StyleGAN network "
                        "pickle does not need (only torch_utils.persistence records, tensors and numpy arrays are read)") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError, RuntimeError) as exc:
        raise UserError(f"{path}: not a readable network pickle ({type(exc).__name__}: {exc})") from None
    if isinstance(data, PersistedModule):
        data = {network_key: data}
    if not isinstance(data, dict):
        raise UserError(f"{path}: the pickle holds a {type(data).__name__}; expected a dict with G, D, G_ema")
    record = data.get(network_key)
    if not isinstance(record, PersistedModule):
        known = sorted(k for k, v in data.items() if isinstance(v, PersistedModule))
        raise UserError(f"{path}: no network {network_key!r} in the pickle (it holds {', '.join(known) or 'no networks'}); "
                        "choose one with --network-key")
    if record.class_name != "Generator":
        raise UserError(f"{path} [{network_key}]: a {record.class_name}, not a Generator; choose the generator with --network-key")
    architecture, kwargs, config = _generator_kwargs(record, path, network_key)
    return StyleGANCheckpoint(architecture, kwargs, record.tensors(), "nvlabs-pickle", config)


# --- rosinality checkpoints -----------------------------------------------------------------------------------


def _rosinality_to_nvlabs(state: dict, where: str) -> tuple[dict, dict]:
    """Rename a rosinality ``g_ema`` state dict onto the NVlabs StyleGAN2 layout; return (state, architecture facts)."""
    n_mlp = sum(1 for k in state if re.fullmatch(r"style\.\d+\.weight", k))
    if n_mlp == 0 or "input.input" not in state or "conv1.conv.weight" not in state:
        raise UserError(f"{where}: not a rosinality StyleGAN2 generator (no style.N.weight / input.input / conv1.conv.weight)")
    n_rgbs = sum(1 for k in state if re.fullmatch(r"to_rgbs\.\d+\.bias", k))
    resolution = 2 ** (n_rgbs + 2)
    out = {}
    for i in range(n_mlp):
        out[f"mapping.fc{i}.weight"] = state[f"style.{i + 1}.weight"]
        out[f"mapping.fc{i}.bias"] = state[f"style.{i + 1}.bias"]
    out["synthesis.b4.const"] = state["input.input"][0]

    def styled_conv(source: str, target: str, noise_key: str):
        out[f"{target}.weight"] = state[f"{source}.conv.weight"][0]
        out[f"{target}.affine.weight"] = state[f"{source}.conv.modulation.weight"]
        out[f"{target}.affine.bias"] = state[f"{source}.conv.modulation.bias"]
        out[f"{target}.noise_strength"] = state[f"{source}.noise.weight"].reshape([])
        out[f"{target}.bias"] = state[f"{source}.activate.bias"].reshape(-1)
        noise = state.get(f"noises.{noise_key}")  # absent from files saved without the fixed noise maps
        if noise is not None:
            out[f"{target}.noise_const"] = noise[0, 0]

    def to_rgb(source: str, target: str):
        out[f"{target}.weight"] = state[f"{source}.conv.weight"][0]
        out[f"{target}.affine.weight"] = state[f"{source}.conv.modulation.weight"]
        out[f"{target}.affine.bias"] = state[f"{source}.conv.modulation.bias"]
        out[f"{target}.bias"] = state[f"{source}.bias"].reshape(-1)

    try:
        styled_conv("conv1", "synthesis.b4.conv1", "noise_0")
        to_rgb("to_rgb1", "synthesis.b4.torgb")
        channels = {4: int(state["conv1.conv.weight"].shape[1])}
        for k in range(n_rgbs):
            res = 2 ** (k + 3)
            styled_conv(f"convs.{2 * k}", f"synthesis.b{res}.conv0", f"noise_{2 * k + 1}")
            styled_conv(f"convs.{2 * k + 1}", f"synthesis.b{res}.conv1", f"noise_{2 * k + 2}")
            to_rgb(f"to_rgbs.{k}", f"synthesis.b{res}.torgb")
            channels[res] = int(state[f"convs.{2 * k}.conv.weight"].shape[1])
    except KeyError as exc:
        raise UserError(f"{where}: incomplete rosinality generator (no {exc.args[0]})") from None
    from discovery.generators.stylegan2 import blur_filter

    for res in channels:
        out[f"synthesis.b{res}.resample_filter"] = blur_filter()
        for name in ("conv0", "conv1"):
            if f"synthesis.b{res}.{name}.weight" in out:
                out[f"synthesis.b{res}.{name}.resample_filter"] = blur_filter()
                out.setdefault(f"synthesis.b{res}.{name}.noise_const", torch.zeros(res, res))
    facts = {"n_mlp": n_mlp, "resolution": resolution, "style_dim": int(state["style.1.weight"].shape[1]), "channels": channels}
    return out, facts


def read_rosinality(path: Path, network_key: str = "g_ema", *, size: int | None = None, style_dim: int | None = None,
                    channel_multiplier: int | None = None, n_mlp: int | None = None) -> StyleGANCheckpoint:
    from discovery.checkpoints import read_checkpoint

    data = read_checkpoint(path, "a rosinality StyleGAN2 checkpoint (a dict with g_ema)", allowed_globals=(argparse.Namespace,))
    if network_key not in data and data and all(isinstance(v, torch.Tensor) for v in data.values()):
        data = {network_key: data}  # a bare generator state dict
    if network_key not in data:
        raise UserError(f"{path}: no {network_key!r} in the checkpoint (it holds {', '.join(map(str, data)) or 'nothing'}); "
                        "choose one with --network-key")
    state = data[network_key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{path} [{network_key}]: expected a state dict of tensors")
    where = f"{path} [{network_key}]"
    converted, facts = _rosinality_to_nvlabs(state, where)
    given = {"size": (size, facts["resolution"]), "style dim": (style_dim, facts["style_dim"]), "n_mlp": (n_mlp, facts["n_mlp"])}
    if channel_multiplier is not None:
        given["channel multiplier"] = (channel_multiplier, facts["channels"].get(64, 512) // 256 if facts["resolution"] >= 64 else None)
    for label, (flag, found) in given.items():
        if flag is not None and found is not None and int(flag) != int(found):
            raise UserError(f"{where}: the file's {label} is {found}, not {flag}")
    notes = []
    w_avg = data.get("latent_avg")
    if isinstance(w_avg, torch.Tensor) and w_avg.numel() == facts["style_dim"]:
        converted["mapping.w_avg"] = w_avg.reshape(-1).float()
    else:
        notes.append("w_avg estimated from 10,000 mapped latents (the file stores no latent_avg)")
    kwargs = {"z_dim": facts["style_dim"], "c_dim": 0, "w_dim": facts["style_dim"], "img_resolution": facts["resolution"],
              "img_channels": 3, "mapping_kwargs": {"num_layers": facts["n_mlp"]}, "channels": facts["channels"]}
    checkpoint = StyleGANCheckpoint("stylegan2", kwargs, converted, "rosinality", "", notes, estimate_w_avg=bool(notes))
    if checkpoint.estimate_w_avg:
        converted["mapping.w_avg"] = torch.zeros(facts["style_dim"])
    return checkpoint


def read_stylegan_checkpoint(path, network_key: str | None = None, **rosinality_options) -> StyleGANCheckpoint:
    """Read an NVlabs network pickle or a rosinality ``.pt``; anything else is a one-line UserError saying what it is."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise UserError(f"--weights {path}: a folder; expected a StyleGAN .pkl network pickle or a rosinality .pt checkpoint")
    if not path.is_file():
        raise UserError(f"--weights {path}: file not found")
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        raise UserError(f"--weights {path}: the file is empty")
    if head[:2] == b"PK":  # torch.save's zip format
        data_kind = "rosinality"
    elif head[:1] == b"\x80":
        data_kind = "pickle"
    else:
        raise UserError(f"--weights {path}: neither a network pickle nor a PyTorch checkpoint (starts with {head!r})")
    if data_kind == "pickle":
        try:
            return read_network_pickle(path, network_key or "G_ema")
        except UserError as first:
            try:  # a legacy (pre-zip) torch.save of a rosinality checkpoint is a pickle too
                return read_rosinality(path, network_key or "g_ema", **rosinality_options)
            except UserError:
                raise first from None
    return read_rosinality(path, network_key or "g_ema", **rosinality_options)
