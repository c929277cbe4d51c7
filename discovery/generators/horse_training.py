"""Training the embedded generator: a small unconditional GAN for a few hundred images.

Data-efficient GAN training on a CPU budget: a DCGAN-shaped generator with pixel-wise feature
normalisation, a spectrally normalised discriminator, the hinge loss, an exponential moving
average of the generator (the weights that ship), and Differentiable Augmentation (Zhao et al.,
"Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020): colour, translation
and cutout applied to real AND generated images before the discriminator, so D cannot memorise
a few hundred photos and G is not taught to reproduce the augmentations.

``train_gan`` reads like StyleGAN3's training loop: its keyword arguments are the configuration,
its body a sequence of titled sections, its state a snapshot that ``resume=True`` continues
bit-for-bit (on the CPU).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from discovery.errors import UserError
from discovery.images import IMAGE_SUFFIXES
from discovery.runtime import check_resume, get_logger, rng_state, set_rng_state

SNAPSHOT_NAME = "snapshot.pt"
GENERATOR_NAME = "generator.pt"


# ----------------------------------------------------------------------------------------------
# Differentiable augmentation (the same random transform for a whole image, different per image)


def _rand(x: torch.Tensor, *shape) -> torch.Tensor:
    return torch.rand(x.shape[0], *shape, dtype=x.dtype, device=x.device)


def augment_color(x: torch.Tensor) -> torch.Tensor:
    """Random brightness, saturation and contrast; images in [-1, 1]."""
    x = x + (_rand(x, 1, 1, 1) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x, 1, 1, 1) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x, 1, 1, 1) + 0.5) + mean


def augment_translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ``ratio`` of its size, filling with zeros (a gather, so differentiable)."""
    n, _, h, w = x.shape
    max_dy, max_dx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (n, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (n, 1, 1), device=x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + 1).clamp(0, h + 1).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + 1).clamp(0, w + 1).expand(n, h, w)
    padded = F.pad(x, (1, 1, 1, 1))  # the one-pixel zero border is what out-of-range indices read
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def augment_cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of ``ratio`` of the image size at a random place (it may cross the border)."""
    n, _, h, w = x.shape
    size_y, size_x = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - size_y % 2), (n, 1, 1), device=x.device)
    cx = torch.randint(0, w + (1 - size_x % 2), (n, 1, 1), device=x.device)
    ys = torch.arange(h, device=x.device).view(1, h, 1)
    xs = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (ys >= cy - size_y // 2) & (ys < cy - size_y // 2 + size_y) & (xs >= cx - size_x // 2) & (xs < cx - size_x // 2 + size_x)
    return x * (~inside).unsqueeze(1).to(x.dtype)


AUGMENTATIONS = {"color": augment_color, "translation": augment_translation, "cutout": augment_cutout}


def parse_diffaugment(policy: str | None) -> list[str]:
    names = [name.strip() for name in (policy or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise UserError(f"diffaugment {policy!r}: unknown augmentation {unknown[0]!r} (known: {', '.join(AUGMENTATIONS)})")
    return names


def diff_augment(x: torch.Tensor, policy: list[str]) -> torch.Tensor:
    for name in policy:
        x = AUGMENTATIONS[name](x)
    return x


# ----------------------------------------------------------------------------------------------
# Training images


def list_training_images(images_dir: str | Path, list_file: str | Path | None = None) -> list[Path]:
    """The image files to train on: those named in ``list_file`` (one stem or file name per line), else all."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise UserError(f"--images {images_dir}: no such folder")
    if list_file is not None:
        list_file = Path(list_file)
        if not list_file.is_file():
            raise UserError(f"--list {list_file}: no such file")
        names = [line.strip() for line in list_file.read_text(encoding="utf-8", errors="replace").splitlines()]
        names = [name for name in names if name and not name.startswith("#")]
        if not names:
            raise UserError(f"--list {list_file}: names no images (empty)")
        by_stem: dict[str, Path] = {}
        for path in sorted(images_dir.iterdir()):
            if path.suffix.lower() in IMAGE_SUFFIXES:
                by_stem.setdefault(path.stem, path)
                by_stem.setdefault(path.name, path)
        missing = [name for name in names if name not in by_stem]
        if missing:
            shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
            raise UserError(f"--list {list_file}: {len(missing)} of {len(names)} named images are not in {images_dir} ({shown})")
        return list(dict.fromkeys(by_stem[name] for name in names))
    paths = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        hint = f"; it has an images/ sub-folder: pass --images {images_dir / 'images'}" if (images_dir / "images").is_dir() else ""
        raise UserError(f"--images {images_dir}: holds no image files ({', '.join(IMAGE_SUFFIXES)}){hint}")
    return paths


def load_training_images(paths: list[Path], resolution: int) -> list[torch.Tensor]:
    """Each image resized so its shorter side is ``resolution`` (antialiased), as uint8 (3, H, W)."""
    from PIL import Image

    from discovery.images import read_image

    images = []
    for path in paths:
        array = read_image(path, "RGB")
        h, w = array.shape[:2]
        if min(h, w) < 8:
            raise UserError(f"{path}: image of {w}x{h} pixels is too small to train on")
        scale = resolution / min(h, w)
        size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
        resized = np.asarray(Image.fromarray(array).resize(size, Image.Resampling.LANCZOS))
        images.append(torch.from_numpy(resized.copy()).permute(2, 0, 1).contiguous())
    return images


def sample_real_batch(images: list[torch.Tensor], batch_size: int, resolution: int, crop: str) -> torch.Tensor:
    """A batch in [-1, 1]: random images, a crop of ``resolution`` along the long side, random flips."""
    indices = torch.randint(len(images), (batch_size,)).tolist()
    flips = (torch.rand(batch_size) < 0.5).tolist()
    offsets = torch.rand(batch_size).tolist()
    batch = []
    for index, flip, offset in zip(indices, flips, offsets):
        image = images[index]
        _, h, w = image.shape
        if crop == "center":
            offset = 0.5
        y, x = int(round((h - resolution) * offset)), int(round((w - resolution) * offset))
        patch = image[:, y : y + resolution, x : x + resolution]
        batch.append(patch.flip(2) if flip else patch)
    return torch.stack(batch).float().div(127.5).sub(1)


# ----------------------------------------------------------------------------------------------
# Snapshots


def export_generator(G_ema, path: str | Path, *, config: dict, manifest: dict, half: bool = True) -> Path:
    """Write the shippable generator file: EMA weights (fp16 by default), config and manifest."""
    from discovery.generators.horse import GAN_FORMAT, plain_manifest
    from discovery.io import atomic_torch_save

    weights = {k: (v.detach().half() if half and v.is_floating_point() else v.detach()).cpu().clone() for k, v in G_ema.state_dict().items()}
    atomic_torch_save({"format": GAN_FORMAT, "generator_ema": weights, "config": plain_manifest(config), "manifest": plain_manifest(manifest)}, path)
    Path(path).chmod(0o644)  # a file that ships in the package: readable by every user
    return Path(path)


def export_from_snapshot(snapshot: str | Path, path: str | Path, half: bool = True, **manifest_extra) -> Path:
    """Turn a training snapshot (or a generator file) into the shippable generator file."""
    from discovery.generators.horse import generator_from_checkpoint, read_gan_file

    state = read_gan_file(snapshot, expected="a training snapshot or a generator file")
    G_ema = generator_from_checkpoint(state, name=str(snapshot))
    manifest = dict(state.get("manifest") or {})
    manifest.setdefault("step", state.get("step"))
    manifest["exported_from"] = str(snapshot)
    manifest.update(manifest_extra)
    return export_generator(G_ema, path, config=G_ema.config(), manifest=manifest, half=half)


# ----------------------------------------------------------------------------------------------
# The training loop


def train_gan(
    images_dir,  # folder of training images (unlabelled)
    out_dir,  # where snapshots, logs, sample grids and generator.pt go
    *,
    list_file=None,  # optional file naming the images to use, one stem per line (e.g. a train split)
    resolution: int = 64,  # output size of the generator, pixels
    dim_z: int = 128,  # latent dimension
    width: int = 32,  # base channel count of G and D (G: 8w at 4x4 ... w at 32x32)
    crop: str = "random",  # "random" or "center" crop of the short-side-resized image along its long side
    steps: int = 6000,  # generator updates (each with one discriminator update)
    batch_size: int = 32,  # images per update, real and fake alike
    lr_g: float = 2e-4,  # Adam learning rate of G
    lr_d: float = 2e-4,  # Adam learning rate of D
    betas: tuple = (0.5, 0.999),  # Adam betas of both
    diffaugment: str = "color,translation,cutout",  # DiffAugment policy applied to real and fake before D
    d_norm: str = "spectral",  # discriminator normalisation: "spectral" (SNGAN) or "batch" (DCGAN)
    loss: str = "hinge",  # "hinge" or "nonsaturating" (logistic, as DCGAN and StyleGAN)
    ema: float = 0.999,  # decay of the generator's moving average (ramped up over the first steps)
    log_every: int = 20,  # steps between rows of stats.jsonl
    checkpoint_every: int = 200,  # steps between snapshots (and generator.pt refreshes)
    sample_every: int = 200,  # steps between sample grids of fixed latents
    grid: int = 8,  # sample grid is grid x grid images
    resume: bool = False,  # continue from out_dir/snapshot.pt
    seed: int = 0,  # seeds weights, data order, augmentation and latents
    device=None,  # "auto", "cpu", "cuda"...
    progress: bool = True,  # progress bar and section titles
    export=None,  # also write the final shippable generator file here
) -> dict:
    from discovery.generators.horse import SNAPSHOT_FORMAT, HorseDiscriminator, HorseGenerator, plain_manifest, read_gan_file
    from discovery.images import make_grid, save_png, to_uint8
    from discovery.io import atomic_torch_save, ensure_fresh_output, run_manifest, write_json
    from discovery.runtime import resolve_device, seed_everything
    from discovery.stats import StatsLogger

    say = get_logger("train-gan").info if progress else (lambda *a, **k: None)
    out = Path(out_dir)
    ensure_fresh_output(out, resume, SNAPSHOT_NAME)
    if resume and not (out / SNAPSHOT_NAME).exists():
        raise UserError(f"--resume: {out / SNAPSHOT_NAME} does not exist; nothing to resume")
    for name, value in (("steps", steps), ("batch_size", batch_size), ("checkpoint_every", checkpoint_every), ("sample_every", sample_every), ("log_every", log_every)):
        if int(value) < 1:
            raise UserError(f"--{name.replace('_', '-')} {value}: must be at least 1")
    for name, value in (("lr_g", lr_g), ("lr_d", lr_d)):
        if not value > 0:
            raise UserError(f"--{name.replace('_', '-')} {value}: must be positive")
    if d_norm not in ("spectral", "batch"):
        raise UserError(f"d_norm {d_norm!r}: expected 'spectral' or 'batch'")
    if loss not in ("hinge", "nonsaturating"):
        raise UserError(f"loss {loss!r}: expected 'hinge' or 'nonsaturating'")
    if crop not in ("random", "center"):
        raise UserError(f"crop {crop!r}: expected 'random' or 'center'")
    if resolution not in (32, 64, 128):
        raise UserError(f"resolution {resolution}: expected 32, 64 or 128")
    policy = parse_diffaugment(diffaugment)
    device = resolve_device(device)
    config = {
        "images_dir": str(images_dir), "list_file": str(list_file) if list_file is not None else None,
        "resolution": resolution, "dim_z": dim_z, "width": width, "crop": crop, "steps": steps,
        "batch_size": batch_size, "lr_g": lr_g, "lr_d": lr_d, "betas": list(betas), "diffaugment": diffaugment,
        "ema": ema, "loss": loss, "d_norm": d_norm, "seed": seed,
    }  # fmt: skip

    say("Loading training set...")
    paths = list_training_images(images_dir, list_file)
    if list_file is None:
        for candidate in (Path(images_dir) / "train.txt", Path(images_dir).parent / "train.txt"):
            if candidate.is_file():
                say(f"  note: {candidate} exists but no --list was given; training on ALL {len(paths)} images of the folder")
                break
    images = load_training_images(paths, resolution)
    say(f"  {len(images)} images from {images_dir}" + (f" (listed in {list_file})" if list_file else "") + f", short side -> {resolution} px, {crop} crops, flips")

    say("Constructing networks...")
    seed_everything(seed)
    G = HorseGenerator(dim_z=dim_z, width=width, resolution=resolution).to(device)
    D = HorseDiscriminator(width=width, resolution=resolution, norm=d_norm).to(device)
    G_ema = HorseGenerator(dim_z=dim_z, width=width, resolution=resolution).to(device).eval().requires_grad_(False)
    G_ema.load_state_dict(G.state_dict())
    opt_g = torch.optim.Adam(G.parameters(), lr=lr_g, betas=tuple(betas))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr_d, betas=tuple(betas))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    say(f"  G: {count(G):,} parameters, D: {count(D):,} parameters, device {device}")
    # Fixed latents for the grids, from their own stream so that sampling never moves the training RNG.
    grid_latents = torch.randn(grid * grid, dim_z, generator=torch.Generator().manual_seed(seed + 12345)).to(device)

    start_step, elapsed_before, accum = 0, 0.0, {}
    if resume:
        say("Resuming...")
        state = read_gan_file(out / SNAPSHOT_NAME, expected=f"a {SNAPSHOT_FORMAT} training snapshot")
        if state.get("format") != SNAPSHOT_FORMAT:
            raise UserError(f"{out / SNAPSHOT_NAME}: not a {SNAPSHOT_FORMAT} training snapshot")
        # Everything but the length of the run must match (a resumed run with another lr or batch would be another run).
        check_resume(state.get("config", {}), config, out, keys=[key for key in config if key != "steps"])
        G.load_state_dict(state["G"])
        D.load_state_dict(state["D"])
        G_ema.load_state_dict(state["G_ema"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        set_rng_state(state["rng"])
        start_step, elapsed_before, accum = int(state["step"]), float(state.get("elapsed_s", 0.0)), dict(state.get("accum", {}))
        say(f"  from step {start_step} of {out / SNAPSHOT_NAME}")
        if start_step >= steps:
            say(f"  the snapshot is already at step {start_step} >= steps {steps}")

    say("Initialising logs...")
    stats = StatsLogger(out, resume_step=start_step if resume else None)
    manifest_base = plain_manifest(run_manifest(seed=seed, images=len(images), config=config))
    write_json({"config": config, "images": [p.name for p in paths], "manifest": manifest_base}, out / "training_options.json")

    def snapshot(step: int, elapsed: float) -> None:
        atomic_torch_save(
            {
                "format": SNAPSHOT_FORMAT, "step": step, "elapsed_s": elapsed, "config": config,
                "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
                "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "rng": rng_state(), "accum": dict(accum),
                "manifest": {**manifest_base, "step": step},
            },
            out / SNAPSHOT_NAME,
        )  # fmt: skip
        export_generator(G_ema, out / GENERATOR_NAME, config=G_ema.config(), manifest={**manifest_base, "step": step, "train_seconds": round(elapsed, 1)})

    def save_grid(step: int) -> Path:
        with torch.no_grad():
            images_out = torch.cat([G_ema(chunk) for chunk in grid_latents.split(16)])
        path = out / "samples" / f"grid-{step:06d}.png"
        save_png(make_grid(to_uint8(images_out), grid, grid), path)
        return path

    say("Training...")
    if start_step == 0:
        save_png(make_grid(to_uint8(sample_real_batch_fixed(images, grid * grid, resolution, seed)), grid, grid), out / "samples" / "reals.png")
        save_grid(0)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, initial=min(start_step, steps), desc="train-gan", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    step = start_step
    while step < steps:
        # Discriminator: real vs fake, both augmented the same way (DiffAugment).
        real = sample_real_batch(images, batch_size, resolution, crop).to(device)
        z = torch.randn(batch_size, dim_z).to(device)
        with torch.no_grad():
            fake = G(z)
        D.requires_grad_(True)
        d_real = D(diff_augment(real, policy))
        d_fake = D(diff_augment(fake, policy))
        if loss == "hinge":
            loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        else:
            loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        # Generator: fool D through the same augmentation (-D for hinge, softplus(-D) otherwise).
        D.requires_grad_(False)
        z = torch.randn(batch_size, dim_z).to(device)
        fake = G(z)
        g_score = D(diff_augment(fake, policy))
        loss_g = -g_score.mean() if loss == "hinge" else F.softplus(-g_score).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()

        # Moving average of G, ramped so early averages are not dominated by the random start.
        step += 1
        decay = min(ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(G_ema.parameters(), G.parameters()):
                p_ema.lerp_(p, 1 - decay)
            for b_ema, b in zip(G_ema.buffers(), G.buffers()):
                b_ema.copy_(b)

        for key, value in (("loss_d", loss_d), ("loss_g", loss_g), ("d_real", d_real.mean()), ("d_fake", d_fake.mean())):
            accum[key] = accum.get(key, 0.0) + float(value.detach())
        accum["n"] = accum.get("n", 0) + 1
        elapsed = elapsed_before + time.perf_counter() - t0
        if step % log_every == 0 or step == steps:
            n = accum.pop("n")
            row = {key: value / n for key, value in accum.items()}
            accum = {}
            stats.log(step, **row, seconds=elapsed, sec_per_step=elapsed / max(step, 1))
            if bar is not None:
                bar.set_postfix(loss_d=f"{row['loss_d']:.3f}", loss_g=f"{row['loss_g']:.3f}")
        if step % sample_every == 0 or step == steps:
            save_grid(step)
        if step % checkpoint_every == 0 or step == steps:
            snapshot(step, elapsed)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    stats.close()

    elapsed = elapsed_before + time.perf_counter() - t0 if step > start_step else elapsed_before
    if not (out / GENERATOR_NAME).exists():
        snapshot(step, elapsed)
    final_grid = save_grid(step)
    summary = {
        "steps": step, "batch_size": batch_size, "images": len(images), "train_seconds": round(elapsed, 1),
        "sec_per_step": round(elapsed / max(step, 1), 4),
        "parameters": {"G": count(G), "D": count(D)}, "generator": str(out / GENERATOR_NAME),
        "generator_bytes": (out / GENERATOR_NAME).stat().st_size, "sample_grid": str(final_grid),
        "last_stats": stats.rows[-1] if stats.rows else None, "config": config, "manifest": {**manifest_base, "step": step},
    }  # fmt: skip
    if export is not None:
        export_from_snapshot(out / GENERATOR_NAME, export)
        summary["exported"] = str(export)
    write_json(summary, out / "summary.json")
    say(f"Done: {step} steps in {elapsed / 60:.1f} min; generator {out / GENERATOR_NAME}; samples {final_grid}")
    return summary


def sample_real_batch_fixed(images: list[torch.Tensor], n: int, resolution: int, seed: int) -> torch.Tensor:
    """A fixed grid of real images (centre crops) for side-by-side comparison; touches no global RNG."""
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return sample_real_batch_from([images[i] for i in order], resolution)


def sample_real_batch_from(images: list[torch.Tensor], resolution: int) -> torch.Tensor:
    crops = []
    for image in images:
        _, h, w = image.shape
        y, x = (h - resolution) // 2, (w - resolution) // 2
        crops.append(image[:, y : y + resolution, x : x + resolution])
    return torch.stack(crops).float().div(127.5).sub(1)

