"""The operator API's bearer token.

At first start :func:`load_or_create_token` writes a random token to
``<state_dir>/api_token`` with mode 0600 (created that way: never readable by
others, not even briefly) and reports that it was created, so the caller prints
it once. Later starts read it back; a token file readable by group or others, or
one that does not hold a token, is refused with an error naming the file.

:func:`check_bearer` compares in constant time. The token never appears in logs,
errors or reprs.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptoj.errors import ConfigError

__all__ = ["TOKEN_FILE", "ApiToken", "check_bearer", "load_or_create_token", "read_token"]

TOKEN_FILE: Final = "api_token"  # noqa: S105 - a file name, not a secret
_MIN_LEN: Final = 32


@dataclass(frozen=True, slots=True)
class ApiToken:
    """The token and where it lives; ``created`` is True on the start that generated it."""

    value: str
    path: Path
    created: bool

    def __repr__(self) -> str:
        return f"ApiToken(path={str(self.path)!r}, created={self.created}, value='********')"

    __str__ = __repr__


def _check_file(path: Path) -> str:
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot read the API token file: {exc.strerror}")]) from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError([(str(path), "the API token file is not a regular file")])
    if st.st_mode & 0o077:
        raise ConfigError([(str(path), f"the API token file is readable by group/others (mode {stat.S_IMODE(st.st_mode):o}); "
                                       f"fix it with: chmod 600 {path}")])
    try:
        value = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([(str(path), f"cannot read the API token file: {exc}")]) from None
    if len(value) < _MIN_LEN or any(c.isspace() for c in value):
        raise ConfigError([(str(path), f"the API token file must hold one token of at least {_MIN_LEN} characters; "
                                       "delete it to have a new one generated")])
    return value


def read_token(state_dir: Path) -> str:
    """The token of the engine using ``state_dir`` (for the CLI); :class:`ConfigError` if absent or unusable."""
    return _check_file(Path(state_dir) / TOKEN_FILE)


def load_or_create_token(state_dir: Path) -> ApiToken:
    """Read ``<state_dir>/api_token``, or create it (mode 0600) with a fresh random token."""
    state_dir = Path(state_dir)
    path = state_dir / TOKEN_FILE
    if path.exists():
        return ApiToken(_check_file(path), path, created=False)
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError([(str(state_dir), f"cannot create the state directory: {exc.strerror}")]) from None
    value = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its token
        return ApiToken(_check_file(path), path, created=False)
    except OSError as exc:
        raise ConfigError([(str(path), f"cannot create the API token file: {exc.strerror}")]) from None
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(value + "\n")
    os.chmod(path, 0o600)  # in case the umask was stricter than needed; never looser
    return ApiToken(value, path, created=True)


def check_bearer(header: str | None, token: str) -> bool:
    """True when ``header`` is ``Bearer <token>`` (constant-time comparison)."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given:
        return False
    return secrets.compare_digest(given.strip().encode(), token.encode())
