"""A trained model in memory, and answering "what goes with this basket" (numpy and Annoy only: no pandas, no scipy)."""

from __future__ import annotations

import copy
import logging
import threading
import time
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from operator import attrgetter
from pathlib import Path
from typing import NamedTuple

import numpy as np
from annoy import AnnoyIndex

from recommender.core import registry
from recommender.core.errors import ModelUnavailable, RecommenderError
from recommender.core.items import ITEMS_FILE, Item, Items
from recommender.core.resemblance import RESEMBLANCE_FILE, TextIndex
from recommender.core.storage import Storage
from recommender.serving import merchandising, new_items, strongest
from recommender.serving.confidence import Confidence
from recommender.serving.csr import spans
from recommender.serving.merch_fill import top_positions
from recommender.serving.merchandising import Options, Policy
from recommender.serving.reranker import RERANK_FILE, Reranked, Reranker, squash

log = logging.getLogger("recommender")
_source_of = attrgetter("source")  # a Pick's source


class Scored(NamedTuple):
    """One recommended item (a tuple of plain values, like Item, so cached answers cost the GC nothing)."""

    item: Item
    score: float


@dataclass(frozen=True)
class Recommendation:
    """The answer for one basket."""

    items: Sequence[Scored] | Sequence[merchandising.Pick]  # Picks when the feed, the rules or options had a say
    unknown: list[str]  # basket codes the model does not know (ignored)
    # True when popularity answered: nothing in the basket is known, or nothing learned goes with it.
    fallback: bool
    model_version: str
    exhausted: bool = False  # fewer than n items were eligible
    feed_version: str | None = None
    rules_version: str | None = None
    warnings: Sequence[str] = ()  # what the answer says of the request (unknown categories, pins over a cap)


def _answers_of(model: Model, size: int) -> Callable | None:
    """The model's answer cache (None for none). It reaches the model through a weak reference: a model must hold
    no reference cycle, so that a replaced one is freed as soon as its last request ends, not at the next full
    garbage collection (a server swapping models every few minutes would otherwise grow by a model each time)."""
    if not size:
        return None
    ref = weakref.ref(model)
    return lru_cache(maxsize=size)(lambda basket, n: ref()._answer(basket, n))


class Model:
    """One loaded, verified model version.

    Answering a basket: the candidates are the nearest items of each basket item in the Annoy index (SVD
    embeddings); each candidate's score is the sum of the item-item table's weights from the basket's items.
    """

    # Whether answers use what the model learned (False: the popularity order only, serving.arms.PopularBaseline).
    learned = True

    def __init__(
        self,
        version: str,
        manifest: dict,
        items: Items,
        index: AnnoyIndex,
        table_indptr: np.ndarray,
        table_target: np.ndarray,
        table_weight: np.ndarray,
        answer_cache: int = 0,
        calibration: bytes | None = None,
        table_count: np.ndarray | None = None,
        item_price: np.ndarray | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        self.version = version
        self.manifest = manifest
        self.items = items
        self.index = index
        self.table_indptr = table_indptr
        self.table_target = table_target
        self.table_weight = table_weight
        self.table_count = table_count  # training baskets holding both items of each entry (reasons)
        self.item_price = item_price  # most recent unit price in the training file (the feed's default)
        # Rows from first_new on are products the model never saw, placed from the feed (serving/new_items.py).
        self.first_new = len(items)
        self.placement = None
        self.resemblance: Callable[[], TextIndex] | None = None  # the items' description vectors, read when needed
        # The learned re-ranker of the best candidates (None: the first stage's order is the answer's).
        self.reranker = reranker if reranker is not None and reranker.trees is not None else None
        self.rerank_tables = reranker  # its tables, with or without trees (training computes features with them)
        # The feed and rules this view of the model answers with (with_policy); the plain model has none.
        self.policy: Policy | None = None
        self._plain_policy: Policy | None = None
        query = manifest["model"]["query"]
        self.per_item = int(query["candidates_per_item"])
        self.search_k = int(query["search_k_per_item"])
        # Annoy's answer for an item never changes within a version: each is asked once, then remembered
        # (row i of _near; _asked[i] says whether it is filled).
        self._near = np.zeros((len(items), self.per_item + 1), dtype=np.int64)
        self._asked = np.zeros(len(items), dtype=bool)
        self._warm = False
        # Identical baskets (a product page's "goes well with", a common pair) get the same answer from a version:
        # the last answer_cache distinct ones are kept, and a new version starts with an empty cache.
        self._answers = _answers_of(self, answer_cache)
        baskets = manifest["model"].get("baskets") or manifest.get("counts", {}).get("baskets") or 1
        top = items.popularity[items.most_popular()[0]] if len(items) else 0
        self._confidence = Confidence.from_json(calibration, popular_share_per_score=max(top, 1) / baskets)

    @property
    def feed_version(self) -> str | None:
        """The feed version this view answers with."""
        return self.policy.feed_version if self.policy else None

    @property
    def rules_version(self) -> str | None:
        """The rules version this view answers with."""
        return self.policy.rules_version if self.policy else None

    def first_stage(self) -> Model:
        """The same model answering by its first stage alone (the re-ranker off): what `make evaluate` compares."""
        view = self.with_policy(self.policy)
        view.reranker = None
        return view

    def final_scores(
        self, basket: np.ndarray, candidates: np.ndarray, first: np.ndarray, positions: np.ndarray
    ) -> tuple[np.ndarray, object]:
        """The answer's scores of candidates (ascending rows, first their first-stage scores): the re-ranker's for
        its best ones, the others below them in first-stage order; and the re-ranking (None without a re-ranker)."""
        if self.reranker is None:
            return first, None
        if not self._trees_rank_all():  # the trees know only the known items: new_items places the others
            return new_items.final_scores(self, basket, candidates, first, positions)
        reranked = self.reranker.rerank(self, basket, candidates, first, positions)
        return _merged(first, reranked), reranked

    def with_policy(self, policy: Policy | None) -> Model:
        """The same model (sharing every array and Annoy's remembered answers) answering under a feed and rules."""
        view = copy.copy(self)
        view.policy = policy
        # Answers depend on the policy: a view starts with its own empty answer cache.
        cache = getattr(self._answers, "cache_info", None)
        view._answers = _answers_of(view, cache().maxsize if cache else 0)
        return view

    def recommend(self, basket: Sequence[str], n: int, options: Options | None = None) -> Recommendation:
        """The n best items to offer with basket, best first, none from the basket; the feed, the rules and the
        options (if any) applied."""
        # The rows of the codes (stripped), each once: codes and rows correspond one to one, so a set of the rows
        # found is the distinct known items, whatever the repeats; a big basket's hundreds of codes cost one pass.
        get = self.items.index.get
        found = set(map(get, map(str.strip, basket)))
        unknown = []
        if None in found:  # the unknown codes, each once in the order given (a dict keeps the first)
            found.discard(None)
            unknown = [code for code in dict.fromkeys(map(str.strip, basket)) if get(code) is None]
        known = found
        n = max(0, min(n, len(self.items) - len(known)))
        policy = self.policy
        if options is not None or (policy is not None and policy.restricts):
            if policy is None:
                policy = self._plain_policy = self._plain_policy or Policy(self.items, self.item_price, None, None)
            picks, exhausted, warnings = merchandising.answer(
                self, np.asarray(sorted(known), dtype=np.int64), n, options, policy, self.learned
            )
            sources = list(map(_source_of, picks))
            fallback = bool(picks) and merchandising.MODEL not in sources and merchandising.NEW not in sources
            return Recommendation(
                picks,
                unknown,
                not known or fallback,
                self.version,
                exhausted,
                policy.feed_version,
                policy.rules_version,
                warnings,
            )
        if not known:
            return Recommendation(self._popular(n, ()), unknown, True, self.version)
        items, fallback = (self._answers or self._answer)(tuple(sorted(known)), n)
        return Recommendation(items, unknown, fallback, self.version)

    @property
    def calibrated(self) -> bool:
        """Whether confidence comes from a fitted calibration.json (else the documented fallback)."""
        return self._confidence.calibrated

    def confidence(
        self, scores: np.ndarray, ranks: np.ndarray, popular: bool = False, first_stage: bool = False
    ) -> np.ndarray:
        """Calibrated probability, in [0, 1], that a shopper holding the basket also buys each answered item, from
        its score and its rank in the answer (1 = first); popular=True for popular (fallback) items, first_stage=True
        for an answer the re-ranker left in the first stage's order (first_stage_orders). From the version's
        calibration.json, or the fallback of serving/confidence.py for models without one."""
        return self._confidence(scores, ranks, popular, first_stage)

    def first_stage_orders(self, basket: np.ndarray) -> bool:
        """Whether the answer to a basket (rows) keeps the first stage's order: the model has a re-ranker and the
        basket more known items than it re-ranks (its max_basket)."""
        rr = self.reranker
        return rr is not None and rr.leaves_order(int(np.count_nonzero(basket < self.first_new)))

    def _answer(self, basket: tuple[int, ...], n: int) -> tuple[tuple[Scored, ...], bool]:
        """The answer for a basket of known rows, and whether it is the popular fallback."""
        rows, scores = self._rank(np.fromiter(basket, dtype=np.int64, count=len(basket)), n)
        if n and (not len(scores) or scores[0] <= 0):
            # Nothing learned goes with these items (every score is a sum of learned weights, and none is
            # positive): the most popular items rather than index neighbours in an arbitrary order.
            return self._popular(n, set(basket)), True
        # A tuple of tuples of plain values: the garbage collector stops tracking it, however many are cached.
        return tuple(Scored(self.items[i], s) for i, s in zip(rows.tolist(), np.round(scores, 4).tolist())), False

    def _popular(self, n: int, basket: Collection[int]) -> tuple[Scored, ...]:
        """The n most popular items not in basket, scored by their popularity relative to the best seller's."""
        order = self.items.most_popular()
        best = max(self.items.popularity[order[0]], 1) if order else 1
        rows = list(islice((i for i in order if i not in basket), n))
        return tuple(Scored(self.items[i], round(self.items.popularity[i] / best, 4)) for i in rows)

    def warm(self) -> None:
        """Ask Annoy for every item now, so that no request waits for it (a long-running server's choice)."""
        self.near(np.arange(len(self.items), dtype=np.int64))
        # and every table row in weight order, before a big basket needs its rows' strongest entries
        strongest.weight_order(self).prepare(np.arange(len(self.items), dtype=np.int64))
        self.items.search_index()  # and build the items' search index before the first GET /items
        self._warm = True

    def near(self, items: np.ndarray) -> np.ndarray:
        """Each item's nearest items in the Annoy index (itself included), one row per item."""
        if self._warm:
            return self._near[items]
        for i in items[~self._asked[items]]:
            self._remember(int(i), self.index.get_nns_by_item(int(i), self.per_item + 1, self.search_k))
        return self._near[items]

    def prime(self, near: Mapping[int, Sequence[int]]) -> None:
        """Take Annoy's answers for some items from whoever already asked (the training that built the index)."""
        for i, found in near.items():
            self._remember(i, found)

    def _remember(self, i: int, found: Sequence[int]) -> None:
        row = self._near[i]
        row[:] = i  # a short answer (few items) is padded with the item itself, dropped later
        row[: len(found)] = found
        self._asked[i] = True

    def score_basket(self, basket: np.ndarray, bounded: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The candidates for a basket (rows, ascending), every item's score (the sum of the table weights from
        the basket's items), and the table entries read (positions in table_target/weight/count): a big basket's
        items' strongest (entries), or with bounded=False every entry (the re-ranker's training reads them all)."""
        found = self.near(basket).ravel()
        positions, targets, weights = self._read(basket, bounded)
        # the sums in entry order, as ever (bit for bit the same scores; a bounded read holds a target once per row)
        scores = np.bincount(targets, weights=weights, minlength=len(self.items))
        if self.first_new < len(self.items):
            # New products are in no Annoy neighbourhood: they are candidates where their twins' entries reach,
            # and in a basket (numbered last: the basket's last rows), their candidates are their own entries.
            found = [found, self.first_new + np.flatnonzero(scores[self.first_new :] > 0)]
            if len(basket) and basket.max() >= self.first_new:
                sources = strongest.sources(self.table_indptr, basket, positions)
                found.append(self.table_target[positions[sources >= self.first_new]])
            found = np.concatenate(found)
        # A mask over every item is cheaper than sorting unless the items dwarf the neighbourhoods.
        if len(self.items) > 65536 and len(found) * 16 < len(self.items):
            candidates = np.unique(found)
            in_basket = np.zeros(len(self.items), dtype=bool)
            in_basket[basket] = True
            candidates = candidates[~in_basket[candidates]]
        else:
            mark = np.zeros(len(self.items), dtype=bool)
            mark[found] = True
            mark[basket] = False
            candidates = np.flatnonzero(mark)
        return candidates, scores, positions

    def entries(self, basket: np.ndarray, bounded: bool = True) -> np.ndarray:
        """The table entries a basket's first stage sums (positions in table_target/weight/count, basket rows in
        order): every entry of its rows, or when they hold more than strongest.BUDGET (and bounded), each row's
        strongest."""
        return self._read(basket, bounded, values=False)[0]

    def _read(self, basket: np.ndarray, bounded: bool, values: bool = True) -> tuple:
        """The entries of entries(), and (with values) their targets and weights."""
        starts, stops = self.table_indptr[basket], self.table_indptr[basket + 1]
        lengths = stops - starts
        total = int(lengths.sum())
        if bounded and total > strongest.BUDGET:
            return strongest.weight_order(self).read(basket, lengths, strongest.BUDGET)
        positions = spans(starts, lengths, total)
        if not values:
            return positions, None, None
        # take, not [] (no index conversion)
        return positions, self.table_target.take(positions), self.table_weight.take(positions)

    def _trees_rank_all(self) -> bool:
        """Whether the trees re-rank every candidate (new products in the model: serving.new_items places those)."""
        return self.reranker is not None and self.first_new == len(self.items)

    def _rank(self, basket: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        candidates, scores, positions = self.score_basket(basket)
        if self._trees_rank_all():
            reranked = self.reranker.rerank(self, basket, candidates, scores[candidates], positions)
            if len(reranked.scores) >= n:
                # Every re-ranked item scores above every other (final_scores): the n best are the re-ranked ones'
                # n best, ties in row order as in the full sort below, without scoring the thousands of others.
                top = np.argsort(-reranked.scores, kind="stable")[:n]
                return reranked.rows.take(top), reranked.scores.take(top)
            scores = _merged(scores[candidates], reranked)
        else:
            scores, _reranked = self.final_scores(basket, candidates, scores[candidates], positions)
        # Rows are numbered by popularity (training does it) and candidates come out in row order, so a stable
        # sort on the score alone breaks ties by popularity, then by row: stable answers at the cost of one sort
        # (of the n best only, when the candidates are many: a big basket's are thousands).
        order = top_positions(scores, n)
        rows, scores = candidates[order], scores[order]
        if len(rows) < n:
            # Fewer candidates than asked for: fill up with the most popular items not yet listed, scored no
            # higher than the last candidate so the answer stays sorted.
            taken = set(basket.tolist()) | set(rows.tolist())
            extra = [i for i in self.items.most_popular() if i not in taken][: n - len(rows)]
            floor = min(0.0, float(scores[-1])) if len(scores) else 0.0
            rows = np.concatenate([rows, np.asarray(extra, dtype=np.int64)])
            scores = np.concatenate([scores, np.full(len(extra), floor)])
        return rows, scores


def _merged(first: np.ndarray, reranked: Reranked) -> np.ndarray:
    """The final scores of all candidates: the re-ranked ones' (above 0.5), the others' first-stage scores squashed
    below them."""
    final = squash(first)
    final[reranked.at] = reranked.scores
    return final


def load_model(storage: Storage, version: str, answer_cache: int = 0) -> Model:
    """Load one version, verifying every artifact against its manifest checksum; ModelUnavailable if it is damaged."""
    manifest = registry.verify(storage, version)
    # verify() has just made local copies of every artifact (downloads, on S3): read those, not the storage again.
    return open_model(
        lambda name: storage.local_copy(registry.artifact_key(version, name)), version, manifest, answer_cache
    )


def open_model(path: Callable[[str], Path], version: str, manifest: dict, answer_cache: int = 0) -> Model:
    """A model from its artifact files (path(name) gives each one's local path) and its manifest."""
    try:
        items = Items.from_json(Path(path(ITEMS_FILE)).read_bytes())
        index = AnnoyIndex(int(manifest["model"]["factors"]), manifest["model"]["metric"])
        index.load(str(path("index.ann")))  # memory-mapped by Annoy
        table = [np.load(path(f"table_{part}.npy")) for part in ("indptr", "target", "weight")]
        calibration = (
            Path(path("calibration.json")).read_bytes() if "calibration.json" in manifest.get("artifacts", {}) else None
        )
        # Versions trained before reasons and default prices existed lack these two (a model being built has
        # no artifact list yet: its folder says).
        count, price, rerank = (
            np.load(path(name))
            if name in manifest.get("artifacts", ()) or ("artifacts" not in manifest and Path(path(name)).exists())
            else None
            for name in ("table_count.npy", "item_price.npy", RERANK_FILE)
        )
        reranker = None
        if rerank is not None:
            with rerank:  # an NpzFile: every array read now, the file closed
                spec = manifest["model"].get("rerank")
                reranker = Reranker(dict(rerank), items.popularity, spec, table=(table[0], table[1]))
    except (OSError, ValueError, KeyError) as err:
        raise ModelUnavailable(f"model version {version} cannot be loaded: {err}") from None
    model = Model(
        version,
        manifest,
        items,
        index,
        *table,
        answer_cache=answer_cache,
        calibration=calibration,
        table_count=count,
        item_price=price,
        reranker=reranker,
    )
    # Its arrays are made only when a feed lists products the model never saw; versions trained before it have
    # them built from the items' descriptions then.
    stored = None
    if RESEMBLANCE_FILE in manifest.get("artifacts", ()) or (
        "artifacts" not in manifest and Path(path(RESEMBLANCE_FILE)).exists()
    ):
        try:
            stored = Path(path(RESEMBLANCE_FILE)).read_bytes()
        except OSError as err:
            raise ModelUnavailable(f"model version {version} cannot be loaded: {err}") from None
    model.resemblance = lambda: TextIndex.from_bytes(stored) if stored else TextIndex.build(items.descriptions)
    return model


class ModelHolder:
    """The model a process serves: loaded once, then swapped for a new active version when the pointer moves.

    The pointer is looked at no more than every poll_seconds, on the request path (Lambda) or by a background
    watcher (the local server); a new version is loaded, verified and, with warm, primed in full before one
    reference is switched, so requests in flight keep the model they started with and none waits for the swap.
    The feed and rules pointers are looked at at the same time: the model served is a view of the plain model
    under the active feed and rules (merchandising.Merchandiser), swapped as one snapshot by the same single reference.
    """

    def __init__(
        self,
        storage: Storage,
        poll_seconds: float,
        answer_cache: int = 0,
        warm: bool = False,
        clock: Callable[[], float] = time.monotonic,
        currency: str = "",
    ) -> None:
        self.storage = storage
        self.poll_seconds = poll_seconds
        self.answer_cache = answer_cache
        self.warm = warm
        self.clock = clock
        self.model: Model | None = None
        self._plain: Model | None = None
        self._merchandiser = merchandising.Merchandiser(storage, currency)
        self.error: str | None = None
        self._checked_at = float("-inf")
        self._lock = threading.Lock()
        self._watching = False

    def due(self) -> bool:
        """Whether a request should look at the pointer (never while a watcher does it)."""
        return not self._watching and self.clock() - self._checked_at >= self.poll_seconds

    def refresh(self) -> Model | None:
        """Look at the active pointer and load the version it names if it is not the one in memory."""
        if not self._lock.acquire(blocking=self.model is None):
            return self.model  # another thread is refreshing; keep serving what we have
        try:
            self._checked_at = self.clock()
            try:
                version = registry.active_version(self.storage)
                if self._plain is None or self._plain.version != version:
                    model = load_model(self.storage, version, self.answer_cache)
                    if self.warm:
                        model.warm()
                    self._plain = model
                    log.info("serving model %s (%d items)", version, len(model.items))
                    self.storage.drop_local_copies(keep_prefix=registry.artifact_key(version, ""))
                self.model = self._merchandiser.view(self._plain, self.model)
                self.error = None
            except RecommenderError as err:
                # Keep serving the model in memory when a newer one is broken; report why otherwise.
                if err.message != self.error:
                    log.warning("%s", err.message)
                self.error = err.message
            self.follow()
            return self.model
        finally:
            self._lock.release()

    def follow(self) -> None:
        """What else a refresh looks at, with the model in place (serving.arms: the running experiment)."""

    def watch(self, stop: threading.Event, max_backoff: float = 60.0) -> threading.Thread:
        """Refresh every poll_seconds in a daemon thread until stop is set; requests then never refresh.

        A poll that fails unexpectedly (the process out of file descriptors: EMFILE) is logged once, not at every
        poll; the next polls come later and later (doubling up to max_backoff seconds) until one works again,
        which is logged too. The model in memory is served all along."""

        def loop() -> None:
            delay, failing = self.poll_seconds, None
            while not stop.wait(delay):
                try:
                    self.refresh()
                except Exception as err:  # noqa: BLE001 - the watcher must outlive any one bad poll
                    message = f"looking for a new model failed: {err}"
                    delay = min(max(delay * 2, 1.0), max_backoff)
                    if message != failing:  # the traceback once, not at every poll
                        log.error("%s; next try in %g s, then less often while it fails", message, delay, exc_info=True)
                    failing = self.error = message
                    continue
                if failing is not None:
                    log.info("looking for a new model works again")
                    failing, delay = None, self.poll_seconds

        self._watching = True
        thread = threading.Thread(target=loop, name="model-watcher", daemon=True)
        thread.start()
        return thread

    def draft(self, rules: dict | None, label: str = "draft") -> Model:
        """The served model under the active feed and the given rules instead of the active ones (a preview)."""
        plain = self._plain
        if plain is None:
            raise ModelUnavailable(self.error or "no model loaded")
        return self._merchandiser.draft(plain, rules, label)

    def active_rules(self) -> tuple[str | None, dict | None]:
        """The active rules version and its rules as stored (timed entries included, in force or not)."""
        return self._merchandiser.rules_in_force()

    def current(self) -> Model:
        """The model to answer with; ModelUnavailable (with the reason) when there is none."""
        model = self.model
        if model is None:
            raise ModelUnavailable(self.error or "no model loaded")
        return model
