"""Every registered model (``list_models()``: content models and ID baselines alike) at batch sizes
1 and 2: forward to float32 logits ``[b, n]``, finite, a backward that reaches every embedding
table, eval mode deterministic. One parametrised file instead of one copy per family; the
per-family files test the equations."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import MODEL_WINDOW, model_batch

from kuaihl_rec.model import create_model
from kuaihl_rec.model.registry import list_models, model_info


def _embedding_weights(model: torch.nn.Module):
    return {name: p for name, p in model.named_parameters() if "embedding" in name and name.endswith("weight")}


@pytest.mark.parametrize("name", [m for m in list_models() if m != "content_e2e"])  # e2e reads raw media:
@pytest.mark.parametrize("b", [1, 2])  # tests/test_content_e2e.py
def test_every_registered_model_forward_backward(name, b, model_split, model_spec):
    torch.manual_seed(0)
    model = create_model(name, model_spec)
    batch = model_batch(model_split, b)
    logits = model(batch)
    assert logits.shape == (b, MODEL_WINDOW) and logits.dtype == torch.float32 and torch.isfinite(logits).all()
    mask = batch.label_mask
    F.binary_cross_entropy_with_logits(logits[mask], batch.labels[mask]).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is None or torch.isfinite(g).all() for g in grads.values())
    assert sum(float(g.abs().sum()) for g in grads.values() if g is not None) > 0
    for table, weight in _embedding_weights(model).items():
        assert weight.grad is not None and weight.grad.abs().sum() > 0, table
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch), model(batch))
    assert model.default_loss == model_info(name).default_loss
