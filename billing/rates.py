"""Prices and the arithmetic of billing. Pure functions over integers: no floats touch money.

Rates are integer nano-dollars per second per unit (one GPU); money is integer micro-dollars.
Billed seconds are the interval's length rounded up to a whole second, minimum one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Mapping

from burstlab.errors import ConfigError

NS_PER_S = 1_000_000_000
GIB = 1 << 30

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
    # Sandbox memory: per GiB-second of its memory limit.
    "MEM": 0.00000222,
}
# A GPU type with no price of its own (seen through NVML, say) is billed at this rate until configured.
FALLBACK_USD_PER_S = 0.001097


def _scaled(usd: float | int | str | Decimal, scale: int, what: str) -> int:
    try:
        value = Decimal(str(usd))
    except InvalidOperation:
        raise ConfigError(f"{what} {usd!r} is not a number of dollars (e.g. 0.001097 or 5).") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"{what} {usd!r} must be a finite number of dollars, 0 or more.")
    return int((value * scale).to_integral_value(ROUND_HALF_UP))


def usd_to_nusd(usd: float | int | str | Decimal) -> int:
    """Dollars per second as given in config -> integer nano-dollars per second (decimal, half up)."""
    return _scaled(usd, 10**9, "A rate of")


def usd_to_microusd(usd: float | int | str | Decimal) -> int:
    """Dollars (a budget) -> integer micro-dollars, from the number's decimal digits, not its binary float."""
    return _scaled(usd, 10**6, "An amount of")


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
            usd[str(key).upper()] = value
        return cls({k: usd_to_nusd(v) for k, v in usd.items()})

    def rate(self, resource: str) -> int:
        """Nano-dollars per second for one unit of ``resource``."""
        return self.nusd_per_s.get(resource.upper(), usd_to_nusd(FALLBACK_USD_PER_S))

    def sandbox_rate(self, cpus: int, memory_bytes: int) -> int:
        """Nano-dollars per second *per CPU* of a sandbox with ``cpus`` CPUs and ``memory_bytes`` of memory.

        The memory's price is shared out over the CPUs (rounded up to a whole nano-dollar per second),
        so the interval keeps one rate and ``quantity`` stays its CPU count.
        """
        cpus = max(1, int(cpus))
        memory = max(0, int(memory_bytes)) * self.rate("MEM")
        return self.rate("CPU") + -(-memory // (GIB * cpus))


__all__ = ["DEFAULT_USD_PER_S", "GIB", "NS_PER_S", "RateCard", "billed_seconds", "cost_microusd", "usd_to_microusd",
           "usd_to_nusd"]
