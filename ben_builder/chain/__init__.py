"""The chain: one product (:mod:`.product`), then many on Dask (:mod:`.run`), with their records."""
