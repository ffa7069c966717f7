"""Synthetic Sentinel-2 scenes and CLC data in the real formats, with recorded ground truth."""
