"""``python -m ben_builder.cli``: the command line."""

from ben_builder.cli import main

main()
