"""The seed chapter's figures for Llama-2-7B, as claims to check against exact numbers.

Source: shared/seed/peft-family-chapter.txt (Section 19.3). Each claim names the method and
options it describes, the figure the chapter gives, and why the exact value differs. Pages name the
chapter once, where it first appears (``SECTION_NAMED``), and call it ``SECTION`` after that.
"""

from __future__ import annotations

from dataclasses import dataclass

TEXTBOOK_MODEL = "llama-2-7b"
SECTION_TITLE = "The PEFT family — adapters, prefix, IA³, prompt tuning"
SECTION_NAMED = f"the textbook section “{SECTION_TITLE}”"   # the first mention on a page
SECTION = "the textbook section"                            # every later one


@dataclass(frozen=True)
class Claim:
    key: str
    what: str
    method: str
    options: dict
    claimed: float
    quantity: str          # "params" or "adapter_flops"
    reason: str


CLAIMS = (
    Claim("prompt", "Prompt tuning, 20 tokens", "prompt", {"num_virtual_tokens": 20}, 80e3, "params",
          "Right: 20·4096 = 81,920; the textbook section rounds it."),
    Claim("prefix_164k", "Prefix tuning, 20 tokens (\"164K\")", "prefix", {"num_virtual_tokens": 20}, 164e3, "params",
          "Counts one head's keys and values (d_k = 128); every layer stores keys and values for all 32 heads: "
          "2·4096 per virtual token per layer."),
    Claim("prefix_2.5m", "Prefix tuning, 20 tokens (\"2.5M\")", "prefix", {"num_virtual_tokens": 20}, 2.5e6, "params",
          "Counts 20·4096 per layer: keys or values, not both (×2)."),
    Claim("ia3", "IA³ on keys, values and the FFN", "ia3", {}, 650e3, "params",
          "Uses 5·d_model per layer; the exact sum is 4096 + 4096 + 11008 (the FFN width is 2.69·d_model)."),
    Claim("lora", "LoRA r=8 on all 7 linear layers", "lora", {"r": 8, "target_preset": "all-linear"}, 5e6, "params",
          "Treats every matrix as 4096×4096 and still undercounts: gate, up and down are 4096×11008, so the "
          "update costs 8·(4096+11008) each; 32 layers of 7 updates make ~20M."),
    Claim("adapter", "Houlsby adapters, d_a=64, two per block", "adapter", {"bottleneck_dim": 64}, 1e6, "params",
          "2·2·4096·64 ≈ 1M is one block's two adapters; there are 32 blocks (and biases)."),
    Claim("adapter_flops", "Houlsby adapters' extra FLOPs per token", "adapter", {"bottleneck_dim": 64}, 33e6,
          "adapter_flops",
          "Counts 2·d·d_a per adapter: a multiply-add is 2 FLOPs and each adapter has two projections, "
          "so each costs 4·d·d_a."),
)


@dataclass(frozen=True)
class OutcomeClaim:
    """A claim of the chapter about how methods compare after real training: a race can test it.

    ``test`` names how (explorer.race.reading applies it): "matches" (the subject's held-out loss is no
    worse than each other's at a similar parameter count), "weaker" (on the held-out loss's fall or on the
    task score's rise, the subject gets less than ``threshold`` × the best other's), "close" (at least
    ``threshold`` × it on both), "low_rank" (a rank ≤ 4 is within ``threshold`` of the best rank of the
    subject's sweep), "forgets_more" (the subject loses at least ``threshold`` more of the forgetting probe
    than the others; every entrant's probe is listed)."""

    key: str
    quote: str
    test: str
    subject: str
    others: tuple = ()
    threshold: float = 0.0


OUTCOME_CLAIMS = (
    OutcomeClaim("matches_soft_prompts", "At any scale, LoRA outperforms or matches prefix/prompt tuning, with "
                 "similar or fewer parameters.", "matches", "lora", ("prompt", "prefix")),
    OutcomeClaim("prompt_small_models", "At smaller scale ... Prompt tuning struggles because the input-only "
                 "adaptation isn't enough to reshape the model's effective behaviour.", "weaker", "prompt",
                 ("lora",), 0.5),
    OutcomeClaim("ia3_small_data", "IA³ works surprisingly well for small fine-tuning datasets (1K-10K "
                 "examples).", "close", "ia3", ("lora",), 0.8),
    # The section's summary lists "rank-4 sufficiency" among the LoRA maths it builds on; in plain words:
    OutcomeClaim("low_rank", "A LoRA rank of 4 is already enough: very low ranks suffice (the section's "
                 "summary, in plain words).", "low_rank", "lora", (), 0.05),
    OutcomeClaim("forgetting", "Robust to overfitting. The rank constraint acts as a regulariser ... risk of "
                 "catastrophic forgetting on small data (full fine-tuning).", "forgets_more", "full", ("lora",),
                 0.1),
)
