"""Named clients: who sent a request (registry), what it may ask for (permissions), its
limits and budget counted across replicas (gate), and what it is told (refusals).
docs/clients.md tells the whole story."""

from proxy.clients.gate import ClientStats, Gate, Ticket
from proxy.clients.registry import Client, ClientsHolder, Registry

__all__ = ["Client", "ClientStats", "ClientsHolder", "Gate", "Registry", "Ticket"]
