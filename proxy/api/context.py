"""The objects every surface reads, built once by `app.py` and passed in via app.state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Request

from proxy.config import Config
from proxy.dispatch import Dispatcher
from proxy.metrics import Metrics
from proxy.policy import PolicyHolder
from proxy.prober import Prober
from proxy.routing import Router
from proxy.scoreboard import Scoreboard
from proxy.store.base import Store
from proxy.store.buffer import SampleBuffer


@dataclass(frozen=True)
class Services:
    config: Config
    policies: PolicyHolder
    # public model name -> [(provider, provider's model id)], in config order
    deployments: Mapping[str, list[tuple[str, str]]]
    store: Store
    buffer: SampleBuffer
    scoreboard: Scoreboard
    router: Router
    dispatcher: Dispatcher
    metrics: Metrics
    prober: Prober
    replica: str
    client_keys: frozenset[str]
    admin_keys: frozenset[str]


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.headers.get("api-key")
