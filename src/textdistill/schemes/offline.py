"""Offline distillation: a frozen teacher whose outputs feed the knowledge terms.

The training loop asks a *teacher source* for the teacher's outputs on a batch. ``LiveTeacher``
runs the frozen model; a cached source (outputs computed once and read from disk, keyed by the
batch's ``idx``) can take its place without changing the loop.
"""
from __future__ import annotations

import torch


class LiveTeacher:
    def __init__(self, model, hidden_states: bool = False, attentions: bool = False):
        self.model = model.eval().requires_grad_(False)
        self.hidden_states, self.attentions = hidden_states, attentions

    @torch.no_grad()
    def __call__(self, inputs: dict, batch: dict):
        return self.model(**inputs, output_hidden_states=self.hidden_states, output_attentions=self.attentions)
