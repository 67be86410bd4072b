"""Deterministic synthetic purchase history in the "Online Retail" CSV format, with known complementary products."""

from __future__ import annotations

import gzip
import io
import os
from dataclasses import dataclass, replace
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from recommender.core.errors import InvalidInput

COLUMNS: tuple[str, ...] = (
    "InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID", "Country",
)

# Invoices per block: rows are made and written a block at a time, so memory stays bounded at any size.
# Each block draws from its own seeded stream, so a frame equals the file it would be written to.
_BLOCK = 20_000
_FIRST_INVOICE = 536_365  # where the real data set starts numbering
_FIRST_CUSTOMER = 12_346
_CUSTOMER_IDS = 99_999 - _FIRST_CUSTOMER + 1  # CustomerID stays five digits
_BASE_CODES = 90_000  # five-digit stock-code bases 10000..99999
_MAX_PRODUCTS = 500_000
_MAX_INVOICES = 10_000_000  # the invoice plan is held in memory, about 100 bytes per invoice


# ---------------------------------------------------------------------------------------------------------
# Word lists. A kit is a set of products that are bought together when they share a design
# ("RED SPOTTY TEACUP" + "RED SPOTTY SAUCER"); its accessories are design-less products bought with any
# design of the kit (batteries with fairy lights). Items are listed lead first: the earlier an item, the
# more often it is the anchor of a basket and the more often it is added as a complement.
# Each item is (noun, typical price in pence); nouns are unique across kits so descriptions are unique.
# ---------------------------------------------------------------------------------------------------------
_KITS: tuple[tuple[str, tuple[tuple[str, int], ...], tuple[tuple[str, int], ...], bool], ...] = (
    ("TEA SET", (("TEACUP", 125), ("SAUCER", 85), ("TEAPOT", 495), ("MILK JUG", 295), ("SUGAR BOWL", 250),
                 ("TEA COSY", 375), ("SIDE PLATE", 165)), (), False),
    ("FAIRY LIGHTS", (("FAIRY LIGHTS", 425), ("LANTERN", 375), ("T-LIGHT HOLDER", 255), ("LIGHT GARLAND", 495),
                      ("STRING LIGHTS", 595)),
     (("PACK OF 4 AA BATTERIES", 165), ("PACK OF 12 AA BATTERIES", 395), ("PACK OF 6 AAA BATTERIES", 225),
      ("LED TEA LIGHTS SET OF 6", 295), ("FAIRY LIGHTS TIMER PLUG", 450)), False),
    ("GIFT WRAP", (("GIFT WRAP", 42), ("GIFT TAGS", 85), ("RIBBON REEL", 165), ("GIFT BAG", 125),
                   ("GIFT BOX", 195), ("TISSUE PAPER", 65)),
     (("CLEAR STICKY TAPE", 55), ("GIFT WRAP SCISSORS", 165), ("DOUBLE SIDED TAPE", 75)), False),
    ("BAKING", (("CAKE STAND", 995), ("CAKE CASES", 55), ("CAKE TIN", 425), ("BAKING SET", 495),
                ("CUPCAKE PICKS", 85), ("ICING BAG", 145)),
     (("BAKING PAPER ROLL", 125), ("SET OF 3 MEASURING SPOONS", 165)), False),
    ("LUNCH", (("LUNCH BAG", 165), ("LUNCH BOX", 195), ("WATER BOTTLE", 255), ("SNACK POTS", 145),
               ("SANDWICH WRAP", 85)), (("ICE PACK", 125),), False),
    ("PARTY", (("PAPER PLATES", 85), ("PAPER CUPS", 65), ("PAPER NAPKINS", 85), ("PAPER BUNTING", 295),
               ("PARTY BAGS", 125), ("PARTY HATS", 125), ("PAPER STRAWS", 55)),
     (("PARTY BALLOONS ASSORTED", 65), ("BIRTHDAY CANDLES PACK OF 24", 42)), False),
    ("CHRISTMAS", (("CHRISTMAS BAUBLE", 125), ("TREE TOPPER", 295), ("ADVENT CALENDAR", 495),
                   ("CHRISTMAS CRACKERS", 395), ("CHRISTMAS STOCKING", 250), ("HANGING DECORATION", 85)),
     (("BAUBLE HOOKS PACK OF 50", 42), ("CHRISTMAS TREE STAND", 795)), True),
    ("CANDLES", (("SCENTED CANDLE", 295), ("CANDLE HOLDER", 195), ("CANDLE PLATE", 165), ("PILLAR CANDLE", 250),
                 ("CANDLE TIN", 125)), (("BOX OF MATCHES", 39), ("CANDLE SNUFFER", 250)), False),
    ("KITCHEN LINEN", (("APRON", 495), ("OVEN GLOVE", 295), ("TEA TOWEL", 165), ("POT HOLDER", 145),
                       ("CHILDRENS APRON", 295)), (), False),
    ("STATIONERY", (("NOTEBOOK", 165), ("PENCIL CASE", 195), ("PENCILS", 65), ("ERASER", 42), ("RULER", 55),
                    ("PENCIL SHARPENER", 42)), (("PACK OF 12 HB PENCILS", 85),), False),
    ("PANTRY", (("STORAGE JAR", 295), ("BISCUIT TIN", 375), ("TEA, COFFEE, SUGAR TINS", 695), ("BREAD BIN", 1275),
                ("SPICE TINS", 425)), (), False),
    ("GARDEN", (("WATERING CAN", 425), ("PLANT POT", 195), ("GARDENING GLOVES", 250), ("HAND TROWEL", 295),
                ("SEED TIN", 165), ("KNEELING PAD", 295)), (("PLANT LABELS PACK OF 20", 65), ("GARDEN TWINE", 125)),
     False),
    ("BATHROOM", (("WASH BAG", 295), ("SOAP DISH", 165), ("TOOTHBRUSH HOLDER", 195), ("HAND TOWEL", 250),
                  ("BATH MAT", 595)), (), False),
    ("PHOTO", (("PHOTO FRAME", 295), ("PHOTO ALBUM", 595), ("MEMO BOARD", 495), ("PHOTO CLIPS", 125)), (), False),
    ("GAMES", (("JIGSAW PUZZLE", 295), ("BUILDING BLOCKS", 595), ("MEMORY GAME", 195), ("COLOURING BOOK", 165),
               ("CRAYONS", 85)), (("PACK OF 24 COLOURING PENCILS", 165),), False),
    ("WARMERS", (("HOT WATER BOTTLE", 395), ("HAND WARMER", 185), ("MUG COSY", 165), ("FLEECE THROW", 895),
                 ("KNITTED SLIPPERS", 495)), (), False),
    ("DINING", (("DINNER PLATE", 250), ("CEREAL BOWL", 195), ("MUG", 165), ("BEAKER", 125), ("CUTLERY SET", 425),
                ("PLACEMATS", 295), ("COASTERS", 125)), (), False),
    ("BAGS", (("JUMBO BAG", 195), ("SHOPPER", 250), ("PURSE", 165), ("KEY RING", 85), ("CHARLOTTE BAG", 85)),
     (), False),
    ("CARDS", (("GREETING CARD", 42), ("BIRTHDAY CARD", 42), ("ENVELOPES", 65), ("WRITING SET", 295),
               ("POSTCARDS", 55)), (), False),
    ("DOORWAY", (("DOOR MAT", 795), ("DOORSTOP", 425), ("COAT RACK", 995), ("KEY HOLDER", 495), ("DOOR SIGN", 210)),
     (), False),
    ("SEWING", (("SEWING KIT", 295), ("SEWING BOX", 795), ("PIN CUSHION", 165), ("TAPE MEASURE", 125),
                ("THIMBLE", 85)), (("PACK OF 50 SEWING NEEDLES", 65),), False),
    ("PICNIC", (("PICNIC BASKET", 1495), ("PICNIC BLANKET", 995), ("PICNIC CUPS", 295), ("PICNIC PLATES", 395),
                ("COOL BAG", 495)), (), False),
    ("BABY", (("BABY BIB", 165), ("BABY BLANKET", 795), ("SOFT TOY", 295), ("BABY MOBILE", 495), ("BOOTIES", 250)),
     (), False),
    ("HANGING HEARTS", (("HANGING HEART", 255), ("WICKER HEART", 165), ("HEART GARLAND", 295),
                        ("HEART WALL DECORATION", 250)), (), False),
)
_COLOURS = ("RED", "BLUE", "PINK", "GREEN", "IVORY", "BLACK", "WHITE", "YELLOW", "PURPLE", "ORANGE", "CREAM",
            "GREY", "TURQUOISE", "LILAC", "MINT", "SILVER", "GOLD", "NAVY", "CORAL", "TEAL")
_PATTERNS = ("SPOTTY", "POLKADOT", "RETROSPOT", "STRIPE", "GINGHAM", "REGENCY", "VINTAGE", "PAISLEY", "FLORAL",
             "HEARTS", "STARS", "CHECK", "DOILY", "LACE", "DAISY", "ROSES", "PARISIENNE", "SCANDI", "HERRINGBONE",
             "TARTAN", "ZIGZAG", "DITSY", "ORIENTAL", "BAROQUE", "TOILE")
_MOTIFS = ("OWL", "BIRDIE", "BUTTERFLY", "WOODLAND", "DOLLY GIRL", "SPACEBOY", "UNION JACK", "CIRCUS PARADE",
           "JUNGLE", "SKULL", "APPLE", "CHERRY", "STRAWBERRY", "LEMON", "ROBIN", "REINDEER", "RABBIT", "SWALLOW",
           "HEN HOUSE", "PONY", "RAINBOW", "BICYCLE", "SAILOR", "MERMAID", "DINOSAUR", "FOX", "HEDGEHOG", "CACTUS",
           "POPPY'S", "LOVEBIRD")
_SYNONYMS = {"COLOURING": "COLORING", "CHILDRENS": "CHILDREN'S", "T-LIGHT": "TEA LIGHT", "POLKADOT": "POLKA DOT",
             "TEACUP": "TEA CUP", "DOORSTOP": "DOOR STOP", "RETROSPOT": "RETRO SPOT", "GREY": "GRAY"}

# Service lines the real data mixes with products: (code, description, median price in pence, price spread).
_SERVICES = (("POST", "POSTAGE", 1800, 0.4), ("DOT", "DOTCOM POSTAGE", 15000, 0.8), ("M", "Manual", 250, 1.5),
             ("BANK CHARGES", "Bank Charges", 1500, 0.0), ("AMAZONFEE", "AMAZON FEE", 300000, 0.7),
             ("C2", "CARRIAGE", 5000, 0.0))
_NOTES = ("damaged", "check", "?", "missing", "wet damaged", "sold as set on dotcom", "wrongly coded")

_COUNTRIES = ("United Kingdom", "Germany", "France", "EIRE", "Spain", "Belgium", "Switzerland", "Portugal",
              "Netherlands", "Italy", "Norway", "Australia", "Finland", "Channel Islands", "Sweden", "Denmark",
              "Austria", "Japan", "Poland", "Cyprus", "USA")
_CUSTOMER_COUNTRY_P = np.array([900, 22, 20, 8, 8, 6, 5, 5, 3, 4, 3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 1], float)
_GUEST_COUNTRY_P = np.where(np.arange(len(_COUNTRIES)) == 0, 9700.0, _CUSTOMER_COUNTRY_P)  # guests are nearly all UK

_QUANTITIES = np.array([1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 25, 36, 48, 72, 96, 144])
_QUANTITY_P = np.array([148, 82, 37, 38, 12, 41, 13, 22, 61, 4.3, 5, 24, 5.1, 3.8, 6.1, 2, 1.5, 1])
_HOURS = np.arange(7, 21)
_HOUR_P = np.array([4, 88, 338, 479, 563, 772, 711, 663, 764, 535, 276, 77, 35, 8], float)
_WEEKDAY_P = np.array([1.0, 1.05, 0.97, 1.08, 0.85, 0.0, 0.7])  # Mon..Sun: the shop never invoices on Saturdays
_MONTH_P = np.array([0.8, 0.75, 0.95, 0.8, 1.0, 0.95, 0.95, 0.95, 1.3, 1.45, 1.8, 1.2])
_SEASON_MONTHS = np.array([False] * 8 + [True] * 4)  # Christmas kits sell from September to December

_ACCESSORY_ODDS = 0.6  # relative to complement_prob: batteries join fairy lights less often than the lantern does

# Bits of the per-invoice dirt mask.
_D_QUANTITY, _D_EMPTY, _D_SPACE = 1, 2, 4


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate: sizes, seed, calendar and the knobs of basket structure and dirt."""

    invoices: int = 3_000  # invoice numbers in the output, cancellations included
    products: int = 400
    customers: int = 400
    seed: int = 0
    start: str = "2010-12-01"
    days: int = 374
    guest_share: float = 0.25  # share of invoices without a CustomerID
    basket_median: float = 12.0  # distinct products per purchase invoice
    single_share: float = 0.1  # purchase invoices with a single product
    complement_prob: float = 0.6  # chance a family member joins a basket that holds its anchor
    loyalty: float = 0.6  # chance a registered customer's theme comes from their favourite families
    noise_share: float = 0.25  # share of basket lines that are popular or random products, not theme members
    # Exponent of the Zipf law over families and over bestsellers. Below 1, so that at 100k products the
    # head does not swallow the catalogue: the top 10% of products hold 35-50% of lines at any size (45% real).
    zipf: float = 0.8
    duplicate_share: float = 0.06  # share of rows that repeat a product already on the invoice
    cancel_share: float = 0.02
    dirty: bool = True  # cancellations, service lines, bad quantities, empty or drifting descriptions, padded codes

    def __post_init__(self) -> None:
        if not 1 <= self.invoices <= _MAX_INVOICES:
            raise InvalidInput(f"invoices must be between 1 and {_MAX_INVOICES}, got {self.invoices}")
        if not 2 <= self.products <= _MAX_PRODUCTS:
            raise InvalidInput(f"products must be between 2 and {_MAX_PRODUCTS}, got {self.products}")
        if not 1 <= self.customers <= _CUSTOMER_IDS:
            raise InvalidInput(
                f"customers must be between 1 and {_CUSTOMER_IDS} (five-digit IDs), got {self.customers}")
        if self.days < 1:
            raise InvalidInput(f"days must be at least 1, got {self.days}")
        if self.basket_median < 1:
            raise InvalidInput(f"basket_median must be at least 1, got {self.basket_median}")
        if self.zipf < 0:
            raise InvalidInput(f"zipf must not be negative, got {self.zipf}")
        for name in ("guest_share", "single_share", "complement_prob", "loyalty", "noise_share", "cancel_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidInput(f"{name} must be between 0 and 1, got {value}")
        if not 0.0 <= self.duplicate_share < 0.5:
            raise InvalidInput(f"duplicate_share must be in [0, 0.5), got {self.duplicate_share}")
        try:
            date.fromisoformat(self.start)
        except (TypeError, ValueError):
            raise InvalidInput(f"start must be a date like 2010-12-01, got {self.start!r}") from None


TINY = SyntheticSpec(invoices=300, products=60, customers=40, basket_median=8.0)
DEFAULT = SyntheticSpec()
# About 10M rows: 1M invoices of ~10 lines. A million numbers do not fit in six digits: numbering starts
# at 100000 and the last ~100k invoices get seven.
SCALE = SyntheticSpec(invoices=1_000_000, products=100_000, customers=80_000, basket_median=8.0)
_PRESETS = {"tiny": TINY, "default": DEFAULT, "scale": SCALE}


def preset(name: str, **changes: object) -> SyntheticSpec:
    """The named preset ("tiny", "default" or "scale"), with any fields replaced."""
    try:
        base = _PRESETS[name]
    except KeyError:
        raise InvalidInput(f"unknown preset {name!r}; choose one of {', '.join(_PRESETS)}") from None
    return replace(base, **changes)


@dataclass(frozen=True)
class GenerationSummary:
    """What write_csv produced: row and invoice counts, distinct products and customers seen, and the file."""

    rows: int
    invoices: int
    products: int
    customers: int
    path: Path


# ---------------------------------------------------------------------------------------------------------
# Catalogue: families (one kit in one design), accessories, codes, prices, descriptions.
# Internal product index: family members first, contiguous per family, then accessories.
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Catalogue:
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


def _cdf(weights: np.ndarray) -> np.ndarray:
    cdf = np.cumsum(weights, dtype=np.float64)
    return cdf / cdf[-1]


def _draw(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.minimum(np.searchsorted(cdf, u, side="right"), len(cdf) - 1)


def _design_names(rng: np.random.Generator, count: int) -> list[str]:
    """Distinct design names, mostly colour + pattern, some with a motif."""
    nc, npat, nm = len(_COLOURS) + 1, len(_PATTERNS) + 1, len(_MOTIFS) + 1
    space = nc * npat * nm
    idx = np.arange(space)
    c, p, m = idx // (npat * nm), (idx // nm) % npat, idx % nm
    words = (c > 0).astype(int) + (p > 0) + (m > 0)
    # Two-word designs read like the real catalogue; one- and three-word ones keep large catalogues distinct.
    weight = np.select([words == 0, words == 1, (words == 2) & (m == 0), words == 2], [0.0, 0.3, 6.0, 1.0], 0.02)
    count = min(count, int((weight > 0).sum()))
    chosen = rng.choice(space, size=count, replace=False, p=weight / weight.sum())
    names = []
    for d in chosen:
        parts = [(("",) + _COLOURS)[c[d]], (("",) + _PATTERNS)[p[d]], (("",) + _MOTIFS)[m[d]]]
        names.append(" ".join(w for w in parts if w))
    return names


def _drifted(desc: str, alternative: str, flip: bool) -> str:
    """An older wording of a description: a synonym swapped in, else the design and item named the other way round."""
    words = desc.split(" ")
    if not flip:
        for i, w in enumerate(words):
            if w in _SYNONYMS:
                return " ".join(words[:i] + [_SYNONYMS[w]] + words[i + 1:])
    return alternative if alternative != desc else desc + " "


@lru_cache(maxsize=4)
def _catalogue(seed: int, products: int, zipf: float, start_minute: int, span_minutes: int) -> _Catalogue:
    rng = np.random.default_rng([seed, 11, products])
    kits = _KITS
    n_kits = len(kits)
    # Families cycle through the kits in list order, so even a tiny catalogue starts with a tea set.
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
    companions = float(np.average(weight_sum - 1.0 + _ACCESSORY_ODDS * (fam_acc >= 0), weights=fam_weight))

    # A few popular products were renamed during the year; rows before the change carry the old wording.
    old_desc = np.array(desc, dtype=object)
    drift_at = np.full(n_products, np.iinfo(np.int64).min, np.int64)
    n_drift = max(1, round(0.01 * n_products))
    popular = np.argsort(noise_rank)[: max(n_drift, n_products // 20)]
    for p in rng.choice(popular, size=min(n_drift, len(popular)), replace=False):
        old_desc[p] = _drifted(desc[p], other_order[p], flip=bool(rng.random() < 0.5))
        drift_at[p] = start_minute + int(span_minutes * rng.uniform(0.3, 0.7))

    return _Catalogue(
        code=codes, desc=np.array(desc, dtype=object), old_desc=old_desc, drift_at=drift_at, price=price,
        kit=kit_of, weight=weight, family_start=fam_start, family_size=fam_size, family_accessory=fam_acc,
        family_seasonal=fam_seasonal, family_cdf=_cdf(fam_weight), favourite_cdf=_cdf(fam_weight**0.6),
        noise_cdf=_cdf(noise_weight), companions=companions,
        family_of=np.concatenate([member_family, np.full(n_acc, -1)]), item=np.array(nouns, dtype=object),
    )


def _stock_codes(rng: np.random.Generator, kit_of: np.ndarray, item_of: np.ndarray) -> np.ndarray:
    """Five-digit codes; designs of the same item often share a base and differ by a letter (85123A, 85123B)."""
    n = len(kit_of)
    # Groups of one product get a plain code; larger groups share a base. Big catalogues need bigger
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
            group[i:i + s] = g
            position[i:i + s] = np.arange(s) if s > 1 else -1
            i += s
            g += 1
    bases = rng.choice(_BASE_CODES, size=g, replace=False) + 10_000
    letters = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), dtype=object)
    codes = np.empty(n, dtype=object)
    base_txt = bases.astype(str).astype(object)[group]
    suffix = np.where(position >= 0, letters[np.maximum(position, 0)], "")
    codes[order] = base_txt + suffix
    return codes


# ---------------------------------------------------------------------------------------------------------
# Customers and the invoice plan (who buys when, how much, which invoices are cancellations or dirty).
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Customers:
    ids: np.ndarray  # object: five-digit text
    country: np.ndarray  # int
    activity_cdf: np.ndarray
    join_day: np.ndarray
    favourites: np.ndarray  # (customers, 4) family indices
    n_favourites: np.ndarray


def _customers(spec: SyntheticSpec, cat: _Catalogue) -> _Customers:
    rng = np.random.default_rng([spec.seed, 12, spec.customers, spec.products])
    n = spec.customers
    # New customers keep arriving through the year, so the last weeks hold some cold-start shoppers.
    join_day = np.where(rng.random(n) < 0.4, 0, rng.integers(0, max(1, int(0.85 * spec.days)), n))
    order = np.argsort(join_day, kind="stable")
    ids = np.empty(n, dtype=object)
    # IDs are handed out in joining order from a dense range, like the real 12346..18287.
    span = min(_CUSTOMER_IDS, max(6_000, 3 * n))
    ids[order] = (np.sort(rng.choice(span, n, replace=False)) + _FIRST_CUSTOMER).astype(str)
    return _Customers(
        ids=ids,
        country=_draw(_cdf(_CUSTOMER_COUNTRY_P), rng.random(n)),
        activity_cdf=_cdf(rng.lognormal(0.0, 1.2, n)),
        join_day=join_day,
        favourites=_draw(cat.favourite_cdf, rng.random((n, 4))),
        n_favourites=1 + rng.binomial(3, 0.35, n),
    )


@dataclass(frozen=True)
class _Plan:
    number: np.ndarray
    cancel: np.ndarray
    ref: np.ndarray  # for a cancellation, the earlier invoice it reverses
    customer: np.ndarray  # -1 for guests
    country: np.ndarray
    minute: np.ndarray  # minutes since the Unix epoch
    in_season: np.ndarray
    size: np.ndarray
    services: np.ndarray  # bit i set: the invoice has a line of _SERVICES[i]
    dirt: np.ndarray


def _start_minute(spec: SyntheticSpec) -> int:
    return int(np.datetime64(spec.start, "m").astype(np.int64))


def _day_weights(spec: SyntheticSpec) -> np.ndarray:
    days = np.datetime64(spec.start, "D") + np.arange(spec.days)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    day_of_month = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    # Closed between Christmas and the new year, as the real shop was.
    closed = ((month == 11) & (day_of_month >= 23)) | ((month == 0) & (day_of_month <= 3))
    w = _WEEKDAY_P[weekday] * _MONTH_P[month] * ~closed
    return w if w.sum() > 0 else np.ones(spec.days)


def _plan(spec: SyntheticSpec, cat: _Catalogue, cust: _Customers) -> _Plan:
    rng = np.random.default_rng([spec.seed, 13, spec.invoices])
    n = spec.invoices
    customer = _draw(cust.activity_cdf, rng.random(n))
    customer[rng.random(n) < spec.guest_share] = -1
    guest = customer < 0
    country = np.where(guest, _draw(_cdf(_GUEST_COUNTRY_P), rng.random(n)), cust.country[np.maximum(customer, 0)])

    # A customer shops only after joining: draw the day from the calendar weights above the join day.
    day_w = _day_weights(spec)
    cdf = np.cumsum(day_w) / day_w.sum()
    before = np.concatenate([[0.0], cdf[:-1]])
    floor = before[np.where(guest, 0, cust.join_day[np.maximum(customer, 0)])]
    day = _draw(cdf, floor + rng.random(n) * (1.0 - floor))
    minute_of_day = (_draw(_cdf(_HOUR_P), rng.random(n)) + _HOURS[0]) * 60 + rng.integers(0, 60, n)
    minute = _start_minute(spec) + day * 1440 + minute_of_day
    order = np.argsort(minute, kind="stable")
    customer, country, guest, minute = customer[order], country[order], guest[order], minute[order]

    single = rng.random(n) < spec.single_share
    max_basket = max(2, min(300, spec.products // 3))
    sizes = np.rint(rng.lognormal(np.log(spec.basket_median), 0.85, n))
    size = np.where(single, 1, np.clip(sizes, 2, max_basket)).astype(np.int64)

    index = np.arange(n)
    cancel = np.zeros(n, bool)
    ref = np.full(n, -1, np.int64)
    if spec.dirty and spec.cancel_share > 0 and n >= 2:
        # A cancellation reverses the latest earlier invoice of a registered customer in its block.
        candidates = index[index % _BLOCK != 0]
        count = min(len(candidates), max(1, round(spec.cancel_share * n)))
        cancel[rng.choice(candidates, count, replace=False)] = True
        valid = np.where(~cancel & ~guest, index, -1)
        previous = np.concatenate([[-1], np.maximum.accumulate(valid)[:-1]])
        cancel &= previous >= index - index % _BLOCK
        ref = np.where(cancel, previous, -1)
        customer = np.where(cancel, customer[np.maximum(ref, 0)], customer)
        country = np.where(cancel, country[np.maximum(ref, 0)], country)
        guest = customer < 0
    size[cancel] = 0

    services = np.zeros(n, np.int64)
    dirt = np.zeros(n, np.int64)
    purchases = index[~cancel]
    if spec.dirty and len(purchases):
        uk = country == 0
        u = rng.random((len(_SERVICES), n))
        chance = [
            np.where(uk, 0.004, 0.6),  # POST: foreign orders pay postage
            np.where(guest, 0.08, 0.0),  # DOT: web-shop guests
            np.full(n, 0.003), np.full(n, 0.001), np.where(guest, 0.0005, 0.0),
            np.where(uk, 0.0, 0.08),  # C2: carriage abroad
        ]
        for bit, p in enumerate(chance):
            services |= np.where(~cancel & (u[bit] < p), 1 << bit, 0)
            if not (services & (1 << bit)).any():  # every kind of dirt shows up at least once
                services[rng.choice(purchases)] |= 1 << bit
        for bit, rate in ((_D_QUANTITY, 0.004), (_D_EMPTY, 0.004), (_D_SPACE, 0.003)):
            count = min(len(purchases), max(1, round(rate * n)))
            dirt[rng.choice(purchases, count, replace=False)] |= bit

    months = minute.astype("datetime64[m]").astype("datetime64[M]").astype(np.int64) % 12
    first = _FIRST_INVOICE if _FIRST_INVOICE + n <= 1_000_000 else max(100_000, 1_000_000 - n)
    return _Plan(number=first + index, cancel=cancel, ref=ref, customer=customer, country=country,
                 minute=minute, in_season=_SEASON_MONTHS[months], size=size, services=services, dirt=dirt)


# ---------------------------------------------------------------------------------------------------------
# Blocks of invoices to rows.
# ---------------------------------------------------------------------------------------------------------
def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each element of concatenated segments of the given lengths: its segment and its offset in it."""
    seg = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return seg, np.arange(len(seg)) - starts[seg]


def _block(spec: SyntheticSpec, cat: _Catalogue, cust: _Customers, plan: _Plan, b: int,
           ) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows of block b, plus the product indices and customer indices it uses (for the summary)."""
    rng = np.random.default_rng([spec.seed, 14, b])
    lo, hi = b * _BLOCK, min(spec.invoices, (b + 1) * _BLOCK)
    n = hi - lo
    size = plan.size[lo:hi]
    customer = plan.customer[lo:hi]
    minute = plan.minute[lo:hi]
    cancel = plan.cancel[lo:hi]
    n_products = len(cat.code)

    # Split each basket between family slots (anchor + complements) and noise lines.
    single = size == 1
    noise = rng.binomial(size, spec.noise_share)
    noise[single] = rng.random(int(single.sum())) < 0.5  # a lone line is a bestseller or a family anchor
    family_lines = size - noise
    mean_yield = 1.0 + spec.complement_prob * cat.companions  # distinct products one family slot adds
    slots = np.where(family_lines > 0, np.maximum(1, np.rint(family_lines / mean_yield)), 0).astype(np.int64)

    slot_inv = np.repeat(np.arange(n), slots)
    n_slots = len(slot_inv)
    family = _draw(cat.family_cdf, rng.random(n_slots))
    off_season = cat.family_seasonal[family] & ~plan.in_season[lo + slot_inv] & (rng.random(n_slots) < 0.85)
    family[off_season] = _draw(cat.family_cdf, rng.random(int(off_season.sum())))
    slot_cust = customer[slot_inv]
    loyal = (slot_cust >= 0) & (rng.random(n_slots) < spec.loyalty)
    loyal_cust = slot_cust[loyal]
    pick = (rng.random(len(loyal_cust)) * cust.n_favourites[loyal_cust]).astype(np.int64)
    family[loyal] = cust.favourites[loyal_cust, pick]

    # Expand each slot to its family; the anchor wins an exponential race weighted by item role.
    fam_size = cat.family_size[family]
    member_slot, offset = _segments(fam_size)
    product = cat.family_start[family][member_slot] + offset
    w = cat.weight[product]
    race = rng.exponential(size=len(product)) / w
    slot_first = np.cumsum(fam_size) - fam_size
    anchor = race == np.minimum.reduceat(race, slot_first)[member_slot] if n_slots else np.zeros(0, bool)
    lone = single[slot_inv]
    keep = anchor | (~lone[member_slot] & (rng.random(len(product)) < spec.complement_prob * w))
    accessory = cat.family_accessory[family]
    with_acc = (accessory >= 0) & ~lone & (rng.random(n_slots) < spec.complement_prob * _ACCESSORY_ODDS)

    noise_inv = np.repeat(np.arange(n), noise)
    noise_product = _draw(cat.noise_cdf, rng.random(len(noise_inv)))

    inv = np.concatenate([slot_inv[member_slot[keep]], slot_inv[with_acc], noise_inv])
    prod = np.concatenate([product[keep], accessory[with_acc], noise_product])
    key = np.unique(inv.astype(np.int64) * n_products + prod)
    inv, prod = key // n_products, key % n_products
    qty = _QUANTITIES[_draw(_cdf(_QUANTITY_P), rng.random(len(inv)))]
    price = cat.price[prod]

    # Cancellations reverse some or all lines of the invoice they refer to.
    c_local = np.flatnonzero(cancel)
    parts = [(inv, prod, qty, price, np.zeros(len(inv), np.int8))]
    if len(c_local):
        ref = plan.ref[lo + c_local] - lo
        first = np.searchsorted(inv, ref)
        count = np.searchsorted(inv, ref, side="right") - first
        whole = rng.random(len(c_local)) < 0.25
        chosen = (rng.random(len(c_local)) * count).astype(np.int64)
        c_seg, c_off = _segments(count)
        take = whole[c_seg] | (rng.random(len(c_seg)) < 0.3) | (c_off == chosen[c_seg])
        lines = (first[c_seg] + c_off)[take]
        parts.append((c_local[c_seg[take]], prod[lines], -qty[lines], price[lines], np.zeros(len(lines), np.int8)))

    # Repeated lines: the same product entered twice, half the time with another quantity.
    dup = np.flatnonzero(rng.random(len(inv)) < spec.duplicate_share / (1.0 - spec.duplicate_share))
    redraw = rng.random(len(dup)) < 0.5
    dup_qty = np.where(redraw, _QUANTITIES[_draw(_cdf(_QUANTITY_P), rng.random(len(dup)))], qty[dup])
    parts.append((inv[dup], prod[dup], dup_qty, price[dup], np.zeros(len(dup), np.int8)))

    # Dirt: adjustments with Quantity <= 0 and lines without a description, both at price 0 as in the real export.
    dirt = plan.dirt[lo:hi]
    for bit, kind in ((_D_QUANTITY, 1), (_D_EMPTY, 2)):
        where = np.flatnonzero(dirt & bit)
        extra_prod = _draw(cat.noise_cdf, rng.random(len(where)))
        extra_qty = (-rng.choice([0, 1, 2, 3, 6, 10, 12, 24], len(where)) if kind == 1
                     else _QUANTITIES[_draw(_cdf(_QUANTITY_P), rng.random(len(where)))])
        parts.append((where, extra_prod, extra_qty, np.zeros(len(where)), np.full(len(where), kind, np.int8)))

    all_inv = np.concatenate([p[0] for p in parts])
    all_prod = np.concatenate([p[1] for p in parts])
    all_qty = np.concatenate([p[2] for p in parts]).astype(np.int64)
    all_price = np.concatenate([p[3] for p in parts]).astype(np.float64)
    kind = np.concatenate([p[4] for p in parts])

    code = cat.code[all_prod]
    old = cat.drift_at[all_prod] > minute[all_inv]
    desc = np.where(old, cat.old_desc[all_prod], cat.desc[all_prod])
    notes = (kind == 1) & (rng.random(len(kind)) < 0.5)
    desc[notes] = np.array(_NOTES, dtype=object)[rng.integers(0, len(_NOTES), int(notes.sum()))]
    desc[kind == 2] = np.nan

    # Padded stock codes: one line of the flagged invoices, as pasted from a spreadsheet.
    padded = np.flatnonzero(dirt & _D_SPACE)
    if len(padded):
        line = np.searchsorted(all_inv[: len(inv)], padded)
        pad = np.where(rng.random(len(padded)) < 0.5, " ", "  ").astype(object)
        code[line] = np.where(rng.random(len(padded)) < 0.5, pad + code[line], code[line] + pad)

    # Service lines carry codes that are not products.
    services = plan.services[lo:hi]
    s_inv, s_code, s_desc, s_qty, s_price = [all_inv], [code], [desc], [all_qty], [all_price]
    for bit, (scode, sdesc, pence, spread) in enumerate(_SERVICES):
        where = np.flatnonzero(services & (1 << bit))
        s_inv.append(where)
        s_code.append(np.full(len(where), scode, dtype=object))
        s_desc.append(np.full(len(where), sdesc, dtype=object))
        s_qty.append(rng.integers(1, 4, len(where)) if scode == "POST" else np.ones(len(where), np.int64))
        s_price.append(np.round(pence * rng.lognormal(0.0, spread, len(where))).astype(np.int64) / 100)
    all_inv = np.concatenate(s_inv)
    code, desc = np.concatenate(s_code), np.concatenate(s_desc)
    all_qty, all_price = np.concatenate(s_qty).astype(np.int64), np.concatenate(s_price)

    # Lines of an invoice appear in entry order, not grouped by how they were generated.
    order = np.lexsort((rng.random(len(all_inv)), all_inv))
    all_inv = all_inv[order]

    numbers = plan.number[lo:hi].astype(str).astype(object)
    numbers[cancel] = "C" + numbers[cancel]
    stamps = np.datetime_as_string(minute.astype("datetime64[m]"), unit="m")
    stamps = np.char.add(np.char.replace(stamps, "T", " "), ":00").astype(object)
    ids = np.where(customer >= 0, cust.ids[np.maximum(customer, 0)], np.nan)
    frame = pd.DataFrame({
        "InvoiceNo": numbers[all_inv],
        "StockCode": code[order],
        "Description": desc[order],
        "Quantity": all_qty[order],
        "InvoiceDate": stamps[all_inv],
        "UnitPrice": all_price[order],
        "CustomerID": ids[all_inv],
        "Country": np.array(_COUNTRIES, dtype=object)[plan.country[lo:hi]][all_inv],
    })
    return frame, all_prod, customer[customer >= 0]


def _blocks(spec: SyntheticSpec) -> Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray]]:
    cat = _cat_for(spec)
    cust = _customers(spec, cat)
    plan = _plan(spec, cat, cust)
    for b in range(-(-spec.invoices // _BLOCK)):
        yield _block(spec, cat, cust, plan, b)


def generate_frame(spec: SyntheticSpec = DEFAULT) -> pd.DataFrame:
    """All rows in memory, as pandas would read the written file with text ID columns (for small specs)."""
    return pd.concat([f for f, _, _ in _blocks(spec)], ignore_index=True)


def write_csv(spec: SyntheticSpec, path: str | os.PathLike[str]) -> GenerationSummary:
    """Write the rows block by block to a .csv or .csv.gz file (byte-identical for the same spec)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    rows = 0
    seen_products = np.zeros(spec.products, bool)
    seen_customers = np.zeros(spec.customers, bool)
    try:
        with open(partial, "wb") as raw:
            # mtime=0 and no file name in the gzip header keep the bytes independent of when and where.
            binary = (gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0)
                      if target.suffix.lower() == ".gz" else raw)
            with binary, io.TextIOWrapper(binary, encoding="utf-8", newline="") as text:
                for b, (frame, products, customers) in enumerate(_blocks(spec)):
                    frame.to_csv(text, index=False, header=b == 0, lineterminator="\n")
                    rows += len(frame)
                    seen_products[products] = True
                    seen_customers[customers] = True
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return GenerationSummary(rows=rows, invoices=spec.invoices, products=int(seen_products.sum()),
                             customers=int(seen_customers.sum()), path=target)


# ---------------------------------------------------------------------------------------------------------
# Ground truth.
# ---------------------------------------------------------------------------------------------------------
def _cat_for(spec: SyntheticSpec) -> _Catalogue:
    return _catalogue(spec.seed, spec.products, spec.zipf, _start_minute(spec), spec.days * 1440)


def catalogue(spec: SyntheticSpec = DEFAULT) -> pd.DataFrame:
    """Every product: StockCode, current Description, UnitPrice, Family (-1 for accessories), Kit and Item."""
    cat = _cat_for(spec)
    return pd.DataFrame({
        "StockCode": cat.code,
        "Description": cat.desc,
        "UnitPrice": cat.price,
        "Family": cat.family_of,
        "Kit": np.array([k[0] for k in _KITS], dtype=object)[cat.kit],
        "Item": cat.item,
    })


def complements(spec: SyntheticSpec = DEFAULT) -> dict[str, frozenset[str]]:
    """For each product code, the codes generated as its complements: its family and the family's accessory."""
    cat = _cat_for(spec)
    result: dict[str, set[str]] = {}
    for f in range(len(cat.family_start)):
        members = cat.code[cat.family_start[f]:cat.family_start[f] + cat.family_size[f]].tolist()
        acc = int(cat.family_accessory[f])
        for m in members:
            result[m] = set(members)
            result[m].discard(m)
        if acc >= 0:
            acc_code = cat.code[acc]
            for m in members:
                result[m].add(acc_code)
            result.setdefault(acc_code, set()).update(members)
    for c in cat.code:
        result.setdefault(c, set())
    return {k: frozenset(v) for k, v in result.items()}


def write_parquet_parts(spec: SyntheticSpec, folder: str | os.PathLike[str], blocks_per_part: int = 25,
                        ) -> GenerationSummary:
    """The same rows as write_csv, as a folder of Parquet parts (part-00000.parquet, ...; one row group per block
    of invoices), the layout a data lake export has; written into folder.partial, then renamed."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    target = Path(folder)
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    rows = 0
    seen_products = np.zeros(spec.products, bool)
    seen_customers = np.zeros(spec.customers, bool)
    writer, schema = None, None
    try:
        for b, (frame, products, customers) in enumerate(_blocks(spec)):
            table = pa.Table.from_pandas(frame, preserve_index=False)
            schema = schema or table.schema
            if b % blocks_per_part == 0:
                if writer is not None:
                    writer.close()
                writer = pq.ParquetWriter(partial / f"part-{b // blocks_per_part:05d}.parquet", schema)
            writer.write_table(table.cast(schema))
            rows += len(frame)
            seen_products[products] = True
            seen_customers[customers] = True
        if writer is not None:
            writer.close()
        shutil.rmtree(target, ignore_errors=True)
        os.replace(partial, target)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return GenerationSummary(rows=rows, invoices=spec.invoices, products=int(seen_products.sum()),
                             customers=int(seen_customers.sum()), path=target)
