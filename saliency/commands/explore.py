"""``saliency explore``: browse and label directions in the browser (calls ``saliency.explore``)."""

from __future__ import annotations

from saliency.commands.common import add_generator_arguments
from saliency.commands.registry import register_command

NAME = "explore"
HELP = "browse, combine and label directions live in the browser (local web app; pip install 'saliency[explore]')"
DESCRIPTION = """Start a local web app over a directions file: images from a few latents, sliders moving them
along up to three directions at once, the masks a mask rule would make, a traversal GIF, and
labelling (name a direction, mark the background direction). Labels go into the directions file
(atomically, with their history) and annotations.txt beside it; `synthesize --index auto` then
uses the marked background direction. The server listens on 127.0.0.1 only unless --host says
otherwise (--host 0.0.0.0 exposes it to your network)."""


def add_arguments(parser):
    parser.add_argument("--directions", required=True, help="directions.pt (or an imported format; then --generator)")
    add_generator_arguments(parser, default=None)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="TCP port")
    parser.add_argument("--samples", type=int, default=4, help="latents shown")


def run(args):
    from saliency.commands.common import generator_options
    from saliency.explorer import explore

    explore(args.directions, generator=args.generator, weights=args.weights, generator_options=generator_options(args), host=args.host,
            port=args.port, seed=args.seed, samples=args.samples, device=args.device)


register_command(NAME, HELP, add_arguments, run, DESCRIPTION)
