"""L1C -> L2A with ESA's sen2cor (``L2A_Process``), one product at a time.

BigEarthNet v1 and v2 are L2A products made from L1C products with sen2cor (v2: sen2cor 2.11;
products made locally carry baseline ``N9999``, as v2's patch names do). This module runs
``L2A_Process --output_dir DIR <L1C>.SAFE`` on an unzipped product (a zip is extracted first,
with the same member checks as the reader) and moves the one L2A product it writes to its final
place only when sen2cor succeeded, so a product is either complete or absent: an interrupted run
leaves only a ``.<name>.sen2cor`` work folder, removed by the next attempt.

sen2cor's console output goes to ``<output_dir>/<L1C stem>.sen2cor.log``; on failure its tail is
in the error message.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ben_builder.config import Sen2CorSettings
from ben_builder.errors import BenBuilderError, SpecError
from ben_builder.product.names import ProductName, acquisition
from ben_builder.product.source import extract_product

log = logging.getLogger(__name__)

_VERSION_RE = re.compile(r"Version:\s*(\d+)\.(\d+)(?:\.(\d+))?")


class Sen2CorError(BenBuilderError, RuntimeError):
    """sen2cor failed on a product or wrote something other than one L2A product of it."""


def _resolve_executable(executable: str) -> str:
    found = shutil.which(executable)
    if found is None:
        raise SpecError(
            f"sen2cor executable {executable!r} not found (not on PATH, or not executable); "
            "install sen2cor (https://step.esa.int/main/snap-supported-plugins/sen2cor/) and set "
            "sen2cor.executable to its bin/L2A_Process"
        )
    return found


def check_version(settings: Sen2CorSettings) -> str:
    """Run ``L2A_Process --help`` and return the version it prints (``"2.11.0"``).

    Raises:
        SpecError: the executable is missing, prints no version, or another version than expected.
    """
    exe = _resolve_executable(settings.executable)
    try:
        done = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SpecError(f"{exe} --help failed: {exc}") from exc
    m = _VERSION_RE.search(done.stdout + done.stderr)
    if not m:
        raise SpecError(f"{exe} --help prints no 'Version: NN.NN.NN'; is it sen2cor's L2A_Process?")
    found = tuple(int(v or 0) for v in m.groups())
    if settings.version is not None:
        want = tuple(int(v) for v in settings.version.split("."))
        if found[: len(want)] != want:
            raise SpecError(
                f"{exe} is sen2cor {'.'.join(map(str, found))}, the configuration expects "
                f"{settings.version} (sen2cor.version; BigEarthNet v2 used 2.11)"
            )
    return ".".join(map(str, found))


def find_l2a(l1c: str | Path, folder: Path) -> Path | None:
    """The finished L2A product of ``l1c``'s acquisition in ``folder``, if there is one."""
    if not folder.is_dir():
        return None
    acq = acquisition(Path(l1c).name)
    for p in sorted(folder.iterdir()):
        if not p.name.endswith(".SAFE") or p.name.startswith("."):
            continue
        try:
            n = ProductName.parse(p.name)
        except ValueError:
            continue
        if n.level == "L2A" and acquisition(p.name) == acq:
            return p
    return None


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_sen2cor(l1c: str | Path, settings: Sen2CorSettings) -> Path:
    """Make the L2A product of one L1C product (skipped when it is already there).

    Args:
        l1c: The L1C ``.SAFE`` folder or ``.zip``.
        settings: How to call sen2cor; the L2A ``.SAFE`` goes to ``settings.output_dir`` (with
            the log, and the work folder meanwhile).

    Returns:
        The L2A ``.SAFE`` folder.

    Raises:
        Sen2CorError: sen2cor exited non-zero, timed out, or wrote no (or more than one) L2A
            product of this acquisition.
    """
    l1c, out = Path(l1c), Path(settings.output_dir)
    name = ProductName.parse(l1c.name)
    if name.level != "L1C":
        raise SpecError(f"{l1c}: sen2cor takes L1C products, this is {name.level}")
    done = find_l2a(l1c, out)
    if done is not None:
        log.info("%s: L2A already made (%s)", l1c.name, done.name)
        return done
    out.mkdir(parents=True, exist_ok=True)
    work = out / f".{name.stem}.sen2cor"
    if work.exists():
        shutil.rmtree(work)
    result_dir = work / "out"
    result_dir.mkdir(parents=True)
    safe = extract_product(l1c, work / "in") if l1c.is_file() else l1c.resolve()
    exe = _resolve_executable(settings.executable)
    cmd: Sequence[str] = [exe, "--output_dir", str(result_dir), *settings.extra_args, str(safe)]
    log_path = out / f"{name.stem}.sen2cor.log"
    log.info("sen2cor %s", l1c.name)
    with open(log_path, "w") as fh:
        try:
            proc = subprocess.run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=settings.timeout_s, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise Sen2CorError(
                f"{l1c.name}: sen2cor did not finish in {settings.timeout_s:.0f} s "
                f"(log: {log_path})"
            ) from exc
    if proc.returncode != 0:
        raise Sen2CorError(
            f"{l1c.name}: sen2cor exited with status {proc.returncode} (log: {log_path}):\n"
            f"{_tail(log_path)}"
        )
    made = [p for p in result_dir.iterdir() if p.name.endswith(".SAFE")]
    l2a = [p for p in made if p.name.startswith(f"{name.mission}_MSIL2A_")]
    if len(l2a) != 1 or acquisition(l2a[0].name) != acquisition(l1c.name):
        raise Sen2CorError(
            f"{l1c.name}: sen2cor succeeded but wrote {[p.name for p in made]} in {result_dir}, "
            "not one L2A product of this acquisition"
        )
    final = out / l2a[0].name
    os.replace(l2a[0], final)
    shutil.rmtree(work)
    log.info("%s -> %s", l1c.name, final.name)
    return final
