"""mmtriton: a multimodal (image + text + audio) inference pipeline served by Triton."""

__version__ = "0.1.0"
