"""Where each kind of versioned thing (models, the product feed, the merchandising rules) lives in the storage, and
how its version ids, artifact keys and version folders are named and listed."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from recommender.core.errors import ModelUnavailable, VersionUnavailable
from recommender.core.storage import Storage

MANIFEST = "manifest.json"
SAMPLES = (
    "samples.json"  # a model's sample invoices: training writes them, the console's "Try a real basket" reads them
)
# A version id or an artifact name is one plain file name: a manifest or pointer naming "../x" is damaged, never a
# path out of the version's folder.
PLAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Kind:
    """One kind of versioned thing: where its versions and pointers live, and how its errors read."""

    prefix: str  # storage folder: "models", "feed", "rules"
    noun: str  # in messages: "model version 2024...", "no earlier feed version"
    none_active: str  # message when nothing is active; {url} is the storage's URL
    nothing_staged: str  # message when promoting with nothing staged
    error: type[VersionUnavailable]  # raised when a version is missing, damaged or absent

    @property
    def versions(self) -> str:
        return f"{self.prefix}/versions/"

    @property
    def active(self) -> str:
        return f"{self.prefix}/ACTIVE"

    @property
    def staged(self) -> str:
        return f"{self.prefix}/STAGED"


MODELS = Kind(
    "models",
    "model",
    "no trained model in {url}: run `make train PATH_TO_DATA=<file>` (or `make demo`)",
    "nothing is staged: run `make train_parallel PATH_TO_DATA=<file>` first",
    ModelUnavailable,
)
FEED = Kind(
    "feed",
    "feed",
    "no product feed in {url}: run `make feed PATH_TO_FEED=<file>`",
    "no feed is staged",
    VersionUnavailable,
)
RULES = Kind(
    "rules",
    "rules",
    "no merchandising rules in {url}: run `make rules PATH_TO_RULES=<file>`",
    "no rules are staged",
    VersionUnavailable,
)
KINDS = {k.prefix: k for k in (MODELS, FEED, RULES)}

# The models' keys, as they were before other kinds existed.
VERSIONS = MODELS.versions
ACTIVE = MODELS.active
STAGED = MODELS.staged


def utcnow() -> datetime:
    """The current time in UTC (the default clock of everything that stamps versions)."""
    return datetime.now(UTC)


def new_version_id(now: datetime, content_hash: str) -> str:
    """Sortable by creation time (to the millisecond), then the content hash and a random tail for uniqueness."""
    return f"{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z-{content_hash[:8]}{secrets.token_hex(2)}"


def version_time(version: str) -> datetime | None:
    """When a version was created, read from its id (None for a foreign folder name)."""
    try:
        return datetime.strptime(version[:15], "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def artifact_key(version: str, name: str, kind: Kind = MODELS) -> str:
    """Storage key of one artifact of a version."""
    return f"{kind.versions}{version}/{name}"


def list_versions(storage: Storage, kind: Kind = MODELS) -> list[str]:
    """Every version folder of kind in the storage, oldest first (version ids sort by creation time)."""
    return sorted({key[len(kind.versions) :].split("/", 1)[0] for key in storage.list(kind.versions)})
