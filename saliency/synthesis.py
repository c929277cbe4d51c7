"""Synthetic image/mask pairs from a generator and its background direction.

``PairSynthesizer`` makes one batch of candidates: latents z, the images ``G(z)`` and
``G(z + sign * r * d)`` (one generator call on the concatenated batch), and the mask rule's
verdict. The segmenter trainer uses it directly for on-the-fly training; ``synthesize`` runs it
in a pipeline that writes a pairs folder (see ``saliency.pairs`` for the layouts).

Determinism: the latents of batch ``b`` come from a CPU random stream seeded by
``(seed, b)`` alone, every mask rule works per sample, and the pairs a rank writes are the
first ``quota`` kept candidates of its batches in order. A run is therefore a pure function of
its settings (and, on GPUs, of the kernels' arithmetic), and a resume regenerates exactly the
batches after the last committed unit, skipping the candidates that unit already holds.
With ``torchrun`` rank r of W takes the batches b with ``b % W == r`` and writes
``n // W`` pairs (plus one for the first ``n % W`` ranks) into its own shards; the set of pairs
depends on W, so a resume must use the same W.

Pipeline (one rank): the main thread draws latents and launches the generator and the device
half of the mask rule for batch b, starts an asynchronous copy of the uint8 images and masks to
pinned host memory, and only then hands batch b-1 (whose copy has finished) to a pool of
threads that run the host half of the rule (connected components) and encode PNGs. A writer
thread consumes the batches in order, appends kept pairs to the current shard and commits each
full shard by renaming it into place. Bounded queues keep memory flat.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from discovery.errors import UserError, library_call
from discovery.io import leaves_nothing_on_bad_input
from discovery.runtime import RankContext, check_resume, pin_cuda_device, rank_context  # noqa: F401  (RankContext: API)
from saliency.masks import KEPT, REASONS, MaskRule
from saliency.pairs import (
    MANIFEST,
    PAIRS_FORMAT,
    WRITERS,
    committed_units,
    encode_png,
    open_pairs,
    pair_key,
    prepare_folders,
    scan_units,
    write_preview,
)

RUN_FILE = "run.json"
QUEUE_DEPTH = 4  # batches in flight between the generator and the writer


# ----------------------------------------------------------------------------- determinism
def batch_generator(seed: int, batch_index: int) -> torch.Generator:
    """The CPU random stream of one batch: a function of (seed, batch index) only."""
    words = np.random.SeedSequence([seed & 0xFFFFFFFFFFFFFFFF, batch_index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(words[0]) << 31) ^ int(words[1]))


def batch_latents(generator, seed: int, batch_index: int, batch_size: int):
    """(z, condition) of batch ``batch_index``: what ``synthesize`` feeds the generator."""
    stream = batch_generator(seed, batch_index)
    z = generator.sample_latent(batch_size, stream)
    return z, generator.sample_condition(batch_size, stream)


def images_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8 on the same device (as ``discovery.images.to_uint8``)."""
    return images.detach().float().clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


# ----------------------------------------------------------------------------- latents from a file
class LatentBank:
    """Latents taken from a file (E-BigBiGAN: encoder embeddings of the target domain's photos) plus noise.

    ``draw(n, stream, batch_index)``: rows sampled with replacement from ``stream`` ("sample") or
    taken in order, batch after batch ("cycle"), plus ``noise`` * N(0, I) from the same stream, so a
    batch's latents stay a function of (seed, batch index)."""

    ORDERS = ("sample", "cycle")

    def __init__(self, matrix: torch.Tensor, noise: float = 0.2, order: str = "sample", source: str = "(in memory)"):
        if order not in self.ORDERS:
            raise UserError(f"--latent-order {order!r}: expected one of {', '.join(self.ORDERS)}")
        if not noise >= 0:
            raise UserError(f"--latent-noise {noise}: must not be negative")
        self.matrix, self.noise, self.order, self.source = matrix.float(), float(noise), order, source

    @classmethod
    def load(cls, path, dim_z: int, noise: float = 0.2, order: str = "sample") -> "LatentBank":
        from discovery.checkpoints import read_torch_file

        path = Path(path)
        if not path.is_file():
            raise UserError(f"--latents {path}: file not found (expected an (N, dim_z) .npy or .pt matrix)")
        if path.suffix.lower() == ".npy":
            try:
                data = torch.from_numpy(np.load(path, allow_pickle=False))
            except (ValueError, OSError, EOFError) as exc:
                raise UserError(f"--latents {path}: not a readable NumPy array ({str(exc).splitlines()[0][:120]})") from None
        else:
            data = read_torch_file(path, "latents: an (N, dim_z) tensor")
            if isinstance(data, dict) and len(data) == 1:
                data = next(iter(data.values()))
        if not isinstance(data, torch.Tensor) or not data.is_floating_point() or data.ndim != 2 or len(data) < 1:
            shape = tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__
            raise UserError(f"--latents {path}: holds {shape}, expected a floating-point (N, dim_z) matrix")
        if data.shape[1] != dim_z:
            raise UserError(f"--latents {path}: latents of width {data.shape[1]}, but the generator's dim_z is {dim_z}")
        if not torch.isfinite(data).all():
            raise UserError(f"--latents {path}: holds NaN or infinite values")
        return cls(data, noise, order, str(path.resolve()))

    def draw(self, n: int, stream: torch.Generator, batch_index: int | None = None) -> torch.Tensor:
        count = len(self.matrix)
        if self.order == "cycle" and batch_index is not None:
            rows = (batch_index * n + torch.arange(n)) % count
        else:
            rows = torch.randint(count, (n,), generator=stream)
        z = self.matrix[rows]
        return z + self.noise * torch.randn(z.shape, generator=stream) if self.noise else z

    def describe(self) -> dict:
        digest = hashlib.sha256(self.matrix.contiguous().numpy().astype("<f4").tobytes()).hexdigest()[:16]
        return {"path": self.source, "count": len(self.matrix), "noise": self.noise, "order": self.order, "sha256": digest}


# ----------------------------------------------------------------------------- one batch
def partner_of(directions, index: int) -> int | None:
    """The partner of direction ``index`` recorded in the file (an optimised v_l's v_d), if any."""
    recorded = directions.background or {}
    if recorded.get("index") == index and isinstance(recorded.get("partner"), int):
        return int(recorded["partner"])
    return None


class PairSynthesizer:
    """Candidate pairs from ``generator`` shifted along direction ``index`` of ``directions``.

    ``rule.shift`` (resolved for the directions file when None) times ``sign`` (+1 or -1) is the
    latent shift. ``sample(batch_size, torch_generator)`` returns, on the device,
    ``(images uint8 (N, H, W, 3), masks bool (N, H, W), keep bool (N,))``; callers that train
    on the fly use ``images[keep], masks[keep]``.
    """

    def __init__(self, generator, directions, index: int, rule: MaskRule, device=None, sign: float = 1.0,
                 latent_bank: LatentBank | None = None):
        if directions.dim_z != generator.dim_z:
            raise UserError(
                f"directions have dim_z {directions.dim_z} but generator {getattr(generator, 'name', '?')!r} has dim_z {generator.dim_z}"
            )
        if sign not in (1, -1):
            raise UserError(f"--sign {sign}: must be 1 or -1")
        self.device = torch.device(device) if device is not None else generator.device
        self.generator = generator.to(self.device)
        self.directions = directions
        self.index = int(index)
        self.sign = int(sign)
        self.rule = rule.for_directions(directions, self.index)
        self.direction = directions.direction(self.index).to(self.device)
        self.shift = self.sign * float(self.rule.shift)
        self.partner = partner_of(directions, self.index) if getattr(rule, "uses_partner", False) else None
        if getattr(rule, "uses_partner", False) and self.partner is None:
            raise UserError(f"the {rule.name} rule needs a partner direction for direction {self.index}: the directions file records "
                            "none (`saliency discover --method melas-kyriazi` writes one)")
        self.partner_direction = directions.direction(self.partner).to(self.device) if self.partner is not None else None
        self.latent_bank = latent_bank

    @property
    def resolution(self) -> int:
        return int(self.generator.resolution)

    def latents(self, batch_size: int, torch_generator: torch.Generator | None = None, batch_index: int | None = None):
        if self.latent_bank is not None:
            z = self.latent_bank.draw(batch_size, torch_generator if torch_generator is not None else torch.Generator(), batch_index)
            return z.to(self.device), self.generator.sample_condition(batch_size, torch_generator)
        z = self.generator.sample_latent(batch_size, torch_generator).to(self.device)
        return z, self.generator.sample_condition(batch_size, torch_generator)

    def batch_latents(self, seed: int, batch_index: int, batch_size: int):
        """The latents of batch ``batch_index`` of a run with ``seed`` (a function of both alone)."""
        return self.latents(batch_size, batch_generator(seed, batch_index), batch_index)

    @torch.no_grad()
    def generate(self, z: torch.Tensor, condition=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(G(z), reference, G(z + shift * d))`` in [-1, 1], from one generator call where the condition allows.

        The reference the rule compares with is G(z), or for a two-direction rule G(z + shift * partner)."""
        z = z.to(self.device)
        latents = [z, z + self.shift * self.direction.to(z.dtype)]
        if self.partner_direction is not None:
            latents.append(z + self.shift * self.partner_direction.to(z.dtype))
        if condition is None or isinstance(condition, torch.Tensor):
            repeated = None if condition is None else torch.cat([condition] * len(latents))
            images = self.generator(torch.cat(latents), repeated).split(len(z))
        else:
            images = [self.generator(latent, condition) for latent in latents]
        original, shifted = images[0], images[1]
        return original, (images[2] if len(images) > 2 else original), shifted

    @torch.no_grad()
    def propose(self, z, condition=None):
        """Device half: (images uint8 (N, H, W, 3), masks bool, reasons int8), all still on the device."""
        original, reference, shifted = self.generate(z, condition)
        masks, reasons = self.rule.propose(reference, shifted)
        return images_to_uint8(original), masks, reasons

    @torch.no_grad()
    def sample(self, batch_size: int, torch_generator: torch.Generator | None = None):
        z, condition = self.latents(batch_size, torch_generator)
        original, reference, shifted = self.generate(z, condition)
        result = self.rule.evaluate(reference, shifted)
        return images_to_uint8(original), result.masks, result.keep

    def sample_batch(self, seed: int, batch_index: int, batch_size: int):
        """``sample`` on the latents of batch ``batch_index`` of a ``synthesize`` run with ``seed``."""
        z, condition = self.batch_latents(seed, batch_index, batch_size)
        original, reference, shifted = self.generate(z, condition)
        result = self.rule.evaluate(reference, shifted)
        return images_to_uint8(original), result.masks, result.keep


# ----------------------------------------------------------------------------- ranks
def quota_of(rank: int, world: int, n: int) -> int:
    return n // world + (1 if rank < n % world else 0)


# ----------------------------------------------------------------------------- settings
def _direction_digest(directions, index: int) -> str:
    row = directions.direction(index).detach().cpu().contiguous().numpy().astype("<f4")
    return hashlib.sha256(row.tobytes()).hexdigest()[:16]


def _settings(synthesizer: PairSynthesizer, *, n, batch_size, storage, shard_size, seed, world, generator_options) -> dict:
    generator = synthesizer.generator
    settings = {
        "generator": {**generator.describe(), "options": generator_options or {}},
        "directions": {
            "method": synthesizer.directions.method,
            "generator": synthesizer.directions.generator,
            "count": synthesizer.directions.count,
            "index": synthesizer.index,
            "sha256_row": _direction_digest(synthesizer.directions, synthesizer.index),
            "partner": synthesizer.partner,
            "sha256_partner_row": _direction_digest(synthesizer.directions, synthesizer.partner) if synthesizer.partner is not None else None,
        },
        "sign": synthesizer.sign,
        "shift": synthesizer.shift,
        "latents": synthesizer.latent_bank.describe() if synthesizer.latent_bank is not None else None,
        "rule": synthesizer.rule.config(),
        "seed": seed,
        "pairs": n,
        "batch_size": batch_size,
        "storage": storage,
        "shard_size": shard_size,
        "world_size": world,
    }
    return json.loads(json.dumps(settings))  # plain JSON types, so a stored copy compares equal


class _Writer(threading.Thread):
    """Consumes batches in order: keeps the first ``quota - done`` kept candidates, commits units."""

    def __init__(self, unit_writer, *, quota, done, batch_size, stall_after, bar):
        super().__init__(name="pairs-writer", daemon=True)
        self.inbox: queue.Queue = queue.Queue(maxsize=QUEUE_DEPTH)
        self.unit_writer = unit_writer
        self.quota, self.written, self.batch_size = quota, done, batch_size
        self.start_written = done
        self.session_candidates = 0
        self.stall_after = stall_after
        self.bar = bar
        self.finished = threading.Event()  # quota reached and the last unit committed
        self.progress = threading.Event()  # set after every consumed batch
        self.consumed = 0  # batches consumed so far
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while True:
                item = self.inbox.get()
                if item is None:
                    break
                if self.finished.is_set() or self.error is not None:
                    continue  # drain what the main thread queued before it saw we were done
                self._consume(*item)
                self.consumed += 1
                self.progress.set()
        except BaseException as exc:  # handed to the main thread
            self.error = exc
            self.progress.set()
            self.unit_writer.abort()
            while self.inbox.get() is not None:  # drain so the main thread never blocks
                pass

    def _consume(self, batch_index, skip, futures):
        for future in futures:
            for position, reason, image_png, mask_png in future.result():
                if position < skip or self.finished.is_set():
                    continue
                self.session_candidates += 1
                if reason == KEPT:
                    self.unit_writer.add(pair_key(batch_index * self.batch_size + position), image_png, mask_png)
                    self.written += 1
                    if self.bar is not None:
                        self.bar.update(1)
                    if self.written >= self.quota:
                        self.unit_writer.finish()
                        self.finished.set()
                else:
                    self.unit_writer.reject(REASONS[reason])
        if self.written == 0 and self.session_candidates >= self.stall_after:
            raise UserError(
                f"no candidate passed the mask rule in the first {self.session_candidates}: check --index, --sign, "
                "--shift and the rule's thresholds against the direction's chart"
            )


def _finish_chunk(rule: MaskRule, images: np.ndarray, masks: np.ndarray, reasons: np.ndarray, lo: int, hi: int, skip: int):
    """Host half for candidates [lo, hi) of a batch: connected components, area checks, PNG encoding."""
    out = []
    for position in range(max(lo, skip), hi):
        mask, reason = masks[position], int(reasons[position])
        if rule.host_stage:
            mask, reason = rule.finish_one(mask, reason)
        if reason == KEPT:
            out.append((position, reason, encode_png(images[position]), encode_png(mask.astype(np.uint8) * 255)))
        else:
            out.append((position, reason, None, None))
    return out


def _to_host(device_tensors, device: torch.device):
    """Start copying device tensors to the host; returns (host tensors, event or None)."""
    if device.type != "cuda":
        return [t.cpu() for t in device_tensors], None
    host = []
    for tensor in device_tensors:
        pinned = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        pinned.copy_(tensor, non_blocking=True)
        host.append(pinned)
    event = torch.cuda.Event()
    event.record()
    return host, event


def _run_rank(synthesizer, unit_writer, *, ctx, quota, done, start_step, skip, batch_size, seed, workers, progress, on_batch):
    """Generate this rank's batches from ``start_step`` until the writer has ``quota`` pairs."""
    from tqdm.auto import tqdm

    bar = tqdm(total=quota, initial=done, unit="pair", desc=f"synthesize r{ctx.rank}", disable=not progress, leave=False)
    writer = _Writer(unit_writer, quota=quota, done=done, batch_size=batch_size,
                     stall_after=max(2000, 20 * batch_size), bar=bar)
    writer.start()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pairs-encode")
    chunk = max(4, -(-batch_size // (2 * workers)))
    rule = synthesizer.rule

    handed: list[int] = []  # per handed-over batch: how many of its candidates can still be kept

    def hand_off(pending):
        batch_index, batch_skip, host, event = pending
        if event is not None:
            event.synchronize()
        images, masks, reasons = (t.numpy() for t in host)
        futures = [pool.submit(_finish_chunk, rule, images, masks, reasons, lo, min(lo + chunk, batch_size), batch_skip)
                   for lo in range(0, batch_size, chunk) if min(lo + chunk, batch_size) > batch_skip]
        handed.append(int((reasons[batch_skip:] == KEPT).sum()))  # the host half only rejects more
        while True:  # bounded put that notices a failed writer
            if writer.error is not None:
                raise writer.error
            try:
                writer.inbox.put((batch_index, batch_skip, futures), timeout=0.1)
                return
            except queue.Full:
                continue

    pending = None
    step = start_step
    try:
        while not writer.finished.is_set():
            if writer.error is not None:
                raise writer.error
            # Launch another batch only if the batches in flight may fall short of the quota: near
            # the end, batches generated past it would be thrown away.
            in_flight = sum(handed[writer.consumed :]) + (batch_size - pending[1] if pending is not None else 0)
            if writer.written + in_flight >= quota:
                if pending is not None:
                    hand_off(pending)
                    pending = None
                else:
                    writer.progress.wait(0.01)
                    writer.progress.clear()
                continue
            batch_index = ctx.rank + step * ctx.world_size
            z, condition = synthesizer.batch_latents(seed, batch_index, batch_size)
            device_tensors = synthesizer.propose(z, condition)
            host, event = _to_host(device_tensors, synthesizer.device)
            if pending is not None:
                hand_off(pending)
            pending = (batch_index, skip, host, event)
            skip = 0
            step += 1
            if on_batch is not None:
                on_batch(batch_index)
        pending = None  # quota reached: a batch still in flight is not needed
    finally:
        # On success, or on an error here (KeyboardInterrupt too): the writer takes what was handed
        # over, commits the full units among it and drops the partial one. A writer error wins.
        if pending is not None and writer.error is None:
            try:
                hand_off(pending)
            except BaseException:
                pass
        writer.inbox.put(None)
        writer.join()
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
        if not writer.finished.is_set():
            unit_writer.abort()
    if writer.error is not None:
        raise writer.error
    return writer.written - writer.start_written, writer.session_candidates


# ----------------------------------------------------------------------------- finish
def _done_path(out_dir: Path, rank: int) -> Path:
    return out_dir / "progress" / f"rank-{rank:02d}.done.json"


def _merge_manifest(out_dir: Path, settings: dict, extra: dict, preview: int) -> dict:
    from discovery.io import read_json, run_manifest, write_json

    world = settings["world_size"]
    storage = settings["storage"]
    shards, by_rank = [], []
    candidates, rejected = 0, {reason: 0 for reason in REASONS[1:]}
    seconds, session_pairs = 0.0, 0
    for rank in range(world):
        units = committed_units(out_dir, rank, storage)
        rank_pairs = sum(unit["pairs"] for unit in units)
        rank_candidates = sum(unit["candidates"] for unit in units)
        done = read_json(_done_path(out_dir, rank)) if _done_path(out_dir, rank).is_file() else {}
        by_rank.append({"rank": rank, "pairs": rank_pairs, "candidates": rank_candidates, "units": len(units),
                        "session_seconds": done.get("seconds"), "session_pairs": done.get("session_pairs")})
        candidates += rank_candidates
        for unit in units:
            for reason, count in unit["rejected"].items():
                rejected[reason] = rejected.get(reason, 0) + count
            if storage == "shards":
                shards.append({"file": unit["file"], "pairs": unit["pairs"], "first_key": unit["first_key"], "last_key": unit["last_key"]})
        seconds = max(seconds, done.get("seconds") or 0.0)
        session_pairs += done.get("session_pairs") or 0
    pairs = sum(entry["pairs"] for entry in by_rank)
    manifest = {
        "format": PAIRS_FORMAT,
        "storage": storage,
        "pairs": pairs,
        "resolution": settings["generator"]["resolution"],
        "generator": settings["generator"],
        "directions": {**settings["directions"], **extra.get("directions", {})},
        "sign": settings["sign"],
        "shift": settings["shift"],
        "rule": settings["rule"],
        "latents": settings.get("latents"),
        "seed": settings["seed"],
        "batch_size": settings["batch_size"],
        "shard_size": settings["shard_size"],
        "world_size": world,
        "counts": {"pairs": pairs, "candidates": candidates, "rejected": rejected, "by_rank": by_rank},
        "rejection_rate": (1 - pairs / candidates) if candidates else None,
        "timing": {"last_session_seconds": seconds, "last_session_pairs": session_pairs,
                   "pairs_per_second": session_pairs / seconds if seconds else None},
        **{k: v for k, v in extra.items() if k != "directions"},
    }
    if storage == "shards":
        manifest["shards"] = shards
    manifest["run"] = run_manifest()
    write_json(manifest, out_dir / MANIFEST)
    if preview > 0:
        dataset = open_pairs(out_dir)
        if write_preview(dataset, out_dir / "preview.png", count=preview) is not None:
            manifest["preview"] = "preview.png"
            write_json(manifest, out_dir / MANIFEST)
        dataset.close()
    return manifest


def write_pairs(
    generator,                        # a LatentGenerator (or wrapped module) on any device
    directions,                       # discovery.directions.Directions of this generator
    index: int,                       # row of the background direction
    out_dir,                          # folder for shards/ or images/ + masks/, manifest.json, preview.png
    *,
    n: int,                           # pairs to write (all ranks together)
    rule: MaskRule,                   # IntensityMaskRule or LightingMaskRule (shift None: scaled paper value)
    batch_size: int = 64,             # candidates per generator call (each call generates 2 x batch_size images)
    format: str = "shards",           # "shards" (WebDataset tar files) or "png" (folders)
    shard_size: int = 1000,           # pairs per shard (per progress unit for PNG folders)
    seed: int = 0,                    # the latents of batch b depend on (seed, b) only
    resume: bool = False,             # continue an interrupted run in out_dir (same settings)
    device=None,                      # default: the generator's device (cuda:LOCAL_RANK under torchrun)
    progress: bool = True,            # progress bar on stderr
    sign: int = 1,                    # +1 or -1: which way to shift along the direction
    preview: int = 16,                # pairs shown in preview.png (0: none)
    workers: int | None = None,       # host threads for connected components and PNG encoding
    generator_options: dict | None = None,  # recorded in the manifest (classes, truncation, ...)
    extra_manifest: dict | None = None,     # more fields for the manifest (directions path, sign choice, ...)
    rank: int | None = None,          # override torchrun's RANK (tests, manual launches)
    world_size: int | None = None,    # override torchrun's WORLD_SIZE
    on_batch=None,                    # callback(batch_index) after each batch is launched (tests, progress hooks)
    ctx: RankContext | None = None,   # the launcher's rank context (None: from rank/world_size or torchrun's environment)
    latent_bank: LatentBank | None = None,  # latents from a file instead of N(0, I)
) -> dict:
    """Write ``n`` image/mask pairs to ``out_dir`` from resolved objects; returns the manifest (or this rank's summary)."""
    # Check the request.
    if format not in WRITERS:
        raise UserError(f"--format {format!r}: expected one of {', '.join(WRITERS)}")
    for name, value in (("--n", n), ("--batch-size", batch_size), ("--shard-size", shard_size)):
        if int(value) < 1:
            raise UserError(f"{name} {value}: must be at least 1")
    if preview < 0:
        raise UserError(f"--preview {preview}: must be 0 (none) or a number of pairs")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir}: exists and is not a folder")
    ctx = ctx if ctx is not None else rank_context(rank, world_size)
    if device is None:
        device = generator.device
    device = pin_cuda_device(torch.device(device), ctx.local_rank if ctx.distributed else None)
    synthesizer = PairSynthesizer(generator, directions, index, rule, device, sign=sign, latent_bank=latent_bank)
    settings = _settings(synthesizer, n=n, batch_size=batch_size, storage=format, shard_size=shard_size,
                         seed=seed, world=ctx.world_size, generator_options=generator_options)
    extra = dict(extra_manifest or {})

    # Fresh folder or resume.
    run_file = out_dir / RUN_FILE
    if run_file.is_file():
        if not resume:
            raise UserError(f"--out {out_dir}: already holds a synthesis run ({RUN_FILE}); pass --resume to continue it or choose another folder")
        try:
            previous = json.loads(run_file.read_text(encoding="utf-8"))["settings"]
        except (OSError, ValueError, KeyError, TypeError):
            raise UserError(f"{run_file}: unreadable; remove the folder or choose another --out") from None
        check_resume(previous, settings, out_dir)
        if (out_dir / MANIFEST).is_file():
            from discovery.io import read_json

            return read_json(out_dir / MANIFEST)  # already complete
    ctx.barrier()
    if ctx.rank == 0 and not run_file.is_file():
        from discovery.io import run_manifest, write_json

        prepare_folders(out_dir, format)
        write_json({"settings": settings, "run": run_manifest()}, run_file)
    ctx.barrier()
    prepare_folders(out_dir, format)

    # Where this rank stands.
    world, this_rank = ctx.world_size, ctx.rank
    units = scan_units(out_dir, this_rank, format,
                       key_belongs=lambda key: (int(key) // batch_size) % world == this_rank)
    quota = quota_of(this_rank, world, n)
    done = sum(unit["pairs"] for unit in units)
    start_step, skip = 0, 0
    if units:
        last = int(units[-1]["last_key"])
        batch_index, position = divmod(last, batch_size)
        start_step, skip = (batch_index - this_rank) // world, position + 1
        if skip == batch_size:
            start_step, skip = start_step + 1, 0

    # Generate.
    started = time.perf_counter()
    session_pairs = session_candidates = 0
    if done < quota:
        unit_writer = WRITERS[format](out_dir, this_rank, shard_size, first_unit=len(units), reasons=REASONS)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
        threads = torch.get_num_threads()
        if device.type == "cpu":
            # The generator and the host threads share the cores: give each its own, or OpenMP's
            # barriers stall every generator op while an encoder thread holds a core.
            workers = workers or max(1, cores // 4)
            torch.set_num_threads(max(1, min(threads, cores - workers)))
        else:
            workers = workers or max(1, min(8, cores - 1))
        try:
            session_pairs, session_candidates = _run_rank(
                synthesizer, unit_writer, ctx=ctx, quota=quota, done=done, start_step=start_step, skip=skip,
                batch_size=batch_size, seed=seed, workers=workers, progress=progress and this_rank == 0, on_batch=on_batch)
        finally:
            torch.set_num_threads(threads)
    seconds = time.perf_counter() - started
    from discovery.io import write_json

    write_json({"rank": this_rank, "pairs": quota, "seconds": seconds, "session_pairs": session_pairs,
                "session_candidates": session_candidates}, _done_path(out_dir, this_rank))

    # Merge: rank 0 after a barrier, or (launched without torch.distributed) whichever rank finds all done.
    ctx.barrier()
    all_done = all(_done_path(out_dir, r).is_file() for r in range(world))
    if (ctx.distributed and this_rank == 0) or (not ctx.distributed and all_done):
        return _merge_manifest(out_dir, settings, extra, preview)
    # This rank's share only: another rank writes the manifest.
    return {"rank": this_rank, "pairs": quota, "session_pairs": session_pairs, "seconds": seconds, "manifest_written": False}


def _committed_anything(out: Path) -> bool:
    """Whether a synthesis run got as far as one committed unit (or shares its folder with other ranks)."""
    progress = out / "progress"
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (progress.is_dir() and any(progress.iterdir()))


@library_call
@leaves_nothing_on_bad_input("out", _committed_anything)  # bad input found only by generating (no mask passes the rule)
def synthesize(
    directions,                       # directions.pt (any format discovery.load_directions reads) or a Directions
    out,                              # folder for shards/ or images/ + masks/, manifest.json, preview.png
    *,
    generator=None,                   # LatentGenerator, registered / plugin name, or None: the one the file records
    weights=None,                     # weights of a named generator (None: the file's recorded path, the cache, the package)
    generator_options=None,           # options of a named generator (classes, truncation, ...), over the file's
    index="auto",                     # row of the background direction, or "auto": the file's recorded choice (else a ranking)
    sign="auto",                      # 1 or -1: which way to shift; "auto": the rule's side of the recorded sign, checked by a probe
    n: int = 100_000,                 # pairs to write (all ranks together)
    rule="lighting",                  # a registered mask rule (saliency.masks.MASK_RULES) or a MaskRule
    rule_options=None,                # that rule's options (shift, smooth, max_area, ...); unset: the paper's values
    batch_size: int = 64,             # candidates per generator call
    format: str = "shards",           # "shards" (WebDataset tar files) or "png" (folders)
    shard_size: int = 1000,           # pairs per shard (and per resume unit)
    seed: int = 0,                    # the latents of batch b depend on (seed, b) only
    resume: bool = False,             # continue an interrupted run in out (same settings)
    device=None,                      # None / "auto": CUDA when present (cuda:LOCAL_RANK under torchrun)
    progress: bool = True,            # progress bar on stderr
    preview: int = 16,                # pairs shown in preview.png (0: none)
    workers: int | None = None,       # host threads for connected components and PNG encoding (None: from the core count)
    ctx: RankContext | None = None,   # the launcher's rank context (None: torchrun's environment)
    on_batch=None,                    # callback(batch_index) after each batch is launched (tests, progress hooks)
    latents=None,                     # (N, dim_z) .npy / .pt of latents to use instead of N(0, I) (E-BigBiGAN's encoder embeddings)
    latent_noise: float = 0.2,        # with latents: + this x N(0, I) (E-BigBiGAN: 0.2)
    latent_order: str = "sample",     # with latents: "sample" rows at random, or "cycle" through them in order
) -> dict:
    """The synthesis stage: image/mask pairs from the background direction; returns the manifest."""
    from discovery.directions import Directions
    from discovery.generators.resolve import generator_for_directions
    from discovery.runtime import get_logger, rank_device
    from saliency.direction_choice import resolve_direction
    from saliency.masks import build_rule

    if workers is not None and int(workers) < 1:
        raise UserError(f"--workers {workers}: must be at least 1")
    from discovery.io import check_writable

    check_writable(Path(out))  # before the generator is loaded
    source = None
    if not isinstance(directions, Directions):
        source = str(Path(directions).resolve())
        directions = Directions.load(directions, generator if isinstance(generator, str) else None)
    rule = build_rule(rule, **(rule_options or {})) if isinstance(rule, str) else rule
    if rule_options and not isinstance(rule, MaskRule):
        raise UserError("rule_options apply to a rule given by name")
    ctx = ctx if ctx is not None else rank_context()
    device = rank_device(device, ctx)
    model, options = generator_for_directions(directions, generator, weights=weights, generator_options=generator_options, device=device)
    bank = LatentBank.load(latents, model.dim_z, latent_noise, latent_order) if latents is not None else None
    # The sign probe is a fixed cost: 64 latents a sign, fewer for a small run (8 pairs do not need 128 images).
    probe = int(min(64, max(16, n)))
    index, sign, choice = resolve_direction(model, directions, rule, index=index, sign=sign, seed=seed, device=device, probe_samples=probe)
    extra = {"directions": {"path": source}, **choice}
    manifest = write_pairs(model, directions, index, out, n=n, rule=rule, batch_size=batch_size, format=format, shard_size=shard_size,
                           seed=seed, resume=resume, device=device, progress=progress, sign=sign, preview=preview, workers=workers,
                           generator_options=options, extra_manifest=extra, on_batch=on_batch, ctx=ctx, latent_bank=bank)
    if manifest.get("format"):
        rate = manifest.get("rejection_rate")
        speed = manifest.get("timing", {}).get("pairs_per_second")
        get_logger("synthesize").info(
            f"wrote {manifest['pairs']} pairs to {out} (direction {index}, sign {sign:+d}, shift {manifest['shift']:g}, "
            f"rule {manifest['rule']['name']}, rejection rate {rate:.1%}" + (f", {speed:.3g} pairs/s" if speed else "") + ")")
    return manifest
