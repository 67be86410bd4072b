"""A local S3 for the S3 backend with no AWS account: moto's server in the background (make emulate-s3), and dummy
credentials for commands that talk to it.

The emulator listens on 127.0.0.1 only (it accepts any credentials) and keeps everything in memory: stopping it
discards the bucket. Its pid file and log live beside the API server's, under RUN_DIR.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import sys
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit

from recommender.core.errors import ConfigError
from recommender.core.extras import optional
from recommender.core.settings import Settings
from recommender.local import processes
from recommender.local.processes import Background

HOST = "127.0.0.1"
DEFAULT_PORT = 5055
DEFAULT_BUCKET = "recommender-local"
DEFAULT_PREFIX = "recommender"
DEFAULT_REGION = "us-east-1"
# moto accepts any key; these are the values moto's own documentation uses.
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass(frozen=True)
class EmulatorInfo(Background):
    """What the emulator's pid file records."""

    @property
    def endpoint_url(self) -> str:
        """The AWS_ENDPOINT_URL that reaches it."""
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class EmulatorStart:
    """The outcome of `make emulate-s3`: the emulator, the storage URL to use, and whether it was running already."""

    info: EmulatorInfo
    storage_url: str
    already_running: bool


def pid_file(settings: Settings) -> Path:
    """Where the emulator's pid file lives."""
    return Path(settings.run_dir) / "s3-emulator.pid"


def log_file(settings: Settings) -> Path:
    """Where the emulator writes its log."""
    return Path(settings.run_dir) / "s3-emulator.log"


def is_local_endpoint(url: str | None) -> bool:
    """Whether an endpoint URL names this machine (127.0.0.1, ::1 or localhost)."""
    if not url:
        return False
    host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def use_dummy_credentials(environ: MutableMapping[str, str]) -> list[str]:
    """When AWS_ENDPOINT_URL points at this machine and no credentials or region are configured, set dummy ones.

    boto3 refuses to sign a request without credentials, even for the emulator; real credentials (environment or
    AWS_PROFILE) are left alone, and nothing is changed for a remote endpoint or real AWS. Returns the names set.
    """
    if not is_local_endpoint(environ.get("AWS_ENDPOINT_URL")):
        return []
    changed = []
    if not environ.get("AWS_ACCESS_KEY_ID") and not environ.get("AWS_PROFILE"):
        for name, value in DUMMY_CREDENTIALS.items():
            environ[name] = value
            changed.append(name)
        environ.pop("AWS_SESSION_TOKEN", None)
    if not environ.get("AWS_REGION") and not environ.get("AWS_DEFAULT_REGION"):
        environ["AWS_DEFAULT_REGION"] = DEFAULT_REGION
        changed.append("AWS_DEFAULT_REGION")
    return changed


def emulator_port(settings: Settings, port: int | None = None) -> int:
    """The port to run on: the one asked for, else the one of a local AWS_ENDPOINT_URL, else DEFAULT_PORT."""
    if port is not None:
        return port
    if is_local_endpoint(settings.aws_endpoint_url):
        try:
            found = urlsplit(settings.aws_endpoint_url).port
        except ValueError:
            found = None
        if found:
            return found
    return DEFAULT_PORT


def emulated_storage_url(settings: Settings) -> str:
    """STORAGE_URL when it already names a bucket (s3://...), else s3://recommender-local/recommender."""
    if settings.storage_url.startswith("s3://"):
        return settings.storage_url
    return f"s3://{DEFAULT_BUCKET}/{DEFAULT_PREFIX}"


def _is_emulator(argv: list[bytes]) -> bool:
    return b"moto.server" in argv or any(part.endswith(b"moto_server") for part in argv)


def read_pid_file(settings: Settings) -> EmulatorInfo | None:
    """The running emulator, or None (a stale pid file is removed)."""
    info = processes.read_pid_file(pid_file(settings), _is_emulator)
    return EmulatorInfo(**asdict(info)) if info else None


def create_bucket(endpoint_url: str, bucket: str) -> None:
    """Create bucket in the emulator (nothing happens if it exists)."""
    boto3 = optional("boto3", "the S3 emulator")
    from botocore.exceptions import BotoCoreError, ClientError

    # Explicit dummy credentials: whatever the caller's environment holds never reaches the emulator.
    client = boto3.client(
        "s3",
        endpoint_url=endpoint_url,
        region_name=DEFAULT_REGION,
        aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise ConfigError(f"cannot create bucket {bucket!r} in the emulator at {endpoint_url}: {err}") from None
    except BotoCoreError as err:
        raise ConfigError(f"the emulator at {endpoint_url} does not answer: {err}") from None


def start(settings: Settings, port: int | None = None, timeout: float = 30.0) -> EmulatorStart:
    """Start moto's server on 127.0.0.1 in the background (unless one runs already) and create the bucket."""
    storage_url = emulated_storage_url(settings)
    bucket = storage_url[len("s3://") :].partition("/")[0]
    if not bucket:
        raise ConfigError(f"STORAGE_URL={storage_url!r} names no bucket; use s3://bucket/prefix")
    running = read_pid_file(settings)
    if running is not None:
        create_bucket(running.endpoint_url, bucket)
        return EmulatorStart(running, storage_url, True)
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        raise ConfigError("moto's server is not installed: run `make devel` (it installs moto[server])")
    port = emulator_port(settings, port)
    if processes.port_open(HOST, port):
        raise ConfigError(
            f"port {port} on {HOST} is already in use; pick another one, e.g. "
            f"`make emulate-s3 AWS_ENDPOINT_URL=http://{HOST}:{port + 1}`"
        )
    process, started = processes.spawn(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        pid_file(settings),
        log_file(settings),
        HOST,
        port,
    )
    info = EmulatorInfo(**asdict(started))
    processes.wait_ready(process, pid_file(settings), lambda: processes.port_open(HOST, port), timeout, "S3 emulator")
    create_bucket(info.endpoint_url, bucket)
    return EmulatorStart(info, storage_url, False)


def stop(settings: Settings) -> EmulatorInfo | None:
    """Stop the emulator named by the pid file and wait until its port is free; None if none runs."""
    info = read_pid_file(settings)
    if info is not None:
        processes.terminate(info, pid_file(settings))
    return info


def usage(started: EmulatorStart) -> str:
    """What to tell the user after `make emulate-s3`: the exact variables every other command needs."""
    info, url = started.info, started.storage_url
    state = "already running" if started.already_running else "running"
    credentials = " ".join(f"{k}={v}" for k, v in {**DUMMY_CREDENTIALS, "AWS_DEFAULT_REGION": DEFAULT_REGION}.items())
    return f"""S3 emulator {state}: pid {info.pid}, {info.endpoint_url} (moto, in memory; log: {info.log_file})
bucket {url[len("s3://") :].partition("/")[0]} is ready. Give every command the same two settings, e.g.
  make add_user USER_NAME=alice STORAGE_URL={url} AWS_ENDPOINT_URL={info.endpoint_url}
  make train PATH_TO_DATA=purchases.csv STORAGE_URL={url} AWS_ENDPOINT_URL={info.endpoint_url}
  make run-prod STORAGE_URL={url} AWS_ENDPOINT_URL={info.endpoint_url}
or once for this shell:
  export STORAGE_URL={url} AWS_ENDPOINT_URL={info.endpoint_url}
Credentials: the emulator accepts any. With no AWS_ACCESS_KEY_ID or AWS_PROFILE set, the commands use dummy ones
for a 127.0.0.1 endpoint by themselves ({credentials}); other clients (aws cli, scripts) need them exported.
`make emulate-s3-stop` stops it; what it stores is lost then."""
