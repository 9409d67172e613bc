"""nanuGPT: a modular GPT training library. Importing it is cheap: no torch at import."""

__version__ = "0.1.0"
