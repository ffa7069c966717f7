"""Search and download Sentinel-2 products: CDSE OData, DHuS (sentinelsat) and local folders."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from ben_builder.config import CdseEndpoints
from ben_builder.errors import SpecError
from ben_builder.sources.hub.cdse import CdseBackend
from ben_builder.sources.hub.credentials import Credentials, credentials_for
from ben_builder.sources.hub.transfer import Backend


@dataclass(frozen=True)
class HubSettings:
    """Which hub to talk to.

    Attributes:
        backend: ``cdse`` or ``dhus``.
        api_url: DHuS base URL (``https://<host>/dhus/``); unused for CDSE.
        endpoints: CDSE service URLs (the public CDSE by default).
    """

    backend: str = "cdse"
    api_url: str | None = None
    endpoints: CdseEndpoints = CdseEndpoints()


def make_backend(settings: HubSettings, need_credentials: bool = True) -> Backend:
    """Build the backend; credentials come from the environment or ``~/.netrc``."""
    if settings.backend == "cdse":
        creds: Credentials | None = None
        if need_credentials:
            creds = credentials_for("cdse", urlsplit(settings.endpoints.token).hostname or "")
        return CdseBackend(creds, settings.endpoints)
    if settings.backend == "dhus":
        if not settings.api_url:
            raise SpecError("the dhus backend needs api_url (e.g. https://<mirror>/dhus/)")
        from ben_builder.sources.hub.dhus import DhusBackend

        host = urlsplit(settings.api_url).hostname or ""
        return DhusBackend(credentials_for("dhus", host), settings.api_url)
    raise SpecError(f"unknown hub backend {settings.backend!r}; use cdse or dhus")
