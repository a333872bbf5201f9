"""Trainable tokens (PEFT's TrainableTokensConfig, ``peft.tuners.trainable_tokens``): a few rows of the embedding
matrix train, the rest of the model stays frozen.

PEFT keeps a trained copy of the chosen tokens' rows (``trainable_tokens_delta``: tokens × width) and, at every
forward, writes them into a copy of the embedding matrix (index_copy) before the lookup. Where the LM head shares
the embedding tensor (tied embeddings: SmolLM2, Gemma, GPT-2), PEFT wraps the head with an adapter tied to the
embedding's, so the same rows are the tokens' output rows too, counted once. The use: teaching a model tokens it
has never used well, above all a base model's chat-template markers (<|im_start|>, <start_of_turn>, ...), whose
embeddings pretraining left untrained, without training the whole vocabulary.

The default tokens are the chat format itself: the tokens the model's chat template writes around the messages
(its special markers, role names and separators, read by rendering a conversation whose contents are placeholders).
A separator such as the newline also occurs inside contents, so its trained row changes those too. Measured on the
tiny test model's memorisation run (25 steps): training only its two special markers lowered the loss 15.0 → 13.6,
the template's seven tokens 15.0 → 11.5. A model known only by its config (a catalog entry) has no tokenizer here,
so its default is the special tokens its config names (bos, eos, pad ids); token_indices lists any others.

FLOPs: the lookup and the row copy are not matmuls. But the trained rows sit below every layer, so every product of
the network pays its input-gradient matmul in backward (as prompt tuning); a tied head also pays its weight
gradient (F.linear with the rebuilt matrix: torch forms the whole vocab × width gradient, and the copy keeps its
trained rows). Merged, the rows are written into the embedding: no overhead.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from .. import settings
from ..errors import ExplorerError
from ..options import option
from . import targets as peft_targets
from .base import Adaptation, Method, Term

MARK = "\x00"  # stands for each message's content: what is left of the rendered chat is the template's own text
SAMPLE_CHAT = [{"role": "system", "content": MARK}, {"role": "user", "content": MARK},
               {"role": "assistant", "content": MARK}]


@dataclass
class TrainableTokensOptions:
    token_indices: str = option("", "Token ids whose embedding rows train, separated by commas or spaces (PEFT's "
                                "TrainableTokensConfig.token_indices). Empty: the tokens the chat template writes "
                                "around messages (markers, role names, separators), read from the model's "
                                "tokenizer; for a catalog model, the bos/eos/pad ids its config names.")
    target_modules: str = option("", "PEFT's target_modules: empty = the input embeddings (tied to the LM head "
                                 "where the model ties them); the LM head may be named too on an untied model.")


@functools.lru_cache(maxsize=16)
def template_tokens(folder: str) -> tuple[tuple[int, ...], tuple[str, ...]] | None:
    """The tokens a model's chat template writes around the messages (ids and texts, in order of first use), or
    None when the folder has no tokenizer with a chat template. Each piece of template text between two messages
    is tokenized alone, so no content token is mixed in."""
    from transformers import AutoTokenizer

    path = Path(folder)
    if not ((path / "tokenizer.json").is_file() or (path / "tokenizer_config.json").is_file()):
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception:  # any loader error: no usable tokenizer, so the config's ids are the default
        return None
    if not getattr(tokenizer, "chat_template", None):
        return None
    text = None
    for chat in (SAMPLE_CHAT, SAMPLE_CHAT[1:]):  # some templates (Gemma's) refuse a system turn
        try:
            text = tokenizer.apply_chat_template(chat, tokenize=False)
            break
        except Exception:
            continue
    if not text or MARK not in text:
        return None
    ids = tuple(dict.fromkeys(i for piece in text.split(MARK) if piece
                              for i in tokenizer(piece, add_special_tokens=False)["input_ids"]))
    return (ids, tuple(tokenizer.convert_ids_to_tokens(list(ids)))) if ids else None


def config_tokens(spec) -> tuple[int, ...]:
    found = []
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):  # transformers' defaults where config.json is silent
        value = getattr(spec.config, key, None)
        found += value if isinstance(value, list) else [value]
    return tuple(dict.fromkeys(i for i in found if isinstance(i, int) and 0 <= i < spec.arch.vocab))


def tokens(spec, options) -> tuple[tuple[int, ...], str]:
    """The token ids that train, and where they came from, in words."""
    vocab = spec.arch.vocab
    if options.token_indices.strip():
        try:
            ids = tuple(dict.fromkeys(int(v) for v in options.token_indices.replace(",", " ").split()))
        except ValueError:
            raise ExplorerError(f"token_indices must be token ids separated by commas or spaces, got "
                                f"{options.token_indices[:60]!r}.") from None
        wrong = [i for i in ids if not 0 <= i < vocab]
        if wrong:
            raise ExplorerError(f"token_indices: this model's vocabulary has ids 0 to {vocab - 1}; "
                                f"{', '.join(map(str, wrong[:5]))} is not one of them.")
        return ids, "token_indices"
    folder = settings.models_cache() / spec.name
    found = template_tokens(str(folder)) if spec.source == "runnable" and folder.is_dir() else None
    if found:
        return found[0], f"the chat template's tokens {' '.join(found[1])}"
    ids = config_tokens(spec)
    if not ids:
        raise ExplorerError("This model's config names no special token and no tokenizer with a chat template was "
                            "found: list token_indices.")
    return ids, "the config's bos/eos/pad tokens"


def targets(spec, options) -> list[str]:
    """The modules PEFT wraps with trained rows of their own: the input embeddings by default; an LM head named in
    target_modules. A head tied to the embeddings follows the embeddings' rows (PEFT ties the two adapters)."""
    arch = spec.arch
    asked = peft_targets.peft_form(options.target_modules) or [arch.embed]
    names = list(peft_targets.match(arch, "trainable_tokens", asked).targets)
    other = [n for n in names if n not in (arch.embed, arch.head)]
    if other:
        raise ExplorerError(f"Trainable tokens train rows of the embeddings (or the LM head); {other[0]} is a "
                            f"{arch.by_name[other[0]].cls}. Leave target_modules empty for {arch.embed}.")
    if arch.tied and arch.head in names:
        # PEFT 0.21.2 wraps such a head twice when the embeddings are named too, and its forward then fails ("wraps
        # an unknown layer type"); named alone, its merge would write the rows into the shared embeddings as well
        raise ExplorerError(f"This model ties {arch.head} to {arch.embed}: the head's rows are the embeddings' rows "
                            f"and follow them, so target {arch.embed} only (leave target_modules empty).")
    return names


def tied_head(spec, options) -> bool:
    """The LM head shares the embedding tensor and PEFT ties its adapter to the embeddings' (no rows of its own)."""
    arch = spec.arch
    return bool(arch.tied and arch.head and arch.embed in targets(spec, options))


def terms(spec, options) -> list[Term]:
    arch = spec.arch
    ids, source = tokens(spec, options)
    out = []
    for name in targets(spec, options):
        width = arch.by_name[name].in_features if name == arch.head else arch.hidden
        tied = " (tied to the LM head)" if name == arch.embed and tied_head(spec, options) else ""
        count = f"{len(ids)} token{'s' if len(ids) > 1 else ''}"
        out.append(Term(f"{arch.local_name(name)}{tied}", len(ids) * width,
                        f"{count} ({source}) × {width} = {len(ids) * width:,}"))
    return out


def adaptation(spec, options) -> Adaptation:
    """The trained modules, and what autograd keeps of the head's rebuilt weight (saved_per_step): a wrapped LM head
    (tied, or named) runs ``F.linear(x, W)`` with W = its weight with the trained rows written in (index_copy:
    ``peft.tuners.trainable_tokens.layer.TrainableTokensLayer.forward_adapters``), a new vocab × width tensor that
    F.linear keeps for its input's gradient, which exists where the embeddings train below it. The embeddings'
    own rebuilt matrix is not kept (the lookup's backward reads only the ids, counted with the activations). Not
    counted: the trained tokens' int64 index, 8 bytes a token per wrapped layer."""
    arch = spec.arch
    names = set(targets(spec, options))
    if tied_head(spec, options):
        names.add(arch.head)  # its weight (the rebuilt embedding matrix) has a gradient
    rebuilt = arch.vocab * arch.by_name[arch.head].in_features if arch.head in names and arch.embed in names else 0
    return Adaptation(trainable_modules=frozenset(names), saved_per_step=rebuilt)


def apply(model, spec, options):
    from peft import TrainableTokensConfig, get_peft_model

    ids, _ = tokens(spec, options)
    return get_peft_model(model, TrainableTokensConfig(token_indices=list(ids), target_modules=targets(spec, options)))


METHOD = Method(
    name="trainable_tokens", title="Trainable tokens", where="a few rows of the embeddings (chosen tokens only)",
    explanation="Freezes the whole model except the embedding rows of a few chosen tokens, by default the tokens "
                "of the chat format (its markers and role names): the model learns what those tokens mean (and, "
                "with tied embeddings, when to write them) and nothing else.",
    when_to_use="Teaching a base model its chat format's markers, or new tokens added to the vocabulary, without "
                "training the whole embedding matrix; too few parameters to learn a task's content.",
    default_lr=1e-2, options_type=TrainableTokensOptions, mergeable=True,
    merge_reason="The trained rows are written into the embedding matrix (and the tied head with it): the merged "
                 "model is the base with those rows replaced, at exactly the base's cost.",
    uses_peft=True, terms=terms, adaptation=adaptation, apply=apply, validate=lambda spec, options: terms(spec, options),
    peft_type="TRAINABLE_TOKENS", artifact="trained token rows",
    in_default_race=False,
    literature=("PEFT's documentation (TrainableTokensConfig) says it trains new or existing tokens without "
                "training the full embedding matrix, reducing both storage and working memory against training the "
                "embeddings fully.",))
