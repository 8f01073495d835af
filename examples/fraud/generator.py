"""Labelled card payments: card holders with spending profiles, and a small share of fraud.

Card holders have a home country, an average amount, favourite merchants and a device.
Fraud comes in incidents, each of one pattern:

- `burst`: a stolen card used 6-15 times within about two minutes, at many merchants,
  abroad, from a new device;
- `big`: one or two payments of 8-25 times the holder's average;
- `new_country`: a few payments in a country the holder never pays in, from a new device.

Normal payments are not all clean either: holders travel, buy big now and then and change
phones, so no single feature gives fraud away. Event time advances `step_ms` per payment
with up to `disorder_ms` of disorder; payments are keyed by `user_id`.

>>> g = FraudGenerator(users=50, seed=1)
>>> rows = list(g.payments(2_000))
>>> sorted(rows[0][0])[:4], 0 < sum(fraud for _, fraud in rows) < 200
(['amount', 'avg_amount', 'category', 'country'], True)
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import Any, Iterator

COUNTRIES = ["DE", "FR", "NL", "ES", "IT", "PL", "SE", "GB", "US", "IE", "BR", "NG", "TH", "RU"]
CATEGORIES = ["grocery", "fuel", "restaurant", "travel", "electronics", "giftcards", "fashion", "online"]
EVERYDAY = ["grocery", "fuel", "restaurant", "fashion", "online"]
RISKY = ["electronics", "giftcards", "online", "travel"]


@dataclass
class FraudGenerator:
    users: int = 2_000
    merchants: int = 600
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    step_ms: float = 40.0              # event time per payment, on average
    disorder_ms: int = 1_000
    incident_rate: float = 0.0015      # fraud incidents started per normal payment
    seed: int = 11

    def payments(self, n: int) -> Iterator[tuple[dict[str, Any], bool]]:
        """`n` (payment, is_fraud) pairs in roughly event-time order."""
        rng = random.Random(self.seed)
        home = [rng.choice(COUNTRIES[:10]) for _ in range(self.users)]
        avg = [round(rng.lognormvariate(3.3, 0.7), 2) for _ in range(self.users)]
        favourites = [[rng.randrange(self.merchants) for _ in range(rng.randint(3, 8))]
                      for _ in range(self.users)]
        category = [rng.choice(EVERYDAY if m % 3 else CATEGORIES) for m in range(self.merchants)]
        pending: list[tuple[int, str, dict[str, Any]]] = []  # fraud payments due later: (ts, id, payment)
        seq = 0

        def payment(u: int, ts: int, amount: float, merchant: int, country: str, seen: bool) -> dict[str, Any]:
            nonlocal seq
            seq += 1
            return {"payment_id": f"p{self.seed}-{seq}", "user_id": f"u{u:05d}",
                    "merchant_id": f"m{merchant:04d}", "category": category[merchant],
                    "amount": round(max(amount, 0.5), 2), "country": country, "home_country": home[u],
                    "avg_amount": avg[u], "device_seen": seen, "ts": ts}

        emitted, i = 0, 0
        while emitted < n:
            now = self.start_ms + int(i * self.step_ms)
            i += 1
            while pending and pending[0][0] <= now and emitted < n:
                yield heapq.heappop(pending)[2], True
                emitted += 1
            if emitted >= n:
                break
            u = rng.randrange(self.users)
            ts = now - rng.randrange(self.disorder_ms + 1)
            if rng.random() < self.incident_rate:
                for p in self._incident(rng, u, ts, avg[u], home[u], payment):
                    heapq.heappush(pending, (p["ts"], p["payment_id"], p))
                continue
            travelling = rng.random() < 0.03
            big = rng.random() < 0.02
            amount = avg[u] * rng.lognormvariate(0.0, 0.5) * (rng.uniform(3, 8) if big else 1.0)
            merchant = rng.choice(favourites[u]) if rng.random() < 0.8 else rng.randrange(self.merchants)
            country = rng.choice(COUNTRIES[:10]) if travelling else home[u]
            yield payment(u, ts, amount, merchant, country, rng.random() > 0.03), False
            emitted += 1

    def _incident(self, rng: random.Random, u: int, ts: int, avg: float, home: str,
                  payment: Any) -> list[dict[str, Any]]:
        kind = rng.choices(["burst", "big", "new_country"], weights=[5, 3, 2])[0]
        abroad = rng.choice([c for c in COUNTRIES if c != home])
        risky = [m for m in range(self.merchants) if m % 3 == 0]
        if kind == "burst":
            k, at = rng.randint(6, 15), ts
            out = []
            for _ in range(k):
                at += int(rng.uniform(3_000, 15_000))
                out.append(payment(u, at, avg * rng.uniform(1.0, 4.0), rng.choice(risky), abroad,
                                   rng.random() < 0.2))
            return out
        if kind == "big":
            return [payment(u, ts + j * int(rng.uniform(20_000, 90_000)), avg * rng.uniform(8, 25),
                            rng.choice(risky), abroad if rng.random() < 0.5 else home, rng.random() < 0.3)
                    for j in range(rng.randint(1, 2))]
        at, out = ts, []
        for _ in range(rng.randint(2, 5)):
            at += int(rng.uniform(20_000, 80_000))
            out.append(payment(u, at, avg * math.exp(rng.uniform(0.3, 1.4)), rng.randrange(self.merchants),
                               abroad, False))
        return out
