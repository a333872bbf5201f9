"""Compare for a feature-extraction run (a classifier or embedding head): what each model says about each text.

A head produces labels or vectors, not replies, so its comparison is a table instead of three generated
columns:
  classifier  each held-out text (or each text typed) with its true label and the label predicted by the
              majority-class baseline, the trained head, and the run's LoRA sequence classifier;
  embedding   each held-out sentence a with the sentence b that the untrained mean-pooled base and the trained
              head retrieve among all held-out b's (right when it is a's own paraphrase).
Models are rebuilt from the run's saved files (the head with the options it was trained with, which hold the
number of classes the data had) and kept in the shared least-recently-used budget, like Compare's sessions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..data import chat, sources
from ..errors import ExplorerError
from ..methods.own_modules import CONFIG_FILE, load_trainable
from ..models import loading
from ..models.loaded import LOADED, tensor_bytes
from ..train import head_eval, heads, runs, seqcls
from ..train.runs import Run

MAX_TEXTS = 64
KINDS = {"labelled": "classification", "pairs": "embedding"}
MODELS = {"classification": ("majority class", "trained head", seqcls.TITLE),
          "embedding": ("base (mean-pooled, untrained)", "trained head")}


def head_kind(run: Run) -> str | None:
    """"classification" or "embedding" for a head run, None for a run that generates text."""
    return KINDS.get(run.method.data_kind(run.method.parse_options(run.options)))


@dataclass
class HeadSession:
    run: Run
    model: object             # the trained head on its frozen backbone
    tokenizer: object
    device: str
    labels: list
    lora: object | None       # the LoRA sequence classifier trained beside a classifier head


def _load(run: Run) -> HeadSession:
    adapter = run.folder / runs.ADAPTER_DIR
    try:
        saved = json.loads((adapter / CONFIG_FILE).read_text(encoding="utf-8"))
        options = run.method.parse_options(saved["options"])  # as built: num_classes is the data's
        labels_file = adapter / heads.LABELS_FILE
        labels = json.loads(labels_file.read_text(encoding="utf-8")) if labels_file.is_file() else []
    except (OSError, ValueError, KeyError, TypeError, ExplorerError) as error:
        raise ExplorerError(f"The head of run {run.run_id} cannot be read (missing or corrupt files): "
                            f"{str(error)[:200]}") from None
    loaded = loading.load_fresh(run.config.model, run.method, options, run.config.precision)
    model = run.method.apply(loaded.model, loaded.spec, options)
    try:
        load_trainable(model, str(adapter))
    except ValueError as error:
        raise ExplorerError(f"The head of run {run.run_id} cannot be loaded: {str(error)[:300]}") from None
    lora = None
    if labels and (adapter / seqcls.FOLDER).is_dir():
        lora = seqcls.load(run.config, labels, adapter)[0]
    return HeadSession(run, model.eval(), loaded.tokenizer, loaded.device, labels, lora)


def session(run: Run) -> HeadSession:
    return LOADED.get("compare-head:" + run.run_id, lambda: _load(run),
                      lambda s: tensor_bytes(s.model) + (tensor_bytes(s.lora) if s.lora is not None else 0))


def heldout_texts(run: Run, limit: int) -> list[str]:
    """The held-out texts (classifier) or sentences a (embedding) of a head run."""
    kind = run.method.data_kind(run.method.parse_options(run.options))
    _, heldout = sources.load_rows(run.config.dataset, kind)
    return [row["text" if kind == "labelled" else "a"] for row in heldout[:limit]]


def _features(s: HeadSession, texts: list[str]):
    encoded, _ = head_eval.encode_texts(s.tokenizer, texts, s.run.config.seq_len)
    return head_eval.pooled_matrix(s.model.backbone, encoded, chat.pad_id(s.tokenizer), s.device)


def run_comparison(run: Run, texts=None) -> dict:
    """The table Compare shows for a head run, as plain JSON-able values. ``texts``: texts to classify (one per
    line, or a list; empty: every held-out row, up to 64)."""
    import torch

    kind = head_kind(run)
    data_kind = run.method.data_kind(run.method.parse_options(run.options))
    train, heldout = sources.load_rows(run.config.dataset, data_kind)
    if isinstance(texts, str):
        texts = texts.splitlines()
    texts = [t for t in (texts or []) if t and str(t).strip()]
    if len(texts) > MAX_TEXTS:
        raise ExplorerError(f"{len(texts)} texts given; compare at most {MAX_TEXTS} at once.")
    s = session(run)
    rows = []
    with torch.no_grad():
        if kind == "classification":
            known = {row["text"]: row["label"] for row in heldout}
            texts = texts or [row["text"] for row in heldout[:MAX_TEXTS]]
            majority = s.labels[head_eval.majority([s.labels.index(r["label"]) for r in train], len(s.labels))]
            head = s.model.from_features(_features(s, texts)).argmax(dim=-1).tolist()
            lora = None
            if s.lora is not None:
                encoded, _ = head_eval.encode_texts(s.tokenizer, texts, run.config.seq_len)
                lora = seqcls.predict(s.lora, encoded, chat.pad_id(s.tokenizer), s.device, run.config.batch_size)
            names = MODELS[kind] if lora is not None else MODELS[kind][:2]
            for i, text in enumerate(texts):
                said = [majority, s.labels[head[i]]] + ([s.labels[lora[i]]] if lora is not None else [])
                rows.append({"text": text, "true": known.get(text), "predicted": dict(zip(names, said))})
        else:
            a_all, b_all = [r["a"] for r in heldout], [r["b"] for r in heldout]
            fa, fb = _features(s, a_all), _features(s, b_all)
            base, trained = head_eval.retrieved(fa, fb), head_eval.retrieved(s.model.from_features(fa),
                                                                              s.model.from_features(fb))
            names = MODELS[kind]
            shown = [i for i, a in enumerate(a_all) if not texts or a in texts][:MAX_TEXTS]
            rows = [{"text": a_all[i], "true": b_all[i],
                     "predicted": {names[0]: b_all[base[i]], names[1]: b_all[trained[i]]}} for i in shown]
    scored = [row for row in rows if row["true"] is not None]
    accuracy = {name: (sum(row["predicted"][name] == row["true"] for row in scored) / len(scored) if scored else None)
                for name in names}
    return {"run_id": run.run_id, "method": run.method.name, "model": run.config.model,
            "dataset": run.config.dataset, "kind": kind, "columns": list(names), "rows": rows,
            "accuracy": accuracy, "scored_rows": len(scored),
            "mergeable": run.method.mergeable, "merge_reason": run.method.merge_reason, "not_mergeable_reason": None,
            "nothing_to_merge": True, "prompts": [row["text"] for row in rows],
            "decoding": "classification" if kind == "classification" else "retrieval among the held-out pairs"}
