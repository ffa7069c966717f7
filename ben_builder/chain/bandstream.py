"""A product's band files, written by background threads while its other bands decode."""

from __future__ import annotations

import logging
import os
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ben_builder import archive
from ben_builder.archive.writer import BandWriter
from ben_builder.patches.grid import PatchGrid

log = logging.getLogger(__name__)


class BandStream:
    """Writes each band's patch files, and the maps, in background threads as bands decode.

    ``writers`` threads (the task's cores) each own a share of the patch rows, so the jobs for
    one patch run in order; the reference maps go with the first band.

    Which patches get written depends on the no-data screening of every band, which is known
    only once the last band is decoded. A band is written for the patches still wanted after the
    bands decoded so far (the no-data share of a patch is its largest over the bands, so it can
    only grow); a patch that a later band drops has its folders removed in :meth:`finish`. The
    files written are therefore exactly those of a write after the decode.
    """

    def __init__(
        self,
        writer: BandWriter,
        grid: PatchGrid,
        folders: dict[tuple[int, int], list[tuple[Path, str]]],
        maps: dict[tuple[int, int], Path],
        writers: int = 1,
    ) -> None:
        self.writer, self.grid, self.folders, self.maps = writer, grid, folders, maps
        # writer i owns the patch rows y % writers == i, so its jobs for them run in order
        self.pools = [
            ThreadPoolExecutor(1, thread_name_prefix=f"ben-band-writer-{i}")
            for i in range(max(1, writers))
        ]
        rows = np.arange(grid.shape[0])[:, None] % len(self.pools)
        self.shares = [np.broadcast_to(rows == i, grid.shape) for i in range(len(self.pools))]
        self.futures: list[Future[None]] = []
        self.started = np.zeros(grid.shape, bool)  # patches whose folders exist
        self.busy = [0.0] * len(self.pools)
        self.maps_submitted = False
        rows_n, cols_n = grid.shape  # corners and path stems once, not at every file
        self.ulx = [grid.patch(x, 0).ulx_m for x in range(cols_n)]
        self.uly = [grid.patch(0, y).uly_m for y in range(rows_n)]
        self.stems = {
            key: [(str(f), os.path.join(f, f"{prefix}_")) for f, prefix in targets]
            for key, targets in folders.items()
        }

    @property
    def busy_s(self) -> float:
        """Seconds the writer threads spent writing, summed."""
        return sum(self.busy)

    def submit(self, name: str, resolution_m: int, band: np.ndarray, patches: np.ndarray) -> None:
        """Write ``band`` for every patch where ``patches`` is true (in the background).

        Raises:
            ArchiveWriteError: an earlier band's files could not be written.
        """
        for f in self.futures:  # fail as soon as a write failed, not after the last band
            if f.done():
                f.result()
        new = patches & ~self.started
        self.started |= patches
        for i, (pool, share) in enumerate(zip(self.pools, self.shares, strict=True)):
            self.futures.append(
                pool.submit(self._write, i, name, resolution_m, band, patches & share, new & share)
            )

    def submit_maps(self, codes: np.ndarray, patches: np.ndarray) -> None:
        """Write the 10 m reference map of every patch where ``patches`` is true (background)."""
        self.maps_submitted = True
        for i, (pool, share) in enumerate(zip(self.pools, self.shares, strict=True)):
            self.futures.append(pool.submit(self._write_maps, i, codes, patches & share))

    def _write_maps(self, i: int, codes: np.ndarray, patches: np.ndarray) -> None:
        t = time.perf_counter()
        blocks = self.grid.blocks(codes, archive.REFMAP_RESOLUTION_M)
        for y, x in zip(*np.nonzero(patches), strict=True):
            path = self.maps.get((int(y), int(x)))
            if path is not None:
                p = self.grid.patch(int(x), int(y))
                self.writer.write_refmap(path, blocks[p.y, p.x], p.ulx_m, p.uly_m)
        self.busy[i] += time.perf_counter() - t

    def _write(
        self,
        i: int,
        name: str,
        resolution_m: int,
        band: np.ndarray,
        patches: np.ndarray,
        new: np.ndarray,
    ) -> None:
        t = time.perf_counter()
        blocks = self.grid.blocks(band, resolution_m)
        for y in np.flatnonzero(patches.any(axis=1)).tolist():
            files, columns = [], []
            for x in np.flatnonzero(patches[y]).tolist():
                for folder, stem in self.stems[y, x]:
                    if new[y, x]:
                        _make_folder(folder)
                    files.append((f"{stem}{name}.tif", self.ulx[x], self.uly[y]))
                    columns.append(x)
            self.writer.write_band(files, blocks[y, columns], resolution_m)
        self.busy[i] += time.perf_counter() - t

    def finish(self, drop: np.ndarray) -> None:
        """Wait for every band's files, then remove the patches ``drop`` marks (no-data)."""
        for f in self.futures:
            f.result()
        late = self.started & drop
        for y, x in zip(*np.nonzero(late), strict=True):
            key = (int(y), int(x))
            extra = [self.maps[key].parent] if key in self.maps else []
            for folder in [f for f, _ in self.folders[key]] + extra:
                shutil.rmtree(folder, ignore_errors=True)
        if late.any():
            log.debug("removed %d patches that a later band's no-data dropped", int(late.sum()))

    def close(self) -> None:
        """Stop: pending band writes are cancelled, running ones are waited for."""
        for pool in self.pools:
            pool.shutdown(wait=True, cancel_futures=True)


def _make_folder(folder: str) -> None:
    """``mkdir -p`` of a patch folder, one system call when its parent exists."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
