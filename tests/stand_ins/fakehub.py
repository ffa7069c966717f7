"""A local stand-in for CDSE and DHuS hubs on 127.0.0.1, with fault injection.

It speaks the protocol subset the client uses. For the tests and the download benchmark; the
chain never uses it.

CDSE: ``GET /odata/v1/Products?$filter&$top[&$skip]`` (catalogue, with @odata.nextLink),
``POST /auth/token`` (OpenID Connect password and refresh grants), ``GET
/odata/v1/Products(<id>)/$value`` which redirects to another host name (``localhost``) serving
``/zipper/<id>``; both need the bearer token.
DHuS: ``GET /dhus/search?q&rows&start&format=json`` (OpenSearch JSON),
``GET /dhus/odata/v1/Products('<id>')?$format=json``, ``.../$value`` (202 while offline, which
also triggers retrieval), ``.../Online/$value``; HTTP basic auth.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

import shapely
from blake3 import blake3


@dataclass
class HubProduct:
    """A product the fake hub serves, with the faults to inject (consumed as they fire)."""

    id: str
    name: str  # without .SAFE
    path: Path
    sensing: datetime
    cloud: float = 10.0
    footprint_wkt: str = "POLYGON((12 47, 14 47, 14 49, 12 49, 12 47))"
    online: bool = True
    # faults, consumed as they fire
    cut_after: list[int] = field(default_factory=list)  # cut the body after N bytes
    status_first: list[int] = field(default_factory=list)  # e.g. [429, 500]
    corrupt_times: int = 0
    retry_after: str = "1"
    retrieval_s: float = 0.5  # DHuS: time from the retrieval request to online
    online_at: float | None = None

    @cached_property
    def data(self) -> bytes:
        """The product zip's bytes."""
        return self.path.read_bytes()

    @cached_property
    def md5(self) -> str:
        """MD5 of the zip (hex)."""
        return hashlib.md5(self.data).hexdigest()

    @cached_property
    def blake3(self) -> str:
        """BLAKE3 of the zip (hex)."""
        return blake3(self.data, max_threads=blake3.AUTO).hexdigest()

    @property
    def product_type(self) -> str:
        """Hub product type from the name."""
        return "S2MSI2A" if "_MSIL2A_" in self.name else "S2MSI1C"


class HubState:
    """Products, users, tokens and a request log, shared by the server threads."""

    def __init__(self) -> None:
        self.products: dict[str, HubProduct] = {}
        self.users = {"alice": "s3cret"}
        self.tokens: dict[str, float] = {}  # access token -> expiry (time.time)
        self.refresh: dict[str, float] = {}
        self.token_lifetime_s = 600.0
        self.expire_next_token = False
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.grants: list[str] = []
        self.lock = threading.Lock()
        self.page_size_cap = 1000
        self.in_flight = 0
        self.bytes_sent = 0
        self.max_in_flight = 0

    def add(self, p: HubProduct) -> None:
        """Serve ``p``."""
        self.products[p.id] = p


def _cdse_entry(p: HubProduct) -> dict:
    return {
        "@odata.mediaContentType": "application/octet-stream",
        "Id": p.id,
        "Name": f"{p.name}.SAFE",
        "ContentType": "application/octet-stream",
        "ContentLength": len(p.data),
        "Online": p.online,
        "Checksum": [
            {"Value": p.md5, "Algorithm": "MD5", "ChecksumDate": "2024-01-01T00:00:00Z"},
            {"Value": p.blake3, "Algorithm": "BLAKE3", "ChecksumDate": "2024-01-01T00:00:00Z"},
        ],
        "ContentDate": {
            "Start": p.sensing.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
            "End": p.sensing.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        },
        "Footprint": f"geography'SRID=4326;{p.footprint_wkt}'",
        "Attributes": [
            {
                "@odata.type": "#OData.CSC.DoubleAttribute",
                "Name": "cloudCover",
                "Value": p.cloud,
                "ValueType": "Double",
            },
        ],
    }


def _match_filter(flt: str, p: HubProduct) -> bool:
    """Evaluate the clause kinds the client writes (an 'and' of them; names and tiles 'or')."""
    names = re.findall(r"(?:^|[(\s])Name eq '([^']*)'", flt)
    if names:
        return f"{p.name}.SAFE" in names
    if "Collection/Name eq 'SENTINEL-2'" not in flt:
        return False
    m = re.search(r"att/OData.CSC.StringAttribute/Value eq '([^']*)'", flt)
    if m and m.group(1) != p.product_type:
        return False
    s = p.sensing.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    for op, value in re.findall(r"ContentDate/Start (ge|le|gt|lt) (\S+)", flt):
        if (op in ("ge", "gt") and s < value) or (op in ("le", "lt") and s > value):
            return False
    m = re.search(r"att/OData.CSC.DoubleAttribute/Value le ([\d.]+)", flt)
    if m and p.cloud > float(m.group(1)):
        return False
    m = re.search(r"OData.CSC.Intersects\(area=geography'SRID=4326;([^']*)'\)", flt)
    if m and not shapely.from_wkt(m.group(1)).intersects(shapely.from_wkt(p.footprint_wkt)):
        return False
    tiles = re.findall(r"contains\(Name,'([^']*)'\)", flt)
    if tiles and not any(t in p.name for t in tiles):
        return False
    return True


def _dhus_entry(p: HubProduct, base: str) -> dict:
    return {
        "id": p.id,
        "title": p.name,
        "link": [{"href": f"{base}/odata/v1/Products('{p.id}')/$value"}],
        "summary": f"Date: {p.sensing.isoformat()}",
        "date": [
            {"name": "beginposition", "content": p.sensing.strftime("%Y-%m-%dT%H:%M:%S.000Z")}
        ],
        "double": [{"name": "cloudcoverpercentage", "content": str(p.cloud)}],
        "str": [
            {"name": "filename", "content": f"{p.name}.SAFE"},
            {"name": "footprint", "content": p.footprint_wkt},
            {"name": "gmlfootprint", "content": ""},
            {"name": "producttype", "content": p.product_type},
            {"name": "platformname", "content": "Sentinel-2"},
            {"name": "size", "content": f"{len(p.data) / 1e6:.2f} MB"},
        ],
    }


def _dhus_match(q: str, p: HubProduct) -> bool:
    from fnmatch import fnmatch

    q = q.replace('"', "")  # values may come quoted
    m = re.search(r"filename:(\S+)", q)
    if m and not fnmatch(f"{p.name}.SAFE", m.group(1)):
        return False
    m = re.search(r"producttype:(\S+)", q)
    if m and m.group(1) != p.product_type:
        return False
    m = re.search(r"beginPosition:\[(\S+) TO (\S+)\]", q)
    if m:
        day = p.sensing.strftime("%Y-%m-%d")
        lo, hi = m.group(1)[:10], m.group(2)[:10]
        if (lo[0].isdigit() and day < lo) or (hi[0].isdigit() and day > hi):
            return False
    m = re.search(r"cloudcoverpercentage:\[(\S+) TO (\S+)\]", q)
    if m and not float(m.group(1)) <= p.cloud <= float(m.group(2)):
        return False
    m = re.search(r"footprint:Intersects\((.*\)\))\)", q)
    if m and not shapely.from_wkt(m.group(1)).intersects(shapely.from_wkt(p.footprint_wkt)):
        return False
    return True


class Handler(BaseHTTPRequestHandler):
    """Request handler for both protocols."""

    server: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # quiet
        """Do not log requests."""
        pass

    @property
    def state(self) -> HubState:
        """The shared hub state."""
        return self.server.state

    def _send(
        self,
        status: int,
        body: bytes = b"",
        ctype: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj: object, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode())

    def do_GET(self) -> None:
        """Catalogue, downloads and DHuS endpoints."""
        with self.state.lock:
            self.state.requests.append(("GET", self.path, dict(self.headers)))
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        qs = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if path == "/odata/v1/Products":
            return self._cdse_search(qs)
        m = re.fullmatch(r"/odata/v1/Products\(([^)']+)\)/\$value", path)
        if m:
            if not self._bearer_ok():
                return self._send(401, b'{"detail":"Expired signature!"}')
            p = self.state.products.get(m.group(1))
            if p is None:
                return self._send(404, b"{}")
            if not p.online:
                return self._send(422, b'{"detail":"product offline"}')
            host = "localhost" if self.headers.get("Host", "").startswith("127.") else "127.0.0.1"
            loc = f"http://{host}:{self.server.server_port}/zipper/{p.id}"
            return self._send(307, b"", headers={"Location": loc})
        m = re.fullmatch(r"/zipper/([^/]+)", path)
        if m:
            if not self._bearer_ok():
                return self._send(401, b'{"detail":"Unauthorized"}')
            return self._serve_bytes(self.state.products[m.group(1)])
        if path.startswith("/dhus/"):
            return self._dhus(path[len("/dhus") :], qs)
        if path == "/_stats":  # for benchmarks: what the server sent, which ranges were asked for
            ranges = [h.get("Range") for _, q, h in self.state.requests if q.startswith("/zipper/")]
            return self._json({"bytes_sent": self.state.bytes_sent, "ranges": ranges})
        self._send(404, b"{}")

    def do_POST(self) -> None:
        """The token endpoint."""
        length = int(self.headers.get("Content-Length", 0))
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if urlsplit(self.path).path != "/auth/token":
            return self._send(404, b"{}")
        st = self.state
        with st.lock:
            st.grants.append(form.get("grant_type", ""))
            if form.get("client_id") != "cdse-public":
                return self._json({"error": "invalid_client"}, 401)
            if form.get("grant_type") == "password":
                if st.users.get(form.get("username", "")) != form.get("password"):
                    return self._json({"error": "invalid_grant"}, 401)
            elif form.get("grant_type") == "refresh_token":
                if st.refresh.get(form.get("refresh_token", ""), 0) < time.time():
                    return self._json({"error": "invalid_grant"}, 400)
            else:
                return self._json({"error": "unsupported_grant_type"}, 400)
            access, refresh = secrets.token_hex(16), secrets.token_hex(16)
            life = 0.0 if st.expire_next_token else st.token_lifetime_s
            st.expire_next_token = False
            st.tokens[access] = time.time() + life
            st.refresh[refresh] = time.time() + 3600
        # the client is told the nominal lifetime; the server may expire it earlier
        self._json(
            {
                "access_token": access,
                "expires_in": 600,
                "refresh_token": refresh,
                "refresh_expires_in": 3600,
                "token_type": "Bearer",
            }
        )

    def _bearer_ok(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            return False
        return self.state.tokens.get(auth[7:], 0) > time.time()

    def _basic_ok(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Basic "):
            return False
        user, _, pw = base64.b64decode(auth[6:]).decode().partition(":")
        return self.state.users.get(user) == pw

    def _cdse_search(self, qs: dict[str, str]) -> None:
        flt = qs.get("$filter", "")
        top = min(int(qs.get("$top", "20")), self.state.page_size_cap)
        skip = int(qs.get("$skip", "0"))
        hits = sorted(
            (p for p in self.state.products.values() if _match_filter(flt, p)),
            key=lambda p: (p.sensing, p.name),
        )
        page = hits[skip : skip + top]
        doc: dict = {
            "@odata.context": "$metadata#Products",
            "value": [_cdse_entry(p) for p in page],
        }
        if skip + top < len(hits):
            nxt = {**qs, "$skip": str(skip + top)}
            doc["@odata.nextLink"] = (
                f"http://127.0.0.1:{self.server.server_port}/odata/v1/Products?" + urlencode(nxt)
            )
        self._json(doc)

    def _serve_bytes(self, p: HubProduct) -> None:
        with self.state.lock:
            status = p.status_first.pop(0) if p.status_first else None
        if status is not None:
            return self._send(status, b"busy", "text/plain", {"Retry-After": p.retry_after})
        data = p.data
        with self.state.lock:
            if p.corrupt_times > 0:
                p.corrupt_times -= 1
                data = bytes(b ^ 0xFF for b in data[:64]) + data[64:]
        start = 0
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-", rng)
            start = int(m.group(1)) if m else 0
            if start >= len(data):
                return self._send(416, b"", headers={"Content-Range": f"bytes */{len(data)}"})
        body = memoryview(data)[start:]
        with self.state.lock:
            self.state.in_flight += 1
            self.state.max_in_flight = max(self.state.max_in_flight, self.state.in_flight)
        try:
            self._write_body(p, body, start, len(data), bool(rng))
        finally:
            with self.state.lock:
                self.state.in_flight -= 1

    def _write_body(
        self, p: HubProduct, body: memoryview, start: int, total: int, ranged: bool
    ) -> None:
        self.send_response(206 if ranged else 200)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(len(body)))
        if ranged:
            self.send_header("Content-Range", f"bytes {start}-{total - 1}/{total}")
        self.end_headers()
        with self.state.lock:
            cut = p.cut_after.pop(0) if p.cut_after else None
        if cut is not None and cut < len(body):
            with self.state.lock:
                self.state.bytes_sent += cut
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        for i in range(0, len(body), 1 << 18):  # in pieces, so downloads overlap in time
            self.wfile.write(body[i : i + (1 << 18)])
        with self.state.lock:
            self.state.bytes_sent += len(body)

    def _dhus(self, path: str, qs: dict[str, str]) -> None:
        if not self._basic_ok():
            return self._send(401, b"Unauthorized", "text/plain")
        base = f"http://127.0.0.1:{self.server.server_port}/dhus"
        if path == "/search":
            q = qs.get("q", "")
            hits = sorted(
                (p for p in self.state.products.values() if _dhus_match(q, p)), key=lambda p: p.name
            )
            start, rows = int(qs.get("start", 0)), int(qs.get("rows", 100))
            page = hits[start : start + rows]
            feed: dict = {
                "opensearch:totalResults": str(len(hits)),
                "entry": [_dhus_entry(p, base) for p in page],
            }
            return self._json({"feed": feed})
        m = re.fullmatch(r"/odata/v1/Products\('([^']+)'\)(/.*)?", path)
        if not m or m.group(1) not in self.state.products:
            return self._send(404, b'{"error":{"message":{"value":"not found"}}}')
        p = self.state.products[m.group(1)]
        rest = m.group(2) or ""
        if rest == "":
            ms = int(p.sensing.timestamp() * 1000)
            d = {
                "Id": p.id,
                "Name": p.name,
                "ContentLength": str(len(p.data)),
                "Checksum": {"Algorithm": "MD5", "Value": p.md5},
                "ContentDate": {"Start": f"/Date({ms})/", "End": f"/Date({ms})/"},
                "ContentGeometry": '<gml:Polygon xmlns:gml="http://www.opengis.net/gml">'
                "<gml:outerBoundaryIs><gml:LinearRing>"
                "<gml:coordinates>47,12 47,14 49,14 49,12 47,12</gml:coordinates>"
                "</gml:LinearRing></gml:outerBoundaryIs></gml:Polygon>",
                "__metadata": {"media_src": f"{base}/odata/v1/Products('{p.id}')/$value"},
                "Online": p.online,
                "CreationDate": f"/Date({ms})/",
                "IngestionDate": f"/Date({ms})/",
                "Attributes": {"results": []},
            }
            return self._json({"d": d})
        with self.state.lock:
            if not p.online and p.online_at is not None and time.time() >= p.online_at:
                p.online = True
        if rest == "/Online/$value":
            return self._send(200, b"true" if p.online else b"false", "text/plain")
        if rest == "/$value":
            if not p.online:
                with self.state.lock:  # accepted: the retrieval runs in the background
                    if p.online_at is None:
                        p.online_at = time.time() + p.retrieval_s
                return self._send(202, b"", "text/plain")
            return self._serve_bytes(p)
        self._send(404, b"{}")


class HubServer(ThreadingHTTPServer):
    """The fake hub on an ephemeral port of 127.0.0.1; a context manager serving in a thread."""

    daemon_threads = True

    def __init__(self, state: HubState) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.state = state

    @property
    def base(self) -> str:
        """Base URL."""
        return f"http://127.0.0.1:{self.server_port}"

    def __enter__(self) -> HubServer:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
