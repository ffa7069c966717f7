"""What a run returns: one record per product task, and the run's whole outcome."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ben_builder.chain.s1 import S1Outcome
from ben_builder.chain.stages import product_seconds
from ben_builder.runtime import StopRequest
from ben_builder.sources import Unavailable
from ben_builder.sources.local import Duplicate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TaskResult:
    """Outcome of one product task."""

    product: str
    ok: bool
    stage: str | None = None
    error: str | None = None
    traceback: str | None = None
    summary: dict[str, Any] | None = None
    sha256: str | None = None


@dataclass
class RunResult:
    """Outcome of a whole run."""

    results: list[TaskResult] = field(default_factory=list)
    skipped: list[Duplicate] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    report: Path | None = None
    notes: list[str] = field(default_factory=list)
    s1: S1Outcome | None = None
    removed: list[str] = field(default_factory=list)
    stopped_by: str = ""  # the signal that stopped the run (``SIGTERM``), if one did

    @property
    def failures(self) -> list[TaskResult]:
        """The tasks that failed."""
        return [r for r in self.results if not r.ok]

    @property
    def warnings(self) -> list[str]:
        """Warnings of the products processed (no CLC coverage, nothing kept), and of the run."""
        out = list(self.notes)
        out += [f"removed {stem}: no input asks for it any more" for stem in self.removed]
        if self.stopped_by:
            cancelled = sum(r.stage == "cancelled" for r in self.results)
            out.append(
                f"stopped by {self.stopped_by}: {cancelled} products not processed; run again "
                "to finish the archive"
            )
        if self.s1 is not None and self.s1.failures:
            first = ", ".join(f"{f.s1_name} ({f.error})" for f in self.s1.failures[:3])
            out.append(f"{len(self.s1.failures)} S1 patches could not be taken: {first}")
        out += [
            f"{r.product}: {w}"
            for r in self.results
            if r.summary
            for w in r.summary.get("warnings", [])
        ]
        if not self.failures and self.produced_nothing:
            out.append("the run produced no patch at all")
        return out

    @property
    def produced_nothing(self) -> bool:
        """Whether the archive holds no patch (such a run must not look like a success)."""
        return self.counts.get("metadata", 0) + self.counts.get("flagged", 0) == 0


def failed(product: str, stage: str, exc: BaseException) -> TaskResult:
    """The failure of ``product`` in ``stage`` by ``exc`` (call it in the ``except`` block)."""
    return TaskResult(
        product=product,
        ok=False,
        stage=stage,
        error=f"{type(exc).__name__}: {exc}",
        traceback=traceback.format_exc(),
    )


def cancelled(product: str, stop: StopRequest) -> TaskResult:
    """A product not processed because a signal stopped the run."""
    why = f"not processed: the run was stopped by {stop.name}; run again to finish it"
    return TaskResult(product=product, ok=False, stage="cancelled", error=why)


def unavailable(item: Unavailable) -> TaskResult:
    """A product the inputs asked for but could not provide, as a failed task."""
    return TaskResult(product=item.product, ok=False, stage=item.stage, error=item.error)


def outcome(fut: Any, product: str) -> TaskResult:
    """A task's result; a lost worker (memory limit, signal) is a failure of that product only."""
    try:
        r: TaskResult = fut.result()
        return r
    except Exception as exc:  # KilledWorker, CommClosedError, CancelledError, ...
        result = failed(product, "worker", exc)
        if type(exc).__name__ == "KilledWorker":
            hint = (
                " (the worker died while processing it, e.g. killed for exceeding its memory "
                "limit: raise cluster.memory_limit or use fewer workers per machine)"
            )
            result = replace(result, error=f"{result.error}{hint}")
        return result


def result_line(r: TaskResult) -> str:
    """One line per finished product (for logs of batch jobs)."""
    if not r.ok:
        return f"FAILED {r.product} [{r.stage}]: {r.error}"
    s = r.summary or {}
    state = "already done" if s.get("skipped") else "done"
    seconds = product_seconds(s.get("seconds") or {})
    kept = f"kept {s.get('kept', 0)} of {s.get('candidates', 0)}"
    return f"{state} {r.product}: {kept} ({seconds:.1f} s)"
