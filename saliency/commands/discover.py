"""``saliency discover``: find interpretable latent directions of a generator (calls ``discovery.discover``)."""

from __future__ import annotations

import argparse

from saliency.commands.registry import register_command

NAME = "discover"
HELP = "discover interpretable latent directions (Voynov-Babenko, Hessian, GANSpace, SeFa or any registered method)"
DESCRIPTION = """Discover interpretable directions in a generator's latent space.

Writes OUT/directions.pt (load it with discovery.load_directions; it records the background
direction chosen by the ranking), OUT/summary.json, OUT/background_ranking.json and
background_candidates.png, OUT/charts/ (one PNG per direction and index.html) and, for
--method voynov, a checkpoint, stats.csv / stats.jsonl / tensorboard logs; --resume continues an
interrupted run. Each method's options are in its own group below; an option left unset keeps
that method's default (shown per method). Voynov defaults are the paper's: K = dim_z directions,
1e5 steps, batch 32, shifts 6 * U[-1, 1] with |eps| >= 0.5, Adam 1e-4, loss CE + 0.25 * L1."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from discovery.methods import METHODS
    from saliency.commands.common import add_generator_arguments, add_registry_options

    add_generator_arguments(parser)
    parser.add_argument("--method", choices=METHODS.names(), default="voynov", help="discovery method")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--charts", type=int, default=None, help="how many direction charts to draw (default: all; 0: none)")
    parser.add_argument("--chart-rows", type=int, default=6, help="latents per chart")
    parser.add_argument("--chart-columns", type=int, default=9, help="shifts per chart, from -s to +s")
    parser.add_argument("--rca-steps", type=int, default=0, help="methods other than voynov: train a reconstructor this long to report RCA (0: skip)")
    parser.add_argument("--no-background-ranking", dest="rank_background", action="store_false",
                        help="do not score the directions as background-removal candidates")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint (resumable methods)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    add_registry_options(parser, [(entry.name, entry.description, entry.options, entry.defaults) for _, entry in METHODS.items()],
                         reserved={"resume", "progress", "seed", "device", "charts", "out"})


def run(args: argparse.Namespace) -> None:
    import discovery
    from saliency.commands.common import generator_options, registry_options_given
    from discovery.methods import get_method

    from discovery.methods import METHODS

    entry = get_method(args.method)
    every_option = [option.name for _, method in METHODS.items() for option in method.options]
    discovery.discover(
        args.generator, args.method, args.out, weights=args.weights, generator_options=generator_options(args), seed=args.seed,
        device=args.device, resume=args.resume, charts=args.charts, chart_rows=args.chart_rows, chart_columns=args.chart_columns,
        rank_background=args.rank_background, rca_steps=args.rca_steps, progress=args.progress,
        **registry_options_given(args, entry.options, f"--method {entry.name}", every_option),
    )


register_command(NAME, HELP, add_arguments, run, DESCRIPTION)
