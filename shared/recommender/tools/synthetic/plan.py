"""Customers and the invoice plan: who buys when, how much, which invoices are cancellations or dirty."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recommender.tools.synthetic.products import ProductRange
from recommender.tools.synthetic.spec import (
    BLOCK,
    CUSTOMER_IDS,
    DIRT_EMPTY,
    DIRT_QUANTITY,
    DIRT_SPACE,
    FIRST_CUSTOMER,
    FIRST_INVOICE,
    SyntheticSpec,
    first_minute,
)
from recommender.tools.synthetic.vocabulary import (
    CUSTOMER_COUNTRY_P,
    GUEST_COUNTRY_P,
    HOUR_P,
    HOURS,
    MONTH_P,
    SEASON_MONTHS,
    SERVICES,
    WEEKDAY_P,
    cumulative,
    draw,
)


# ---------------------------------------------------------------------------------------------------------
# Customers and the invoice plan (who buys when, how much, which invoices are cancellations or dirty).
# ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Customers:
    """The customers: IDs, countries, how often each shops, when each joins, and their favourite families."""

    ids: np.ndarray  # object: digits (five up to CUSTOMER_IDS customers)
    country: np.ndarray  # int
    activity_cdf: np.ndarray
    join_day: np.ndarray
    favourites: np.ndarray  # (customers, 4) family indices
    n_favourites: np.ndarray


def customers_for(spec: SyntheticSpec, products: ProductRange) -> Customers:
    """The spec's customers, drawn from their own seeded stream."""
    rng = np.random.default_rng([spec.seed, 12, spec.customers, spec.products])
    n = spec.customers
    # New customers keep arriving through the year, so the last weeks hold some cold-start shoppers.
    join_day = np.where(rng.random(n) < 0.4, 0, rng.integers(0, max(1, int(0.85 * spec.days)), n))
    order = np.argsort(join_day, kind="stable")
    ids = np.empty(n, dtype=object)
    # IDs are handed out in joining order from a dense range, like the real 12346..18287; five digits while they
    # fit, then as many as needed.
    span = max(n, min(CUSTOMER_IDS, max(6_000, 3 * n)))
    ids[order] = (np.sort(rng.choice(span, n, replace=False)) + FIRST_CUSTOMER).astype(str)
    return Customers(
        ids=ids,
        country=draw(cumulative(CUSTOMER_COUNTRY_P), rng.random(n)),
        activity_cdf=cumulative(rng.lognormal(0.0, 1.2, n)),
        join_day=join_day,
        favourites=draw(products.favourite_cdf, rng.random((n, 4))),
        n_favourites=1 + rng.binomial(3, 0.35, n),
    )


@dataclass(frozen=True)
class Plan:
    """The invoice plan: per invoice its number, customer, country, minute, size, cancellation, services, dirt."""

    number: np.ndarray
    cancel: np.ndarray
    ref: np.ndarray  # for a cancellation, the earlier invoice it reverses
    customer: np.ndarray  # -1 for guests
    country: np.ndarray
    minute: np.ndarray  # minutes since the Unix epoch
    in_season: np.ndarray
    size: np.ndarray
    services: np.ndarray  # bit i set: the invoice has a line of SERVICES[i]
    dirt: np.ndarray


def _day_weights(spec: SyntheticSpec) -> np.ndarray:
    days = np.datetime64(spec.start, "D") + np.arange(spec.days)
    weekday = (days.astype(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    month = days.astype("datetime64[M]").astype(np.int64) % 12
    day_of_month = (days - days.astype("datetime64[M]")).astype(np.int64) + 1
    # Closed between Christmas and the new year, as the real shop was.
    closed = ((month == 11) & (day_of_month >= 23)) | ((month == 0) & (day_of_month <= 3))
    w = WEEKDAY_P[weekday] * MONTH_P[month] * ~closed
    return w if w.sum() > 0 else np.ones(spec.days)


def plan_for(spec: SyntheticSpec, products: ProductRange, cust: Customers) -> Plan:
    """The spec's invoices: who buys when and how much, which are cancellations or dirty."""
    rng = np.random.default_rng([spec.seed, 13, spec.invoices])
    n = spec.invoices
    customer = draw(cust.activity_cdf, rng.random(n))
    customer[rng.random(n) < spec.guest_share] = -1
    guest = customer < 0
    country = np.where(guest, draw(cumulative(GUEST_COUNTRY_P), rng.random(n)), cust.country[np.maximum(customer, 0)])

    # A customer shops only after joining: draw the day from the calendar weights above the join day.
    day_w = _day_weights(spec)
    cdf = np.cumsum(day_w) / day_w.sum()
    before = np.concatenate([[0.0], cdf[:-1]])
    floor = before[np.where(guest, 0, cust.join_day[np.maximum(customer, 0)])]
    day = draw(cdf, floor + rng.random(n) * (1.0 - floor))
    minute_of_day = (draw(cumulative(HOUR_P), rng.random(n)) + HOURS[0]) * 60 + rng.integers(0, 60, n)
    minute = first_minute(spec) + day * 1440 + minute_of_day
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
        candidates = index[index % BLOCK != 0]
        count = min(len(candidates), max(1, round(spec.cancel_share * n)))
        cancel[rng.choice(candidates, count, replace=False)] = True
        valid = np.where(~cancel & ~guest, index, -1)
        previous = np.concatenate([[-1], np.maximum.accumulate(valid)[:-1]])
        cancel &= previous >= index - index % BLOCK
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
        u = rng.random((len(SERVICES), n))
        chance = [
            np.where(uk, 0.004, 0.6),  # POST: foreign orders pay postage
            np.where(guest, 0.08, 0.0),  # DOT: web-shop guests
            np.full(n, 0.003),
            np.full(n, 0.001),
            np.where(guest, 0.0005, 0.0),
            np.where(uk, 0.0, 0.08),  # C2: carriage abroad
        ]
        for bit, p in enumerate(chance):
            services |= np.where(~cancel & (u[bit] < p), 1 << bit, 0)
            if not (services & (1 << bit)).any():  # every kind of dirt shows up at least once
                services[rng.choice(purchases)] |= 1 << bit
        for bit, rate in ((DIRT_QUANTITY, 0.004), (DIRT_EMPTY, 0.004), (DIRT_SPACE, 0.003)):
            count = min(len(purchases), max(1, round(rate * n)))
            dirt[rng.choice(purchases, count, replace=False)] |= bit

    months = minute.astype("datetime64[m]").astype("datetime64[M]").astype(np.int64) % 12
    first = FIRST_INVOICE if FIRST_INVOICE + n <= 1_000_000 else max(100_000, 1_000_000 - n)
    return Plan(
        number=first + index,
        cancel=cancel,
        ref=ref,
        customer=customer,
        country=country,
        minute=minute,
        in_season=SEASON_MONTHS[months],
        size=size,
        services=services,
        dirt=dirt,
    )
