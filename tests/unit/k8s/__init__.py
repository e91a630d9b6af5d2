"""Tests of the Kubernetes rehearsal (k8s/rehearsal)."""
