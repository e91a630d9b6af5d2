"""Logic behind the Triton Python-backend models (their model.py files stay thin)."""
