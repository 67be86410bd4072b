"""The trained Online Retail deployment the serve and cold parts share, and baskets a shopper could hold."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import median, percentile, say


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sample_baskets(tx: Any, count: int, seed: int = 0, max_items: int = 10) -> list[list[str]]:
    """Baskets a shopper could hold: a random part (1..max_items products) of randomly chosen real invoices."""
    order = np.argsort(tx.pair_basket, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(np.bincount(tx.pair_basket, minlength=len(tx.basket_ids)))])
    rng = np.random.default_rng(seed)
    baskets = []
    for b in rng.integers(0, len(tx.basket_ids), count):
        items = tx.pair_item[order[bounds[b] : bounds[b + 1]]]
        size = int(rng.integers(1, min(len(items), max_items) + 1))
        baskets.append([tx.item_codes[i] for i in rng.choice(items, size, replace=False)])
    return baskets


def recommend_latency(
    model: Any, baskets: Sequence[Sequence[str]], n: int = 10, repeats: int = 3, warmup: int = 200
) -> dict:
    """In-process Model.recommend latency in microseconds: median over repeats of each pass's p50 and p99.

    The first pass's p99 is kept too: a model may remember per-item work (Annoy neighbours) within a process,
    so later passes show a warm server and the first one a fresh process.
    """
    for basket in baskets[:warmup]:
        model.recommend(basket, n)
    p50, p99, mean = [], [], []
    for _ in range(repeats):
        times = []
        for basket in baskets:
            t = time.perf_counter_ns()
            model.recommend(basket, n)
            times.append(time.perf_counter_ns() - t)
        micros = np.asarray(times) / 1000
        p50.append(percentile(micros, 50))
        p99.append(percentile(micros, 99))
        mean.append(float(micros.mean()))
    return {
        "p50_us": median(p50),
        "p99_us": median(p99),
        "first_pass_p99_us": p99[0],
        "mean_us": median(mean),
        "calls": len(baskets),
        "repeats": repeats,
        "n": n,
        "mean_basket": float(np.mean([len(b) for b in baskets])),
    }


@dataclass
class Deployment:
    """A storage with the Online Retail model and a benchmark user, settings pointing at it, and a token."""

    folder: Path
    settings: Any
    token: str
    baskets: list[list[str]]
    version: str
    key: str = ""  # a server API key (scope recommend, no practical rate limit), for the key variant of serve


@contextmanager
def retail_deployment(csv: Path, workdir: Path, basket_count: int = 2000) -> Iterator[Deployment]:
    """Train the Online Retail model into workdir/store, add user `bench`, and sign a token for it."""
    import secrets as pysecrets

    from recommender.core.settings import settings_from_env
    from recommender.core.storage import LocalStorage
    from recommender.serving.keys import MAX_RATE, add_key
    from recommender.serving.tokens import issue_token, load_secret
    from recommender.serving.users import add_user
    from recommender.training.ingest import load_transactions
    from recommender.training.pipeline import train

    folder = workdir / "store"
    storage = LocalStorage(folder)
    say(f"training the Online Retail model for serving ({csv.name})")
    result = train(csv, storage, progress=lambda _m: None)
    user = add_user(storage, "bench", pysecrets.token_urlsafe(16), "Benchmark", "bench@example.com", rounds=4)
    settings = settings_from_env(
        {
            **os.environ,
            "STORAGE_URL": str(folder),
            "RUN_DIR": str(workdir / "run"),
            "HOST": "127.0.0.1",
            "PORT": str(free_port()),
        }
    )
    secret = load_secret(settings, storage)
    token = issue_token("bench", secret, settings.jwt_algorithm, minutes=240, stamp=user.stamp)
    _record, key = add_key(storage, "bench", "recommend", rate=MAX_RATE)
    baskets = sample_baskets(load_transactions(csv), basket_count)
    yield Deployment(folder, settings, token, baskets, result.version, key)
