"""One exception hierarchy for the whole system.

Every error carries *what* was wrong (and where, when that is known) in its
message and as attributes, so callers can act on it and operators can read it.
Nothing here imports anything else of ours: every layer may raise these.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AmbiguousOutcome",
    "AuthenticationFailed",
    "ConfigError",
    "CryptojError",
    "DataError",
    "InvalidOrderTransition",
    "InvalidValue",
    "KeyFileError",
    "MalformedMessage",
    "OrderNotFound",
    "OrderRejected",
    "RateLimited",
    "RiskRejected",
    "SchemaVersionMismatch",
    "SequenceGap",
    "StaleData",
    "StorageError",
    "TradingHalted",
    "VenueError",
    "VenueUnavailable",
]

_RAW_LIMIT = 512


def truncate(text: str, limit: int = _RAW_LIMIT) -> str:
    """Shorten ``text`` for an error message, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...<{len(text) - limit} more chars>"


class CryptojError(Exception):
    """Base of every error raised by CryptoJ Trader."""


# --- configuration -------------------------------------------------------


class ConfigError(CryptojError):
    """Bad configuration. ``problems`` lists ``(key_path, message)`` pairs."""

    def __init__(self, problems: list[tuple[str, str]] | str) -> None:
        if isinstance(problems, str):
            problems = [("", problems)]
        self.problems: list[tuple[str, str]] = list(problems)
        lines = [f"{path}: {msg}" if path else msg for path, msg in self.problems]
        super().__init__("invalid configuration:\n  " + "\n  ".join(lines))


class KeyFileError(ConfigError):
    """An API key file is missing, unreadable, malformed or too permissive."""


# --- values and data -----------------------------------------------------


class DataError(CryptojError):
    """Data from outside (exchange, files) that we cannot use as it is."""


class InvalidValue(DataError, ValueError):
    """A value (price, size, time...) that does not parse or is out of range."""

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}: {reason} (got {truncate(repr(value), 80)})")


class MalformedMessage(DataError):
    """A frame or response that cannot be parsed; ``raw`` holds it (truncated)."""

    def __init__(self, reason: str, raw: str | bytes = "") -> None:
        if isinstance(raw, bytes | bytearray | memoryview):
            raw = bytes(raw).decode("utf-8", errors="replace")
        self.reason = reason
        self.raw = truncate(raw)
        super().__init__(f"malformed message: {reason}; raw={self.raw!r}")


class SequenceGap(DataError):
    """A message sequence number jumped (gap) or went backwards (out of order)."""

    def __init__(self, expected: int, received: int, product_id: str | None = None) -> None:
        self.expected = expected
        self.received = received
        self.product_id = product_id
        where = f" on {product_id}" if product_id else ""
        super().__init__(f"sequence gap{where}: expected {expected}, received {received}")


class StaleData(DataError):
    """Market data older than allowed."""

    def __init__(self, product_id: str, age_seconds: float, limit_seconds: float) -> None:
        self.product_id = product_id
        self.age_seconds = age_seconds
        self.limit_seconds = limit_seconds
        super().__init__(f"{product_id}: market data is {age_seconds:.3f}s old (limit {limit_seconds:.3f}s)")


# --- venues --------------------------------------------------------------


class VenueError(CryptojError):
    """An exchange (or the simulator) refused or failed a request."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class RateLimited(VenueError):
    """HTTP 429 / rate limit exceeded; ``retry_after`` seconds when the venue said."""

    def __init__(self, message: str = "rate limited", *, retry_after: float | None = None) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=429)


class AuthenticationFailed(VenueError):
    """Credentials were refused (bad/expired JWT, unknown key)."""


class OrderRejected(VenueError):
    """The venue rejected an order; ``reason`` is its reason code (e.g. INSUFFICIENT_FUND)."""

    def __init__(self, reason: str, message: str = "", *, client_order_id: str | None = None) -> None:
        self.reason = reason
        self.client_order_id = client_order_id
        cid = f" client_order_id={client_order_id}" if client_order_id else ""
        super().__init__(f"order rejected: {reason}{': ' + message if message else ''}{cid}")


class OrderNotFound(VenueError):
    """The venue does not know the order asked for."""


class VenueUnavailable(VenueError):
    """The venue could not be reached or answered 5xx."""


class AmbiguousOutcome(VenueError):
    """An order create may or may not have reached the venue (timeout, reset)."""

    def __init__(self, client_order_id: str, cause: str) -> None:
        self.client_order_id = client_order_id
        self.cause = cause
        super().__init__(f"outcome of create client_order_id={client_order_id} unknown: {cause}")


# --- orders, risk, trading state ----------------------------------------


class InvalidOrderTransition(CryptojError):
    """An order state change that the state machine does not allow."""

    def __init__(self, client_order_id: str, current: str, requested: str) -> None:
        self.client_order_id = client_order_id
        self.current = current
        self.requested = requested
        super().__init__(f"order {client_order_id}: illegal transition {current} -> {requested}")


class RiskRejected(CryptojError):
    """A pre-trade risk check refused an order; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(f"risk rejected ({reason}): {message}")


class TradingHalted(CryptojError):
    """Trading is HALTED: only cancels are allowed."""


# --- storage -------------------------------------------------------------


class StorageError(CryptojError):
    """The database failed or holds something we cannot use."""


class SchemaVersionMismatch(StorageError):
    """The database schema version is not the one this code expects."""

    def __init__(self, found: int, expected: int) -> None:
        self.found = found
        self.expected = expected
        super().__init__(f"database schema version {found}, this build expects {expected}")
