"""The one error a bad config raises, from the model's config.json to the training config: its message names
the file or field and what to change, and the command-line entry points print it instead of a traceback."""


class ConfigError(ValueError):
    """A model or training config that this code cannot run."""
