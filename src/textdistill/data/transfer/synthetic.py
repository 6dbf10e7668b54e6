"""Data-free transfer rows: sentences synthesised from a fine-tuned teacher alone, no training text.

In the spirit of AS-DFD (Ma et al., EMNLP 2020). For each class c, ``per_class`` sequences of ``length``
input embeddings X = (x_1..x_L), x_i in R^d, are optimised with Adam in batches of B, fed to the frozen
teacher f through ``inputs_embeds`` as [E(CLS), x_1..x_L, E(SEP)] (special embeddings fixed, mask all ones).
Sentence pairs (``pairs=True``): two such sequences, each of ``length``, in the tokenizer's pair template
([CLS] a [SEP] b [SEP] with token types 0/1 for BERT; <s> a </s></s> b </s> for MPNet), one text per side
once decoded. The template is the tokenizer's own: it encodes placeholder words, and the free vectors take
their places. WordPiece vocabularies (BERT, MPNet) only: a byte-level BPE one (RoBERTa, GPT-2) has no
whole-word tokens in this sense.

    L(X) = CE(f(X), c)                                               (f predicts c confidently)
         + diversity * mean_{a != b} cos(mean_i x^a_i, mean_i x^b_i)    (the batch's examples stay apart)
         + snap * mean_{a,i} min_{w in V} ||x^a_i - E(w)||_2 / (s sqrt(d))  (stay near real tokens)

E: the teacher's input-embedding matrix; V: its whole-word tokens (no special, [unused], ## or punctuation);
s: the standard deviation of E's entries (the snap distance is in units of the typical gap between rows,
~1.4 for two random rows). X starts at the embeddings of random whole-word tokens (seeded). Adam runs on
Z = X / s, so ``lr`` is in units of the embedding spread whatever the model. Each x_i is finally decoded
to its nearest whole-word token by cosine similarity and joined with ``convert_tokens_to_string``; the
decoded texts are re-tokenized and run through the teacher to measure what decoding lost.

``straight_through=True`` feeds the teacher the *decoded* tokens' embeddings (nearest by cosine, at every
step) and passes the gradient on to X unchanged, x_i + sg(E(w_i) - x_i) (as in PEZ, Wen et al. 2023): the
teacher then scores exactly the texts that come out (pass snap=0 with it: snap would only brake the moves).
Without it a real teacher is made confident by a small move that stays inside the starting tokens' cells,
and the decoded texts are the initial random tokens (MiniLM MRPC teacher: 0.95 on the embeddings, decoded
no better than at the start; with it and lr 0.3-1, snap 0: 0.72-0.94 decoded, every text on its target).

Differences from AS-DFD: AS-DFD builds pseudo-samples from a few trainable slots among real token
embeddings, relaxes the choice of tokens with a Gumbel-softmax, and adds an adversarial self-supervised
module that perturbs the samples against the student while it trains. None of that is here: every position
is a free vector pulled towards real tokens only by ``snap`` (or projected, with ``straight_through``),
decoding is a hard nearest-neighbour rounding, and no student is involved (the set is generated once).
"""
from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from ... import TextDistillError
from ...models.checks import usable_positions

log = logging.getLogger("textdistill")


def whole_word_ids(tokenizer) -> list[int]:
    """Ids of the whole-word tokens: ASCII letters only (no special, [unused], ## or punctuation tokens)."""
    special = set(tokenizer.all_special_tokens)
    return sorted(i for w, i in tokenizer.get_vocab().items()
                  if w.isascii() and w.isalpha() and w not in special and not w.startswith("unused"))


def _check(model, num_labels: int, per_class: int, length: int, steps: int, batch_size: int, sides: int,
           specials: int) -> None:
    if num_labels == 1:
        raise TextDistillError("num_labels: data-free synthesis needs a classifier, not a regression teacher")
    for name, value in (("num_labels", num_labels), ("per_class", per_class), ("length", length), ("steps", steps),
                        ("batch_size", batch_size)):
        if int(value) < 1:
            raise TextDistillError(f"{name}: {value} must be at least 1")
    if getattr(model.config, "num_labels", num_labels) != num_labels:
        raise TextDistillError(f"num_labels: {num_labels}, but the teacher's head has {model.config.num_labels}")
    limit = usable_positions(model.config)
    if limit is not None and sides * length + specials > limit:
        words = f"{sides} x {length} words" if sides > 1 else f"{length}"
        raise TextDistillError(f"length: {words} + {specials} special tokens exceeds the teacher's {limit} positions")


def _placeholders(tokenizer, words: list[int]) -> list[tuple[str, int]]:
    """Two whole words (token, id) that encode to one token each, even when repeated: they mark each side's
    positions in the tokenizer's template."""
    found = []
    for i in words:  # placeholder words: whole words that encode to one token, even when repeated
        w = tokenizer.convert_ids_to_tokens(i)
        if tokenizer(" ".join([w] * 3), add_special_tokens=False)["input_ids"] == [i] * 3:
            found.append((w, i))
            if len(found) == 2:
                break
    if len(found) < 2:
        raise TextDistillError("transfer.synthetic: the teacher's tokenizer has no whole-word token that encodes to "
                               "itself (WordPiece vocabularies such as BERT's and MPNet's have them; byte-level BPE "
                               "ones such as RoBERTa's are not supported)")
    return found


def _template(tokenizer, placeholders: list[tuple[str, int]], length: int,
              pairs: bool) -> tuple[dict, list[torch.Tensor]]:
    """The tokenizer's encoding of one sentence (or pair) of ``length`` placeholder words per side, and the
    positions of each side's words: the special tokens and token types around them are the tokenizer's."""
    (wa, a), (wb, b) = placeholders
    enc = tokenizer(" ".join([wa] * length), " ".join([wb] * length) if pairs else None, truncation=False)
    ids = torch.tensor(enc["input_ids"])
    pos = [(ids == a).nonzero().flatten()] + ([(ids == b).nonzero().flatten()] if pairs else [])
    if any(len(p) != length for p in pos):
        raise TextDistillError("transfer.synthetic: the tokenizer did not keep the placeholder words as one token "
                               "each; synthesis cannot place the sequences")
    return enc, pos


def snap_gap(X: torch.Tensor, W: torch.Tensor, scale: float) -> torch.Tensor:
    """The ``snap`` term's distance: the mean, over the free vectors ``X`` (``[..., d]``), of the Euclidean distance
    to the nearest word vector (rows of ``W``), in units of ``scale * sqrt(d)`` (the norm of a vector whose d
    coordinates have the embeddings' standard deviation ``scale``): 0 on a word, about 1 for a random vector."""
    return torch.cdist(X.reshape(-1, X.shape[-1]), W).min(-1).values.mean() / (scale * X.shape[-1] ** 0.5)


def synthesize(teacher_model, tokenizer, *, num_labels: int, per_class: int, length: int = 16, steps: int = 100,
               lr: float = 0.1, diversity: float = 1.0, snap: float = 0.1, batch_size: int = 32, seed: int = 0,
               log_every: int | None = None, straight_through: bool = False,
               pairs: bool = False, progress=None) -> tuple[list[str], list[str] | None, list[int], dict]:
    """``num_labels * per_class`` texts (class by class; ``pairs``: first and second texts, else None for the
    second) and their target classes, with ``stats``: per class
    (lists indexed by class) ``loss_first`` / ``loss_last`` (mean loss before the first / after the last step),
    ``confidence_initial`` / ``confidence_embeddings`` (the teacher's mean probability of the target on the
    initial / optimised embeddings; projected ones with ``straight_through``), ``confidence_decoded`` (on the
    decoded texts), ``decoded_agreement`` (share of decoded texts the teacher assigns to their target);
    and ``seconds``. Freezes the teacher. ``progress``: a tqdm-like wrapper for the batches (a bar)."""
    word_ids, sides = whole_word_ids(tokenizer), 2 if pairs else 1
    marks = _placeholders(tokenizer, word_ids)
    specials = len(_template(tokenizer, marks, 1, pairs)[0]["input_ids"]) - sides  # the template's own tokens
    _check(teacher_model, num_labels, per_class, length, steps, batch_size, sides, specials)
    enc, pos = _template(tokenizer, marks, length, pairs)
    t0 = time.perf_counter()
    model = teacher_model.eval().requires_grad_(False)
    emb = model.get_input_embeddings().weight.detach()
    device = emb.device
    words = torch.tensor(word_ids, device=device)
    W = emb[words].float()
    W_unit, scale = F.normalize(W, dim=-1), emb.float().std().item()
    template = emb[torch.tensor(enc["input_ids"], device=device)]  # specials fixed; placeholders replaced
    where = torch.cat(pos).to(device)  # positions of side a's words, then side b's
    extra = {"token_type_ids": torch.tensor([enc["token_type_ids"]], device=device)} if "token_type_ids" in enc else {}
    n = length * len(pos)  # free vectors per example
    gen = torch.Generator().manual_seed(seed)
    keys = ("loss_first", "loss_last", "confidence_initial", "confidence_embeddings")
    sums = {k: [0.0] * num_labels for k in keys}
    texts: list[str] = []
    texts_b: list[str] = []
    targets: list[int] = []

    def nearest(X: torch.Tensor) -> torch.Tensor:  # indices into ``words``
        return (F.normalize(X.detach(), dim=-1) @ W_unit.T).argmax(-1)

    def objective(X: torch.Tensor, c: int) -> tuple[torch.Tensor, torch.Tensor]:
        B = X.shape[0]
        seen = X + (W[nearest(X)] - X).detach() if straight_through else X
        full = template.float().expand(B, -1, -1).clone()
        full[:, where] = seen
        mask = torch.ones(B, full.shape[1], dtype=torch.long, device=device)
        types = {k: v.expand(B, -1) for k, v in extra.items()}
        logits = model(inputs_embeds=full.to(emb.dtype), attention_mask=mask, **types).logits.float()
        loss = F.cross_entropy(logits, torch.full((B,), c, device=device))
        if diversity and B > 1:
            pooled = F.normalize(seen.mean(1), dim=-1)
            sim = pooled @ pooled.T
            loss = loss + diversity * (sim.sum() - sim.diagonal().sum()) / (B * (B - 1))
        if snap:
            loss = loss + snap * snap_gap(X, W, scale)
        return loss, logits

    batches = [(c, start) for c in range(num_labels) for start in range(0, per_class, batch_size)]
    for c, start in (progress(batches, desc="synthesize", unit="batch") if progress else batches):
        B = min(batch_size, per_class - start)
        init = torch.randint(len(words), (B, n), generator=gen).to(device)
        Z = (W[init] / scale).requires_grad_()
        opt = torch.optim.Adam([Z], lr=lr)
        for step in range(steps + 1):
            loss, logits = objective(Z * scale, c)
            conf = logits.detach().softmax(-1)[:, c].sum().item()
            if step == 0:
                sums["loss_first"][c] += loss.item() * B
                sums["confidence_initial"][c] += conf
            if log_every and step % log_every == 0:
                log.info("synthesize class %d, rows %d-%d, step %d: loss %.4f", c, start, start + B - 1, step,
                         loss.item())
            if step == steps:
                sums["loss_last"][c] += loss.item() * B
                sums["confidence_embeddings"][c] += conf
                break
            opt.zero_grad()
            loss.backward()
            opt.step()
        ids = words[nearest(Z)].tolist()
        decode = tokenizer.convert_tokens_to_string
        texts += [decode(tokenizer.convert_ids_to_tokens(row[:length])) for row in ids]
        texts_b += [decode(tokenizer.convert_ids_to_tokens(row[length:])) for row in ids] if pairs else []
        targets += [c] * B
    stats: dict = {k: [v / per_class for v in sums[k]] for k in keys}
    probs = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            enc = tokenizer(texts[start:start + batch_size], texts_b[start:start + batch_size] if pairs else None,
                            padding=True, truncation=True, return_tensors="pt")
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
            probs.append(model(**enc).logits.float().softmax(-1).cpu())
    p, t = torch.cat(probs), torch.tensor(targets)
    stats["confidence_decoded"] = [p[t == c, c].mean().item() for c in range(num_labels)]
    stats["decoded_agreement"] = [(p[t == c].argmax(-1) == c).float().mean().item() for c in range(num_labels)]
    stats["seconds"] = time.perf_counter() - t0
    return texts, (texts_b if pairs else None), targets, stats


__all__ = ["synthesize", "whole_word_ids"]
