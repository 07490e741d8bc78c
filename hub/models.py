"""Every table of the hub, imported in one place for migrations and tests."""

from hub.console.models import ConsoleSession, ConsoleSignInFailure, ConsoleUser
from hub.core.audit import AuditConcern, AuditEntry
from hub.core.db import metadata
from hub.core.idempotency import IdempotencyRecord
from hub.core.revocations import Revocation
from hub.jobs.models import JobLease, JobRun, JobRunRequest
from hub.oauth.models import AuthFailure, UsedAssertion
from matching.models import MatrixAnswer, Offer, OfferAudience, OfferAudienceChange, OverlapQuery
from partners.clients.models import OAuthClient
from partners.identifiers.models import (
    ConsentEvent,
    IdentifierRecord,
    IdentifierState,
    PendingConsentEvent,
)
from partners.identifiers.uploads.models import IdentifierUpload, StagedRecord, UploadError
from partners.partners.models import Partner
from partners.partnerships.models import Partnership, PartnershipMember
from partners.rewards.models import (
    RewardDisclosure,
    RewardEvent,
    RewardFeedItem,
    RewardFeedReader,
    RewardLot,
    RewardLotUse,
    RewardMember,
    RewardPosting,
    RewardSettlement,
)
from partners.webhooks.models import WebhookDelivery, WebhookSecret

__all__ = [
    "AuditConcern",
    "AuditEntry",
    "AuthFailure",
    "ConsentEvent",
    "ConsoleSession",
    "ConsoleSignInFailure",
    "ConsoleUser",
    "IdempotencyRecord",
    "IdentifierRecord",
    "IdentifierState",
    "IdentifierUpload",
    "JobLease",
    "JobRun",
    "JobRunRequest",
    "MatrixAnswer",
    "OAuthClient",
    "Offer",
    "OfferAudience",
    "OfferAudienceChange",
    "OverlapQuery",
    "Partner",
    "Partnership",
    "PartnershipMember",
    "PendingConsentEvent",
    "Revocation",
    "RewardDisclosure",
    "RewardEvent",
    "RewardFeedItem",
    "RewardFeedReader",
    "RewardLot",
    "RewardLotUse",
    "RewardMember",
    "RewardPosting",
    "RewardSettlement",
    "StagedRecord",
    "UploadError",
    "UsedAssertion",
    "WebhookDelivery",
    "WebhookSecret",
    "metadata",
]
