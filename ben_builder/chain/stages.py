"""A product's stages: their timings, and the stage an exception escaped from."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress

log = logging.getLogger(__name__)


STAGE_ATTR = "ben_stage"


#: The timing of the band files written while other bands decode: it overlaps ``read_bands``,
#: so it is not part of a product's time.
WRITE_OVERLAPPED = "write_overlapped"


def product_seconds(seconds: dict[str, float]) -> float:
    """A product's time from its stage timings (the overlapping writes left out)."""
    return sum(float(v) for k, v in seconds.items() if k != WRITE_OVERLAPPED)


def stage_of(exc: BaseException) -> str:
    """The stage an exception escaped from (``"unknown"`` if it was not tagged)."""
    return str(getattr(exc, STAGE_ATTR, "unknown"))


class Stages:
    """Times named stages and tags exceptions with the stage they escaped from."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name``; an exception escaping it is tagged with ``name``."""
        t = time.perf_counter()
        try:
            yield
        except Exception as exc:
            if not hasattr(exc, STAGE_ATTR):
                with suppress(AttributeError):
                    setattr(exc, STAGE_ATTR, name)
            raise
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - t
