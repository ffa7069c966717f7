"""Stand-in for sen2cor's ``L2A_Process`` (sen2cor cannot be installed here).

It takes sen2cor 2.11's command line (the same options, checked the same way by argparse),
reads the L1C product given as ``input_dir`` with the project's reader, and writes the L2A product
of that acquisition into ``--output_dir`` through the synthetic generator: the real L2A structure
(36 IMAGE_FILEs, SCL, QI masks, MTD, manifest), named as sen2cor names local output (baseline from
``--processing_baseline``, default ``99.99`` -> ``N9999``). ``--help`` prints the version line
sen2cor prints. The pixels are the generator's scene for the tile (seed ``$STAND_IN_SEED``, 0),
not an atmospheric correction. ``$STAND_IN_SECONDS`` makes it take that long before writing, as
the real one takes minutes per product (for tests that stop a run while sen2cor works).

Exit status 0 on success; 1 with a message on stderr when the input is not a readable L1C product.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

VERSION_LINE = (
    "Sen2Cor. Version: 02.11.00, created: 2022.11.22, supporting Level-1C product version <= 14.9."
)


def parser() -> argparse.ArgumentParser:
    """sen2cor 2.11's arguments."""
    p = argparse.ArgumentParser(prog="L2A_Process", description=VERSION_LINE)
    p.add_argument("input_dir", help="Directory of Level-1C input")
    p.add_argument("--mode", choices=["TOOLBOX", "generate_datastrip", "process_tile"])
    p.add_argument("--resolution", type=int, choices=[10, 20, 60])
    p.add_argument("--datastrip")
    p.add_argument("--tile")
    p.add_argument("--output_dir")
    p.add_argument("--work_dir")
    p.add_argument("--img_database_dir")
    p.add_argument("--res_database_dir")
    p.add_argument("--processing_centre")
    p.add_argument("--archiving_centre")
    p.add_argument("--processing_baseline", default="99.99")
    p.add_argument("--raw", action="store_true")
    p.add_argument("--tif", action="store_true")
    p.add_argument("--sc_only", action="store_true")
    p.add_argument("--cr_only", action="store_true")
    p.add_argument("--debug", action="store_true")
    p.add_argument("--GIP_L2A")
    p.add_argument("--GIP_L2A_SC")
    p.add_argument("--GIP_L2A_AC")
    p.add_argument("--GIP_L2A_PB")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in; returns the exit status."""
    args = parser().parse_args(argv)
    from ben_builder.errors import BenBuilderError
    from ben_builder.product.safe import open_product
    from ben_builder.sources.synthetic.products import ProductRecipe
    from ben_builder.sources.synthetic.writer import scene_for, write_product

    src = Path(args.input_dir)
    out = Path(args.output_dir) if args.output_dir else src.parent
    print(VERSION_LINE)
    try:
        product = open_product(src)
    except BenBuilderError as exc:
        print(f"L2A_Process: cannot read input product: {exc}", file=sys.stderr)
        return 1
    if product.level != "L1C":
        print(f"L2A_Process: {src.name} is not a Level-1C product", file=sys.stderr)
        return 1
    seconds = float(os.environ.get("STAND_IN_SECONDS", "0"))
    for step in range(int(seconds)):
        print(f"Progress[%]: {100 * step / seconds:5.2f} : working", flush=True)
        time.sleep(1)
    n = product.name
    size_px = round(product.tile.size_m / 10)
    recipe = ProductRecipe(
        tile_id=n.tile_id,
        level="L2A",
        baseline=args.processing_baseline,
        sensing=n.sensing_time,
        mission=n.mission,
        relative_orbit=n.relative_orbit,
    )
    scene = scene_for(n.tile_id, size_px, int(os.environ.get("STAND_IN_SEED", "0")))
    made = write_product(recipe, scene, out)
    print(f"Progress[%]: 100.00 : Application terminated successfully: {made.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
