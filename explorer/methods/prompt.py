"""Prompt tuning (Lester et al. 2021, "The Power of Scale for Parameter-Efficient Prompt Tuning").

n learned input embeddings are prepended to every sequence: n·d_model trainable parameters.
"""

from dataclasses import dataclass

from ..options import option
from .base import Adaptation, Method, Term


@dataclass
class PromptOptions:
    num_virtual_tokens: int = option(20, "Number of learned soft tokens prepended to the input.", min=1, max=1024)


def apply(model, spec, options):
    from peft import PromptTuningConfig, get_peft_model

    return get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM",
                                                    num_virtual_tokens=options.num_virtual_tokens))


METHOD = Method(
    name="prompt", title="Prompt tuning", where="input embeddings (learned soft tokens before the prompt)",
    explanation="Learns a few 'soft tokens': vectors in the embedding space that are prepended to every "
                "input. The model itself is unchanged.",
    when_to_use="Many tasks on one frozen model, when tasks should compose by concatenating prompts; works "
                "best on large models.",
    default_lr=3e-2, options_type=PromptOptions, mergeable=False,
    merge_reason="Cannot merge: it adds extra tokens to every input, which no change of weights can replace.",
    uses_peft=True,
    terms=lambda spec, o: [Term("prompt embeddings", o.num_virtual_tokens * spec.arch.hidden,
                                f"{o.num_virtual_tokens}·{spec.arch.hidden} = "
                                f"{o.num_virtual_tokens * spec.arch.hidden:,}")],
    adaptation=lambda spec, o: Adaptation(prompt_tokens=o.num_virtual_tokens),
    apply=apply, textbook="prompt", peft_type="PROMPT_TUNING", combinations=("concat",), artifact="soft prompt")
