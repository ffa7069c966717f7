"""rico-hdl's LMDB values (safetensors) and a product's LMDB shard, merged at the end."""

from __future__ import annotations

import heapq
import json
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import lmdb
import numpy as np
from safetensors.numpy import save as safetensors_save

from ben_builder.archive import DB, PARTS_DIR, SHARD_SUFFIX
from ben_builder.files import atomic_path

log = logging.getLogger(__name__)


#: safetensors headers by (name, dtype, shape) of the arrays: header bytes and tensor order,
#: or None for a set whose value is not its header plus the arrays' bytes (e.g. big-endian)
_SAFETENSORS_LAYOUTS: dict[
    tuple[tuple[str, np.dtype, tuple[int, ...]], ...], tuple[bytes, tuple[str, ...]] | None
] = {}


_MAX_SAFETENSORS_LAYOUTS = 64


def safetensors_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """One LMDB value of rico-hdl's layout: ``arrays`` as safetensors (``encode`` and shards).

    The first value of each set of names, dtypes and shapes is made by safetensors; its header
    (which depends on nothing else) and the order of its tensors are kept when that value is
    exactly the header followed by the arrays' bytes in that order, and the next values of the
    same set are put together from them: the same bytes, without safetensors' per-array work.
    A set that fails that check is remembered and
    always made by safetensors. Views (patch blocks) are copied dense.
    """
    key = tuple((name, a.dtype, a.shape) for name, a in arrays.items())
    known = _SAFETENSORS_LAYOUTS.get(key)
    if known is not None:
        return _joined(*known, arrays)
    dense = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    value = safetensors_save(dense)
    if key not in _SAFETENSORS_LAYOUTS and len(_SAFETENSORS_LAYOUTS) < _MAX_SAFETENSORS_LAYOUTS:
        _SAFETENSORS_LAYOUTS[key] = _safetensors_layout(value, dense)
    return value


def _joined(header: bytes, order: tuple[str, ...], arrays: Mapping[str, np.ndarray]) -> bytes:
    """A safetensors header followed by the arrays' bytes, in its order."""
    return b"".join([header, *(arrays[name].tobytes() for name in order)])


def _safetensors_layout(
    value: bytes, arrays: dict[str, np.ndarray]
) -> tuple[bytes, tuple[str, ...]] | None:
    """Header and tensor order of a safetensors ``value``, if it is them plus the arrays' bytes."""
    size = int.from_bytes(value[:8], "little")
    try:
        entries = json.loads(value[8 : 8 + size])
        order = tuple(sorted(arrays, key=lambda name: entries[name]["data_offsets"][0]))
    except (ValueError, KeyError, TypeError):
        return None
    header = value[: 8 + size]
    return (header, order) if _joined(header, order, arrays) == value else None


SHARD_MAP_SIZE = 1 << 33  # 8 GiB of address space (a tile's ~8,300 patches need ~1.6 GB)


class ShardWriter:
    """Writes one product's patches to its LMDB shard, under a temporary name until closed.

    Keys and values are those of rico-hdl's layout (``<patch>``: safetensors of the bands at
    their native sizes; ``<patch>_reference_map``: ``{"Data": CLC codes}``), the same bytes
    ``encode`` writes from the GeoTIFFs.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = atomic_path(path)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        if self.tmp.exists():
            self.tmp.unlink()
        self.env = lmdb.open(str(self.tmp), subdir=False, lock=False, map_size=SHARD_MAP_SIZE)
        self.txn = self.env.begin(write=True)
        self.entries = 0

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Store ``arrays`` (safetensors) under ``key``."""
        self.txn.put(key.encode(), safetensors_bytes(arrays))
        self.entries += 1

    def close(self, ok: bool = True) -> None:
        """Commit and move into place (``ok``), or drop the shard."""
        try:
            if ok:
                self.txn.commit()
                self.env.sync(True)
            else:
                self.txn.abort()
        finally:
            self.env.close()
        if ok:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


@contextmanager
def shard_writer(path: Path | None) -> Iterator[ShardWriter | None]:
    """A :class:`ShardWriter` for ``path`` (None: no shard), kept only if the block succeeds."""
    if path is None:
        yield None
        return
    shard = ShardWriter(path)
    try:
        yield shard
    except BaseException:
        shard.close(ok=False)
        raise
    shard.close()


def merge_shards(root: Path) -> int:
    """Merge every product's shard into ``<root>/BigEarthNet.lmdb``, keys in sorted order.

    Written anew each time (under a temporary name, then renamed), one transaction in key
    order, so the same shards always give the same file. Returns the number of entries.
    """
    shards = sorted((root / PARTS_DIR).glob(f"*{SHARD_SUFFIX}"))
    envs = [lmdb.open(str(p), subdir=False, lock=False, readonly=True) for p in shards]
    db = root / DB
    tmp = atomic_path(db)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        size = sum(p.stat().st_size for p in shards) * 2 + (1 << 24)
        out = lmdb.open(str(tmp), map_size=size)
        try:
            txns = [e.begin(buffers=False) for e in envs]
            entries = 0
            with out.begin(write=True) as w:
                for key, value in heapq.merge(*(t.cursor().iternext() for t in txns)):
                    w.put(key, value, append=True)  # keys arrive sorted
                    entries += 1
            for t in txns:
                t.abort()
            out.sync(True)
        finally:
            out.close()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        for e in envs:
            e.close()
    if db.exists():
        shutil.rmtree(db)
    os.replace(tmp, db)
    return entries
