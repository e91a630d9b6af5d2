"""Test-set examples for the page's gallery, written as files the page can show and send."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmtriton.paths import artifacts_dir

NO_BUILD_NOTE = (
    "No examples: the build outputs were not found under {root} (run `mmtriton build`). "
    "Everything else works."
)


@dataclass
class Gallery:
    """Rows of [image path, text, audio path], or a note saying why there are none."""

    rows: list[list] = field(default_factory=list)
    note: str = ""


def prepare_gallery(dest: Path, n: int = 8, root: Path | None = None) -> Gallery:
    """Write up to ``n`` complete test examples (distinct labels first) into ``dest``."""
    root = root or artifacts_dir()
    if n <= 0:
        return Gallery()
    try:
        from mmtriton_build.examples import load_examples

        candidates = load_examples(root, max(64, 8 * n))
    except Exception:  # no build (or no build package): an empty gallery, not a broken page
        return Gallery(note=NO_BUILD_NOTE.format(root=root))
    complete = [e for e in candidates if e.image and e.text and e.audio]
    chosen, labels = [], set()
    for e in complete:  # one per label first, then fill up
        if e.label not in labels:
            chosen.append(e)
            labels.add(e.label)
    taken = {e.index for e in chosen}
    chosen += [e for e in complete if e.index not in taken]
    chosen = sorted(chosen[:n], key=lambda e: e.label)
    dest.mkdir(parents=True, exist_ok=True)
    gallery = Gallery()
    for e in chosen:
        image = dest / f"example-{e.index}-digit-{e.label}.png"
        audio = dest / f"example-{e.index}-digit-{e.label}.wav"
        image.write_bytes(e.image)
        audio.write_bytes(e.audio)
        gallery.rows.append([str(image), e.text, str(audio)])
    if not gallery.rows:
        gallery.note = f"No complete examples were found in the build under {root}."
    return gallery
