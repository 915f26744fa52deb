"""Prices and the arithmetic of billing. Pure functions over integers: no floats touch money.

Rates are integer nano-dollars per second per unit (one GPU); money is integer micro-dollars.
Billed seconds are the interval's length rounded up to a whole second, minimum one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

NS_PER_S = 1_000_000_000

# Public per-second list prices (US$ per GPU-second), late 2026; override with c.BurstLab.rates.
DEFAULT_USD_PER_S = {
    "B200": 0.001736,
    "H200": 0.001261,
    "H100": 0.001097,
    "A100-80GB": 0.000694,
    "A100": 0.000583,
    "L40S": 0.000542,
    "L40": 0.000464,
    "A6000": 0.000306,
    "A10G": 0.000306,
    "A10": 0.000306,
    "L4": 0.000222,
    "V100": 0.000344,
    "T4": 0.000164,
    # Sandboxes and CPU-only fan-out: per CPU-second.
    "CPU": 0.0000131,
}
# A GPU type with no price of its own (seen through NVML, say) is billed at this rate until configured.
FALLBACK_USD_PER_S = 0.001097


def usd_to_nusd(usd: float) -> int:
    """Dollars per second as given in config -> integer nano-dollars per second (rounded)."""
    return int(round(float(usd) * 1e9))


def billed_seconds(start_ns: int, stop_ns: int) -> int:
    """Whole seconds billed for an interval: rounded up, minimum 1."""
    length = max(0, int(stop_ns) - int(start_ns))
    return max(1, -(-length // NS_PER_S))


def cost_microusd(billed_s: int, rate_nusd_per_s: int, quantity: int = 1) -> int:
    """Micro-dollars for ``billed_s`` seconds of ``quantity`` units at a nano-dollar rate, rounded up."""
    nano = int(billed_s) * int(rate_nusd_per_s) * int(quantity)
    return -(-nano // 1000)


@dataclass(frozen=True)
class RateCard:
    """Per-second prices by resource (GPU type, or "CPU")."""

    nusd_per_s: Mapping[str, int] = field(default_factory=dict)

    @classmethod
    def from_config(cls, overrides: Mapping[str, float] | None = None) -> "RateCard":
        usd = dict(DEFAULT_USD_PER_S)
        for key, value in (overrides or {}).items():
            usd[str(key).upper()] = float(value)
        return cls({k: usd_to_nusd(v) for k, v in usd.items()})

    def rate(self, resource: str) -> int:
        """Nano-dollars per second for one unit of ``resource``."""
        return self.nusd_per_s.get(resource.upper(), usd_to_nusd(FALLBACK_USD_PER_S))


__all__ = ["DEFAULT_USD_PER_S", "NS_PER_S", "RateCard", "billed_seconds", "cost_microusd", "usd_to_nusd"]
