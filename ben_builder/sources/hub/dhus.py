"""DHuS hubs (national mirrors, collaborative hubs) through sentinelsat.

sentinelsat does the OpenSearch query, the OData product lookups (MD5, Online) and the long-term
archive retrieval request; the bytes go through the shared resumable transfer with the same
session (HTTP basic auth).
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

import requests
from sentinelsat import SentinelAPI
from sentinelsat.exceptions import SentinelAPIError

from ben_builder.errors import CredentialsError, HubError, UnsupportedProductError
from ben_builder.sources.hub.credentials import Credentials
from ben_builder.sources.hub.manifest import ManifestItem
from ben_builder.sources.hub.query import Query

log = logging.getLogger(__name__)


def _float(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


class DhusBackend:
    """A DHuS hub at ``api_url`` (e.g. ``https://<mirror>/dhus/``)."""

    name = "dhus"

    def __init__(self, credentials: Credentials, api_url: str, timeout_s: float = 60.0) -> None:
        self.api = SentinelAPI(
            credentials.username,
            credentials.password,
            api_url,
            show_progressbars=False,
            timeout=timeout_s,
        )
        self.timeout_s = timeout_s

    def probe(self) -> str:
        """Reach the hub's OpenSearch endpoint with the credentials (one empty search)."""
        try:
            resp = self.api.session.get(
                f"{self.api.api_url}search?q=*&rows=0&format=json", timeout=self.timeout_s
            )
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise HubError(
                f"cannot reach {self.api.api_url} ({type(exc).__name__}): check the network and "
                "hub.api_url / --api-url"
            ) from exc
        if resp.status_code in (401, 403):
            raise CredentialsError(f"DHuS at {self.api.api_url} refused the credentials")
        if resp.status_code != 200:
            raise HubError(f"DHuS at {self.api.api_url} answered HTTP {resp.status_code}")
        return f"{self.api.api_url}: credentials accepted"

    def _queries(self, q: Query) -> list[dict[str, Any]]:
        if q.names:
            return [{"filename": n if n.endswith(".SAFE") else f"{n}.SAFE"} for n in q.names]
        base: dict[str, Any] = {"platformname": "Sentinel-2", "producttype": q.product_type}
        if q.start or q.end:  # sentinelsat sends dates as midnight: make the end day inclusive
            base["date"] = (q.start or "*", q.end + timedelta(days=1) if q.end else "NOW")
        if q.max_cloud is not None:
            base["cloudcoverpercentage"] = (0, q.max_cloud)
        if q.area_wkt:
            base["area"] = q.area_wkt
        if not q.tiles:
            return [base]
        return [{**base, "filename": f"S2*_MSI{q.level}_*_{t}_*"} for t in q.tiles]

    def search(self, query: Query) -> list[ManifestItem]:
        """Products matching ``query``, with MD5 and online status from OData."""
        found: dict[str, ManifestItem] = {}
        try:
            for kw in self._queries(query):
                for uuid, props in self.api.query(**kw).items():
                    info = self.api.get_product_odata(uuid)
                    name = str(info["title"]).removesuffix(".SAFE")
                    try:
                        found[name] = ManifestItem(
                            id=uuid,
                            name=name,
                            backend=self.name,
                            url=str(info["url"]),
                            size=int(info["size"]),
                            md5=info.get("md5"),
                            footprint_wkt=props.get("footprint"),
                            online=bool(info.get("Online", True)),
                            sensing_start=info["date"].isoformat() if info.get("date") else None,
                            cloud_cover=_float(props.get("cloudcoverpercentage")),
                        )
                    except UnsupportedProductError as exc:  # e.g. a path as its name
                        log.warning("DHuS: skipped a product of the answer: %s", exc)
        except (requests.ConnectionError, requests.Timeout) as exc:
            raise HubError(
                f"cannot reach {self.api.api_url} ({type(exc).__name__}): check the network and "
                "hub.api_url / --api-url, or try again later"
            ) from exc
        except SentinelAPIError as exc:
            if getattr(exc, "response", None) is not None and exc.response.status_code == 401:
                raise CredentialsError(
                    f"DHuS at {self.api.api_url} refused the credentials"
                ) from exc
            raise HubError(f"DHuS search failed at {self.api.api_url}: {exc.msg}") from exc
        return sorted(found.values(), key=lambda i: i.name)

    def open(self, item: ManifestItem, start: int) -> requests.Response:
        """Streaming GET of ``$value`` (basic auth), from byte ``start``."""
        headers = {"Range": f"bytes={start}-"} if start else {}
        return self.api.session.get(item.url, headers=headers, stream=True, timeout=self.timeout_s)

    def on_unauthorized(self) -> None:
        """Basic auth cannot be refreshed; the transfer gives up after repeated 401s."""

    def request_retrieval(self, item: ManifestItem) -> None:
        """Trigger the long-term archive retrieval (the transfer then reports it offline)."""
        try:
            triggered = self.api.trigger_offline_retrieval(item.id)
        except SentinelAPIError as exc:
            raise HubError(f"{item.name}: retrieval request refused: {exc.msg}") from exc
        log.info("%s: %s", item.name, "retrieval requested" if triggered else "already online")
