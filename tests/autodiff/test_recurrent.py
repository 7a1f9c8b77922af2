"""Recurrent layers as torch exports them (LSTM, GRU, RNN; batch-first, bidirectional, stacked),
the input gradient of the unrolled layer against torch autograd in float64."""

from __future__ import annotations

import pytest
import torch

from tests.oracle import check_module


class Sequence(torch.nn.Module):
    """A recurrent layer over a (batch, time, features) input, then a linear head on the last
    step, as a small text or sensor classifier is built."""

    def __init__(self, kind: str, bidirectional: bool, layers: int):
        super().__init__()
        torch.manual_seed(0)
        layer = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
        self.layer = layer(3, 4, num_layers=layers, batch_first=True,
                           bidirectional=bidirectional)
        self.head = torch.nn.Linear(4 * (2 if bidirectional else 1), 2)

    def forward(self, x):
        out, _ = self.layer(x)
        return self.head(out[:, -1])


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional,layers", [(False, 1), (True, 2)],
                         ids=["one_layer", "bidirectional_two_layers"])
def test_recurrent_module(kind, bidirectional, layers):
    error = check_module(Sequence(kind, bidirectional, layers), (2, 5, 3), dynamic_batch=True)
    print(f"{kind} bidirectional={bidirectional} layers={layers}: relative error {error:.2g}")
