"""Short text phrases that name a digit (or deliberately do not)."""

from __future__ import annotations

import re
import string

import numpy as np

DIGIT_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)

# Typos a person might make; none of them is another digit's word.
MISSPELLINGS: dict[int, tuple[str, ...]] = {
    0: ("zer0", "zreo", "zeroo"),
    1: ("oen", "onee"),
    2: ("twp", "twoo"),
    3: ("thre", "threee"),
    4: ("fuor", "fourr"),
    5: ("fiv", "fvie"),
    6: ("sixx", "siz"),
    7: ("sevn", "sevne"),
    8: ("eigth", "eigt"),
    9: ("nien", "nnine"),
}

TEMPLATES: tuple[str, ...] = (
    "{w}",
    "the digit {w}",
    "number {w} please",
    "it's {a} {w}",
    "this is {a} {w}",
    "I think it's {a} {w}",
    "looks like {a} {w} to me",
    "digit: {w}",
    "label {w}",
    "{w}!",
)

UNINFORMATIVE_PHRASES: tuple[str, ...] = (
    "",
    "a scanned form field",
    "handwritten sample",
    "please classify this",
    "what digit is this?",
    "number please",
    "see attached",
    "from the mail room",
    "photo of a note",
    "hello",
    "no idea, you tell me",
    "zip code box",
    "unreadable",
)


def _token(label: int, rng: np.random.Generator) -> str:
    """The digit as a word (most often), a numeral or a misspelling."""
    r = rng.random()
    if r < 0.55:
        return DIGIT_WORDS[label]
    if r < 0.85:
        return str(label)
    return str(rng.choice(MISSPELLINGS[label]))


def _recase_and_space(phrase: str, rng: np.random.Generator) -> str:
    """Vary casing and whitespace the way typed input varies."""
    case = rng.random()
    if case < 0.15:
        phrase = phrase.upper()
    elif case < 0.3:
        phrase = phrase.capitalize()
    elif case < 0.4:
        phrase = string.capwords(phrase)  # str.title() would give "It'S"
    if rng.random() < 0.2:
        phrase = phrase.replace(" ", "  ")
    if rng.random() < 0.2:
        phrase = " " * int(rng.integers(1, 3)) + phrase + " " * int(rng.integers(0, 3))
    return phrase


def make_phrase(label: int | None, rng: np.random.Generator) -> str:
    """A phrase naming digit ``label``; ``None`` gives an uninformative phrase."""
    if label is None:
        return make_uninformative_phrase(rng)
    if not 0 <= label < len(DIGIT_WORDS):
        raise ValueError(f"label must be in 0..9, got {label}")
    word = _token(label, rng)
    article = "an" if word.lower().startswith(("e", "8")) else "a"
    template = str(rng.choice(TEMPLATES))
    return _recase_and_space(template.format(w=word, a=article), rng)


def make_uninformative_phrase(rng: np.random.Generator) -> str:
    """A phrase that carries no information about the digit."""
    return _recase_and_space(str(rng.choice(UNINFORMATIVE_PHRASES)), rng)


_DIGIT_TOKEN = re.compile(
    r"\d|\b(?:"
    + "|".join(sorted({*DIGIT_WORDS, *(w for ws in MISSPELLINGS.values() for w in ws)}))
    + r")\b"
)


def names_digit(text: str | None) -> bool:
    """Whether a phrase names a digit (a numeral, a digit word or one of its misspellings)."""
    return bool(text) and _DIGIT_TOKEN.search(text.lower()) is not None
