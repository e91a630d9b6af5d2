"""The held-out evaluation sources never overlap what the training sees: voices (and the
people behind them), fonts, phrasings, no-digit texts, and the built splits' files."""

from __future__ import annotations

import pickle
import re
import shutil

import numpy as np
import pytest

from mmtriton_build.data import nodigit_text, speech, unseen
from mmtriton_build.data.text import (
    DIGIT_WORDS,
    MISSPELLINGS,
    TEMPLATES,
    UNINFORMATIVE_PHRASES,
    names_digit,
)


def _speaker(voice_id: str) -> str:
    if voice_id.startswith("espeak-ng:"):
        return "espeak-ng-formant"  # rule-based synthesis, no recorded person
    return unseen.SPEAKER_OF_VOICE[voice_id]  # a KeyError: a new voice needs its speaker


@pytest.mark.skipif(shutil.which("flite") is None, reason="flite is not installed")
def test_no_held_out_voice_shares_a_speaker_with_a_training_voice() -> None:
    training = {_speaker(v.id) for v in speech.list_voices()}
    held_out = {_speaker(f"festival:{v}") for v in unseen.HELD_OUT_FESTIVAL_VOICES}
    assert held_out and not held_out & training
    # The festival voices left out are exactly the ones whose speaker flite has.
    assert _speaker("festival:kal_diphone") in training
    assert _speaker("festival:cmu_us_slt_arctic_hts") in training


def test_held_out_fonts_are_other_families_than_the_training_fonts() -> None:
    def family(rel: str) -> str:
        return rel.split("/")[0]

    training = {family(f) for f in unseen.TRAINING_FONTS}
    held_out = {
        family(f) for f in {**unseen.HELD_OUT_TYPED_FONTS, **unseen.HELD_OUT_HANDWRITING_FONTS}
    }
    assert held_out and not held_out & training


def test_held_out_phrasings_are_not_training_templates() -> None:
    def skeleton(template: str) -> str:
        return template.replace("{a} ", "").replace("{w}", "W").strip().lower()

    training = {skeleton(t) for t in TEMPLATES}
    assert not {skeleton(t) for t in unseen.HELD_OUT_TEMPLATES} & training
    rng = np.random.default_rng(0)
    for label in range(10):
        assert names_digit(unseen.held_out_phrase(label, rng))


def test_no_digit_texts_name_no_digit_and_held_out_ones_are_new() -> None:
    training = {*UNINFORMATIVE_PHRASES, *unseen.NO_DIGIT_TEXTS_TRAIN}
    val, held_out = set(unseen.NO_DIGIT_TEXTS_VAL), set(unseen.NO_DIGIT_TEXTS_HELD_OUT)
    for text in (*training, *val, *held_out):
        assert not names_digit(text), text
    assert not training & held_out and not training & val and not val & held_out
    assert names_digit("it's a 7") and names_digit("SEVN") and not names_digit("weighty")


def test_generated_no_digit_texts_spell_no_digit_and_leave_the_unseen_texts_unseen() -> None:
    texts = nodigit_text.no_digit_texts(0, 3000)
    assert texts == nodigit_text.no_digit_texts(0, 3000)  # seeded
    assert texts != nodigit_text.no_digit_texts(1, 3000)
    assert len(set(texts)) == len(texts)
    kept_out = (*unseen.NO_DIGIT_TEXTS_VAL, *unseen.NO_DIGIT_TEXTS_HELD_OUT)
    unseen_texts = [t.lower() for t in kept_out]
    unseen_words = {w for t in unseen_texts for w in re.findall(r"[a-z]+", t) if len(w) >= 4}
    digit_words = {*DIGIT_WORDS, *(m for ms in MISSPELLINGS.values() for m in ms)}
    for text in texts:
        low = " ".join(text.lower().split())
        assert text.strip() and not names_digit(text), text
        assert not re.search(r"\d", text), text
        assert not any(w in low for w in digit_words), text  # also "someone", "weight"
        assert not {"oh", "o", "ten", "often"} & set(re.findall(r"[a-z]+", low)), text
        assert not any(t in low for t in unseen_texts), text
        assert not any(w in low for w in unseen_words), text  # "asdf", "lorem", "qwerty" ...
    # The kinds it covers: letters only, several words, punctuation only, upper case.
    assert any(re.fullmatch(r"[a-z]+", t) for t in texts)
    assert any(len(t.split()) >= 4 for t in texts)
    assert any(t.strip() and not re.search(r"[A-Za-z]", t) for t in texts)
    assert any(t.isupper() for t in texts) and any(t != t.strip() for t in texts)


def test_the_checks_on_generated_texts_catch_what_they_must() -> None:
    for text in ("someone", "weight", "often", "oh", "it's 7", "SEVN", "Asdfgh", "lorem", "hmm ok"):
        assert nodigit_text.spells_digit(text) or nodigit_text.overlaps_unseen(text), text
    plain = "a red car"
    assert not nodigit_text.spells_digit(plain) and not nodigit_text.overlaps_unseen(plain)


def test_built_unseen_split_uses_only_held_out_files(built_artifacts) -> None:
    with (built_artifacts / "data" / "splits.pkl").open("rb") as f:
        splits = pickle.load(f)
    if "unseen" not in splits:
        pytest.fail("this build has no held-out split; rebuild with `mmtriton build`")
    held_out = splits["unseen"]
    training_audio = {str(s.audio_path) for k in ("train", "val") for s in splits[k]}
    training_text = {s.text for k in ("train", "val") for s in splits[k]}
    assert len(held_out) >= 500
    for s in held_out:
        assert s.image_index is None and "/unseen/images/" in str(s.image_path)
        assert "/unseen/festival/" in str(s.audio_path)
        assert str(s.audio_path) not in training_audio
        assert s.text not in training_text
    # Training audio comes from the training synthesizers only.
    assert all("/unseen/" not in a for a in training_audio)
