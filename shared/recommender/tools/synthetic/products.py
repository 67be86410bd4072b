"""The synthetic product range (kits in designs, accessories, codes, prices, descriptions) and its ground truth."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd

from recommender.tools.synthetic.spec import BASE_CODES, DEFAULT, SyntheticSpec, first_minute
from recommender.tools.synthetic.vocabulary import ACCESSORY_ODDS, COLOURS, KITS, MOTIFS, PATTERNS, SYNONYMS, cumulative


# ---------------------------------------------------------------------------------------------------------
# Product range: families (one kit in one design), accessories, codes, prices, descriptions.
# Internal product index: family members first, contiguous per family, then accessories.
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProductRange:
    """The generated products (index: family members first, contiguous per family, then accessories)."""

    code: np.ndarray  # object: stock code text
    desc: np.ndarray  # object: current description
    old_desc: np.ndarray  # object: description used before drift_at
    drift_at: np.ndarray  # int64 minute from which desc applies; INT64 min when it never changed
    price: np.ndarray  # float64 pounds
    kit: np.ndarray  # int16
    weight: np.ndarray  # float64 role weight of the item within its kit, lead item = 1
    family_start: np.ndarray
    family_size: np.ndarray
    family_accessory: np.ndarray  # product index of the family's accessory, or -1
    family_seasonal: np.ndarray
    family_cdf: np.ndarray
    favourite_cdf: np.ndarray  # flatter than family_cdf so customers do not all love the same families
    noise_cdf: np.ndarray
    companions: float  # expected complements per anchor, divided by complement_prob
    family_of: np.ndarray  # family of each product, -1 for accessories
    item: np.ndarray  # object: the kit item ("TEACUP") or accessory name, without the design


def _design_names(rng: np.random.Generator, count: int) -> list[str]:
    """Distinct design names, mostly colour + pattern, some with a motif."""
    nc, npat, nm = len(COLOURS) + 1, len(PATTERNS) + 1, len(MOTIFS) + 1
    space = nc * npat * nm
    idx = np.arange(space)
    c, p, m = idx // (npat * nm), (idx // nm) % npat, idx % nm
    words = (c > 0).astype(int) + (p > 0) + (m > 0)
    # Two-word designs read like the real product range; one- and three-word ones keep large ranges distinct.
    weight = np.select([words == 0, words == 1, (words == 2) & (m == 0), words == 2], [0.0, 0.3, 6.0, 1.0], 0.02)
    count = min(count, int((weight > 0).sum()))
    chosen = rng.choice(space, size=count, replace=False, p=weight / weight.sum())
    names = []
    for d in chosen:
        parts = [(("",) + COLOURS)[c[d]], (("",) + PATTERNS)[p[d]], (("",) + MOTIFS)[m[d]]]
        names.append(" ".join(w for w in parts if w))
    return names


def _drifted(desc: str, alternative: str, flip: bool) -> str:
    """An older wording of a description: a synonym swapped in, else the design and item named the other way round."""
    words = desc.split(" ")
    if not flip:
        for i, w in enumerate(words):
            if w in SYNONYMS:
                return " ".join(words[:i] + [SYNONYMS[w]] + words[i + 1 :])
    return alternative if alternative != desc else desc + " "


@lru_cache(maxsize=4)
def _product_range(seed: int, products: int, zipf: float, start_minute: int, span_minutes: int) -> ProductRange:
    rng = np.random.default_rng([seed, 11, products])
    kits = KITS
    n_kits = len(kits)
    # Families cycle through the kits in list order, so even a tiny range starts with a tea set.
    kit_seq: list[int] = []
    member_items: list[np.ndarray] = []
    accessory_of_family: list[int] = []  # index into accessories list, or -1
    accessories: list[tuple[int, int]] = []  # (kit, accessory item index)
    kit_families = np.zeros(n_kits, int)
    kit_accessories: list[list[int]] = [[] for _ in range(n_kits)]
    total = 0
    draws = rng.random((products + 1, 2))
    t = 0
    while total < products:
        k = t % n_kits
        _, items, accs, _ = kits[k]
        # Start a new accessory for every 40 families of the kit, while names last.
        if accs and kit_families[k] % 40 == 0 and len(kit_accessories[k]) < len(accs) and total + 3 <= products:
            kit_accessories[k].append(len(accessories))
            accessories.append((k, len(kit_accessories[k]) - 1))
            total += 1
        size = 2 + int(draws[t, 0] * (len(items) - 1))  # 2..len(items), lead item and its first complement always
        size = min(size, products - total)
        extra = rng.permutation(len(items) - 2)[: max(0, size - 2)] + 2
        member_items.append(np.sort(np.concatenate([np.arange(min(size, 2)), extra])))
        kit_seq.append(k)
        accessory_of_family.append(
            kit_accessories[k][int(draws[t, 1] * len(kit_accessories[k]))] if kit_accessories[k] else -1
        )
        kit_families[k] += 1
        total += size
        t += 1
    n_fam = len(kit_seq)
    fam_kit = np.array(kit_seq, np.int16)
    fam_size = np.array([len(m) for m in member_items], np.int64)
    fam_start = np.concatenate([[0], np.cumsum(fam_size)[:-1]]).astype(np.int64)
    n_members = int(fam_size.sum())
    n_acc = len(accessories)

    designs = {}
    for k in range(n_kits):
        designs[k] = iter(_design_names(rng, int(kit_families[k])))
    noun_first = rng.random(n_fam) < 0.15  # "HAND WARMER RED POLKA DOT" style, as some real families are named
    desc: list[str] = []
    other_order: list[str] = []
    nouns: list[str] = []
    kit_of = np.empty(n_members + n_acc, np.int16)
    item_of = np.empty(n_members + n_acc, np.int64)
    base_price = np.empty(n_members + n_acc)
    for f in range(n_fam):
        k = int(fam_kit[f])
        design = next(designs[k])
        items = kits[k][1]
        for i in member_items[f]:
            noun = items[i][0]
            nouns.append(noun)
            named = (f"{noun} {design}", f"{design} {noun}")
            desc.append(named[0] if noun_first[f] else named[1])
            other_order.append(named[1] if noun_first[f] else named[0])
        sl = slice(fam_start[f], fam_start[f] + fam_size[f])
        kit_of[sl] = k
        item_of[sl] = member_items[f]
        base_price[sl] = [items[i][1] for i in member_items[f]]
    for j, (k, a) in enumerate(accessories):
        name, pence = kits[k][2][a]
        desc.append(name)
        other_order.append(name)
        nouns.append(name)
        kit_of[n_members + j] = k
        item_of[n_members + j] = 100 + a  # accessories are their own item types for stock-code grouping
        base_price[n_members + j] = pence
    weight = np.where(item_of >= 100, 1.0, 1.0 / (1.0 + 0.35 * np.minimum(item_of, 99)))

    # Prices: the item's typical price, varied per design, ending like shop prices (1.25, 2.95, 0.85).
    pence = base_price * rng.lognormal(0.0, 0.2, len(base_price))
    pounds = np.floor(pence / 100)
    endings = np.array([25, 45, 55, 65, 69, 75, 85, 95])
    small = pounds < 1
    cents = np.where(small, np.clip(np.round(pence / 5) * 5, 10, 95), pounds * 100 + rng.choice(endings, len(pence)))
    price = cents.astype(np.int64) / 100

    codes = _stock_codes(rng, kit_of, item_of)

    fam_acc = np.array(accessory_of_family, np.int64)
    fam_acc = np.where(fam_acc >= 0, n_members + fam_acc, -1)
    fam_seasonal = np.array([kits[k][3] for k in fam_kit], bool)
    fam_rank = rng.permutation(n_fam)
    fam_weight = 1.0 / (1.0 + fam_rank) ** zipf
    # Noise lines: a few bestsellers that turn up in any basket, plus a long tail.
    n_products = n_members + n_acc
    noise_rank = rng.permutation(n_products)
    noise_weight = 1.0 / (1.0 + noise_rank) ** zipf

    # Per unit of complement_prob, how many companions an anchor brings (the anchor's own weight is about 1).
    member_family = np.repeat(np.arange(n_fam), fam_size)
    weight_sum = np.bincount(member_family, weights=weight[:n_members], minlength=n_fam)
    companions = float(np.average(weight_sum - 1.0 + ACCESSORY_ODDS * (fam_acc >= 0), weights=fam_weight))

    # A few popular products were renamed during the year; rows before the change carry the old wording.
    old_desc = np.array(desc, dtype=object)
    drift_at = np.full(n_products, np.iinfo(np.int64).min, np.int64)
    n_drift = max(1, round(0.01 * n_products))
    popular = np.argsort(noise_rank)[: max(n_drift, n_products // 20)]
    for p in rng.choice(popular, size=min(n_drift, len(popular)), replace=False):
        old_desc[p] = _drifted(desc[p], other_order[p], flip=bool(rng.random() < 0.5))
        drift_at[p] = start_minute + int(span_minutes * rng.uniform(0.3, 0.7))

    return ProductRange(
        code=codes,
        desc=np.array(desc, dtype=object),
        old_desc=old_desc,
        drift_at=drift_at,
        price=price,
        kit=kit_of,
        weight=weight,
        family_start=fam_start,
        family_size=fam_size,
        family_accessory=fam_acc,
        family_seasonal=fam_seasonal,
        family_cdf=cumulative(fam_weight),
        favourite_cdf=cumulative(fam_weight**0.6),
        noise_cdf=cumulative(noise_weight),
        companions=companions,
        family_of=np.concatenate([member_family, np.full(n_acc, -1)]),
        item=np.array(nouns, dtype=object),
    )


def _stock_codes(rng: np.random.Generator, kit_of: np.ndarray, item_of: np.ndarray) -> np.ndarray:
    """Five-digit codes; designs of the same item often share a base and differ by a letter (85123A, 85123B)."""
    n = len(kit_of)
    # Groups of one product get a plain code; larger groups share a base. Big ranges need bigger
    # groups, since only 90,000 five-digit bases exist.
    group_mean = 4.0 if n <= 250_000 else 12.0
    plain = float(np.clip((group_mean - n / 80_000) / (group_mean - 1), 0.0, 0.85))
    order = np.lexsort((rng.random(n), item_of, kit_of))  # same item type adjacent, designs shuffled
    kit_sorted = kit_of[order]
    sizes = np.where(rng.random(n) < plain, 1, rng.integers(2, 2 * int(group_mean) - 1, n))
    group = np.empty(n, np.int64)
    position = np.empty(n, np.int64)
    g, i = 0, 0
    boundaries = np.flatnonzero(np.diff(kit_sorted)) + 1
    kit_starts = np.concatenate([[0], boundaries, [n]])
    # Groups stay within a kit, so a letter suffix means "same or related item, another design".
    for a, b in zip(kit_starts[:-1], kit_starts[1:]):
        i = a
        while i < b:
            s = int(min(sizes[g], b - i, 26))
            group[i : i + s] = g
            position[i : i + s] = np.arange(s) if s > 1 else -1
            i += s
            g += 1
    bases = rng.choice(BASE_CODES, size=g, replace=False) + 10_000
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), dtype=object)
    codes = np.empty(n, dtype=object)
    base_txt = bases.astype(str).astype(object)[group]
    suffix = np.where(position >= 0, letters[np.maximum(position, 0)], "")
    codes[order] = base_txt + suffix
    return codes


# ---------------------------------------------------------------------------------------------------------
# Ground truth.
# ---------------------------------------------------------------------------------------------------------
def product_arrays(spec: SyntheticSpec) -> ProductRange:
    """The generated product range of spec as arrays (code, desc, price, kit, family_of, ...), built once per spec."""
    return _product_range(spec.seed, spec.products, spec.zipf, first_minute(spec), spec.days * 1440)


def product_range(spec: SyntheticSpec = DEFAULT) -> pd.DataFrame:
    """Every product: StockCode, current Description, UnitPrice, Family (-1 for accessories), Kit and Item."""
    products = product_arrays(spec)
    return pd.DataFrame(
        {
            "StockCode": products.code,
            "Description": products.desc,
            "UnitPrice": products.price,
            "Family": products.family_of,
            "Kit": np.array([k[0] for k in KITS], dtype=object)[products.kit],
            "Item": products.item,
        }
    )


def complements(spec: SyntheticSpec = DEFAULT) -> dict[str, frozenset[str]]:
    """For each product code, the codes generated as its complements: its family and the family's accessory."""
    products = product_arrays(spec)
    result: dict[str, set[str]] = {}
    for f in range(len(products.family_start)):
        members = products.code[products.family_start[f] : products.family_start[f] + products.family_size[f]].tolist()
        acc = int(products.family_accessory[f])
        for m in members:
            result[m] = set(members)
            result[m].discard(m)
        if acc >= 0:
            acc_code = products.code[acc]
            for m in members:
                result[m].add(acc_code)
            result.setdefault(acc_code, set()).update(members)
    for c in products.code:
        result.setdefault(c, set())
    return {k: frozenset(v) for k, v in result.items()}
