"""Logging set-up for the command line: one JSON object per line (serve) or plain text
(demo, bench). It owns the handler and the format; it must not decide what is logged."""

from __future__ import annotations

import logging
import sys

import orjson

from proxy.core import requestid


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (+ request_id and client during a
    request, exc when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or requestid.current()
        if request_id is not None:
            entry["request_id"] = request_id  # joins the lines of one request
        client = requestid.CLIENT.get()
        if client is not None:
            entry["client"] = client
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str, *, json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
