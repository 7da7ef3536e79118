"""File names for the pictures and arrays the SDK writes (the gallery, the CLI): safe and distinct."""

from __future__ import annotations

import re


def slug(text: str) -> str:
    """``text`` as a file-name stem: letters, digits, ``.``, ``_`` and ``-`` only, never empty.

    ``+`` becomes ``p`` so method names stay distinct (``gradcam++`` -> ``gradcampp``, not ``gradcam``).
    """
    text = text.replace("+", "p")
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
