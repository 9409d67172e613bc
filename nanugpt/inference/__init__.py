"""Using a trained model.

- ``generate``: sampling text with a key/value cache.
- ``hf_export``: a checkpoint as a folder that Hugging Face ``transformers`` loads offline.
"""
