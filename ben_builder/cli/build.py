"""``build`` runs the whole chain for a run configuration; ``cluster-script`` shows SLURM's job."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import click

from ben_builder.cli.common import force_opt, friendly

log = logging.getLogger(__name__)


@click.command()
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--fail-fast",
    is_flag=True,
    default=None,
    help="Stop at the first failing product (default: the config's fail_fast).",
)
@force_opt
@click.option(
    "--check",
    is_flag=True,
    help="Only check inputs, output and disk space, and print what the run would do.",
)
@click.option(
    "--prune",
    is_flag=True,
    help="Remove the products no input asks for any more, however many (see prune_max_share).",
)
@click.option(
    "--online",
    is_flag=True,
    help="With --check: also reach the hub with the credentials (10 s timeout).",
)
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Exit 0 even if the archive holds no patch (else that is a failure).",
)
@friendly
def build(
    config: Path,
    fail_fast: bool | None,
    force: bool,
    check: bool,
    prune: bool,
    online: bool,
    allow_empty: bool,
) -> None:
    """Run the whole chain for a run configuration (pipelines/*.yaml).

    Products -> patches -> labels -> screening -> archive -> metadata and split, on a Dask
    cluster (local processes, SLURM, or an existing scheduler), then the run report. Re-running
    skips the products already made from the same inputs (product files, CLC, specs, options,
    version) and redoes the others. Exits 1 if any product failed (after writing the report).
    SIGTERM (a SLURM walltime) or Ctrl-C stops it in order: finished products kept, the report
    written, exit 143 or 130; run again to finish. A second signal stops at once.
    """
    from ben_builder.chain.run import run
    from ben_builder.config import load_config

    cfg = load_config(config)
    if check:
        from ben_builder.chain.run import plan_run

        plan, duplicates, missing = plan_run(cfg, online=online)
        click.echo(f"{cfg.name}: would build {cfg.output}")
        for line in plan.lines():
            click.echo(line)
        for d in duplicates:
            click.echo(f"would skip {d.path.name}: {d.reason}")
        for m in missing:
            click.echo(f"missing {m.product}: {m.error}")
        if plan.unreadable or missing:  # the run would record them as failures
            click.echo("check FAILED: products above are unreadable or missing", err=True)
            raise SystemExit(1)
        click.echo("check passed" + (" with warnings" if plan.warnings else ""))
        return
    result = run(cfg, fail_fast=fail_fast, force=force, prune=prune)
    click.echo(
        f"{cfg.name}: {result.counts['metadata']} patches in metadata.parquet, "
        f"{result.counts['flagged']} flagged; report {result.report}"
    )
    for d in result.skipped:
        click.echo(f"skipped {d.path.name}: {d.reason}", err=True)
    for w in result.warnings:
        click.echo(f"WARNING {w}", err=True)
    if result.stopped_by:  # the shell's status of a process ended by that signal
        raise SystemExit(128 + signal.Signals[result.stopped_by].value)
    if result.failures:
        for r in result.failures:
            click.echo(f"FAILED {r.product} [{r.stage}]: {r.error}", err=True)
        raise SystemExit(1)
    if result.produced_nothing and not allow_empty:
        click.echo(
            f"FAILED: the run produced no patch (see the warnings above and {result.report}; "
            "--allow-empty accepts that)",
            err=True,
        )
        raise SystemExit(1)


@click.command("cluster-script")
@click.argument("config", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@friendly
def cluster_script(config: Path) -> None:
    """Print the SLURM job script the configuration's cluster settings generate."""
    from ben_builder.chain.cluster import make_slurm_cluster
    from ben_builder.config import load_config

    cfg = load_config(config)
    if cfg.cluster.kind != "slurm":
        raise click.UsageError(f"{config}: cluster kind is {cfg.cluster.kind!r}, not 'slurm'")
    cluster = make_slurm_cluster(cfg.cluster)
    try:
        click.echo(cluster.job_script())
    finally:
        cluster.close()


COMMANDS = [build, cluster_script]
