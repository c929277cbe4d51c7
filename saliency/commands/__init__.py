"""Sub-commands of the ``saliency`` command line; each module only parses and calls."""
