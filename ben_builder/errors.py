"""Exception hierarchy of ben_builder.

Every error the package raises on purpose derives from :class:`BenBuilderError` and also from the
builtin it resembles, so callers can catch either. Messages name the file or product at fault and
say how to fix the problem.
"""

from __future__ import annotations


class BenBuilderError(Exception):
    """Root of all ben_builder errors."""


class SpecError(BenBuilderError, ValueError):
    """A YAML file under ``data_specs/`` or a run configuration is malformed."""


class ProductNotFoundError(BenBuilderError, FileNotFoundError):
    """A product path does not exist or is not a SAFE folder or zip."""


class ProductFormatError(BenBuilderError, ValueError):
    """A product exists but does not follow the SAFE format (name, layout, metadata)."""


class UnsupportedProductError(ProductFormatError):
    """A product type or naming convention this tool does not handle."""


class CorruptProductError(ProductFormatError):
    """A product's zip or image data cannot be read (truncated, corrupt)."""


class UnsafeArchiveError(ProductFormatError):
    """A zip whose members would point outside the product (path traversal, absolute paths)."""


class MetadataError(ProductFormatError):
    """A metadata XML file is missing, malformed, hostile or lacks a required element."""


class MissingBandError(ProductFormatError, FileNotFoundError):
    """A band file the product should contain is absent."""


class BandShapeError(ProductFormatError):
    """A band raster's size or type does not match the tile metadata."""


class ClcError(BenBuilderError, ValueError):
    """The CORINE Land Cover input is unusable (schema, CRS, codes)."""


class HubError(BenBuilderError, ConnectionError):
    """A hub answered with an error the client cannot get past by retrying."""


class CredentialsError(BenBuilderError, PermissionError):
    """Hub credentials are missing or rejected."""


class OfflineProductError(HubError):
    """The product is in the long-term archive; retrieval was requested, come back later."""


class ChecksumError(BenBuilderError, ValueError):
    """A downloaded file does not match the checksum the hub published."""


class ArchiveWriteError(BenBuilderError, OSError):
    """An output file could not be written completely (full disk, quota, permissions)."""


class ClusterError(BenBuilderError, ConnectionError):
    """The Dask cluster cannot be reached or started."""


class OutputLockedError(BenBuilderError, BlockingIOError):
    """Another run is writing into the same output folder."""


class PreflightError(BenBuilderError, ValueError):
    """A check before the run failed: unusable inputs, unwritable output, no disk space."""


class ModelError(BenBuilderError, ValueError):
    """A checkpoint is unreadable, or does not match the bands or classes it is used with."""
