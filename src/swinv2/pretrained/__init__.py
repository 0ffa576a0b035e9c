"""Models by name with their weights: the released checkpoints' tags, their download and cache (the Hub's
and torch.hub's own layouts, offline when asked), their loading, and :func:`create_model`."""
