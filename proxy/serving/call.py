"""One client request as the request path carries it after routing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.core.domain import Decision
from proxy.routing import Blocked
from proxy.serving.endpoint import Endpoint
from proxy.serving.metering import Meter
from proxy.settings.policy import ModelPolicy


@dataclass(slots=True)
class Call:
    """`body` is the client's parsed JSON (the provider's model id is written into it per
    attempt). `deadline` and `began` are perf_counter() times: by when a first token must
    have come, and when the first attempt started. `affinity_key`: reported with the winner
    (routing binds the key to it)."""

    endpoint: Endpoint
    model: str
    body: dict[str, Any]
    stream: bool
    prompt_tokens: int
    decision: Decision
    policy: ModelPolicy
    meter: Meter | None = None  # a priced model: ask for usage, cost the answer (metering)
    affinity_key: str | None = None
    blocked: Blocked | None = None  # routing left nothing to try: why (serving.failures)
    deadline: float = 0.0
    began: float = 0.0
    finished: bool = False
