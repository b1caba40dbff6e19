"""vla-harness: CALVIN evaluation, data and training for vision-language-action policies."""

__version__ = "0.1.0"
