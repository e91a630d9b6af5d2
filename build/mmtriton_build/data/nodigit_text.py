"""Procedural, seeded texts without a digit, for training the fusion to say "not sure".

A handful of fixed no-digit phrases teaches the fusion those phrases, not the category: held-out
gibberish ("asdf", "lorem ipsum ...") still read as a confident digit. These generators cover
the category instead: random letter strings, keyboard-row mashes, pseudo-words of random
syllables, short generic sentences from a small word list, punctuation runs, mixes of them,
in varied case and spacing.

Every text is rejected and redrawn when it names a digit (a numeral, a digit word or one of
its misspellings, also inside a longer word: "someone", "weight", "often"), or when it overlaps
the validation or held-out no-digit texts (``unseen.NO_DIGIT_TEXTS_VAL`` / ``_HELD_OUT``),
which must stay unseen: it may not contain one of them, nor one of their words of 4+ letters,
nor one of their shorter words as a word (bar "a", "the", "is", "to", "of").
"""

from __future__ import annotations

import re
import string

import numpy as np

from .text import DIGIT_WORDS, MISSPELLINGS, _recase_and_space, names_digit
from .unseen import NO_DIGIT_TEXTS_HELD_OUT, NO_DIGIT_TEXTS_VAL

# Bump when the texts these functions produce change (a key ingredient of the data step).
NO_DIGIT_TEXT_VERSION = 1

# Words that spell a digit, also inside other words ("someone", "canine", "often").
_DIGIT_SUBSTRINGS = (*DIGIT_WORDS, *(w for ws in MISSPELLINGS.values() for w in ws), "ten")
# Whole words that read as a digit ("oh" for zero, "o", "nil", "nought").
_DIGIT_LIKE_WORDS = frozenset({"o", "oh", "nil", "nought", "naught", "zilch", "l"})

_KEYBOARD_ROWS = ("qwertyuiop", "asdfghjkl", "zxcvbnm")
_CONSONANTS = "bcdfghjklmnprstvwz"
_ONSETS = (*_CONSONANTS, "br", "ch", "cl", "dr", "fl", "gr", "pl", "sh", "st", "tr", "qu")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ou", "y")
_CODAS = ("", "", "", "n", "r", "s", "m", "l", "x", "st", "nd", "ck")
_PUNCTUATION = "!?.,;:-_*#@&%$~/()[]'\"+=<>^|"
# A small word list for generic sentences: no digit word inside any of them, none of the
# validation or held-out texts' words (``spells_digit`` and ``overlaps_unseen`` check every
# generated text as a whole too).
_DETERMINERS = ("a", "my", "your", "this", "that", "our", "his", "her", "some")
_ADJECTIVES = ("big", "small", "red", "old", "new", "happy", "blue", "cold", "warm", "dark")
_ADJECTIVES += ("funny", "strange", "green", "tall", "soft", "loud", "busy", "lucky", "tiny")
# Absence is not zero: "missing", "nada" carry no digit either.
_ADJECTIVES += ("missing", "vacant", "void", "unknown", "absent", "unclear", "illegible", "bare")
_NOUNS = ("dog", "house", "car", "tree", "friend", "book", "city", "river", "garden", "music")
_NOUNS += ("coffee", "table", "window", "road", "letter", "bird", "train", "shop", "park")
_NOUNS += ("teacher", "idea", "movie", "dinner", "lamp", "pencil", "desk", "bag", "plan")
_VERBS = ("likes", "hears", "has", "wants", "finds", "makes", "opens", "reads", "takes")
_VERBS += ("loves", "paints", "visits", "needs", "keeps", "shows", "sells", "draws", "calls")
_OPENERS = ("hello", "hey", "thank you", "please", "sorry", "well", "yes", "maybe", "wow")
_OPENERS += ("okay", "sure", "oops", "cool", "great", "welcome", "bye", "yo", "uh")
# ("no idea" is always redrawn, "no" being a held-out word; it stays so that the seeded texts
# stay the ones the figures in docs/model.md were measured with.)
_OPENERS += ("nada", "nope", "nah", "nobody", "never mind", "no idea", "not sure", "dunno")
_ADVERBS = ("again", "soon", "later", "now", "slowly", "gladly", "always", "never", "too")


def _words_of(texts: tuple[str, ...]) -> list[str]:
    return [w for t in texts for w in re.findall(r"[a-z]+", t.lower())]


_UNSEEN_TEXTS = tuple(t.lower() for t in (*NO_DIGIT_TEXTS_VAL, *NO_DIGIT_TEXTS_HELD_OUT))
_UNSEEN_LONG_WORDS = frozenset(w for w in _words_of(_UNSEEN_TEXTS) if len(w) >= 4)
# Function words they share with any English text are not theirs to withhold.
_STOP_WORDS = frozenset({"a", "the", "is", "to", "of"})
_UNSEEN_SHORT_WORDS = frozenset(
    w for w in _words_of(_UNSEEN_TEXTS) if len(w) < 4 and w not in _STOP_WORDS
)


def overlaps_unseen(text: str) -> bool:
    """Whether ``text`` contains a validation/held-out no-digit text or one of their words
    (4+ letters: anywhere, even inside a word; shorter ones: as a word)."""
    low = " ".join(text.lower().split())
    words = set(re.findall(r"[a-z]+", low))
    return (
        any(t in low for t in _UNSEEN_TEXTS)
        or any(w in low for w in _UNSEEN_LONG_WORDS)
        or bool(words & _UNSEEN_SHORT_WORDS)
    )


def spells_digit(text: str) -> bool:
    """Whether ``text`` names a digit, spells a digit word inside a longer word, or has a
    word that reads as a digit ("oh")."""
    low = text.lower()
    words = set(re.findall(r"[a-z]+", low))
    return (
        names_digit(text)
        or any(w in low for w in _DIGIT_SUBSTRINGS)
        or bool(words & _DIGIT_LIKE_WORDS)
    )


def _pick(rng: np.random.Generator, options) -> str:
    return str(options[int(rng.integers(len(options)))])


def _letters(rng: np.random.Generator) -> str:
    words = int(rng.integers(1, 4))
    return " ".join(
        "".join(rng.choice(list(string.ascii_lowercase), int(rng.integers(2, 10))))
        for _ in range(words)
    )


def _keyboard_mash(rng: np.random.Generator) -> str:
    parts = []
    for _ in range(int(rng.integers(1, 3))):
        row = _pick(rng, _KEYBOARD_ROWS)
        if rng.random() < 0.3:
            row = row[::-1]
        n = int(rng.integers(3, min(9, len(row)) + 1))
        start = int(rng.integers(0, len(row) - n + 1))
        mash = row[start : start + n]
        if rng.random() < 0.3:  # a hand sliding back and forth
            mash += mash[::-1][1:] + mash[1:]
        if rng.random() < 0.3:  # keys hit twice
            mash = "".join(c * int(rng.integers(1, 3)) for c in mash)
        parts.append(mash)
    return " ".join(parts)


def _pseudo_word(rng: np.random.Generator) -> str:
    syllables = int(rng.integers(1, 4))
    return "".join(
        _pick(rng, _ONSETS) + _pick(rng, _VOWELS) + _pick(rng, _CODAS) for _ in range(syllables)
    )


def _pseudo_words(rng: np.random.Generator) -> str:
    return " ".join(_pseudo_word(rng) for _ in range(int(rng.integers(1, 6))))


def _sentence(rng: np.random.Generator) -> str:
    def noun_phrase() -> str:
        adjective = _pick(rng, _ADJECTIVES) + " " if rng.random() < 0.5 else ""
        return f"{_pick(rng, _DETERMINERS)} {adjective}{_pick(rng, _NOUNS)}"

    form = rng.random()
    if form < 0.5:
        text = f"{noun_phrase()} {_pick(rng, _VERBS)} {noun_phrase()}"
        if rng.random() < 0.3:
            text += " " + _pick(rng, _ADVERBS)
    elif form < 0.75:
        text = f"{_pick(rng, _OPENERS)}, {noun_phrase()}"
    else:
        text = " ".join(
            _pick(rng, (*_NOUNS, *_ADJECTIVES, *_OPENERS)) for _ in range(int(rng.integers(1, 4)))
        )
    if rng.random() < 0.4:
        text += _pick(rng, (".", "!", "?", "!!", "?!", ".."))
    return text


def _punctuation(rng: np.random.Generator) -> str:
    if rng.random() < 0.5:  # one mark repeated
        return _pick(rng, _PUNCTUATION) * int(rng.integers(1, 7))
    return "".join(rng.choice(list(_PUNCTUATION), int(rng.integers(1, 7))))


def _mixed(rng: np.random.Generator) -> str:
    kinds = _GENERATORS[:-1]
    parts = [kinds[int(rng.integers(len(kinds)))](rng) for _ in range(int(rng.integers(2, 4)))]
    return " ".join(parts)


def _random_case(text: str, rng: np.random.Generator) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in text)


_GENERATORS = (_letters, _keyboard_mash, _pseudo_words, _sentence, _punctuation, _mixed)
# How often each kind is drawn (the order of _GENERATORS).
_WEIGHTS = np.array([0.15, 0.15, 0.2, 0.3, 0.08, 0.12])


def no_digit_text(rng: np.random.Generator) -> str:
    """One text without a digit (see the module docstring), redrawn until it is safe."""
    while True:
        kind = _GENERATORS[int(rng.choice(len(_GENERATORS), p=_WEIGHTS))]
        text = kind(rng)
        if rng.random() < 0.15:
            text = _random_case(text, rng)
        text = _recase_and_space(text, rng)
        if text.strip() and not spells_digit(text) and not overlaps_unseen(text):
            return text


def no_digit_texts(seed: int, n: int) -> list[str]:
    """``n`` distinct training texts without a digit, the same for the same seed."""
    rng = np.random.default_rng([seed, 17])
    texts: dict[str, None] = {}
    while len(texts) < n:
        texts.setdefault(no_digit_text(rng))
    return list(texts)
