"""``saliency explore``: browse, combine and label the directions of a directions file in the browser.

A local Gradio app (``pip install 'saliency[explore]'``): a grid of images from a few latents,
three direction slots (a direction and a shift each; the shifts add up), directions offered in
the file's ranking order (background score, accuracy or eigenvalue, whichever it has) and found by
index or label, a preview of the masks a registered mask rule makes along the first slot's
direction, a traversal GIF of it, and labelling: name a direction or mark it as the background
direction. Labels and the background choice are written into the directions file atomically
(with a history entry in its manifest) and as ``annotations.txt`` beside it, in the ``index: name``
form of the Voynov-Babenko code; that form is read back when the file has no labels.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import torch

from discovery.errors import UserError, library_call
from discovery.runtime import get_logger

log = get_logger("explore")
ANNOTATIONS = "annotations.txt"
SLOTS = 3
LOCALHOST = "127.0.0.1"


def read_annotations(path: Path) -> dict[int, str]:
    """``index: name`` lines (the Voynov-Babenko annotation files) -> {index: name}; other lines are skipped."""
    labels = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        index, sep, name = line.partition(":")
        if sep and index.strip().isdigit() and name.strip():
            labels[int(index.strip())] = name.strip()
    return labels


def write_annotations(labels: dict[int, str], path: Path) -> None:
    from discovery.io import atomic_write_text

    atomic_write_text("".join(f"{index}: {name}\n" for index, name in sorted(labels.items())), path)


def ranking_order(directions) -> tuple[list[int], str]:
    """Directions best first by the file's own numbers: background score, else accuracy, else eigenvalue."""
    for key in ("background_score", "accuracy", "eigenvalues", "explained_variance"):
        values = directions.stats.get(key)
        if isinstance(values, list) and len(values) == directions.count:
            scores = np.array([v if isinstance(v, (int, float)) and np.isfinite(v) else -np.inf for v in values], dtype=np.float64)
            return [int(i) for i in np.argsort(-scores, kind="stable")], key
    return list(range(directions.count)), "index"


class Explorer:
    """The state and the pictures behind the page (usable without a browser)."""

    def __init__(self, path, *, generator=None, weights=None, generator_options=None, device="cpu", seed: int = 0, samples: int = 4):
        from discovery.directions import Directions
        from discovery.generators.resolve import generator_for_directions

        self.path = Path(path)
        self.directions = Directions.load(self.path, generator if isinstance(generator, str) else None)
        if not self.directions.labels and (self.path.parent / ANNOTATIONS).is_file():
            self.directions.labels = read_annotations(self.path.parent / ANNOTATIONS)
        self.generator, _ = generator_for_directions(self.directions, generator, weights=weights, generator_options=generator_options,
                                                     device=device)
        self.seed, self.samples = int(seed), int(samples)
        self.order, self.ranked_by = ranking_order(self.directions)
        self.class_index: int | None = None  # conditional generators: one class for every latent (None: the class policy)

    # ---- generator controls
    @property
    def conditional(self) -> bool:
        return bool(getattr(self.generator, "conditional", False))

    @property
    def has_truncation(self) -> bool:
        return isinstance(getattr(self.generator, "truncation", None), (int, float))

    def set_class(self, text) -> str:
        """A class for every latent (ImageNet index or name), or the generator's own policy when empty."""
        text = str(text or "").strip()
        if not text:
            self.class_index = None
            return "class: the generator's policy"
        from discovery.imagenet import parse_classes

        labels = getattr(self.generator, "c_dim", None)  # StyleGAN pickles: dataset label indices, not ImageNet
        try:
            classes = parse_classes(text, num_classes=labels, names=False) if labels else parse_classes(text)
        except UserError as exc:
            return str(exc)
        self.class_index = int(classes[0]) if classes else None
        return f"class {self.class_index}"

    def set_truncation(self, value: float) -> None:
        if self.has_truncation:
            lowest_open = not hasattr(self.generator, "w_dim")  # BigGAN-deep needs > 0; StyleGAN's psi 0 is w_avg itself
            if not (0 < float(value) if lowest_open else 0 <= float(value)) or float(value) > 1:
                raise UserError(f"truncation {value}: must be in {'(0, 1]' if lowest_open else '[0, 1]'}")
            self.generator.truncation = float(value)

    # ---- choices offered in the page
    def choice(self, index: int) -> str:
        label = self.directions.labels.get(index)
        marker = " [background]" if (self.directions.background or {}).get("index") == index else ""
        return f"{index}" + (f": {label}" if label else "") + marker

    def choices(self) -> list[str]:
        return [self.choice(index) for index in self.order]

    @staticmethod
    def index_of(choice) -> int:
        return int(str(choice).split(":")[0].split(" ")[0])

    # ---- pictures
    def latents(self, seed: int, samples: int):
        stream = torch.Generator().manual_seed(int(seed))
        z = self.generator.sample_latent(int(samples), stream)
        condition = self.generator.sample_condition(int(samples), stream)
        if self.conditional and self.class_index is not None:
            condition = torch.full((int(samples),), self.class_index, dtype=torch.long)
        return z, condition

    @torch.no_grad()
    def images(self, seed: int, samples: int, shifts: list[tuple[int, float]]) -> np.ndarray:
        """A row of images (uint8 H x (W * samples) x 3) for the latents of ``seed`` moved by every (index, shift)."""
        from discovery.generators.base import generate
        from discovery.images import make_grid, to_uint8

        z, condition = self.latents(seed, samples)
        for index, amount in shifts:
            z = self.directions.shift(z, index, float(amount))
        pictures = to_uint8(generate(self.generator, z.to(self.generator.device), condition).float().cpu())
        return _enlarge(make_grid(pictures, rows=1, cols=len(pictures)))

    @torch.no_grad()
    def masks(self, seed: int, samples: int, index: int, rule_name: str, sign: int = 1, options: str = "") -> tuple[np.ndarray, str]:
        """The masks a rule with ``options`` ("smooth=3 max_area=0.6") makes along direction ``index``, and a caption."""
        from discovery.images import make_grid
        from saliency.masks import build_rule
        from saliency.synthesis import PairSynthesizer

        try:
            rule = build_rule(rule_name, **parse_options(options))
            synthesizer = PairSynthesizer(self.generator, self.directions, index, rule, self.generator.device, sign=sign)
        except UserError as exc:
            return np.full((64, 64 * samples, 3), 255, np.uint8), str(exc)
        z, condition = self.latents(seed, samples)
        original, reference, shifted = synthesizer.generate(z, condition)
        result = synthesizer.rule.evaluate(reference, shifted)
        masks = result.masks.cpu().numpy().astype(np.uint8) * 255
        tiles = np.repeat(masks[..., None], 3, axis=3)
        kept = int(result.keep.sum())
        caption = f"{rule_name} rule, shift {synthesizer.shift:+g} along {index}: {kept} of {len(masks)} masks kept"
        return _enlarge(make_grid(tiles, rows=1, cols=len(tiles))), caption

    def traversal_gif(self, seed: int, samples: int, index: int, frames: int = 15) -> Path:
        """A GIF of the images moving along direction ``index`` from -s to +s and back."""
        from PIL import Image

        scale = float(self.directions.shift_scale)
        steps = list(np.linspace(-scale, scale, frames)) + list(np.linspace(scale, -scale, frames))[1:-1]
        pictures = [Image.fromarray(self.images(seed, samples, [(index, float(t))])) for t in steps]
        target = self.path.parent / f"traversal_{index:03d}.gif"
        buffer = io.BytesIO()
        pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=80, loop=0)
        from discovery.io import atomic_write_bytes

        atomic_write_bytes(buffer.getvalue(), target)
        return target

    # ---- labelling
    def _save(self, what: str) -> None:
        history = self.directions.manifest.setdefault("label_history", [])
        history.append({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "change": what})
        self.directions.save(self.path)  # atomic
        write_annotations(self.directions.labels, self.path.parent / ANNOTATIONS)
        log.info(f"{self.path}: {what}")

    def label(self, index: int, name: str) -> str:
        name = " ".join(str(name).split())
        if not name:
            self.directions.labels.pop(int(index), None)
            self._save(f"label of {index} removed")
            return f"removed the label of direction {index}"
        self.directions.labels[int(index)] = name
        self._save(f"direction {index} labelled {name!r}")
        return f"direction {index} is now {name!r} (saved in {self.path.name} and {ANNOTATIONS})"

    def mark_background(self, index: int, sign: int) -> str:
        previous = self.directions.background or {}
        self.directions.set_background(int(index), 1 if sign >= 0 else -1, "a person (saliency explore)")
        if previous.get("index") == int(index) and previous.get("partner") is not None:  # an optimised pair stays a pair
            self.directions.background["partner"] = previous["partner"]
        self._save(f"direction {index} marked as the background direction, sign {sign:+d}")
        return f"direction {index} (sign {sign:+d}) is the background direction: `synthesize --index auto` uses it"


def parse_options(text: str) -> dict:
    """``"smooth=3, max_area=0.6"`` -> {"smooth": 3, "max_area": 0.6}; one line for anything else."""
    options = {}
    for item in str(text or "").replace(",", " ").split():
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UserError(f"rule options {text!r}: expected key=value pairs such as smooth=3 max_area=0.6")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"rule option {key}={value!r}: expected a number") from None
        options[key] = int(number) if number.is_integer() and "." not in value else number
    return options


def _enlarge(grid: np.ndarray, minimum: int = 256) -> np.ndarray:
    factor = max(1, int(np.ceil(minimum / grid.shape[0])))
    return grid.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else grid


def build_app(explorer: Explorer):
    """The Gradio page over an Explorer."""
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a local tool
    try:
        import gradio as gr
    except ImportError:
        raise UserError("saliency explore needs Gradio: pip install 'saliency[explore]'") from None
    from saliency.masks import MASK_RULES

    scale = float(explorer.directions.shift_scale)
    with gr.Blocks(title=f"saliency explore: {explorer.path.name}") as app:
        gr.Markdown(f"### {explorer.path} — {explorer.directions.count} directions of `{explorer.directions.generator}` "
                    f"({explorer.directions.method}), ordered by {explorer.ranked_by}")
        with gr.Row():
            seed = gr.Number(value=explorer.seed, precision=0, label="seed", elem_id="seed")
            samples = gr.Slider(1, 12, value=explorer.samples, step=1, label="latents", elem_id="samples")
            class_box = gr.Textbox(label="class (ImageNet index or name; empty: the generator's policy)", visible=explorer.conditional,
                                   elem_id="class")
            truncation = gr.Slider(0.02, 1.0, value=float(getattr(explorer.generator, "truncation", 1.0) or 1.0), step=0.02,
                                   label="truncation", visible=explorer.has_truncation, elem_id="truncation")
        slots = []
        for slot in range(SLOTS):
            with gr.Row():
                pick = gr.Dropdown(explorer.choices(), value=explorer.choices()[min(slot, explorer.directions.count - 1)],
                                   label=f"direction {slot + 1} (type an index or a label)", filterable=True, elem_id=f"direction-{slot}")
                amount = gr.Slider(-scale, scale, value=0.0, step=scale / 20, label=f"shift {slot + 1}", elem_id=f"shift-{slot}")
            slots.append((pick, amount))
        picture = gr.Image(label="images (all shifts added)", type="numpy", elem_id="images", interactive=False)
        with gr.Row():
            paired = (explorer.directions.background or {}).get("partner") is not None  # an optimised pair: its own rule
            default_rule = "two-direction" if paired and "two-direction" in MASK_RULES else "lighting"
            rule = gr.Dropdown(MASK_RULES.names(), value=default_rule if default_rule in MASK_RULES else MASK_RULES.names()[0],
                               label="mask rule (along direction 1)", elem_id="rule")
            rule_options = gr.Textbox(label="rule options (e.g. smooth=3 max_area=0.6)", elem_id="rule-options")
            mask_caption = gr.Markdown(elem_id="mask-caption")
        mask_picture = gr.Image(label="masks synthesis would make", type="numpy", elem_id="masks", interactive=False)
        with gr.Row():
            name = gr.Textbox(label="label for direction 1 (e.g. background removal, zoom)", elem_id="label")
            save_label = gr.Button("Save label", elem_id="save-label")
            background = gr.Button("Mark direction 1 as background", elem_id="mark-background")
            gif = gr.Button("Traversal GIF of direction 1", elem_id="gif")
        status = gr.Markdown(elem_id="status")
        gif_file = gr.File(label="traversal", elem_id="gif-file")

        inputs = [seed, samples, class_box, truncation] + [component for pair in slots for component in pair]

        def render(seed_value, count, class_text, truncation_value, *values):
            explorer.set_class(class_text)
            if explorer.has_truncation:
                explorer.set_truncation(truncation_value)
            shifts = [(explorer.index_of(values[2 * i]), float(values[2 * i + 1])) for i in range(SLOTS)]
            return explorer.images(int(seed_value or 0), int(count), [s for s in shifts if s[1]])

        def render_masks(seed_value, count, first, rule_name, first_shift, options):
            sign = -1 if float(first_shift or 0) < 0 else 1
            return explorer.masks(int(seed_value or 0), int(count), explorer.index_of(first), rule_name, sign, options)

        for component in inputs:
            component.change(render, inputs, picture)
        mask_inputs = [seed, samples, slots[0][0], rule, slots[0][1], rule_options]
        for component in (seed, samples, slots[0][0], rule, rule_options, class_box, truncation):
            component.change(render_masks, mask_inputs, [mask_picture, mask_caption])
        save_label.click(lambda first, text: explorer.label(explorer.index_of(first), text), [slots[0][0], name], status)
        background.click(lambda first, shift: explorer.mark_background(explorer.index_of(first), -1 if float(shift or 0) < 0 else 1),
                         [slots[0][0], slots[0][1]], status)
        gif.click(lambda seed_value, count, first: str(explorer.traversal_gif(int(seed_value or 0), int(count), explorer.index_of(first))),
                  [seed, samples, slots[0][0]], gif_file)
        app.load(render, inputs, picture)
        app.load(render_masks, mask_inputs, [mask_picture, mask_caption])
    return app


@library_call
def explore(
    directions,                       # directions.pt (or any format saliency reads)
    *,
    generator=None,                   # generator of a foreign file (None: the one the file records)
    weights=None,                     # weights of a named generator
    generator_options=None,           # its options (classes, truncation, ...)
    host: str = LOCALHOST,            # where the server listens: this machine only, unless you say otherwise
    port: int = 7860,                 # TCP port
    seed: int = 0,                    # latents of the first view
    samples: int = 4,                 # latents shown
    device=None,                      # None / "auto": CUDA when present
    block: bool = True,               # False: return (app, url) with the server running in the background (tests)
):
    """Start the explorer on ``host:port`` (checked before the server starts: a bad file is one line)."""
    from discovery.runtime import resolve_device

    if not 1 <= int(port) <= 65535:
        raise UserError(f"--port {port}: expected 1-65535")
    explorer = Explorer(directions, generator=generator, weights=weights, generator_options=generator_options,
                        device=resolve_device(device), seed=seed, samples=samples)
    app = build_app(explorer)
    log.info(f"saliency explore: http://{host}:{port}  ({explorer.directions.count} directions of {explorer.directions.generator})")
    _, url, _ = app.launch(server_name=host, server_port=int(port), prevent_thread_lock=not block, quiet=True, show_error=True,
                           footer_links=[], inbrowser=False)
    return app, url, explorer
