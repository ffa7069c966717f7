"""Watching the SLURM jobs of a run: states while they queue, lost jobs, a limit on losses.

dask-jobqueue submits the jobs; with ``adapt(minimum_jobs=n)`` it replaces jobs whose workers
went away. What it does not do is tell the user: a run whose jobs pend shows a progress bar frozen
at 0 %, and a run whose jobs keep dying never ends. :class:`JobWatch` asks ``squeue`` about the
run's jobs every few seconds, logs each change of state (job id, state), counts the jobs that
ended other than by finishing (cancelled, timed out, failed, node failure, preempted) and stops
the run once more than ``max_lost`` were lost.
"""

from __future__ import annotations

import logging
import subprocess
from collections import Counter
from typing import Any

from ben_builder.errors import ClusterError

log = logging.getLogger(__name__)

#: Job states that mean the job is gone without having finished its work.
LOST_STATES = frozenset(
    {
        "CANCELLED",
        "TIMEOUT",
        "FAILED",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
    }
)


def job_states(job_ids: list[str]) -> dict[str, str]:
    """``{job id: state}`` from ``squeue`` (recently ended jobs included); {} if it fails."""
    if not job_ids:
        return {}
    try:
        done = subprocess.run(
            ["squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(job_ids)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.debug("squeue failed: %s", exc)
        return {}
    out = {}
    for line in done.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            out[parts[0]] = parts[1]
    return out


class JobWatch:
    """Follows a ``SLURMCluster``'s jobs; see the module docstring."""

    def __init__(self, cluster: Any, max_lost: int) -> None:
        self.cluster = cluster
        self.max_lost = max_lost
        self.states: dict[str, str] = {}
        self.lost: list[str] = []

    def _job_ids(self) -> list[str]:
        ids = {
            str(j.job_id)
            for j in getattr(self.cluster, "workers", {}).values()
            if getattr(j, "job_id", None)
        }
        return sorted(ids | set(self.states), key=lambda i: (len(i), i))

    def poll(self) -> str:
        """Log the jobs' changes; return a short summary (``"2 RUNNING, 1 PENDING"``).

        Raises:
            ClusterError: more than ``max_lost`` jobs were lost.
        """
        ids = self._job_ids()
        states = job_states(ids)
        for job_id in ids:
            state = states.get(job_id)
            before = self.states.get(job_id)
            if state is None:
                if before is not None and before not in LOST_STATES and before != "COMPLETED":
                    state = "GONE"  # ended and already purged from squeue
                else:
                    continue
            if state == before:
                continue
            self.states[job_id] = state
            if state in LOST_STATES or state == "GONE":
                self.lost.append(job_id)
                log.warning(
                    "SLURM job %s lost (%s); a replacement job is submitted (%d lost so far, "
                    "at most %d)",
                    job_id,
                    state,
                    len(self.lost),
                    self.max_lost,
                )
            else:
                log.info("SLURM job %s %s", job_id, state)
        if len(self.lost) > self.max_lost:
            raise ClusterError(
                f"{len(self.lost)} SLURM jobs were lost ({', '.join(self.lost)}), more than "
                f"slurm.max_lost_jobs = {self.max_lost}; see the jobs' output in the log "
                "directory, and sacct/scontrol for why they ended"
            )
        live = Counter(
            s for s in self.states.values() if s in ("PENDING", "RUNNING", "CONFIGURING")
        )
        return ", ".join(f"{n} {s}" for s, n in sorted(live.items())) or "no job"
