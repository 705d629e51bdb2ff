"""Load a bench run's counted samples into a store, so a proxy starts knowing the pairs.

Warm-ups stay out, as in the report. Samples keep their own timestamps (source=bench):
a routing window only counts what is younger than its `max_age_s`, so an old run informs
the proxy for that long and no longer. Pairs the config does not serve are skipped, and
so are pairs whose provider model id differs from the one measured.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from proxy.core.domain import Pair, Sample
from proxy.learning.store.base import Store
from proxy.method.samplefile import RunLog
from proxy.settings.config import Config

BATCH = 500


@dataclass(slots=True)
class ImportPlan:
    samples: list[Sample] = field(default_factory=list)
    skipped: dict[Pair, str] = field(default_factory=dict)  # pair -> why


def plan_import(run: RunLog, config: Config) -> ImportPlan:
    """The counted samples of pairs `config` serves with the same provider model id."""
    plan = ImportPlan()
    wanted = set()
    for spec in run.header.method.pairs:
        entry = config.models.get(spec.model)
        configured = entry.providers.get(spec.provider) if entry else None
        if configured is None:
            plan.skipped[spec.pair] = "not configured"
        elif configured != spec.upstream_model:
            plan.skipped[spec.pair] = (
                f"measured as '{spec.upstream_model}', configured as '{configured}'"
            )
        else:
            wanted.add(spec.pair)
    plan.samples = [r.sample for r in run.counted() if r.sample.pair in wanted]
    return plan


async def import_samples(samples: Sequence[Sample], store: Store) -> int:
    """Append `samples` in batches. Raises StoreUnavailable if the store cannot take them."""
    for start in range(0, len(samples), BATCH):
        await store.append(samples[start : start + BATCH], [])
    return len(samples)
