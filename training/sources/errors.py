"""SourceError on its own, so source specs can be parsed without importing torch."""


class SourceError(ValueError):
    """A sample set or generator cannot be used; the message names it and the problem."""
