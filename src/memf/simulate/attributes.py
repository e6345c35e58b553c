"""Numeric attributes (paper Tables 1-3) as noisy monotone functions of the latents, heavy-tailed like the platform's.

Counts are log-normal: an anchor's fans follow reach, views/likes/comments follow fans and skill; prices are
log-normal around their category's median; the coupon price is the price less a discount that deepens with the
item's discount latent, always strictly below the price; a stream's duration in seconds is log-normal.
"""

from __future__ import annotations

import math

import numpy as np

from memf.simulate.vocab import CATEGORIES


def _phi(x: float) -> float:
    """Standard normal CDF."""
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def anchor_numeric(rng: np.random.Generator, reach: float, skill: float) -> dict[str, float]:
    """Paper Table 1 numeric attributes of one anchor."""
    e = rng.standard_normal(8)
    fans = round(math.exp(9.5 + 1.6 * reach + 0.3 * e[0]))
    views = round(fans * math.exp(-0.8 + 0.5 * skill + 0.4 * e[1]))
    avg_like = round(views * math.exp(-1.5 + 0.4 * skill + 0.3 * e[2]))
    avg_comment = round(views * math.exp(-4.0 + 0.5 * skill + 0.3 * e[3]))
    lives = max(1, round(math.exp(3.5 + 0.5 * e[4])))  # streams in the anchor's history
    return {
        "avg30DayView": float(views),
        "avgComment": float(avg_comment),
        "avgLike": float(avg_like),
        "commentCount": float(round(avg_comment * lives * math.exp(0.2 * e[5]))),
        "fansCount": float(fans),
        "followTopCount": float(round(fans * math.exp(-3.0 + 0.4 * skill + 0.3 * e[6]))),
        "likeCount": float(round(avg_like * lives * math.exp(0.2 * e[7]))),
        "score": float(round(min(100.0, max(0.0, 72.0 + 8.0 * skill + 3.0 * rng.standard_normal())), 1)),
    }


def item_numeric(rng: np.random.Generator, price_level: float, discount: float, category: int) -> dict[str, float]:
    """Paper Table 2 numeric attributes of one commodity: list price and coupon price (CNY)."""
    median = CATEGORIES[category].median_price
    price = math.exp(math.log(median) + 0.45 * price_level + 0.15 * rng.standard_normal())
    price = max(1.9, round(price) - 0.1)  # shop prices end in .9
    fraction = 0.03 + 0.5 * _phi(discount + 0.25 * rng.standard_normal())  # share of the price taken off
    coupon = min(round(price * (1.0 - fraction), 2), round(price - 0.01, 2))
    return {"couponPrice": float(coupon), "price": float(round(price, 2))}


def room_numeric(rng: np.random.Generator, duration: float) -> dict[str, float]:
    """Paper Table 3 numeric attribute of one stream: its duration in seconds (median about 3 hours)."""
    return {"duration": float(round(math.exp(math.log(3 * 3600) + 0.5 * duration + 0.1 * rng.standard_normal())))}
