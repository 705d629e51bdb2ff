"""The routing component: which provider serves this request, and why.

`Routing` (routing.component) is the one owner and writer of routing state; the request
path calls `plan()`, the recorder reports `observe(event)`, the prober reads `evidence()`,
the admin API `explain()`. The pure parts beside it: `ranking` (a model's view -> an order),
`reasons` (the order in words), `advice` (what the prober should measure), `steering` (an
order shaped by a request's controls and the policy), `circuit` and `affinity` (the state's
parts).
"""

from proxy.routing.advice import Evidence, Wanted
from proxy.routing.component import (
    AttemptEnded,
    AttemptStarted,
    Blocked,
    Event,
    Explanation,
    FirstToken,
    Plan,
    RouteRequest,
    Routing,
    Served,
)
from proxy.routing.steering import Controls

__all__ = [
    "AttemptEnded",
    "AttemptStarted",
    "Blocked",
    "Controls",
    "Event",
    "Evidence",
    "Explanation",
    "FirstToken",
    "Plan",
    "RouteRequest",
    "Routing",
    "Served",
    "Wanted",
]
