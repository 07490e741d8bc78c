"""Every scheduled job of the hub, defined in code: its name, function, schedule, purpose.

How a job is written (the domains' jobs -- rewards, webhooks -- follow this)::

    async def rewards_sync(ctx: JobContext) -> dict[str, int]:
        position = ctx.cursor.get("after", 0)       # where the previous run got to
        while batch := await next_batch(position):
            with writing():
                async with ctx.session_maker() as session:
                    ...apply the batch in session...
                    position = batch.last
                    await ctx.checkpoint({"after": position}, counts, session=session)
        return counts                                 # e.g. {"shared": 120}

- A job must be idempotent and resumable: a run may stop anywhere (a kill, a deploy), and the
  next run starts from ``ctx.cursor``, the last checkpoint. Write each batch in the same
  transaction as its checkpoint (``session=``), so a batch is applied once or not at all.
- ``ctx.checkpoint`` renews the job's lease; it raises ``LeaseLost`` if another worker took
  the job over: let it propagate. Call it at least every ``jobs.lease_seconds / 3`` in long
  batches (a heartbeat renews the lease meanwhile too, but a stalled loop must not keep it).
- Raise ``JobFailed("...")`` with a message naming no data value for a failure worth showing
  in ``GET /v1/jobs``; any other exception is recorded by its type, with details in the log.
  Raise ``JobSkipped("...")`` when the job cannot work in this deployment (a read-only
  keyring): the run is recorded ``skipped`` with that reason.
- Domain packages must not import ``hub.jobs`` (tests/unit/test_architecture.py): type ``ctx``
  with a small Protocol of what the job uses (``cursor``, ``session_maker``, ``settings``,
  ``checkpoint``), as ``partners.identifiers.uploads.processor.UploadSettings`` does.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from hub.jobs.context import JobContext, JobFailed, JobSkipped
from hub.jobs.lease import LeaseLost
from hub.jobs.match_keys import match_key_rotation
from hub.jobs.probe import probe, probe_enabled, probe_interval
from hub.jobs.retention import RETENTION_PURGES, retention_purge
from hub.jobs.signing_keys import signing_key_rotation
from hub.settings import Settings

log = structlog.get_logger("hub.jobs")
JobFunction = Callable[[JobContext], Awaitable[dict[str, int]]]
JOB_NAMES = (
    "rewards_sync",
    "webhook_redelivery",
    "settlement",
    "points_expiry",
    "retention_purge",
    "match_key_rotation",
    "signing_key_rotation",
)


@dataclass(frozen=True)
class JobSpec:
    """One job: run every ``interval_seconds``, or on the crontab line ``cron`` (UTC)."""

    name: str
    func: JobFunction
    description: str
    interval_seconds: float | None = None
    cron: str | None = None

    @property
    def schedule(self) -> str:
        if self.interval_seconds is not None:
            return f"every {self.interval_seconds:g} s"
        return f"cron {self.cron} (UTC)"


@dataclass(frozen=True)
class DomainJob:
    """A job whose function lives in a domain package, found when it runs (``module:name``).

    Until that module exists the job succeeds doing nothing (counts ``{"skipped": 1}``), so
    the scheduler runs and shows every job before each domain delivers its part.
    """

    target: str

    def resolve(self) -> JobFunction | None:
        module_name, _, attribute = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            # Only the target missing; a missing import *inside* it is a real failure.
            if exc.name is None or not module_name.startswith(exc.name):
                raise
            return None
        func: JobFunction | None = getattr(module, attribute, None)
        return func

    async def __call__(self, ctx: JobContext) -> dict[str, int]:
        func = self.resolve()
        if func is None:
            log.info("job not implemented yet: skipped", job=ctx.name, target=self.target)
            return {"skipped": 1}
        return await func(ctx)


def job_specs(settings: Settings) -> dict[str, JobSpec]:
    """The jobs with their schedules from ``[jobs]`` settings (and the test-only probe when
    ``HUB_JOBS_TEST_PROBE=1``)."""
    jobs = settings.jobs
    specs = [
        JobSpec(
            "rewards_sync",
            DomainJob("partners.rewards.jobs:rewards_sync"),
            "Share new reward activity with partner brands and update coalition balances.",
            interval_seconds=jobs.rewards_sync_seconds,
        ),
        JobSpec(
            "webhook_redelivery",
            DomainJob("partners.webhooks.jobs:webhook_redelivery"),
            "Retry failed webhook deliveries with backoff; dead-letter them after the limit.",
            interval_seconds=jobs.webhook_redelivery_seconds,
        ),
        JobSpec(
            "settlement",
            DomainJob("partners.rewards.jobs:settlement"),
            "Settle who owes whom for the closed period.",
            cron=jobs.settlement_cron,
        ),
        JobSpec(
            "points_expiry",
            DomainJob("partners.rewards.jobs:points_expiry"),
            "Expire points past their validity, oldest lots first.",
            cron=jobs.points_expiry_cron,
        ),
        JobSpec(
            "retention_purge",
            retention_purge,
            "Delete job runs, run requests and other rows past their retention.",
            cron=jobs.retention_purge_cron,
        ),
        JobSpec(
            "match_key_rotation",
            match_key_rotation,
            "Re-key identifier records and reward members to the newest match-key version and "
            "re-seal digests under the newest data key; retire versions nothing uses.",
            cron=jobs.match_key_rotation_cron,
        ),
        JobSpec(
            "signing_key_rotation",
            signing_key_rotation,
            "Add a new token signing key; drop old keys from the JWKS once their tokens expired.",
            cron=jobs.signing_key_rotation_cron,
        ),
    ]
    if probe_enabled():
        specs.append(
            JobSpec("probe", probe, "TEST ONLY (HUB_JOBS_TEST_PROBE=1).", probe_interval())
        )
    return {spec.name: spec for spec in specs}


__all__ = [
    "JOB_NAMES",
    "RETENTION_PURGES",
    "DomainJob",
    "JobContext",
    "JobFailed",
    "JobSkipped",
    "JobSpec",
    "LeaseLost",
    "job_specs",
]
