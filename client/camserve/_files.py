"""File names: which files the command line reads as images, and safe, distinct names for what the SDK writes."""

from __future__ import annotations

import re

#: The file suffixes read as images when a directory is given (``camserve explain``, ``camserve perf``).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def slug(text: str) -> str:
    """``text`` as a file-name stem: letters, digits, ``.``, ``_`` and ``-`` only, never empty.

    ``+`` becomes ``p`` so method names stay distinct (``gradcam++`` -> ``gradcampp``, not ``gradcam``).
    """
    text = text.replace("+", "p")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
