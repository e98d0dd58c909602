"""lceval: evaluate long-context language models and the checkpoints that extend them."""

__version__ = "0.1.0"
