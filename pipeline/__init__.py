"""smp-assess application layer: photo in, measurements out, and the ``smp`` CLI."""

__version__ = "0.1.0"
