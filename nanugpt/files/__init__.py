"""Files: written whole or not at all, checksummed, downloaded once.

- ``atomic``: writes that appear only when complete (temporary name, fsync, rename).
- ``hashing``: sha256 of files, read in blocks.
- ``folder_lock``: one writer per output folder (``flock``, released when the holder exits).
- ``download``: a URL fetched once into a local folder, its sha256 checked before it takes its name.
"""
