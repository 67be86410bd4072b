"""The statistics of the analytics report, from per-session sums (what the report's SQL gives per day and arm):
per-arm metrics, each arm against control with a fixed-horizon 95% interval (delta method, the session as the unit)
and an always-valid one (a Gaussian mixture confidence sequence), the sample-ratio-mismatch check, the sessions still
needed, and the headline sentence.

Pure Python (math and statistics.NormalDist): it runs in the recommend function for GET /analytics.

Every metric is a mean per session (conversion rate, revenue per session) or a ratio of two per-session sums
(click-through = clicks / impressions, revenue per 1,000 impressions): both only need, per arm, the number of
sessions and the sums, squares and cross-products of the per-session counts, which add across days.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

# Per-session counts the report's SQL sums (s_<name>), and the second moments the intervals need.
COUNTS = ("answers", "impressions", "clicks", "add_to_carts", "purchases", "carted", "converted", "revenue")
SQUARES = ("impressions", "clicks", "carted", "converted", "revenue")  # q_<name>: sum of squares
PRODUCTS = (("clicks", "impressions"), ("revenue", "impressions"))  # x_<a>_<b>: sum of products
ALPHA = 0.05
Z = NormalDist().inv_cdf(1 - ALPHA / 2)
POWER_Z = NormalDist().inv_cdf(0.8)
# The lift the "sessions still needed" figure is for (2%), and the p-value under which a split is called broken
# (as GrowthBook and Optimizely: 0.001, so that a daily look at many experiments rarely cries wolf).
TARGET_LIFT = 0.02
SRM_P = 0.001
# The confidence sequence is tightest around this many sessions (its tuning; valid whatever the count).
SEQUENTIAL_SESSIONS = 10_000

# name: (label, numerator, denominator or None for a mean per session, scale)
METRICS: dict[str, tuple[str, str, str | None, float]] = {
    "revenue_per_session": ("revenue per session", "revenue", None, 1.0),
    "click_through": ("click-through rate", "clicks", "impressions", 1.0),
    "add_to_cart_rate": ("add-to-cart rate", "carted", None, 1.0),
    "conversion_rate": ("conversion rate", "converted", None, 1.0),
    "revenue_per_1000_impressions": ("revenue per 1,000 impressions", "revenue", "impressions", 1000.0),
}
PRIMARY = "revenue_per_session"


@dataclass
class Sums:
    """Per-session sums of one group of sessions (an arm, a day, the shop)."""

    sessions: int = 0
    s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0.0))
    q: dict[str, float] = field(default_factory=lambda: dict.fromkeys(SQUARES, 0.0))
    x: dict[str, float] = field(default_factory=lambda: {f"{a}_{b}": 0.0 for a, b in PRODUCTS})

    @classmethod
    def from_row(cls, row: dict) -> Sums:
        """Sums from a row of the report (keys sessions, s_<count>, q_<count>, x_<a>_<b>)."""
        out = cls(int(row.get("sessions") or 0))
        for name in COUNTS:
            out.s[name] = float(row.get(f"s_{name}") or 0.0)
        for name in SQUARES:
            out.q[name] = float(row.get(f"q_{name}") or 0.0)
        for key in out.x:
            out.x[key] = float(row.get(f"x_{key}") or 0.0)
        return out

    def add(self, other: Sums) -> Sums:
        """These sums plus other's (in place; returned)."""
        self.sessions += other.sessions
        for part, theirs in ((self.s, other.s), (self.q, other.q), (self.x, other.x)):
            for key, value in theirs.items():
                part[key] = part.get(key, 0.0) + value
        return self

    def second(self, a: str, b: str) -> float:
        """The sum of a * b over sessions (carted and converted are 0/1: their squares are themselves)."""
        if a == b:
            return self.q[a]
        return self.x.get(f"{a}_{b}", self.x.get(f"{b}_{a}", 0.0))


@dataclass(frozen=True)
class Estimate:
    """A metric of a group of sessions and the variance of that estimate."""

    value: float | None
    variance: float | None


def estimate(sums: Sums, metric: str) -> Estimate:
    """The metric's value and its variance (delta method for ratios; the session as the unit)."""
    _, num, den, scale = METRICS[metric]
    n = sums.sessions
    if n == 0:
        return Estimate(None, None)
    mx = sums.s[num] / n
    vxx = _cov(sums, num, num)
    if den is None:
        return Estimate(scale * mx, None if vxx is None else scale**2 * vxx / n)
    my = sums.s[den] / n
    if my <= 0:
        return Estimate(None, None)
    ratio = mx / my
    vyy, vxy = _cov(sums, den, den), _cov(sums, num, den)
    if vxx is None or vyy is None or vxy is None:
        return Estimate(scale * ratio, None)
    variance = max(0.0, (vxx - 2 * ratio * vxy + ratio**2 * vyy) / (n * my**2))
    return Estimate(scale * ratio, scale**2 * variance)


def _cov(sums: Sums, a: str, b: str) -> float | None:
    n = sums.sessions
    if n < 2:
        return None
    return (sums.second(a, b) - sums.s[a] * sums.s[b] / n) / (n - 1)


@dataclass(frozen=True)
class Comparison:
    """One arm against control on one metric: the relative difference and its intervals."""

    metric: str
    arm: str
    control: str
    lift: float | None  # arm / control - 1
    low: float | None  # fixed-horizon 95% interval
    high: float | None
    seq_low: float | None  # always-valid 95% interval
    seq_high: float | None
    sessions_needed: int | None  # more sessions (in the whole experiment) to detect a 2% lift

    @property
    def significant(self) -> bool:
        """The fixed-horizon interval excludes zero."""
        return self.low is not None and (self.low > 0 or self.high < 0)

    @property
    def sequentially_significant(self) -> bool:
        """The always-valid interval excludes zero: safe to act on however often the report was looked at."""
        return self.seq_low is not None and (self.seq_low > 0 or self.seq_high < 0)

    def as_dict(self) -> dict:
        return {
            "metric": self.metric,
            "arm": self.arm,
            "control": self.control,
            "lift": self.lift,
            "low": self.low,
            "high": self.high,
            "sequential_low": self.seq_low,
            "sequential_high": self.seq_high,
            "significant": self.significant,
            "sequentially_significant": self.sequentially_significant,
            "sessions_needed": self.sessions_needed,
        }


def sequential_multiplier(sessions: int, alpha: float = ALPHA, tuned_for: int = SEQUENTIAL_SESSIONS) -> float:
    """The half-width of the always-valid interval in standard errors, at `sessions` sessions: the normal-mixture
    boundary (Robbins; Howard et al. 2021, eq. 14), which holds at every look at once. Always above the fixed
    interval's 1.96 (its square is at least 2 log(1/alpha) = 5.99 for alpha = 5%)."""
    rho = (-2 * math.log(alpha) + math.log(-2 * math.log(alpha) + 1)) / tuned_for
    x = max(1, sessions) * rho
    return math.sqrt(2 * (1 + 1 / x) * math.log(math.sqrt(x + 1) / alpha))


def compare(
    control: Sums, arm: Sums, metric: str, control_name: str, arm_name: str, shares: tuple[float, float] | None = None
) -> Comparison:
    """arm against control on metric: relative difference, 95% delta-method interval, always-valid interval, and the
    sessions still needed to detect a 2% lift (with the configured shares of the two arms, else equal shares)."""
    a, b = estimate(control, metric), estimate(arm, metric)
    none = Comparison(metric, arm_name, control_name, None, None, None, None, None, None)
    if a.value is None or b.value is None or a.value == 0:
        return none
    lift = b.value / a.value - 1
    if a.variance is None or b.variance is None:
        return Comparison(metric, arm_name, control_name, lift, None, None, None, None, None)
    # Var(b/a) by the delta method, the two arms independent (different sessions).
    variance = b.variance / a.value**2 + b.value**2 * a.variance / a.value**4
    se = math.sqrt(variance)
    n = control.sessions + arm.sessions
    half, seq_half = Z * se, sequential_multiplier(n) * se
    # Sessions needed: per-session relative variance of each arm times its sessions, for a 2% lift at 80% power.
    share_a, share_b = shares if shares and all(shares) else (0.5, 0.5)
    total_share = share_a + share_b
    per_session = (a.variance * control.sessions / a.value**2) / (share_a / total_share) + (
        b.variance * arm.sessions / a.value**2
    ) / (share_b / total_share)
    needed_pair = (Z + POWER_Z) ** 2 * per_session / TARGET_LIFT**2
    # None needed once the fixed interval excludes zero: the answer is clear.
    clear = lift - half > 0 or lift + half < 0
    more = 0 if clear else max(0, math.ceil(needed_pair - n))
    # In the whole experiment: the pair holds total_share of its sessions.
    more = math.ceil(more / total_share) if total_share else more
    return Comparison(
        metric, arm_name, control_name, lift, lift - half, lift + half, lift - seq_half, lift + seq_half, more
    )


def chi2_sf(x: float, df: int) -> float:
    """P(chi-square with df degrees of freedom > x): the regularized upper incomplete gamma Q(df/2, x/2)."""
    if x <= 0:
        return 1.0
    a, z = df / 2.0, x / 2.0
    if z < a + 1:  # series for P, then Q = 1 - P
        term = total = 1.0 / a
        k = a
        for _ in range(1000):
            k += 1
            term *= z / k
            total += term
            if term < total * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-z + a * math.log(z) - math.lgamma(a)))
    # continued fraction for Q (Lentz)
    tiny = 1e-300
    b = z + 1 - a
    c, d = 1 / tiny, 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h * math.exp(-z + a * math.log(z) - math.lgamma(a))


@dataclass(frozen=True)
class RatioCheck:
    """The sample-ratio-mismatch check: sessions per arm against the configured shares."""

    chi2: float
    p_value: float
    expected: dict[str, float]
    observed: dict[str, int]

    @property
    def broken(self) -> bool:
        return self.p_value < SRM_P

    def as_dict(self) -> dict:
        return {
            "chi2": self.chi2,
            "p_value": self.p_value,
            "broken": self.broken,
            "observed": self.observed,
            "expected": self.expected,
        }


def sample_ratio(observed: dict[str, int], shares: dict[str, float]) -> RatioCheck | None:
    """Chi-square of sessions per arm against the shares (percent, or any weights); None with fewer than 2 arms or
    no sessions."""
    arms = [a for a in shares if shares[a] > 0]
    total = sum(observed.get(a, 0) for a in arms)
    if len(arms) < 2 or total == 0:
        return None
    weight = sum(shares[a] for a in arms)
    expected = {a: total * shares[a] / weight for a in arms}
    chi2 = sum((observed.get(a, 0) - expected[a]) ** 2 / expected[a] for a in arms)
    return RatioCheck(chi2, chi2_sf(chi2, len(arms) - 1), expected, {a: observed.get(a, 0) for a in arms})


def figures(sums: Sums) -> dict:
    """The figures of a group of sessions, each metric with its 95% interval."""
    out: dict = {
        "sessions": sums.sessions,
        "answers": int(sums.s["answers"]),
        "impressions": int(sums.s["impressions"]),
        "clicks": int(sums.s["clicks"]),
        "add_to_carts": int(sums.s["add_to_carts"]),
        "purchases": int(sums.s["purchases"]),
        "revenue": round(sums.s["revenue"], 2),
    }
    for metric in METRICS:
        e = estimate(sums, metric)
        half = None if e.variance is None else Z * math.sqrt(e.variance)
        out[metric] = e.value
        out[f"{metric}_low"] = None if half is None else e.value - half
        out[f"{metric}_high"] = None if half is None else e.value + half
    return out


def percent(value: float) -> str:
    """A relative difference as a signed percentage with one decimal."""
    return f"{value * 100:+.1f}%"


def headline(comparison: Comparison | None, srm: RatioCheck | None = None) -> str:
    """The plain sentence on top of the report, on revenue per session."""
    if srm is not None and srm.broken:
        return (
            f"the split is broken: sessions per arm differ from the configured shares (chi-square p = "
            f"{srm.p_value:.1g}); fix the assignment before reading any result"
        )
    if comparison is None or comparison.lift is None:
        return "not enough data yet: no sessions with recommendations in both arms"
    c = comparison
    if c.low is None:
        return "not enough data yet: too few sessions to compute an interval"
    more = f"about {_round_sessions(c.sessions_needed)} more sessions" if c.sessions_needed else "more sessions"
    if not c.significant:
        return f"not enough data yet: {more} (to detect a 2% difference in revenue per session)"
    word = "more" if c.lift > 0 else "less"
    text = (
        f"{c.arm} sells {abs(c.lift) * 100:.1f}% {word} per session than {c.control} "
        f"(95%: {percent(c.low)} to {percent(c.high)})"
    )
    if not c.sequentially_significant:
        text += "; not yet sure when looked at every day: keep it running"
    return text


def _round_sessions(n: int) -> str:
    if n >= 1000:
        return f"{round(n, -3):,}"
    return f"{max(n, 1):,}"
