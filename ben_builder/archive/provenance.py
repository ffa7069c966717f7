"""What a product's patches are made from, as one fingerprint.

A product's outputs depend on the product's files, the CLC file, the facts in ``data_specs/``, the
options that change outputs (layout, v1 names, screening thresholds) and the software version.
Their digests make the fingerprint recorded with the product (``_parts/<product>.json``); a re-run
keeps a product only while its fingerprint is unchanged.

Products are identified by their files' paths, sizes and modification times (reading a 1 GB
product to hash it on every run would cost more than skipping saves); the CLC file and the specs
are hashed by content, the CLC once per file version (cached in ``_parts/.digests/``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ben_builder import __version__
from ben_builder.archive import PARTS_DIR
from ben_builder.files import write_bytes
from ben_builder.product.reader import product_identity
from ben_builder.specs import specs_dir

log = logging.getLogger(__name__)

DIGESTS_DIR = ".digests"


def file_digest(path: Path, cache_root: Path | None = None) -> str:
    """SHA-256 of a file's content, cached per (path, size, mtime) under ``cache_root``."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}\0{st.st_size}\0{st.st_mtime_ns}"
    record = None
    if cache_root is not None:
        name = hashlib.sha256(str(path).encode()).hexdigest()[:32]
        record = cache_root / PARTS_DIR / DIGESTS_DIR / f"{name}.json"
        try:
            cached = json.loads(record.read_text())
            if cached.get("key") == key:
                return str(cached["sha256"])
        except (OSError, ValueError):
            pass
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    if record is not None:
        record.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(record, json.dumps({"key": key, "sha256": digest}).encode())
    return digest


def tree_digest(folder: Path) -> str:
    """SHA-256 over every file of a folder (relative path and content, in sorted order)."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


@dataclass(frozen=True)
class Inputs:
    """The inputs shared by every product of a run that change what a product writes."""

    software: str
    specs_sha256: str
    clc_sha256: str | None
    options: dict[str, Any]

    def key(self) -> str:
        """A digest of these inputs."""
        blob = json.dumps(asdict(self), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


def run_inputs(clc_path: Path | None, options: dict[str, Any], out_root: Path) -> Inputs:
    """The shared inputs of a run (hashing the CLC file once per version of it)."""
    return Inputs(
        software=__version__,
        specs_sha256=tree_digest(specs_dir()),
        clc_sha256=file_digest(clc_path, out_root) if clc_path is not None else None,
        options=options,
    )


def product_fingerprint(product: Path, inputs: Inputs) -> str:
    """The fingerprint of one product's outputs: its files' identity and the shared inputs."""
    h = hashlib.sha256()
    h.update(Path(product).name.encode() + b"\0")
    h.update(product_identity(product).encode() + b"\0")
    h.update(inputs.key().encode())
    return h.hexdigest()
