"""The build's steps, one module each (data, audio_encoder, embeddings, fusion), and the runner
that skips a step whose outputs exist for the same inputs. The order and the inputs of each
step are declared in `mmtriton_build.pipeline`."""

from .runner import StepRunner, fingerprint

__all__ = ["StepRunner", "fingerprint"]
