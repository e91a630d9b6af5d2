"""Reliability checks against a real tritonserver: hostile inputs, overload, faults, soak, security.

Each scenario module exposes one ``run_*`` function returning a JSON-ready dict; the tests in
``tests/reliability`` run short versions, ``mmtriton reliability`` (``make
reliability``, ``make soak``) runs them all and writes ``reports/reliability.json``.
"""
