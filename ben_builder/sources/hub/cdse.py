"""Copernicus Data Space Ecosystem: OData catalogue search and token-authenticated downloads.

Search: ``GET <catalogue>/Products?$filter=...&$top=...`` and follow ``@odata.nextLink``.
Tokens: the identity server's OpenID Connect token endpoint, client ``cdse-public``; the access
token lasts 10 minutes and is refreshed with the refresh token (60 minutes), then a new password
grant. Downloads: ``GET <download>/Products(<Id>)/$value`` with the bearer token, following
redirects by hand so the token goes along (requests drops it on a change of host).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests

from ben_builder import __version__
from ben_builder.config import CdseEndpoints
from ben_builder.errors import (
    CredentialsError,
    HubError,
    OfflineProductError,
    UnsupportedProductError,
)
from ben_builder.sources.hub.credentials import Credentials
from ben_builder.sources.hub.manifest import ManifestItem
from ben_builder.sources.hub.query import Query

log = logging.getLogger(__name__)

DEFAULT_ENDPOINTS = CdseEndpoints()

REDIRECTS = (301, 302, 303, 307, 308)
MAX_TOP = 1000
NAMES_PER_QUERY = 20


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def build_filters(q: Query) -> list[str]:
    """OData ``$filter`` expressions for a query (several when a name list is long)."""
    if q.names:
        names = [n if n.endswith(".SAFE") else f"{n}.SAFE" for n in q.names]
        return [
            "(" + " or ".join(f"Name eq {_quote(n)}" for n in names[i : i + NAMES_PER_QUERY]) + ")"
            for i in range(0, len(names), NAMES_PER_QUERY)
        ]
    clauses = [
        "Collection/Name eq 'SENTINEL-2'",
        "Attributes/OData.CSC.StringAttribute/any(att:att/Name eq 'productType' and "
        f"att/OData.CSC.StringAttribute/Value eq {_quote(q.product_type)})",
    ]
    if q.start:
        clauses.append(f"ContentDate/Start ge {q.start.isoformat()}T00:00:00.000Z")
    if q.end:
        clauses.append(f"ContentDate/Start le {q.end.isoformat()}T23:59:59.999Z")
    if q.max_cloud is not None:
        clauses.append(
            "Attributes/OData.CSC.DoubleAttribute/any(att:att/Name eq 'cloudCover' and "
            f"att/OData.CSC.DoubleAttribute/Value le {q.max_cloud:.2f})"
        )
    if q.area_wkt:
        clauses.append(f"OData.CSC.Intersects(area=geography'SRID=4326;{q.area_wkt}')")
    if q.tiles:
        clauses.append("(" + " or ".join(f"contains(Name,'_{t}_')" for t in q.tiles) + ")")
    return [" and ".join(clauses)]


def _cloud_cover(entry: dict[str, Any]) -> float | None:
    """The ``cloudCover`` attribute of a catalogue entry (``$expand=Attributes``), if any."""
    for att in entry.get("Attributes") or []:
        if isinstance(att, dict) and att.get("Name") == "cloudCover":
            try:
                return float(att["Value"])
            except (KeyError, TypeError, ValueError):
                return None
    return None


def _checksum(entry: dict[str, Any], algorithm: str) -> str | None:
    for c in entry.get("Checksum") or []:
        if str(c.get("Algorithm", "")).upper() == algorithm and c.get("Value"):
            return str(c["Value"])
    return None


class CdseBackend:
    """CDSE OData search and download (see the module docstring)."""

    name = "cdse"

    def __init__(
        self,
        credentials: Credentials | None,
        endpoints: CdseEndpoints = DEFAULT_ENDPOINTS,
        timeout_s: float = 60.0,
    ) -> None:
        self.credentials = credentials
        self.endpoints = endpoints
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._access: tuple[str, float] | None = None
        self._refresh: tuple[str, float] | None = None

    @property
    def session(self) -> requests.Session:
        """One HTTP session per thread."""
        s = getattr(self._local, "session", None)
        if s is None:
            s = requests.Session()
            s.headers["User-Agent"] = f"ben_builder/{__version__}"
            self._local.session = s
        return s

    # -- search
    def search(self, query: Query) -> list[ManifestItem]:
        """All products matching ``query``, following ``@odata.nextLink``."""
        items: dict[str, ManifestItem] = {}
        for flt in build_filters(query):
            params = {
                "$filter": flt,
                "$top": str(MAX_TOP),
                "$orderby": "ContentDate/Start asc",
                "$expand": "Attributes",  # cloudCover, for picking the clearest
            }
            url: str | None = f"{self.endpoints.catalogue}/Products?{urlencode(params)}"
            while url:
                resp = self._reach(self.session.get, url)
                if resp.status_code != 200:
                    raise HubError(
                        f"CDSE catalogue answered HTTP {resp.status_code} for {url}: "
                        f"{resp.text[:300]}"
                    )
                doc = resp.json()
                for entry in doc.get("value", []):
                    try:
                        item = self._item(entry)
                    except UnsupportedProductError as exc:  # e.g. a path as its name
                        log.warning("CDSE: skipped a product of the answer: %s", exc)
                        continue
                    items[item.name] = item
                url = doc.get("@odata.nextLink")
        return sorted(items.values(), key=lambda i: i.name)

    def _item(self, e: dict[str, Any]) -> ManifestItem:
        footprint = e.get("Footprint")
        if isinstance(footprint, str) and ";" in footprint:
            footprint = footprint.split(";", 1)[1].rstrip("'")
        return ManifestItem(
            id=str(e["Id"]),
            name=str(e["Name"]).removesuffix(".SAFE"),
            backend=self.name,
            url=f"{self.endpoints.download}/Products({e['Id']})/$value",
            size=int(e["ContentLength"]) if e.get("ContentLength") else None,
            md5=_checksum(e, "MD5"),
            blake3=_checksum(e, "BLAKE3"),
            footprint_wkt=footprint,
            online=bool(e.get("Online", True)),
            sensing_start=(e.get("ContentDate") or {}).get("Start"),
            cloud_cover=_cloud_cover(e),
        )

    # -- tokens
    def _token_request(self, data: dict[str, str]) -> requests.Response:
        return self._reach(self.session.post, self.endpoints.token, data=data)

    def _reach(self, method: Any, url: str, **kwargs: Any) -> requests.Response:
        """``method(url)``; a hub that cannot be reached is one clear error naming its host.

        Raises:
            HubError: no connection (no network, a wrong URL, the hub down) or no answer in time.
        """
        try:
            resp: requests.Response = method(url, timeout=self.timeout_s, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as exc:
            host = urlsplit(url).netloc or url
            what = "no answer in time" if isinstance(exc, requests.Timeout) else "no connection"
            raise HubError(
                f"cannot reach {host} ({what}): check the network and the hub's URL "
                "(hub.endpoints / --catalogue-url), or try again later"
            ) from exc
        return resp

    def token(self) -> str:
        """A valid access token, refreshed or re-granted as needed."""
        with self._lock:
            now = time.monotonic()
            if self._access and self._access[1] > now:
                return self._access[0]
            if self.credentials is None:
                raise CredentialsError("CDSE downloads need credentials (BEN_CDSE_USER/PASSWORD)")
            resp = None
            if self._refresh and self._refresh[1] > now:
                resp = self._token_request(
                    {
                        "client_id": self.endpoints.client_id,
                        "grant_type": "refresh_token",
                        "refresh_token": self._refresh[0],
                    }
                )
                if resp.status_code != 200:
                    resp = None
            if resp is None:
                resp = self._token_request(
                    {
                        "client_id": self.endpoints.client_id,
                        "grant_type": "password",
                        "username": self.credentials.username,
                        "password": self.credentials.password,
                    }
                )
            if resp.status_code != 200:
                raise CredentialsError(
                    f"CDSE identity server refused the credentials of "
                    f"{self.credentials.username!r} (HTTP {resp.status_code})"
                )
            doc = resp.json()
            margin = 30.0
            self._access = (doc["access_token"], now + float(doc.get("expires_in", 600)) - margin)
            if doc.get("refresh_token"):
                expiry = now + float(doc.get("refresh_expires_in", 3600)) - margin
                self._refresh = (doc["refresh_token"], expiry)
            return self._access[0]

    def probe(self) -> str:
        """Reach the identity server and get a token (the credentials work)."""
        self.token()
        return f"{urlsplit(self.endpoints.token).netloc}: credentials accepted"

    def on_unauthorized(self) -> None:
        """Forget the access token: the next request refreshes it."""
        with self._lock:
            self._access = None

    # -- download
    def open(self, item: ManifestItem, start: int) -> requests.Response:
        """Streaming GET of the product zip, following redirects with the bearer token."""
        url = item.url
        for _ in range(10):
            headers = {"Authorization": f"Bearer {self.token()}"}
            if start:
                headers["Range"] = f"bytes={start}-"
            resp = self.session.get(
                url, headers=headers, stream=True, allow_redirects=False, timeout=self.timeout_s
            )
            if resp.status_code in REDIRECTS and "Location" in resp.headers:
                url = urljoin(url, resp.headers["Location"])
                resp.close()
                continue
            return resp
        raise HubError(f"{item.name}: too many redirects from {item.url}")

    def request_retrieval(self, item: ManifestItem) -> None:
        """CDSE has no retrieval request: report the product as offline, to retry later."""
        raise OfflineProductError(
            f"{item.name}: offline on CDSE (not yet restored from the archive); run the download "
            "again later"
        )
