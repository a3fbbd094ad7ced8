"""Log set-up: plain text or JSON lines. Callers never pass tokens, keys, secrets or SDP to a log.

Whatever a client chose (an address behind a proxy, a reason, a header) is escaped by one
function, `fsproto.untrusted.shown` (the client's too), applied to every message, so no log line
carries control characters or terminal escapes; lines are rate-limited
(`signaling.limits.LogBudget`) with a summary of what was suppressed; and aiohttp's tracebacks
for requests it could not handle are cut to one line.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from fsproto.untrusted import shown
from signaling.limits import LogBudget

_EXTRA_FIELDS = ("event", "port")
MAX_MESSAGE = 1000  # characters of one message, once escaped
BURST = 200.0


class _Escaping(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = shown(record.message, MAX_MESSAGE)
        return super().formatMessage(record)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": shown(record.getMessage(), MAX_MESSAGE),
        }
        for name in _EXTRA_FIELDS:
            if hasattr(record, name):
                entry[name] = getattr(record, name)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class BudgetHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes at most the budget's lines, then a summary line of those it suppressed."""

    def __init__(self, budget: LogBudget) -> None:
        super().__init__(sys.stderr)
        self.budget = budget

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("aiohttp") and record.exc_info:
            record.exc_info = None  # a request aiohttp refused: the line says enough
            record.exc_text = None
        now = time.monotonic()
        if self.budget.admit(now):
            self.summarise(now)
            super().emit(record)

    def summarise(self, now: float) -> None:
        """Write the summary line if one is due (also called by the server once a second)."""
        count = self.budget.summary(now)
        if count:
            line = f"{count} log lines suppressed (over {self.budget.rate:g} a second)"
            summary = logging.LogRecord(
                "fileshare.signal", logging.WARNING, __file__, 0, line, None, None
            )
            super().emit(summary)


def summarise() -> None:
    """Write the summary of suppressed lines, if one is due (the server calls this every
    second, so a flood that stopped is still reported)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, BudgetHandler):
            handler.summarise(time.monotonic())


def setup_logging(level: str, as_json: bool, lines_per_second: float = 20.0) -> BudgetHandler:
    handler = BudgetHandler(LogBudget(lines_per_second, BURST))
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        formatter = _Escaping("%(asctime)s %(levelname)s %(name)s: %(message)s")
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    return handler
