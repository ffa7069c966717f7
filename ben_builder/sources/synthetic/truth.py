"""Ground truth of synthetic products, per patch, straight from the generator's own arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ben_builder import specs
from ben_builder.patches.grid import PatchGrid
from ben_builder.sources.synthetic.scene import Acquisition, Scene


def patch_truth(scene: Scene, acq: Acquisition, level: str, stem: str) -> pd.DataFrame:
    """What the pipeline should find for every patch of a product.

    Cloud/shadow truth depends on the level: the L2A SCL marks cloud and cloud shadow, the L1C
    masks (MSK_CLASSI / MSK_CLOUDS) mark cloud only.

    Returns:
        One row per grid patch: patch_id, x, y, labels (19-class names, alphabetical as published),
        labels43 (Level-3 names, by code), unlabeled_fraction, has_nodata, cloud_or_shadow, snow.
    """
    nom = specs.nomenclature()
    v1 = specs.clc().v1_names
    code_to_class = {int(k): v for k, v in nom.code_to_class.items()}
    grid = PatchGrid(scene.geometry, specs.bands().patch_size_m)
    codes = grid.blocks(scene.codes_at(10), 10)
    flag_cloud = acq.cloud | acq.shadow if level == "L2A" else acq.cloud
    cloud_b, snow_b, nodata_b = (grid.blocks(m, 60) for m in (flag_cloud, acq.snow, acq.nodata))
    rows = []
    for p in grid:
        present = np.unique(codes[p.y, p.x])
        classes = sorted({code_to_class[int(c)] for c in present if int(c) in code_to_class})
        mapped = np.isin(codes[p.y, p.x], list(code_to_class))
        rows.append(
            {
                "patch_id": p.name(stem),
                "x": p.x,
                "y": p.y,
                "labels": sorted(nom.names[i] for i in classes),
                "labels43": [v1[f"{int(c):03d}"] for c in present if f"{int(c):03d}" in v1],
                "unlabeled_fraction": float(1 - mapped.mean()),
                "has_nodata": bool(nodata_b[p.y, p.x].any()),
                "cloud_or_shadow": bool(cloud_b[p.y, p.x].any()),
                "snow": bool(snow_b[p.y, p.x].any()),
            }
        )
    return pd.DataFrame(rows)
