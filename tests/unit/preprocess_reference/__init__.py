"""Preprocessing as it was before the issue-16 speed-ups (mmtriton/preprocess at 06d4440;
the modules last changed in 3c1536b), kept verbatim.

Only the imports between these modules point here instead of ``mmtriton.preprocess``; text.py
is not copied (issue 16 left it unchanged), so the reference uses the package's tokenizer;
``InvalidInput`` still comes from ``mmtriton.preprocess.errors`` so refusals compare directly.
``tests/unit/test_preprocess_parity.py`` runs it beside the package on real inputs and
requires identical tensors (within 1e-5) and identical refusals. Do not "fix" this copy.
"""
