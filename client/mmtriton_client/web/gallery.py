"""The page's example gallery: the plain files `mmtriton export` wrote (see mmtriton.paths)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from mmtriton.paths import GALLERY_INDEX, gallery_dir

NO_GALLERY_NOTE = (
    "No examples: no gallery under {folder} (run `mmtriton export`). Everything else works."
)


@dataclass
class Gallery:
    """Rows of [image path, text, audio path], or a note saying why there are none."""

    rows: list[list] = field(default_factory=list)
    note: str = ""


def prepare_gallery(n: int = 8, root: Path | None = None) -> Gallery:
    """Up to `n` examples from the gallery under the artifacts folder `root`."""
    if n <= 0:
        return Gallery()
    folder = gallery_dir(root)
    try:
        index = json.loads((folder / GALLERY_INDEX).read_text())
        entries = index["examples"]
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
    ):  # no build: an empty gallery, not a broken page
        return Gallery(note=NO_GALLERY_NOTE.format(folder=folder))
    rows = []
    for entry in sorted(entries[:n], key=lambda e: str(e.get("label"))):
        image, audio = folder / entry["image"], folder / entry["audio"]
        if image.is_file() and audio.is_file():
            rows.append([str(image), entry["text"], str(audio)])
    if not rows:
        return Gallery(note=f"The gallery under {folder} lists no example whose files exist.")
    return Gallery(rows=rows)
