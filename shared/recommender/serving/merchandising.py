"""Merchandising at answer time: the product feed and the rules compiled into arrays once per (model, feed, rules)
version, request options, always-full answers and a reason per pick (numpy only: no pandas, no scipy).

The work is split by responsibility: merch_request (what a request may ask, what an answer holds), merch_policy
(the feed and the rules compiled, one request's eligibility), merch_scores (a basket's candidates and scores),
merch_fill (the answer filled in one pass over the candidates), merch_reasons (explain). This module loads the feed
and rules versions, follows their pointers (Merchandiser) and answers; the names other modules use are importable
from here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Container
from datetime import UTC, datetime
from typing import Any

import numpy as np

from recommender.core import registry
from recommender.core.errors import RecommenderError
from recommender.core.feed_and_rules import FEED_FILE, RULES_FILE, feed_items, in_force, in_force_key
from recommender.core.storage import Storage
from recommender.serving import new_items
from recommender.serving.merch_fill import fill
from recommender.serving.merch_policy import Eligibility, Policy
from recommender.serving.merch_reasons import NO_REASONS, Because
from recommender.serving.merch_request import MODEL, NEW, PINNED, POPULAR, SOURCES, Options, Pick
from recommender.serving.merch_scores import DENSE_ITEMS, Scores

__all__ = [
    "DENSE_ITEMS",
    "MODEL",
    "NEW",
    "NO_REASONS",
    "PINNED",
    "POPULAR",
    "SOURCES",
    "Because",
    "Eligibility",
    "Merchandiser",
    "Options",
    "Pick",
    "Policy",
    "Scores",
    "answer",
    "load_feed",
    "load_rules",
]

log = logging.getLogger("recommender")


def answer(
    model: Any, basket: np.ndarray, n: int, options: Options | None, policy: Policy, learned: bool = True
) -> tuple[list[Pick], bool, list[str]]:
    """The picks for a basket of known rows (possibly empty, sorted), best first, whether fewer than n were
    eligible, and warnings about the request (merch_fill.fill). Up to DENSE_ITEMS items, a request's scores and
    eligibility are arrays over every item; beyond, kept for the rows the basket reaches (same answers)."""
    return fill(model, basket, n, options, policy, learned, len(policy.eligible) <= DENSE_ITEMS)


def load_feed(storage: Storage, version: str, known: Container[str] | None = None) -> dict:
    """A feed version's stored items, checked against its manifest: only those of codes in known, when given
    ({"items": {...}, "dropped": how many others it lists})."""
    data = registry.read_verified(storage, version, FEED_FILE, registry.FEED)
    try:
        items, dropped = feed_items(data, known)
    except (ValueError, KeyError, TypeError) as err:
        raise registry.FEED.error(f"feed version {version} cannot be read: {err}") from None
    return {"items": items, "dropped": dropped}


def load_rules(storage: Storage, version: str) -> dict:
    """A rules version's stored rules, checked against its manifest."""
    return _load(storage, version, RULES_FILE, registry.RULES)


def _load(storage: Storage, version: str, name: str, kind: registry.Kind) -> dict:
    data = registry.read_verified(storage, version, name, kind)
    try:
        return json.loads(data)
    except ValueError as err:
        raise kind.error(f"{kind.noun} version {version} cannot be read: {err}") from None


class Merchandiser:
    """Follows the feed and rules pointers for a ModelHolder: loads a version once when its pointer moves, and
    gives the view of the model to serve. A feed or rules version that cannot be loaded is reported and the one
    loaded before stays in force (none at first): serving never stops for it."""

    def __init__(self, storage: Storage, currency: str | None = None) -> None:
        self.storage = storage
        self.currency = currency or None
        self.loaded: dict[str, tuple[str | None, dict | None]] = {"feed": (None, None), "rules": (None, None)}
        self.errors: dict[str, str | None] = {"feed": None, "rules": None}
        self._feed_model: str | None = None  # the model whose items the loaded feed was kept for
        self._in_force: tuple = ()  # which timed rules the view serving was built with
        self.clock = lambda: datetime.now(UTC)
        self._placed: tuple[tuple | None, Any] = (None, None)  # (model, feed) versions -> model with new products

    def _follow(self, kind: registry.Kind, load: Any, again: bool = False) -> tuple[str | None, dict | None]:
        pointer = registry.active(self.storage, kind)
        version = pointer.version if pointer else None
        if version != self.loaded[kind.prefix][0] or (again and version):
            try:
                self.loaded[kind.prefix] = (version, load(self.storage, version) if version else None)
                self.errors[kind.prefix] = None
                log.info("serving %s version %s", kind.noun, version)
            except RecommenderError as err:
                if err.message != self.errors[kind.prefix]:
                    log.warning("%s; keeping %s version %s", err.message, kind.noun, self.loaded[kind.prefix][0])
                self.errors[kind.prefix] = err.message
        return self.loaded[kind.prefix]

    def _load_feed(self, plain: Any) -> Any:
        def load(storage: Storage, version: str) -> dict:
            # Every item is read: the ones the model does not know are new products, placed by their twins
            # (new_items.placed), and those it cannot place are dropped: a feed listing a million codes the
            # model never recommends costs this process nothing once placed.
            feed = load_feed(storage, version)
            self._feed_model = plain.version
            return feed

        return load

    def _with_new_items(self, plain: Any, feed_version: str | None, feed: dict | None) -> Any:
        """plain with the feed's new products placed (remembered per model and feed version), or plain."""
        key = (plain.version, feed_version)
        if self._placed[0] != key:
            base = plain
            if feed is not None:
                before = len(feed["items"])
                base = new_items.placed(plain, feed["items"])
                dropped = before - len(feed["items"])
                if dropped:
                    log.info(
                        "feed version %s: %d item(s) unknown to model %s not kept (%d kept)",
                        feed_version,
                        dropped,
                        plain.version,
                        len(feed["items"]),
                    )
            self._placed = (key, base)
        return self._placed[1]

    def view(self, plain: Any, current: Any) -> Any:
        """The model to serve: current when nothing changed, else plain under the active feed and rules (built
        here, by whoever refreshes: the watcher thread of a long-running server, before it switches the model)."""
        feed_version, feed = self._follow(
            registry.FEED, self._load_feed(plain), again=self._feed_model not in (None, plain.version)
        )
        rules_version, rules = self._follow(registry.RULES, load_rules)
        # Rules with a start or end: only those in force now, looked at with every refresh (MODEL_POLL_SECONDS).
        in_force_now = in_force_key(rules, self.clock()) if rules else ()
        if in_force_now:  # some entries are timed
            rules = in_force(rules, self.clock())
        if (
            current is not None
            and current.version == plain.version
            and current.feed_version == feed_version
            and current.rules_version == rules_version
            and self._in_force == in_force_now
        ):
            return current
        self._in_force = in_force_now
        if feed is None and rules is None:
            return plain
        base = self._with_new_items(plain, feed_version, feed)
        return base.with_policy(
            Policy(base.items, base.item_price, feed, rules, feed_version, rules_version, self.currency, base.placement)
        )

    def draft(self, plain: Any, rules: dict | None, label: str) -> Any:
        """plain under the feed in force and the given rules (the console's preview: nothing is stored)."""
        feed_version, feed = self.loaded["feed"]
        base = self._with_new_items(plain, feed_version, feed)
        return base.with_policy(
            Policy(base.items, base.item_price, feed, rules, feed_version, label, self.currency, base.placement)
            if feed or rules
            else None
        )

    def rules_in_force(self) -> tuple[str | None, dict | None]:
        """The rules version loaded and its rules (every entry, whatever its window)."""
        return self.loaded["rules"]
