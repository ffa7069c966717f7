"""Search and download Sentinel-2 products: CDSE OData, DHuS (sentinelsat) and local folders."""
