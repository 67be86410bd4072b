"""A local S3 for the S3 backend with no AWS account: moto's server in the background (make emulate-s3), and dummy
credentials for commands that talk to it.

The emulator listens on 127.0.0.1 only (it accepts any credentials) and keeps everything in memory: stopping it
discards the bucket. Its pid file and log live beside the API server's, under RUN_DIR.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import MutableMapping
from urllib.parse import urlsplit

from .errors import ConfigError
from .server import _alive, _port_open
from .settings import Settings

HOST = "127.0.0.1"
DEFAULT_PORT = 5055
DEFAULT_BUCKET = "recommender-local"
DEFAULT_PREFIX = "recommender"
DEFAULT_REGION = "us-east-1"
# moto accepts any key; these are the values moto's own documentation uses.
DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@dataclass(frozen=True)
class EmulatorInfo:
    """What the emulator's pid file records."""

    pid: int
    host: str
    port: int
    log_file: str

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


def _is_emulator(pid: int) -> bool:
    """Guards against a recycled pid: the process must be moto's server."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return _alive(pid)  # no /proc (macOS): trust the pid file
    return b"moto.server" in cmdline or any(part.endswith(b"moto_server") for part in cmdline)


def read_pid_file(settings: Settings) -> EmulatorInfo | None:
    """The running emulator, or None (a stale pid file is removed)."""
    path = pid_file(settings)
    try:
        info = EmulatorInfo(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None
    if _alive(info.pid) and _is_emulator(info.pid):
        return info
    path.unlink(missing_ok=True)
    return None


def create_bucket(endpoint_url: str, bucket: str) -> None:
    """Create bucket in the emulator (nothing happens if it exists)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    # Explicit dummy credentials: whatever the caller's environment holds never reaches the emulator.
    client = boto3.client("s3", endpoint_url=endpoint_url, region_name=DEFAULT_REGION,
                          aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise ConfigError(f"cannot create bucket {bucket!r} in the emulator at {endpoint_url}: {err}") from None
    except BotoCoreError as err:
        raise ConfigError(f"the emulator at {endpoint_url} does not answer: {err}") from None


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def start(settings: Settings, port: int | None = None, timeout: float = 30.0) -> EmulatorStart:
    """Start moto's server on 127.0.0.1 in the background (unless one runs already) and create the bucket."""
    storage_url = emulated_storage_url(settings)
    bucket = storage_url[len("s3://"):].partition("/")[0]
    if not bucket:
        raise ConfigError(f"STORAGE_URL={storage_url!r} names no bucket; use s3://bucket/prefix")
    running = read_pid_file(settings)
    if running is not None:
        create_bucket(running.endpoint_url, bucket)
        return EmulatorStart(running, storage_url, True)
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        raise ConfigError("moto's server is not installed: run `make devel` (it installs moto[server])")
    port = emulator_port(settings, port)
    if _port_open(HOST, port):
        raise ConfigError(f"port {port} on {HOST} is already in use; pick another one, e.g. "
                          f"`make emulate-s3 AWS_ENDPOINT_URL=http://{HOST}:{port + 1}`")
    run_dir = Path(settings.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_file(settings)
    with open(log_path, "ab") as out:
        process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    info = EmulatorInfo(process.pid, HOST, port, str(log_path))
    pid_file(settings).write_text(json.dumps(info.__dict__))
    deadline = time.monotonic() + timeout
    while not _port_open(HOST, port):
        if process.poll() is not None:
            pid_file(settings).unlink(missing_ok=True)
            raise ConfigError("the S3 emulator exited at start:\n" + _tail(log_path))
        if time.monotonic() > deadline:
            stop(settings)
            raise ConfigError(f"the S3 emulator did not listen on {info.endpoint_url} within {timeout:.0f} s; "
                              f"see {log_path}")
        time.sleep(0.1)
    create_bucket(info.endpoint_url, bucket)
    return EmulatorStart(info, storage_url, False)


def stop(settings: Settings, timeout: float = 10.0) -> EmulatorInfo | None:
    """Stop the emulator named by the pid file (SIGTERM, then SIGKILL) and wait until its port is free."""
    info = read_pid_file(settings)
    if info is None:
        return None
    os.kill(info.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(info.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(info.pid):
        os.kill(info.pid, signal.SIGKILL)
        while _alive(info.pid):
            time.sleep(0.05)
    while _port_open(info.host, info.port) and time.monotonic() < deadline + 5:
        time.sleep(0.05)
    pid_file(settings).unlink(missing_ok=True)
    return info


def usage(started: EmulatorStart) -> str:
    """What to tell the user after `make emulate-s3`: the exact variables every other command needs."""
    info, url = started.info, started.storage_url
    state = "already running" if started.already_running else "running"
    credentials = " ".join(f"{k}={v}" for k, v in {**DUMMY_CREDENTIALS, "AWS_DEFAULT_REGION": DEFAULT_REGION}.items())
    return f"""S3 emulator {state}: pid {info.pid}, {info.endpoint_url} (moto, in memory; log: {info.log_file})
bucket {url[len('s3://'):].partition('/')[0]} is ready. Give every command the same two settings, e.g.
  make add_user USER_NAME=alice STORAGE_URL={url} AWS_ENDPOINT_URL={info.endpoint_url}
  make train PATH_TO_DATA=purchases.csv STORAGE_URL={url} AWS_ENDPOINT_URL={info.endpoint_url}
  make run-prod STORAGE_URL={url} AWS_ENDPOINT_URL={info.endpoint_url}
or once for this shell:
  export STORAGE_URL={url} AWS_ENDPOINT_URL={info.endpoint_url}
Credentials: the emulator accepts any. With no AWS_ACCESS_KEY_ID or AWS_PROFILE set, the commands use dummy ones
for a 127.0.0.1 endpoint by themselves ({credentials}); other clients (aws cli, scripts) need them exported.
`make emulate-s3-stop` stops it; what it stores is lost then."""
