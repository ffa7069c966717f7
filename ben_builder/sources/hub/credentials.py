"""Hub credentials from environment variables or ``~/.netrc``; never logged or written."""

from __future__ import annotations

import netrc
import os
from dataclasses import dataclass, field
from pathlib import Path

from ben_builder.errors import CredentialsError


@dataclass(frozen=True)
class Credentials:
    """A user name and password (the password never shows in ``repr``)."""

    username: str
    password: str = field(repr=False)


def credentials_for(backend: str, host: str, netrc_path: Path | None = None) -> Credentials:
    """Credentials for ``backend`` at ``host``.

    Looks at ``BEN_<BACKEND>_USER`` / ``BEN_<BACKEND>_PASSWORD`` first, then the ``machine
    <host>`` entry of ``~/.netrc`` (or ``$NETRC``).

    Raises:
        CredentialsError: neither is set.
    """
    prefix = f"BEN_{backend.upper()}"
    user, password = os.environ.get(f"{prefix}_USER"), os.environ.get(f"{prefix}_PASSWORD")
    if user and password:
        return Credentials(user, password)
    path = netrc_path or Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if path.exists():
        try:
            entry = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError) as exc:
            raise CredentialsError(f"{path}: cannot parse ({exc})") from exc
        if entry and entry[0] and entry[2]:
            return Credentials(entry[0], entry[2])
    raise CredentialsError(
        f"no credentials for {backend} ({host}): set {prefix}_USER and {prefix}_PASSWORD, or add "
        f"'machine {host} login <user> password <password>' to {path}"
    )
