"""The objects every surface reads, built once by `app.py` and passed in via app.state."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Request

from proxy.affinity import AffinityTable
from proxy.api.auth import KeySet
from proxy.config import Config
from proxy.dispatch import Dispatcher
from proxy.metrics import Metrics
from proxy.policy import PolicyHolder
from proxy.pricing import Pricing
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
    client_keys: KeySet
    admin_keys: KeySet
    pricing: Pricing
    affinity: AffinityTable


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
