"""What every command shares: one-line errors, logging, and the options of several commands."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import click

from ben_builder.errors import BenBuilderError
from ben_builder.runtime import gdal_env

F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Run a command in the GDAL settings; a BenBuilderError becomes one line and exit status 2."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with gdal_env():
                return fn(*args, **kwargs)
        except BenBuilderError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]


def setup_logging(verbose: int, terminal: bool) -> None:
    """Logging for the command line.

    The project's messages: errors only (-q), warnings (default on a terminal, where progress
    bars show the rest), progress (one line per finished product and the like: default without
    a terminal, so batch jobs see what happens, and -v), debug (-vv). The libraries' messages
    (Dask, GDAL bindings, urllib3): warnings, info at -vv, debug only at -vvv.
    """
    if verbose < 0:
        own = logging.ERROR
    elif verbose == 0:
        own = logging.WARNING if terminal else logging.INFO
    else:
        own = logging.INFO if verbose == 1 else logging.DEBUG
    libraries = {0: logging.WARNING, 1: logging.WARNING, 2: logging.INFO}.get(
        max(verbose, 0), logging.DEBUG
    )
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(libraries)
    handler.addFilter(
        lambda r: r.levelno >= (own if r.name.startswith("ben_builder") else libraries)
    )
    # the project's logger passes progress through to the run log (report/run.log) in any case
    logging.getLogger("ben_builder").setLevel(min(own, logging.INFO))
    # Dask's workers log on their own: quiet unless -vv
    if verbose < 2:
        os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")


force_opt = click.option(
    "--force",
    is_flag=True,
    help="Redo every product, even those already made from the same inputs.",
)
