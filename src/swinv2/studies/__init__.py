"""The paper's experiments in miniature, on real data (``swinv2 study NAME --output DIR``)."""
