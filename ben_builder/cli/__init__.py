"""The ``ben-builder`` command line: one subcommand per stage, and ``build`` for the chain.

One module per command group, in the order of the chain: :mod:`.products` (``synth``,
``patch``, ``process``), :mod:`.hub` (``search``, ``download``), :mod:`.build` (``build``,
``cluster-script``), :mod:`.archive` (``encode``, ``compare``) and :mod:`.train` (``train``,
``evaluate``). Each command turns a :class:`~ben_builder.errors.BenBuilderError` into one line
and exit status 2 (:func:`.common.friendly`).
"""

from __future__ import annotations

import sys

import click

from ben_builder import __version__
from ben_builder.cli import archive, build, hub, products, train
from ben_builder.cli.common import setup_logging


@click.group()
@click.version_option(__version__)
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More messages: -v this project's progress, -vv its debug output and the libraries' "
    "info, -vvv everything.",
)
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
def main(verbose: int, quiet: bool) -> None:
    """Build BigEarthNet-style archives from Sentinel-2 products and CLC 2018."""
    setup_logging(-1 if quiet else verbose, sys.stderr.isatty())


for _group in (products, hub, build, archive, train):
    for _command in _group.COMMANDS:
        main.add_command(_command)


if __name__ == "__main__":
    main()
