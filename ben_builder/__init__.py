"""ben_builder: build BigEarthNet-style archives from Sentinel-2 products and CLC 2018."""

__version__ = "0.1.0"
