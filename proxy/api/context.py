"""The objects every surface reads, built once by `app.py` and passed in via app.state, and
the checks every surface shares: who may call it (`authenticate_client`, which also says
which client it is, and `authenticate_admin`) and which models exist (`pairs_of`), each
written once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fastapi import Request

from proxy.api import session
from proxy.api.auth import KeySet, bearer_token, require_key
from proxy.api.session import Sessions
from proxy.clients import Client, ClientsHolder, Gate
from proxy.core import requestid
from proxy.core.errors import AuthenticationFailed, ModelNotFound, PermissionDenied
from proxy.learning.scoreboard import Scoreboard
from proxy.learning.store.base import Store
from proxy.learning.store.buffer import SampleBuffer
from proxy.probing.prober import Prober
from proxy.routing import Routing
from proxy.serving.dispatch import Dispatcher
from proxy.settings.config import Config
from proxy.settings.policy import PolicyHolder
from proxy.settings.pricing import Pricing
from proxy.telemetry.metrics import Metrics


@dataclass(frozen=True)
class Services:
    config: Config
    policies: PolicyHolder
    # model -> (provider -> that provider's model id), in config order
    pairs: Mapping[str, Mapping[str, str]]
    # endpoint name -> the providers that serve it (None: all of them)
    served_by: Mapping[str, frozenset[str] | None]
    # provider -> the fields beyond OpenAI's parameters it takes from clients (serving.fields)
    extra_fields: Mapping[str, frozenset[str]]
    store: Store
    buffer: SampleBuffer
    scoreboard: Scoreboard
    routing: Routing
    dispatcher: Dispatcher
    metrics: Metrics
    prober: Prober
    replica: str
    clients: ClientsHolder  # who a client key belongs to, reloaded with the config file
    gate: Gate  # clients' limits and budgets
    admin_keys: KeySet
    pricing: Pricing
    sessions: Sessions


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def authenticate_client(request: Request) -> tuple[Services, Client]:
    """Check the request's client key; returns the services and the key's client (named,
    or "anonymous" for auth.api_keys), which every log line of the request names from here
    on. Raises AuthenticationFailed without a client key (none is needed when the config has
    none and allows unauthenticated use)."""
    svc = services(request)
    registry = svc.clients.current
    if registry.is_open:
        client = registry.anonymous
    else:
        token = bearer_token(request)
        if token is None:
            raise AuthenticationFailed("missing API key: send 'Authorization: Bearer <key>'")
        found = registry.identify(token)
        if found is None:
            raise AuthenticationFailed("invalid API key")
        client = found
    requestid.CLIENT.set(client.name)
    return svc, client


def authenticate_admin(request: Request) -> Services:
    """Check the request's admin key (or the dashboard's login cookie); returns the
    services. Raises PermissionDenied when no admin key is configured, AuthenticationFailed
    without one."""
    svc = services(request)
    if not svc.admin_keys:
        raise PermissionDenied("the admin API is disabled: set auth.admin_keys in the config")
    if bearer_token(request) is None and session.verified(request) is not None:
        return svc  # the dashboard's session, checked by dashboard.cookie_session
    require_key(svc.admin_keys, request, "admin key")
    return svc


def pairs_of(svc: Services, model: str) -> Mapping[str, str]:
    """The model's pairs: provider -> the provider's model id. Raises ModelNotFound (404)."""
    pairs = svc.pairs.get(model)
    if pairs is None:
        known = ", ".join(svc.pairs)
        raise ModelNotFound(f"model '{model}' is not configured (known: {known})", param="model")
    return pairs
