"""Helpers shared by the tests."""

from __future__ import annotations

import hashlib
from pathlib import Path


def digest_tree(root: Path) -> dict[str, str]:
    """SHA-256 of every file of an archive but the run report (run facts live only there)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "report" not in p.relative_to(root).parts
    }
