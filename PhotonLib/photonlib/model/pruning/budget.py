"""The kept-token budget of the fixed-count pruners (random-k, VisionZip, HiPrune) and of the
benchmark: one rounding rule, so a budget of 0.05 keeps the same count everywhere.

ITS has no budget: its count follows from the question (the learned threshold).
"""

from __future__ import annotations

from photonlib.errors import ConfigurationError


def check_budget(owner: str, budget: float | None) -> float:
    """``budget`` as a float, or a :class:`ConfigurationError` naming ``owner`` when it is not a
    kept fraction in (0, 1]."""
    if budget is None or not 0 < budget <= 1:
        raise ConfigurationError(
            f"{owner} needs pruning_budget, the kept fraction of visual tokens in (0, 1] (e.g. 0.5), got {budget}"
        )
    return float(budget)


def kept_count(visual: int, budget: float, *, drop_at_least_one: bool = False) -> int:
    """Tokens a budget keeps out of ``visual``: ``round(visual * budget)``, at least 1 and at
    most ``visual`` (``visual - 1`` with ``drop_at_least_one``, for a comparison that must prune)."""
    ceiling = visual - 1 if drop_at_least_one else visual
    return min(ceiling, max(1, round(visual * budget)))
