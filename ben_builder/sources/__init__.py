"""Where products come from: a local folder, a hub, sen2cor, or the synthetic generator.

Each source yields product paths (``.SAFE`` folders or zips) that the chain reads the same way,
and reports what it was asked for but cannot provide as :class:`Unavailable` records.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Unavailable:
    """A product the inputs ask for that a source cannot provide.

    Attributes:
        product: The product's name.
        stage: Where it was found missing (``discover``, ``search``, ``download``).
        error: Why, and how to fix it.
    """

    product: str
    stage: str
    error: str
