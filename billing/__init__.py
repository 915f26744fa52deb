"""Metering and money: the rate card, the ledger, the meter that writes intervals into it, budget
decisions and reports.

A leaf package: it imports nothing else of burstlab but the wire format and errors.
"""

from .budgets import decide
from .ledger import Ledger, open_ledger
from .meter import Meter
from .rates import RateCard, billed_seconds, cost_microusd

__all__ = ["Ledger", "Meter", "RateCard", "billed_seconds", "cost_microusd", "decide", "open_ledger"]
