#!/usr/bin/env python3
"""Does the pretrained speaker encoder `resemblyzer` help the audio modality? (issue 2)

Run after `make model`, with resemblyzer and webrtcvad importable (e.g. installed with
`pip install --target /tmp/rz --no-deps resemblyzer webrtcvad` and PYTHONPATH=/tmp/rz).
librosa, which resemblyzer imports only for its mel spectrogram, is replaced by the project's
own slaney mel filterbank (the same one librosa computes by default).

It fits logistic-regression digit classifiers on the train split's audio embeddings: the
log-mel CNN's alone, resemblyzer's alone, and both concatenated, and prints test accuracy on
clean and 0 dB audio (voices never heard in training).
"""

from __future__ import annotations

import pickle
import sys
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

ROOT = Path(__file__).resolve().parent.parent


def _fake_librosa() -> None:
    from mmtriton.preprocess.audio import mel_filterbank, resample

    def melspectrogram(y, sr, n_fft, hop_length, n_mels):
        frames = np.lib.stride_tricks.sliding_window_view(
            np.pad(y, n_fft // 2, mode="reflect"), n_fft
        )[::hop_length]
        power = np.abs(np.fft.rfft(frames * np.hanning(n_fft + 1)[:-1], axis=1)) ** 2
        return mel_filterbank(n_mels, n_fft, sr) @ power.T

    lib = types.ModuleType("librosa")
    lib.feature = types.SimpleNamespace(melspectrogram=melspectrogram)
    lib.resample = lambda wav, orig_sr, target_sr: resample(wav, orig_sr)
    sys.modules["librosa"] = lib


def main() -> int:
    sys.path.insert(0, str(ROOT))
    _fake_librosa()
    from resemblyzer import VoiceEncoder, preprocess_wav

    from mmtriton.preprocess.audio import VoiceActivityTrimmer, features_from_samples
    from mmtriton_build.artifacts import BuildPaths
    from mmtriton_build.data.dataset import degradation_rng, degrade_audio
    from mmtriton_build.loaders import load_audio_encoder

    torch.set_num_threads(2)
    paths = BuildPaths(ROOT / "artifacts")
    splits = pickle.loads(paths.splits.read_bytes())
    cnn = load_audio_encoder(paths)
    speaker = VoiceEncoder("cpu", verbose=False)
    trimmer = VoiceActivityTrimmer()

    def embed(samples, degrade: bool, limit: int):
        cnn_rows, rz_rows, labels = [], [], []
        for s in samples[:limit]:
            wav, sr = sf.read(str(s.audio_path), dtype="float32")
            if degrade:
                wav = degrade_audio(wav, degradation_rng(s, "audio")).astype(np.float32)
            mel = features_from_samples(wav, sr, trimmer)
            with torch.inference_mode():
                cnn_rows.append(cnn(torch.from_numpy(mel[None]))[0].numpy())
            rz_rows.append(speaker.embed_utterance(preprocess_wav(wav, sr)))
            labels.append(s.label)
        return np.array(cnn_rows), np.array(rz_rows), np.array(labels)

    train = embed(splits["train"], False, 2000)
    tests = {
        "clean": embed(splits["test"], False, 600),
        "0 dB": embed(splits["test_degraded"], True, 600),
    }
    variants = {"log-mel CNN": [0], "resemblyzer": [1], "CNN + resemblyzer": [0, 1]}
    print(f"{'audio features':<20} " + " ".join(f"{k:>8}" for k in tests))
    for name, parts in variants.items():
        x = np.hstack([train[p] for p in parts])
        scaler = StandardScaler().fit(x)
        clf = LogisticRegression(max_iter=3000).fit(scaler.transform(x), train[2])
        accs = []
        for test in tests.values():
            xt = scaler.transform(np.hstack([test[p] for p in parts]))
            accs.append(100 * clf.score(xt, test[2]))
        print(f"{name:<20} " + " ".join(f"{a:8.2f}" for a in accs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
