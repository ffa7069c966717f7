"""Reading one Sentinel-2 product: its name, SAFE structure, metadata, bands and checksums."""
