"""Sub-commands of the ``saliency`` command line; each module registers itself and only parses and calls.

Adding a command is one module here plus its import line below.
"""

from saliency.commands.registry import COMMANDS, register_command  # noqa: F401

# Every command (each module registers itself on import).
from saliency.commands import (  # noqa: E402,F401  isort: skip
    generators,
    discover,
    directions,
    synthesize,
    train_segmenter,
    self_train,
    evaluate,
    predict,
    export,
    explore,
    train_gan,
    pipeline,
    demo,
)
