"""Turns PyTorch models into deployable artifacts: data, training, evaluation, export."""
