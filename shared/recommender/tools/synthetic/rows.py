"""Blocks of planned invoices to rows, and the writers (DataFrame, csv.gz, Parquet parts)."""

from __future__ import annotations

import gzip
import io
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from recommender.core.extras import optional
from recommender.tools.synthetic.plan import Customers, Plan, customers_for, plan_for
from recommender.tools.synthetic.products import ProductRange, product_arrays
from recommender.tools.synthetic.spec import (
    BLOCK,
    DEFAULT,
    DIRT_EMPTY,
    DIRT_QUANTITY,
    DIRT_SPACE,
    GenerationSummary,
    SyntheticSpec,
)
from recommender.tools.synthetic.vocabulary import (
    ACCESSORY_ODDS,
    COUNTRIES,
    NOTES,
    QUANTITIES,
    QUANTITY_P,
    SERVICES,
    cumulative,
    draw,
)


# ---------------------------------------------------------------------------------------------------------
# Blocks of invoices to rows.
# ---------------------------------------------------------------------------------------------------------
def _segments(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each element of concatenated segments of the given lengths: its segment and its offset in it."""
    seg = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    return seg, np.arange(len(seg)) - starts[seg]


def _block(
    spec: SyntheticSpec,
    products: ProductRange,
    cust: Customers,
    plan: Plan,
    b: int,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows of block b, plus the product indices and customer indices it uses (for the summary)."""
    rng = np.random.default_rng([spec.seed, 14, b])
    lo, hi = b * BLOCK, min(spec.invoices, (b + 1) * BLOCK)
    n = hi - lo
    size = plan.size[lo:hi]
    customer = plan.customer[lo:hi]
    minute = plan.minute[lo:hi]
    cancel = plan.cancel[lo:hi]
    n_products = len(products.code)

    # Split each basket between family slots (anchor + complements) and noise lines.
    single = size == 1
    noise = rng.binomial(size, spec.noise_share)
    noise[single] = rng.random(int(single.sum())) < 0.5  # a lone line is a bestseller or a family anchor
    family_lines = size - noise
    mean_yield = 1.0 + spec.complement_prob * products.companions  # distinct products one family slot adds
    slots = np.where(family_lines > 0, np.maximum(1, np.rint(family_lines / mean_yield)), 0).astype(np.int64)

    slot_inv = np.repeat(np.arange(n), slots)
    n_slots = len(slot_inv)
    family = draw(products.family_cdf, rng.random(n_slots))
    off_season = products.family_seasonal[family] & ~plan.in_season[lo + slot_inv] & (rng.random(n_slots) < 0.85)
    family[off_season] = draw(products.family_cdf, rng.random(int(off_season.sum())))
    slot_cust = customer[slot_inv]
    loyal = (slot_cust >= 0) & (rng.random(n_slots) < spec.loyalty)
    loyal_cust = slot_cust[loyal]
    pick = (rng.random(len(loyal_cust)) * cust.n_favourites[loyal_cust]).astype(np.int64)
    family[loyal] = cust.favourites[loyal_cust, pick]

    # Expand each slot to its family; the anchor wins an exponential race weighted by item role.
    fam_size = products.family_size[family]
    member_slot, offset = _segments(fam_size)
    product = products.family_start[family][member_slot] + offset
    w = products.weight[product]
    race = rng.exponential(size=len(product)) / w
    slot_first = np.cumsum(fam_size) - fam_size
    anchor = race == np.minimum.reduceat(race, slot_first)[member_slot] if n_slots else np.zeros(0, bool)
    lone = single[slot_inv]
    keep = anchor | (~lone[member_slot] & (rng.random(len(product)) < spec.complement_prob * w))
    accessory = products.family_accessory[family]
    with_acc = (accessory >= 0) & ~lone & (rng.random(n_slots) < spec.complement_prob * ACCESSORY_ODDS)

    noise_inv = np.repeat(np.arange(n), noise)
    noise_product = draw(products.noise_cdf, rng.random(len(noise_inv)))

    inv = np.concatenate([slot_inv[member_slot[keep]], slot_inv[with_acc], noise_inv])
    prod = np.concatenate([product[keep], accessory[with_acc], noise_product])
    key = np.unique(inv.astype(np.int64) * n_products + prod)
    inv, prod = key // n_products, key % n_products
    qty = QUANTITIES[draw(cumulative(QUANTITY_P), rng.random(len(inv)))]
    price = products.price[prod]

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
    dup_qty = np.where(redraw, QUANTITIES[draw(cumulative(QUANTITY_P), rng.random(len(dup)))], qty[dup])
    parts.append((inv[dup], prod[dup], dup_qty, price[dup], np.zeros(len(dup), np.int8)))

    # Dirt: adjustments with Quantity <= 0 and lines without a description, both at price 0 as in the real export.
    dirt = plan.dirt[lo:hi]
    for bit, kind in ((DIRT_QUANTITY, 1), (DIRT_EMPTY, 2)):
        where = np.flatnonzero(dirt & bit)
        extra_prod = draw(products.noise_cdf, rng.random(len(where)))
        extra_qty = (
            -rng.choice([0, 1, 2, 3, 6, 10, 12, 24], len(where))
            if kind == 1
            else QUANTITIES[draw(cumulative(QUANTITY_P), rng.random(len(where)))]
        )
        parts.append((where, extra_prod, extra_qty, np.zeros(len(where)), np.full(len(where), kind, np.int8)))

    all_inv = np.concatenate([p[0] for p in parts])
    all_prod = np.concatenate([p[1] for p in parts])
    all_qty = np.concatenate([p[2] for p in parts]).astype(np.int64)
    all_price = np.concatenate([p[3] for p in parts]).astype(np.float64)
    kind = np.concatenate([p[4] for p in parts])

    code = products.code[all_prod]
    old = products.drift_at[all_prod] > minute[all_inv]
    desc = np.where(old, products.old_desc[all_prod], products.desc[all_prod])
    notes = (kind == 1) & (rng.random(len(kind)) < 0.5)
    desc[notes] = np.array(NOTES, dtype=object)[rng.integers(0, len(NOTES), int(notes.sum()))]
    desc[kind == 2] = np.nan

    # Padded stock codes: one line of the flagged invoices, as pasted from a spreadsheet.
    padded = np.flatnonzero(dirt & DIRT_SPACE)
    if len(padded):
        line = np.searchsorted(all_inv[: len(inv)], padded)
        pad = np.where(rng.random(len(padded)) < 0.5, " ", "  ").astype(object)
        code[line] = np.where(rng.random(len(padded)) < 0.5, pad + code[line], code[line] + pad)

    # Service lines carry codes that are not products.
    services = plan.services[lo:hi]
    s_inv, s_code, s_desc, s_qty, s_price = [all_inv], [code], [desc], [all_qty], [all_price]
    for bit, (scode, sdesc, pence, spread) in enumerate(SERVICES):
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
    frame = pd.DataFrame(
        {
            "InvoiceNo": numbers[all_inv],
            "StockCode": code[order],
            "Description": desc[order],
            "Quantity": all_qty[order],
            "InvoiceDate": stamps[all_inv],
            "UnitPrice": all_price[order],
            "CustomerID": ids[all_inv],
            "Country": np.array(COUNTRIES, dtype=object)[plan.country[lo:hi]][all_inv],
        }
    )
    return frame, all_prod, customer[customer >= 0]


def _blocks(spec: SyntheticSpec) -> Iterator[tuple[pd.DataFrame, np.ndarray, np.ndarray]]:
    products = product_arrays(spec)
    cust = customers_for(spec, products)
    plan = plan_for(spec, products, cust)
    for b in range(-(-spec.invoices // BLOCK)):
        yield _block(spec, products, cust, plan, b)


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
            binary = (
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0)
                if target.suffix.lower() == ".gz"
                else raw
            )
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
    return GenerationSummary(
        rows=rows,
        invoices=spec.invoices,
        products=int(seen_products.sum()),
        customers=int(seen_customers.sum()),
        path=target,
    )


def write_parquet_parts(
    spec: SyntheticSpec,
    folder: str | os.PathLike[str],
    blocks_per_part: int = 25,
) -> GenerationSummary:
    """The same rows as write_csv, as a folder of Parquet parts (part-00000.parquet, ...; one row group per block
    of invoices), the layout a data lake export has; written into folder.partial, then renamed."""
    import shutil

    pa = optional("pyarrow", "writing Parquet")
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
    return GenerationSummary(
        rows=rows,
        invoices=spec.invoices,
        products=int(seen_products.sum()),
        customers=int(seen_customers.sum()),
        path=target,
    )
