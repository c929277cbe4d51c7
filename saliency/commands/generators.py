"""``saliency generators``: list the registered generators."""

NAME = "generators"
HELP = "list the registered generators and where their weights come from"


def add_arguments(parser):
    pass


def run(args):
    from discovery.generators import get_entry, list_generators

    for name in list_generators():
        entry = get_entry(name)
        source = "no weights needed"
        if entry.plugin is not None:
            source = f"plugin: {entry.plugin}"
        elif entry.weights is not None:
            source = "embedded in the package" if entry.weights.embedded else f"weights: {entry.weights.filename}"
        print(f"{name:20s} {entry.description}  [{source}]")


from saliency.commands.registry import register_command  # noqa: E402

register_command(NAME, HELP, add_arguments, run, globals().get("DESCRIPTION"))
