"""Patch labels from CLC reference maps: pure functions over code arrays.

The reference map of a patch is its 120 x 120 uint16 array of CLC codes (999 where no polygon).
Codes map to the 19-class nomenclature; other codes are UNLABELED. A patch is kept only if under
``max_unlabeled_fraction`` of its pixels are UNLABELED; its labels are every class present. The
43-label (v1) set is the Level-3 names present.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ben_builder.specs import ClcSpec, Nomenclature

MAX_CODE = 1000


@dataclass(frozen=True)
class PatchLabels:
    """Label statistics of every patch of a grid.

    Attributes:
        classes19: (rows, cols, 19) bool, class present in the patch.
        labels43: (rows, cols, n43) bool, v1 Level-3 label present.
        unlabeled_fraction: (rows, cols) float, share of pixels with no 19-class class.
        names19: Class names in official order.
        names43: v1 label names, in CLC code order.
    """

    classes19: np.ndarray
    labels43: np.ndarray
    unlabeled_fraction: np.ndarray
    names19: tuple[str, ...]
    names43: tuple[str, ...]

    def names_at(self, x: int, y: int) -> tuple[list[str], list[str]]:
        """19-class names (sorted alphabetically, as published) and 43-label names of a patch."""
        c19 = sorted(n for n, p in zip(self.names19, self.classes19[y, x], strict=True) if p)
        c43 = [n for n, p in zip(self.names43, self.labels43[y, x], strict=True) if p]
        return c19, c43


def label_patches(blocks: np.ndarray, nomenclature: Nomenclature, clc: ClcSpec) -> PatchLabels:
    """Label every patch from its reference map.

    Args:
        blocks: (rows, cols, h, w) uint16 CLC codes per patch (e.g. ``PatchGrid.blocks``).
        nomenclature: The 19-class nomenclature.
        clc: The CLC class list (for the 43-label names).

    Returns:
        Per-patch label presence and unlabelled fractions.
    """
    rows, cols, h, w = blocks.shape
    if blocks.size and int(blocks.max()) >= MAX_CODE:
        raise ValueError(f"reference map holds code {int(blocks.max())}; CLC codes are 3 digits")
    # per-patch histograms of codes, one bincount per patch row: a whole tile at once made a
    # 64-bit temporary of every pixel (about a GB for a full tile, all of it fresh pages)
    counts = np.empty((rows * cols, MAX_CODE), np.int64)
    offsets = (np.arange(cols, dtype=np.intp) * MAX_CODE)[:, None]
    for r in range(rows):
        row = blocks[r].reshape(cols, h * w) + offsets
        counts[r * cols : (r + 1) * cols] = np.bincount(
            row.ravel(), minlength=cols * MAX_CODE
        ).reshape(cols, MAX_CODE)

    c2c = nomenclature.code_to_class
    to19 = np.zeros((MAX_CODE, len(nomenclature.classes)), bool)
    for code, idx in c2c.items():
        to19[int(code), idx] = True
    v1 = clc.v1_names
    codes43 = sorted(v1)
    to43 = np.zeros((MAX_CODE, len(codes43)), bool)
    for j, code in enumerate(codes43):
        to43[int(code), j] = True
    present = counts > 0
    mapped = counts[:, to19.any(axis=1)].sum(axis=1)
    return PatchLabels(
        classes19=(present @ to19).reshape(rows, cols, -1) > 0,
        labels43=(present @ to43).reshape(rows, cols, -1) > 0,
        unlabeled_fraction=(1 - mapped / (h * w)).reshape(rows, cols),
        names19=nomenclature.names,
        names43=tuple(v1[c] for c in codes43),
    )
