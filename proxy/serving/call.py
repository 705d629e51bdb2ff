"""One client request as the request path carries it after routing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from proxy.core.domain import Decision
from proxy.routing import Blocked
from proxy.serving.endpoint import Endpoint
from proxy.serving.fields import PLAIN, Admitted
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
    admitted: Admitted = PLAIN  # its extra fields, and whether it is stateful (serving.fields)
    steered: bool = False  # the client's controls placed it (its samples: Source.STEERED)
    deadline: float = 0.0
    began: float = 0.0
    finished: bool = False

    @property
    def hedgeable(self) -> bool:
        """May go to two providers at once: its endpoint allows it and it is not stateful."""
        return self.endpoint.hedgeable and not self.admitted.stateful

    @property
    def max_attempts(self) -> int:
        """Attempts it may take in all: a stateful request is sent to one provider, once."""
        return 1 if self.admitted.stateful else self.policy.failover.max_attempts
