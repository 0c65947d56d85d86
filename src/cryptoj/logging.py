"""Structured logging (structlog) with secret redaction.

Call :func:`configure_logging` once at start-up (the CLI does). Then::

    log = get_logger(__name__).bind(product_id="BTC-USD")
    log.info("order_submitted", client_order_id=cid)

Output is a human console format, or one JSON object per line with
``json=True`` (``--log-json``). Records from the standard :mod:`logging` module
(aiohttp, SQLAlchemy...) go through the same processors, so they are rendered
and redacted the same way.

:func:`redact_secrets` is the last processor before rendering. It masks

* the value of any key that names a secret (``private_key``, ``secret``,
  ``token``, ``jwt``, ``authorization``, ``password``, ``passphrase``,
  ``api_secret``, ``cookie``, ``signature``...), whatever its type;
* inside any string: PEM blocks (``-----BEGIN ... -----END ...-----``, and a
  truncated one to the end of the string), JWT-looking tokens
  (``eyJ...eyJ...sig``), ``Bearer <token>`` and the password in URLs
  (``scheme://user:password@host``);

recursively through dicts, lists, tuples and sets, in the rendered exception
text (tracebacks) and in the ``repr`` of other objects.
"""

from __future__ import annotations

import logging as _stdlib_logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Final, TextIO

import orjson
import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["REDACTED", "configure_logging", "get_logger", "redact_secrets", "redact_text"]

REDACTED: Final = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"private_?key|secret|token|jwt|authorization|password|passwd|passphrase|cookie|signature|credential",
    re.IGNORECASE,
)
_PEM_BLOCK = re.compile(r"-----BEGIN [A-Z0-9 ]+-----.*?-----END [A-Z0-9 ]+-----", re.DOTALL)
_PEM_OPEN = re.compile(r"-----BEGIN [A-Z0-9 ]*(?:PRIVATE KEY|SECRET)[A-Z0-9 ]*-----.*", re.DOTALL)
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]+\.eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*")
_BEARER = re.compile(r"\b(Bearer)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@", re.IGNORECASE)
_SCALARS = (int, float, bool, type(None))
_HANDLER_MARK = "_cryptoj_handler"


def redact_text(text: str) -> str:
    """Mask PEM blocks, JWTs, bearer tokens and URL passwords inside ``text``."""
    if "-----BEGIN" in text:
        text = _PEM_BLOCK.sub(REDACTED, text)
        text = _PEM_OPEN.sub(REDACTED, text)
    if "eyJ" in text:
        text = _JWT.sub(REDACTED, text)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    return _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, bytes | bytearray):
        text = bytes(value).decode("utf-8", errors="replace")
        cleaned = redact_text(text)
        return cleaned if cleaned != text else value
    if isinstance(value, MutableMapping):
        return {k: (REDACTED if _is_secret_key(k) else _redact_value(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_value(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(v) for v in value)
    if isinstance(value, set | frozenset):
        return type(value)(_redact_value(v) for v in value)
    # any other object: if its repr leaks a secret, replace it by the cleaned repr
    text = repr(value)
    cleaned = redact_text(text)
    return cleaned if cleaned != text else value


def _is_secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY.search(key))


def redact_secrets(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets anywhere in ``event_dict`` (see module doc)."""
    for key in list(event_dict):
        if key.startswith("_"):  # structlog's own bookkeeping (_record, _from_structlog)
            continue
        if _is_secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact_value(event_dict[key])
    return event_dict


def _json_serializer(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _level_number(level: str | int) -> int:
    if isinstance(level, int):
        return level
    number = _stdlib_logging.getLevelNamesMapping().get(level.upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return number


def configure_logging(level: str | int = "INFO", json: bool = False, *, stream: TextIO | None = None) -> None:
    """Set up structlog and the stdlib root logger. Safe to call again (it replaces its handler).

    ``stream`` defaults to ``sys.stderr``. Raises ``ValueError`` for an unknown level name.
    """
    number = _level_number(level)
    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    renderer: Processor
    if json:
        renderer = structlog.processors.JSONRenderer(serializer=_json_serializer)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False, exception_formatter=structlog.dev.plain_traceback)
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,
            renderer,
        ],
    )
    handler = _stdlib_logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter)
    setattr(handler, _HANDLER_MARK, True)
    root = _stdlib_logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(number)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """A structlog logger, optionally with values bound (``product_id=...``)."""
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name)
    return logger.bind(**initial) if initial else logger

