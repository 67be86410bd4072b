"""How well products the model never saw are recommended from the product feed (serving/new_items.py).

Online Retail (or any dated file). The model trains on every invoice before the last `days` days, as make evaluate
does; products first sold in those days are new, and a feed lists them with their description as title and their
price. Test invoices are leave-one-out cases as in tools/evaluation_protocol.py, over all their products (new ones
included). The cases involving a new product (the hidden item, or one of the basket's) are scored twice: today's
behaviour (the model alone: new codes ignored in the basket, never recommended) and with the feed's new products
placed; the cases with no new product are scored both ways too, so that a loss on them shows.

Synthetic launches (tools/synthetic/launches.py): a model trained on the generated history, a feed with the
launches; for each launch, the share of its complements by design in the top 10 of a basket holding it alone, and
whether it is in the top 10 for a basket holding its family's most popular member. A model is only retrained
after the launches' first week: this is what shoppers get during it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from recommender.core.storage import LocalStorage
from recommender.serving import new_items
from recommender.serving.merchandising import Options, Policy
from recommender.training import holdout
from recommender.training.ingest import Transactions, load_transactions
from recommender.training.pipeline import publish_model
from recommender.training.recipe import TrainingParams

K = 10


@dataclass
class Group:
    """HR@10 of one group of cases, today and with the feed's new products placed."""

    name: str
    cases: int
    hr_today: float
    hr_new: float


@dataclass
class NewItemsReport:
    """What the new-products section measured on a dated file."""

    new_products: int
    placed: int
    test_baskets_with_new: float  # share of test baskets holding a new product
    groups: list[Group]
    warm_hr: float  # HR@10 of the cases without a new product, today: the reference
    ratio: float  # HR@10 on cases involving new products (with them placed) / warm_hr

    def as_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def _mean(hits: np.ndarray) -> float:
    return float(hits.mean()) if len(hits) else 0.0


def _hits(model, queries: list[list[str]], hidden: list[str], options: Options | None) -> np.ndarray:
    out = np.zeros(len(hidden), dtype=bool)
    for c, (query, target) in enumerate(zip(queries, hidden)):
        answer = model.recommend(query, K, options)
        out[c] = any(s.item.stock_code == target for s in answer.items)
    return out


def _feed_of_new(tx: Transactions, new_codes: list[str]) -> dict[str, dict]:
    """Feed rows for the new products: the file's description as title, its most recent price."""
    row = {code: i for i, code in enumerate(tx.item_codes)}
    out = {}
    for code in new_codes:
        i = row[code]
        attributes: dict = {"title": tx.descriptions[i], "availability": "in_stock"}
        if tx.item_prices is not None and tx.item_prices[i] == tx.item_prices[i]:
            attributes["price"] = float(tx.item_prices[i])
        out[code] = attributes
    return out


def with_feed(plain, feed_items: dict[str, dict]):
    """The model as serving builds it for a feed: new products placed, the feed's policy applied."""
    base = new_items.placed(plain, feed_items)
    feed = {"items": feed_items}
    return base.with_policy(Policy(base.items, base.item_price, feed, None, "eval", None, placement=base.placement))


def on_file(
    tx: Transactions,
    train: Transactions,
    cutoff: np.datetime64,
    params: TrainingParams,
    seed: int = 0,
    progress: Callable[[str], None] = print,
    plain=None,
) -> NewItemsReport:
    """The new-products section of make evaluate: tx is the whole file, train its baskets before cutoff."""
    known = set(train.item_codes)
    dated = ~np.isnat(tx.basket_time)
    is_test = dated & (tx.basket_time >= cutoff)
    order = np.argsort(tx.pair_basket, kind="stable")
    items_by_basket = np.split(
        tx.pair_item[order], np.cumsum(np.bincount(tx.pair_basket, minlength=len(tx.basket_ids)))[:-1]
    )
    test = sorted(np.flatnonzero(is_test), key=lambda b: tx.basket_ids[b])
    baskets = [sorted({tx.item_codes[i] for i in items_by_basket[b]}) for b in test]
    new_codes = sorted({c for basket in baskets for c in basket} - known)
    everything = known | set(new_codes)
    drawn = holdout.leave_one_out(baskets, everything, seed)
    new_set = set(new_codes)
    involving = [new_set.intersection(baskets[p]) != set() for p, _, _ in drawn]
    hidden_new = [h in new_set for _, _, h in drawn]
    queries = [q for _, q, _ in drawn]
    hidden = [h for _, _, h in drawn]
    with tempfile.TemporaryDirectory(prefix="recommender-eval-new-") as tmp:
        if plain is None:
            from recommender.serving.model import load_model

            storage = LocalStorage(Path(tmp) / "store")
            manifest = publish_model(train, params, storage, source=None, progress=lambda _m: None)
            plain = load_model(storage, manifest["version"])
        served = with_feed(plain, _feed_of_new(tx, new_codes))
        placed = len(served.items) - len(plain.items)
        progress(
            f"new products: {len(new_codes):,} first sold in the test period, {placed:,} placed by their twins; "
            f"{_mean(np.asarray([bool(new_set.intersection(b)) for b in baskets])):.1%} of test baskets hold one"
        )
        groups = []
        involving, hidden_new = np.asarray(involving), np.asarray(hidden_new)
        selections = {
            "hidden item new": hidden_new,
            "hidden item known, basket holds a new one": involving & ~hidden_new,
            "involving a new product (all)": involving,
            "no new product (the rest)": ~involving,
        }
        today = _hits(plain, queries, hidden, None)
        placed_hits = _hits(served, queries, hidden, Options())
        for name, mask in selections.items():
            groups.append(Group(name, int(mask.sum()), _mean(today[mask]), _mean(placed_hits[mask])))
    warm = _mean(today[~involving])
    report = NewItemsReport(
        new_products=len(new_codes),
        placed=placed,
        test_baskets_with_new=_mean(np.asarray([bool(new_set.intersection(b)) for b in baskets])),
        groups=groups,
        warm_hr=warm,
        ratio=_mean(placed_hits[involving]) / warm if warm else 0.0,
    )
    for g in groups:
        progress(f"  {g.name}: {g.cases:,} cases, HR@10 today {g.hr_today:.4f}, with new products {g.hr_new:.4f}")
    return report


def table(report: NewItemsReport) -> str:
    """The section as a Markdown table."""
    lines = ["| test cases | cases | HR@10 today | HR@10 with new products |", "|---|---|---|---|"]
    lines += [f"| {g.name} | {g.cases:,} | {g.hr_today:.4f} | {g.hr_new:.4f} |" for g in report.groups]
    return "\n".join(lines)


@dataclass
class LaunchReport:
    """What the synthetic launches measured (tools/synthetic/launches.py)."""

    launches: int
    placed: int
    twin_in_family: float  # share of placed launches whose nearest twin is of their family (text and category)
    complements_found: float  # mean share of a launch's complements in the top 10 of a basket holding it alone
    shown_with_family: float  # share of launches in the top 10 of their family's most popular member's basket

    def as_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def on_launches(spec=None, count: int = 40, params: TrainingParams = TrainingParams()) -> LaunchReport:
    """Train on the generated history of spec (the default preset), upload a feed of every product and count
    launches, and measure what the launches get before any retraining (their first week)."""
    from recommender.serving.model import load_model
    from recommender.tools import synthetic
    from recommender.tools.synthetic.launches import feed_rows, launches

    spec = spec or synthetic.DEFAULT
    launched = launches(spec, count)
    arrays = synthetic.product_arrays(spec)
    with tempfile.TemporaryDirectory(prefix="recommender-eval-launches-") as tmp:
        data = Path(tmp) / "history.csv"
        synthetic.write_csv(spec, data)
        storage = LocalStorage(Path(tmp) / "store")
        manifest = publish_model(load_transactions(data), params, storage, source=None, progress=lambda _m: None)
        plain = load_model(storage, manifest["version"])
    served = with_feed(plain, feed_rows(spec, launched))
    index = served.items.index
    family_of = dict(zip(arrays.code.tolist(), arrays.family_of.tolist()))
    twin_ok, found, shown = [], [], []
    for launch in launched:
        if launch.code not in index:
            continue
        twin = served.items[int(served.placement.twins[index[launch.code] - served.first_new, 0])]
        twin_ok.append(family_of.get(twin.stock_code) == launch.family)
        known = [c for c in launch.complements if c in plain.items.index]
        if not known:
            continue
        top = {s.item.stock_code for s in served.recommend([launch.code], K, Options()).items}
        found.append(len(top & set(known)) / min(K, len(known)))
        lead = min(known, key=lambda c: plain.items.index[c])  # rows are numbered by popularity
        shown.append(launch.code in {s.item.stock_code for s in served.recommend([lead], K, Options()).items})
    return LaunchReport(
        launches=len(launched),
        placed=len(served.items) - len(plain.items),
        twin_in_family=float(np.mean(twin_ok)) if twin_ok else 0.0,
        complements_found=float(np.mean(found)) if found else 0.0,
        shown_with_family=float(np.mean(shown)) if shown else 0.0,
    )


def section(
    tx: Transactions,
    train: Transactions,
    cutoff: np.datetime64,
    params: TrainingParams,
    seed: int,
    folder: Path,
    progress: Callable[[str], None] = print,
    plain=None,
) -> str:
    """make evaluate's new-products section: both measures, written to folder (new_products.json and .md); returns
    the Markdown. plain: the model trained on train (else trained here)."""
    progress("new products: placing the test period's new products from a feed of their descriptions")
    on_data = on_file(tx, train, cutoff, params, seed, progress, plain)
    progress("new products: synthetic launches (default preset)")
    launched = on_launches(params=params)
    hidden_new = next(g for g in on_data.groups if g.name == "hidden item new")
    text = "\n".join(
        [
            f"New products: {on_data.new_products:,} products first sold in the test period, {on_data.placed:,} "
            f"placed; {on_data.test_baskets_with_new:.1%} of test baskets hold one.",
            "",
            table(on_data),
            "",
            f"HR@10 on cases involving a new product, with them placed: {on_data.ratio:.2f}x the warm cases' "
            f"({on_data.warm_hr:.4f}); with a new hidden item: {hidden_new.hr_new / on_data.warm_hr:.2f}x."
            if on_data.warm_hr
            else "",
            f"Synthetic launches: {launched.placed} of {launched.launches} placed; nearest twin of the launch's family "
            f"{launched.twin_in_family:.0%}; complements by design in the top 10 of a basket holding the launch "
            f"{launched.complements_found:.0%}; launch in the top 10 of its family's best seller "
            f"{launched.shown_with_family:.0%}.",
        ]
    )
    import json

    (folder / "new_products.json").write_text(
        json.dumps({"data": on_data.as_dict(), "launches": launched.as_dict()}, indent=1)
    )
    (folder / "new_products.md").write_text(text + "\n")
    return text
