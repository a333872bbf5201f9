"""The chapter's figures checked against the exact values, computed once for every place that shows them.

The Calculator's textbook table, the Learn tab's method cards and the decision helper's notes all read
``checked_claims``; a method finds its own through ``Method.textbook`` (QLoRA answers to LoRA's figure,
since it trains LoRA's parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from ..costs import specs
from ..costs.textbook import CLAIMS, TEXTBOOK_MODEL, Claim
from ..methods import METHODS


@dataclass(frozen=True)
class CheckedClaim:
    claim: Claim
    exact: float          # the exact parameters, or FLOPs per token, on the chapter's model

    @property
    def ratio(self) -> float:
        """Claim ÷ exact: 1 when the chapter is right."""
        return self.claim.claimed / self.exact

    @property
    def unit(self) -> str:
        return "parameters" if self.claim.quantity == "params" else "FLOPs per token"


@lru_cache(maxsize=1)
def checked_claims() -> tuple[CheckedClaim, ...]:
    """Every claim of the chapter beside its exact value (formulas on Llama-2-7B, checked against PEFT in tests)."""
    from . import calculate

    spec = specs.catalog_spec(TEXTBOOK_MODEL)
    checked = []
    for claim in CLAIMS:
        result = calculate(spec, claim.method, METHODS[claim.method].parse_options(claim.options), exact_mode="skip")
        exact = (result.trainable_formula if claim.quantity == "params"
                 else result.flops.inference_overhead_per_token_unmerged)
        checked.append(CheckedClaim(claim, exact))
    return tuple(checked)


def claims_of(method) -> list[CheckedClaim]:
    """The chapter's figures a method answers to (its ``textbook`` key), checked."""
    return [c for c in checked_claims() if method.textbook and c.claim.method == method.textbook]
