#!/usr/bin/env python
"""One training run of a peer toolkit (TextBrewer or torchdistill) in the configuration of
bench/compare.py. Runs in the peers' virtual environment (.venv-peers, see bench/README.md), never
imports textdistill, and prints one JSON line of figures.

Same set-up as textdistill's side: the SST-2 rows sampled the same way (random.Random(0), sorted),
the MiniLM-L6 fine-tuned teacher, a student made of MiniLM-L6's first 3 layers with a new head,
AdamW (lr 1e-4, weight decay 0.01 except biases and LayerNorm), linear schedule with 10 % warm-up,
gradient clipping at 1.0, batch 32, 3 epochs; batches length-grouped with dynamic padding, or random
and padded to 128 tokens. Loss: 0.5 CE + 0.5 soft CE at T = 5 (no T^2, TextBrewer's ``ce``) +
beta * PKD's normalised [CLS] MSE (summed over dimensions, mean over the batch) on student layers
1, 2 <- teacher layers 2, 4.

* ``textbrewer``: GeneralDistiller with intermediate_matches ``pkd``.
* ``textbrewer-cache``: BasicDistiller with ``is_caching_logits=True`` (TextBrewer caches logits
  only, in memory, and only in BasicDistiller: so this run has no [CLS] term).
* ``torchdistill``: its KDLoss (alpha CE + (1-alpha) T^2 KL) and ForwardHookManager for the [CLS]
  vectors in a plain loop (torchdistill drives HF models through YAML configs; the loop here is the
  same as the others'). torchdistill has no PKD loss: the normalised [CLS] MSE is written out here.
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

T0 = time.perf_counter()


class TimedScheduler:
    """Wraps a LR scheduler; every step() call (one per optimiser step) records a timestamp."""

    def __init__(self, scheduler):
        self.scheduler, self.stamps = scheduler, [time.perf_counter()]

    def step(self, *a, **k):
        self.scheduler.step(*a, **k)
        self.stamps.append(time.perf_counter())

    def __getattr__(self, name):
        return getattr(self.scheduler, name)


def read_glue(path, task="sst2", rows=None, seed=0):
    """``[(text_a, text_b or None, label)]`` of a GLUE TSV file (SST-2: sentence, label; MRPC: label first)."""
    with open(path, encoding="utf-8-sig") as f:
        table = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]
    data = [(r[0], None, int(r[1])) for r in table] if task == "sst2" else [(r[3], r[4], int(r[0])) for r in table]
    if rows and rows < len(data):
        data = [data[i] for i in sorted(random.Random(seed).sample(range(len(data)), rows))]
    return data


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--framework", choices=["textbrewer", "textbrewer-cache", "torchdistill"], required=True)
    ap.add_argument("--teacher", required=True)
    ap.add_argument("--student-init", required=True)
    ap.add_argument("--task", choices=["sst2", "mrpc"], default="sst2")
    ap.add_argument("--student-layers", default="1,2,3", help="MiniLM-L6 layers the student keeps")
    ap.add_argument("--train", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--padding", choices=["dynamic", "fixed"], default="dynamic")
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--beta", type=float, default=1.3)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pairs", default="1:2,2:4", help="student:teacher layers of the [CLS] term (PKD-Skip 6->3)")
    args = ap.parse_args()

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup
    from transformers.trainer_pt_utils import LengthGroupedSampler

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    tok = AutoTokenizer.from_pretrained(args.student_init)
    train = read_glue(args.train, args.task, args.rows)
    dev = read_glue(args.dev, args.task)

    def tokenize(rows, **kw):
        return tok([a for a, _, _ in rows], [b for _, b, _ in rows] if args.task != "sst2" else None,
                   truncation=True, max_length=args.max_length, **kw)
    enc = tokenize(train)
    feats = [{"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i],
              "attention_mask": enc["attention_mask"][i], "labels": train[i][2]} for i in range(len(train))]
    pad = {"padding": "max_length", "max_length": args.max_length} if args.padding == "fixed" else {}

    def collate(batch):
        out = dict(tok.pad([{k: v for k, v in f.items() if k != "labels"} for f in batch], return_tensors="pt", **pad))
        out["labels"] = torch.tensor([f["labels"] for f in batch])
        return out
    g = torch.Generator().manual_seed(args.seed)
    sampler = (LengthGroupedSampler(args.batch_size, lengths=[len(f["input_ids"]) for f in feats], generator=g)
               if args.padding == "dynamic" else torch.utils.data.RandomSampler(feats, generator=g))
    loader = torch.utils.data.DataLoader(feats, batch_size=args.batch_size, sampler=sampler, collate_fn=collate)

    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher).eval()
    student = AutoModelForSequenceClassification.from_pretrained(args.student_init, num_labels=2)
    keep = [int(x) - 1 for x in args.student_layers.split(",")]
    student.bert.encoder.layer = torch.nn.ModuleList(student.bert.encoder.layer[i] for i in keep)
    student.config.num_hidden_layers = len(keep)
    pairs = [tuple(int(x) for x in p.split(":")) for p in args.pairs.split(",")]
    d_s, d_t = student.config.hidden_size, teacher.config.hidden_size
    # a narrower student's [CLS] vectors are projected to the teacher's width (trained with the student;
    # TextBrewer builds its own from the "proj" entry of the match and adds them to the optimizer)
    projs = (torch.nn.ModuleList(torch.nn.Linear(d_s, d_t) for _ in pairs)
             if d_s != d_t and args.framework == "torchdistill" else None)
    decay = [p for n, p in student.named_parameters() if p.ndim >= 2 and "LayerNorm" not in n]
    no_decay = [p for n, p in student.named_parameters() if not (p.ndim >= 2 and "LayerNorm" not in n)]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    if projs is not None:
        groups.append({"params": list(projs.parameters()), "weight_decay": 0.01})
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    total = len(loader) * args.epochs
    timed = []

    def make_scheduler(optimizer):  # after every parameter group exists (TextBrewer adds its projections)
        timed.append(TimedScheduler(get_linear_schedule_with_warmup(optimizer, int(0.1 * total), total)))
        return timed[-1]
    t_train = time.perf_counter()

    if args.framework.startswith("textbrewer"):
        from textbrewer import BasicDistiller, DistillationConfig, GeneralDistiller, TrainingConfig

        def adaptor(batch, outputs):
            return {"logits": outputs.logits, "hidden": outputs.hidden_states, "inputs_mask": batch["attention_mask"],
                    "losses": outputs.loss}
        out_dir = tempfile.mkdtemp(prefix="textbrewer-")
        t_cfg = TrainingConfig(device="cpu", output_dir=out_dir, ckpt_frequency=1, ckpt_epoch_frequency=10 ** 6)
        if args.framework == "textbrewer":
            d_cfg = DistillationConfig(temperature=5, hard_label_weight=0.5, kd_loss_type="ce", kd_loss_weight=0.5,
                                       intermediate_matches=[{"layer_T": t, "layer_S": s, "feature": "hidden",
                                                              "loss": "pkd", "weight": args.beta,
                                                              **({"proj": ["linear", d_s, d_t]} if d_s != d_t else {})}
                                                             for s, t in pairs])
            distiller = GeneralDistiller(train_config=t_cfg, distill_config=d_cfg, model_T=teacher, model_S=student,
                                         adaptor_T=adaptor, adaptor_S=adaptor)
        else:
            d_cfg = DistillationConfig(temperature=5, hard_label_weight=0.5, kd_loss_type="ce", kd_loss_weight=0.5,
                                       is_caching_logits=True)
            distiller = BasicDistiller(train_config=t_cfg, distill_config=d_cfg, model_T=teacher, model_S=student,
                                       adaptor_T=adaptor, adaptor_S=adaptor)
        with distiller:
            distiller.train(optimizer, loader, num_epochs=args.epochs, scheduler_class=make_scheduler,
                            scheduler_args={}, max_grad_norm=1.0,
                            output_hidden_states=True)
    else:
        # torchdistill imports torchvision; the stub goes on the path only now, after transformers
        # has decided that torchvision is absent (see bench/stubs/torchvision/__init__.py)
        sys.path.insert(0, str(Path(__file__).resolve().parent / "stubs"))
        from torchdistill.core.forward_hook import ForwardHookManager
        from torchdistill.losses.mid_level import KDLoss

        hooks_s, hooks_t = ForwardHookManager(torch.device("cpu")), ForwardHookManager(torch.device("cpu"))
        hooks_s.add_hook(student, "classifier", requires_output=True)
        hooks_t.add_hook(teacher, "classifier", requires_output=True)
        for s, t in pairs:
            hooks_s.add_hook(student, f"bert.encoder.layer.{s - 1}", requires_output=True)
            hooks_t.add_hook(teacher, f"bert.encoder.layer.{t - 1}", requires_output=True)
        kd = KDLoss("classifier", "output", "classifier", "output", temperature=5, alpha=0.5)

        def cls(x, proj=None):
            x = x[0] if isinstance(x, (tuple, list)) else x
            x = x[:, 0]
            return F.normalize(proj(x) if proj is not None else x, dim=-1)
        scheduler = make_scheduler(optimizer)
        student.train()
        for _ in range(args.epochs):
            for batch in loader:
                labels = batch.pop("labels")
                with torch.no_grad():
                    teacher(**batch)
                student(**batch)
                io_s, io_t = hooks_s.pop_io_dict(), hooks_t.pop_io_dict()
                loss = kd(io_s, io_t, labels)
                for j, (s, t) in enumerate(pairs):
                    a = cls(io_s[f"bert.encoder.layer.{s - 1}"]["output"], projs[j] if projs is not None else None)
                    b = cls(io_t[f"bert.encoder.layer.{t - 1}"]["output"])
                    loss = loss + args.beta * (a - b).pow(2).sum(-1).mean()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
    train_wall = time.perf_counter() - t_train

    student.eval()
    preds = []
    with torch.no_grad():
        for i in range(0, len(dev), 64):
            preds += student(**tokenize(dev[i:i + 64], padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    gold = [y for _, _, y in dev]
    correct = sum(p == y for p, y in zip(preds, gold))
    tp = sum(p == y == 1 for p, y in zip(preds, gold))
    f1 = 2 * tp / max(1, sum(preds) + sum(gold))
    stamps = timed[0].stamps
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    print(json.dumps({"framework": args.framework, "padding": args.padding, "rows": len(train), "epochs": args.epochs,
                      "steps": len(steps), "step_seconds_median": statistics.median(steps),
                      "train_wall_seconds": train_wall, "process_seconds": time.perf_counter() - T0,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "dev_accuracy": correct / len(dev), "dev_f1": f1}))


if __name__ == "__main__":
    sys.exit(main())
