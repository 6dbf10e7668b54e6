"""A BiLSTM student (Tang et al. 2019, "Distilling Task-Specific Knowledge from BERT into Simple Neural
Networks"): embedding -> bidirectional LSTM -> pooling -> MLP head; for sentence pairs a siamese form that
encodes each sentence alone and classifies ``[h1, h2, h1 * h2, |h1 - h2|]``.

It is a Hugging Face model (``BiLSTMConfig`` / ``BiLSTMForSequenceClassification``, registered with the Auto
classes when textdistill is imported), so ``save_pretrained`` writes ``config.json`` + ``model.safetensors``
(no pickle) and it loads with::

    import textdistill  # registers the model type
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    model = AutoModelForSequenceClassification.from_pretrained("runs/bilstm-sst2/model")
    tokenizer = AutoTokenizer.from_pretrained("runs/bilstm-sst2/model")   # the teacher's tokenizer

It reads the teacher's tokenization: word pieces, the pair's two sentences told apart by ``token_type_ids``
(or, for tokenizers without them, by the first separator), special tokens left out. The embedding starts
from the teacher's input-embedding matrix (``embedding: teacher``; Tang et al. use word2vec, not available
here) or at random. Differences from the paper: word pieces instead of words; max pooling by default (the
paper's single-sentence model uses the last hidden states, its siamese model max pooling), ``pool: last``
gives the paper's; one hidden layer of ReLU in the head.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import SequenceClassifierOutput


class BiLSTMConfig(PretrainedConfig):
    model_type = "textdistill-bilstm"

    def __init__(self, vocab_size: int = 30522, embedding_dim: int = 300, hidden_size: int = 300,
                 num_layers: int = 1, dropout: float = 0.1, pool: str = "max", mlp_hidden: int = 400,
                 siamese: bool = False, pad_token_id: int = 0, special_token_ids: list[int] | None = None,
                 sep_token_id: int | None = None, freeze_embeddings: bool = False, **kwargs):
        super().__init__(pad_token_id=pad_token_id, **kwargs)
        self.vocab_size, self.embedding_dim, self.hidden_size = vocab_size, embedding_dim, hidden_size
        self.num_layers, self.dropout, self.pool, self.mlp_hidden = num_layers, dropout, pool, mlp_hidden
        self.siamese, self.special_token_ids = siamese, list(special_token_ids or [])
        self.sep_token_id, self.freeze_embeddings = sep_token_id, freeze_embeddings
        self.num_hidden_layers = num_layers  # what the rest of the toolkit reads as "layers"


class BiLSTMForSequenceClassification(PreTrainedModel):
    config_class = BiLSTMConfig
    base_model_prefix = "bilstm"
    main_input_name = "input_ids"

    def __init__(self, config: BiLSTMConfig):
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_dim, padding_idx=config.pad_token_id)
        self.lstm = nn.LSTM(config.embedding_dim, config.hidden_size, num_layers=config.num_layers,
                            dropout=config.dropout if config.num_layers > 1 else 0.0, bidirectional=True,
                            batch_first=True)
        d = 2 * config.hidden_size * (4 if config.siamese else 1)
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Sequential(nn.Linear(d, config.mlp_hidden), nn.ReLU(), nn.Dropout(config.dropout),
                                        nn.Linear(config.mlp_hidden, config.num_labels))
        self.embeddings.weight.requires_grad_(not config.freeze_embeddings)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self):
        return self.embeddings

    def _content(self, input_ids, attention_mask):
        """Real, non-special tokens."""
        keep = attention_mask.bool()
        if self.config.special_token_ids:
            special = torch.tensor(self.config.special_token_ids, device=input_ids.device)
            keep = keep & ~(input_ids[..., None] == special).any(-1)  # (torch.isin has no ONNX export)
        return keep

    def encode(self, input_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """(batch, 2 * hidden): the BiLSTM over the kept tokens of each row (gathered to the left), pooled."""
        lengths = keep.sum(1).clamp(min=1)
        # kept positions first, in order: output position j reads the position of the (j+1)-th kept token, i.e.
        # the number of positions whose running count of kept tokens is <= j (sort-free, and traceable to ONNX with
        # dynamic lengths)
        count = keep.long().cumsum(1)
        j = torch.arange(input_ids.shape[1], device=input_ids.device)
        order = (count[:, None, :] <= j[None, :, None]).sum(-1).clamp(max=input_ids.shape[1] - 1)
        ids = torch.gather(input_ids, 1, order)
        valid = torch.arange(ids.shape[1], device=ids.device)[None] < lengths[:, None]
        x = self.dropout(self.embeddings(ids.masked_fill(~valid, self.config.pad_token_id)))
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
        if self.config.pool == "last":  # the last layer's final states of both directions: the forward one at
            # the last real token, the backward one at the first (read from the outputs: h_n does not export)
            half = self.config.hidden_size
            rows = torch.arange(out.shape[0], device=out.device)
            return torch.cat([out[rows, lengths - 1, :half], out[:, 0, half:]], dim=-1)
        return out.masked_fill(~valid[..., None], float("-inf")).max(1).values

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, labels=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        keep = self._content(input_ids, attention_mask)
        if not self.config.siamese:
            features = self.encode(input_ids, keep)
        else:
            if token_type_ids is not None:
                second = token_type_ids.bool()
            else:  # no segment ids: the second sentence starts after the first separator
                sep = (input_ids == self.config.sep_token_id).int().cumsum(1)
                second = sep >= 1
            h1, h2 = self.encode(input_ids, keep & ~second), self.encode(input_ids, keep & second)
            features = torch.cat([h1, h2, h1 * h2, (h1 - h2).abs()], dim=-1)
        logits = self.classifier(self.dropout(features))
        loss = None
        if labels is not None:
            loss = (nn.functional.mse_loss(logits.squeeze(-1), labels.float()) if self.config.num_labels == 1
                    else nn.functional.cross_entropy(logits, labels))
        return SequenceClassifierOutput(loss=loss, logits=logits)


def build_bilstm(tokenizer, embeddings: torch.Tensor | None, *, num_labels: int, pair: bool, options: dict,
                 id2label: dict) -> BiLSTMForSequenceClassification:
    """A BiLSTM for ``tokenizer``'s vocabulary; ``embeddings`` (vocab, dim) initialise its embedding."""
    from .. import TextDistillError

    allowed = {"hidden_size", "num_layers", "dropout", "pool", "mlp_hidden", "embedding", "embedding_dim",
               "freeze_embeddings"}
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise TextDistillError(f"student.options.{unknown[0]}: unknown BiLSTM option (known: {', '.join(sorted(allowed))})")
    opts = dict(options)
    source = opts.pop("embedding", "teacher")
    if source not in ("teacher", "random"):
        raise TextDistillError(f"student.options.embedding: 'teacher' or 'random', not '{source}'")
    if source == "teacher" and embeddings is not None and "embedding_dim" in opts \
            and opts["embedding_dim"] != embeddings.shape[1]:
        raise TextDistillError(f"student.options.embedding_dim: {opts['embedding_dim']}, but embedding: teacher copies "
                               f"the teacher's {embeddings.shape[1]}-wide input embeddings (embedding: random for "
                               f"another width)")
    if opts.get("pool", "max") not in ("max", "last"):
        raise TextDistillError(f"student.options.pool: 'max' or 'last', not '{opts['pool']}'")
    dim = embeddings.shape[1] if source == "teacher" and embeddings is not None else opts.pop("embedding_dim", 300)
    opts.pop("embedding_dim", None)
    config = BiLSTMConfig(vocab_size=len(tokenizer), embedding_dim=dim, siamese=pair, num_labels=num_labels,
                          pad_token_id=tokenizer.pad_token_id or 0, special_token_ids=tokenizer.all_special_ids,
                          sep_token_id=tokenizer.sep_token_id, id2label=id2label,
                          label2id={v: k for k, v in id2label.items()}, **opts)
    model = BiLSTMForSequenceClassification(config)
    if source == "teacher" and embeddings is not None:
        n = min(len(tokenizer), embeddings.shape[0])
        with torch.no_grad():
            model.embeddings.weight[:n] = embeddings[:n]
    return model


def register() -> None:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    try:
        AutoConfig.register(BiLSTMConfig.model_type, BiLSTMConfig)
        AutoModelForSequenceClassification.register(BiLSTMConfig, BiLSTMForSequenceClassification)
    except ValueError:  # already registered
        pass
