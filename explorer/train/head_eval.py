"""Features and metrics of the feature-extraction heads: pooled features of a frozen backbone, accuracy, macro-F1,
the confusion matrix, retrieval recall@1 and cosine-similarity matrices.

Shared by the head trainers (explorer.train.heads) and Compare (explorer.compare.heads), so a run's numbers and
Compare's are computed the same way. Texts are tokenised plainly (no chat template: a sentence is a sentence),
with special-token strings in user text neutralised as everywhere else (explorer.data.chat.neutralise).
"""

from __future__ import annotations

from ..data import chat


def encode_texts(tokenizer, texts: list[str], max_len: int) -> tuple[list[list[int]], int]:
    """Token ids of each text (cut to ``max_len``), and how many were cut."""
    encoded, truncated = [], 0
    for text in texts:
        ids = list(tokenizer(chat.neutralise(tokenizer, text), add_special_tokens=False)["input_ids"])
        if not ids:  # a text of only whitespace the tokenizer drops: one end-of-sequence token stands for it
            ids = [tokenizer.eos_token_id]
        truncated += len(ids) > max_len
        encoded.append(ids[:max_len])
    return encoded, truncated


def padded(encoded: list[list[int]], pad_id: int, device: str):
    """Right-padded input ids and attention mask of a batch."""
    import torch

    width = max(len(ids) for ids in encoded)
    input_ids = torch.tensor([ids + [pad_id] * (width - len(ids)) for ids in encoded], device=device)
    mask = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids in encoded], device=device)
    return input_ids, mask


def pooled_matrix(backbone, encoded: list[list[int]], pad_id: int, device: str, batch_size: int = 16,
                  should_stop=None):
    """Mean-pooled final hidden states of every text, one row each in the given order (float32), or None if
    stopped meanwhile. Batches hold texts of similar length (sorted), so little of the backbone's work is padding:
    padding does not change a text's pooled features (it comes after the text, which a causal model never looks
    ahead to, and the mean leaves it out), only the time they take."""
    import torch

    from ..methods.own_modules import pooled_features

    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    rows = []
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            if should_stop and should_stop():
                return None
            input_ids, mask = padded([encoded[i] for i in order[start:start + batch_size]], pad_id, device)
            rows.append(pooled_features(backbone, input_ids, mask).float())
    pooled = torch.cat(rows)
    return pooled[torch.tensor(order).argsort()]  # back in the texts' order


def accuracy(predicted: list[int], true: list[int]) -> float:
    return sum(p == t for p, t in zip(predicted, true)) / max(len(true), 1)


def confusion(predicted: list[int], true: list[int], classes: int) -> list[list[int]]:
    """counts[true class][predicted class]."""
    counts = [[0] * classes for _ in range(classes)]
    for p, t in zip(predicted, true):
        counts[t][p] += 1
    return counts


def macro_f1(predicted: list[int], true: list[int], classes: int) -> float:
    """The mean over classes of each class's F1 (a class never predicted nor present counts 0: it is not
    skipped, so a classifier that ignores a class is marked down for it)."""
    counts = confusion(predicted, true, classes)
    scores = []
    for c in range(classes):
        hit = counts[c][c]
        predicted_c = sum(counts[t][c] for t in range(classes))
        actual_c = sum(counts[c])
        scores.append(0.0 if hit == 0 else 2 * hit / (predicted_c + actual_c))
    return sum(scores) / classes


def majority(train_labels: list[int], classes: int) -> int:
    """The most frequent training class (the lowest index on a tie): the baseline every classifier must beat."""
    counts = [train_labels.count(c) for c in range(classes)]
    return counts.index(max(counts))


def cosine(a, b):
    """The cosine similarity of every row of ``a`` with every row of ``b``."""
    import torch

    return torch.nn.functional.normalize(a.float(), dim=1) @ torch.nn.functional.normalize(b.float(), dim=1).T


def retrieved(a, b) -> list[int]:
    """For each a, the index of the most similar b (cosine)."""
    return cosine(a, b).argmax(dim=1).tolist()


def recall_at_1(a, b) -> float:
    """Share of a's whose most similar b (among all b's) is their own pair."""
    return sum(i == j for i, j in enumerate(retrieved(a, b))) / max(len(a), 1)


def contrastive_loss(a, b, temperature: float):
    """Symmetric InfoNCE with in-batch negatives: each a must pick its own b among the batch's b's and back
    (van den Oord et al. 2018; SimCSE, Gao et al. 2021, §3 uses the same loss with temperature 0.05)."""
    import torch

    logits = cosine(a, b) / temperature
    target = torch.arange(len(a), device=logits.device)
    return (torch.nn.functional.cross_entropy(logits, target) + torch.nn.functional.cross_entropy(logits.T, target)) / 2
