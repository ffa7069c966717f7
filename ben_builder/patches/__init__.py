"""The pure per-tile stages over arrays: the patch grid, labels from CLC, screening."""
