"""Training and evaluation on encoded archives (needs the ``[train]`` extra: PyTorch)."""
