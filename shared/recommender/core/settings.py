"""One settings object, read from the environment, behind a cached getter that tests override.

A frozen dataclass parsed here rather than pydantic-settings, whose import alone would add some 11 ms to the
recommend function's cold start (bench/results/libraries.md)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from functools import lru_cache

from recommender.core.errors import ConfigError

# HS256 keys shorter than the hash (32 bytes) weaken it (RFC 7518, section 3.2).
MIN_SECRET_BYTES = 32


@dataclass(frozen=True)
class Settings:
    """Every knob of the service; each field maps to the environment variable of the same name in capitals."""

    storage_url: str = "./data"
    aws_endpoint_url: str | None = None
    # Token signing: JWT_SECRET wins; else JWT_SECRET_ARN (Secrets Manager, on AWS); else one kept in the storage.
    jwt_secret: str | None = field(default=None, repr=False)
    jwt_secret_arn: str | None = None
    jwt_algorithm: str = "HS256"
    token_minutes: int = 60
    bcrypt_rounds: int = 12
    min_password_length: int = 8
    # Password guessing: after this many failed logins for one user name from one client address, or from one
    # address in all, within the window, /token answers 429 until the oldest of them leaves the window.
    login_failures_per_user: int = 5
    login_failures_per_address: int = 50
    login_window_seconds: float = 900.0
    # Password checks (bcrypt) run in their own pool of this many threads, at this niceness (Linux), with at most
    # login_queue more waiting; beyond that /token answers 503 at once, and recommendations never wait for them.
    login_workers: int = 1
    login_queue: int = 8
    login_nice: int = 19
    # How long a user lookup is trusted before the store is read again (deleted users lose access within it).
    user_cache_seconds: float = 5.0
    # How often a serving process looks at the active-model pointer (and re-reads the API keys).
    model_poll_seconds: float = 2.0
    # Requests per second an API key may make to one serving process when `make add_key` is given no RATE.
    key_rate_default: float = 50.0
    # Distinct baskets whose answers a serving process keeps (per model version); 0, the default, keeps none.
    # Worth it when baskets repeat a lot (a product page's "goes well with"): measured 1.3-1.6x the requests/s;
    # on traffic of mostly new baskets the kept answers cost the garbage collector more than they save.
    answer_cache: int = 0
    # Load (and page in) the active model while the function initializes rather than on its first request: what
    # Lambda SnapStart then keeps in its snapshot (template.yaml: RecommendSnapStart; serving.snapstart).
    preload_model: bool = False
    # S3 calls: botocore's retry mode, its attempts (the first included) and each attempt's timeouts. In "standard"
    # mode they bound how long one call can wait (storage.s3_call_limit; README, Reliability and security).
    s3_retry_mode: str = "standard"
    s3_max_attempts: int = 3
    s3_connect_timeout: float = 1.0
    s3_read_timeout: float = 3.0
    # Where models kept in S3 are copied to before they are memory-mapped.
    cache_dir: str = "/tmp/recommender-cache"
    # The text encoding of csv training files; anything else is refused, never read into mangled text.
    encoding: str = "utf-8"
    # A training whose estimated peak memory is over this is refused before its heavy stages (default: half of
    # this machine's memory; training.budget).
    max_training_gb: float | None = None
    max_body_bytes: int = 65536
    # POST /events: events per batch, the body limit (in place of max_body_bytes), and the recent event ids each
    # process remembers to answer a re-sent one "duplicate" (at most this many, for at most this long).
    events_max_batch: int = 500
    events_max_body_bytes: int = 1048576
    events_dedupe_ids: int = 100000
    events_dedupe_seconds: float = 3600.0
    # Send events to this Kinesis Data Firehose stream instead of writing them to the storage (template.yaml:
    # EventsFirehose); it delivers them under the same raw layout.
    events_firehose_stream: str | None = None
    # The local server's limits on a request's line and headers: larger ones get 431, slower ones 408.
    max_header_bytes: int = 16384
    header_timeout_seconds: float = 10.0
    # ...and on its body and connections: a body must arrive within body_timeout_seconds and, after its first
    # 2 s, at min_body_bytes_per_second on average (else 408), and an answer be read within the same time; at most
    # max_connections open connections in all (fewer if the process may not open that many files) and
    # max_connections_per_address from one address.
    body_timeout_seconds: float = 30.0
    min_body_bytes_per_second: int = 1024
    max_connections: int = 1000
    max_connections_per_address: int = 100
    keep_versions: int = 5
    # Uploads of merchandising rules and product feeds: the largest rules file, its stored form (JSON), and the most
    # rows and bytes (uncompressed) of a feed file; larger ones are refused with one line naming the setting.
    max_rules_bytes: int = 1 << 20
    max_rules_stored_bytes: int = 4 << 20
    max_feed_rows: int = 500_000
    max_feed_bytes: int = 256 << 20
    # Activation refuses a new model whose held-out HR@10 is more than this share below the active model's.
    model_gate_margin: float = 0.10
    # What the scheduled retraining (tools/retrain.py) trains from: the event log, or files and the event log.
    retrain_data: str = "events:"
    # The analytics report attributes an add-to-cart or purchase to an answer that showed the item this many hours
    # before at most (an experiment's own attribution_window_hours wins for its report).
    attribution_window_hours: float = 24.0
    run_dir: str = "./data/run"
    host: str = "127.0.0.1"
    port: int = 8090
    log_level: str = "info"


def settings_from_env(environ: Mapping[str, str]) -> Settings:
    """Build settings from an environment mapping; empty variables count as unset."""
    values: dict[str, object] = {}
    for f in fields(Settings):
        raw = environ.get(f.name.upper(), "").strip()
        if not raw:
            continue
        kind = f.type if isinstance(f.type, str) else f.type.__name__
        try:
            if kind.startswith("bool"):
                if raw.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError(raw)
                values[f.name] = raw.lower() in ("1", "true", "yes", "on")
            elif kind.startswith("int"):
                values[f.name] = int(raw)
            elif kind.startswith("float"):
                values[f.name] = float(raw)
            else:
                values[f.name] = raw
        except ValueError:
            raise ConfigError(
                f"environment variable {f.name.upper()}={raw!r} is not a valid {kind.split()[0]}"
            ) from None
    settings = Settings(**values)
    if settings.jwt_secret is not None and len(settings.jwt_secret.encode()) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"JWT_SECRET is {len(settings.jwt_secret.encode())} bytes long; a token signing secret needs "
            f"at least {MIN_SECRET_BYTES} (make one with: python3 -c 'import secrets; "
            "print(secrets.token_urlsafe(48))'), or leave JWT_SECRET unset to have one generated"
        )
    for name in (
        "login_failures_per_user",
        "login_failures_per_address",
        "login_workers",
        "max_rules_bytes",
        "max_rules_stored_bytes",
        "max_feed_rows",
        "max_feed_bytes",
        "events_max_batch",
    ):
        if getattr(settings, name) < 1:
            raise ConfigError(f"{name.upper()} must be at least 1")
    if settings.body_timeout_seconds <= 0 or settings.min_body_bytes_per_second < 0:
        raise ConfigError("BODY_TIMEOUT_SECONDS must be above 0, and MIN_BODY_BYTES_PER_SECOND 0 or more")
    if settings.max_connections < 1 or settings.max_connections_per_address < 1:
        raise ConfigError("MAX_CONNECTIONS and MAX_CONNECTIONS_PER_ADDRESS must be at least 1")
    if not settings.key_rate_default > 0:
        raise ConfigError("KEY_RATE_DEFAULT must be above 0 (requests per second)")
    if settings.jwt_algorithm not in {"HS256", "HS384", "HS512"}:
        raise ConfigError(f"JWT_ALGORITHM must be HS256, HS384 or HS512, not {settings.jwt_algorithm!r}")
    if settings.s3_retry_mode not in {"standard", "adaptive", "legacy"}:
        raise ConfigError(f"S3_RETRY_MODE must be standard, adaptive or legacy, not {settings.s3_retry_mode!r}")
    if settings.s3_max_attempts < 1 or settings.s3_connect_timeout <= 0 or settings.s3_read_timeout <= 0:
        raise ConfigError("S3_MAX_ATTEMPTS must be at least 1, and S3_CONNECT_TIMEOUT and S3_READ_TIMEOUT above 0")
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests call get_settings.cache_clear() or override the dependency)."""
    return settings_from_env(os.environ)
