"""The content model's streamer id path, beyond the table itself: id dropout into the unknown row
(docs/MODEL.md, "Unseen streamers") and a pretrained streamer embedding taken from another run
(docs/MODEL.md, "A pretrained streamer embedding").

The streamer table is a TorchRec ``EmbeddingCollection`` with one table ``"streamer"`` read by the
feature ``"streamer_id"``, one id per window; vocabulary row 0 is the unknown streamer (a cold-start
streamer at test time, see ``kuaihl_rec/data/windows.py``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

import numpy as np
import torch
from torch import Tensor, nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

STREAMER_TABLE = "streamer"
STREAMER_FEATURE = "streamer_id"


class StreamerIdDropout(nn.Module):
    """Id dropout into the unknown row (``ContentConfig.id_dropout``; docs/MODEL.md, "Unseen streamers").

    ``kjt -> kjt'`` with the single key ``"streamer_id"`` (one id per window, ``[b]`` values): in
    training mode each window's row is replaced by 0, the vocabulary's unknown row, with probability
    ``p`` (torch's global RNG); in eval mode the rows pass unchanged. Without it row 0 is never read in
    training (every training streamer is known), so a cold-start streamer's Perceiver query E_u would
    be the row's random initial value; with it row 0 learns the query of "a streamer we do not know".

    A parameter-free leaf: the KJT is built in ``forward``, so ``TrainPipelineSparseDist`` runs the
    streamer collection in place instead of prefetching its input (as for the ID baselines' features).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, kjt: KeyedJaggedTensor) -> KeyedJaggedTensor:
        feature = kjt[STREAMER_FEATURE]
        rows = feature.values()
        if self.training and self.p > 0:
            drop = torch.rand(rows.shape, device=rows.device) < self.p
            rows = torch.where(drop, torch.zeros_like(rows), rows)
        return KeyedJaggedTensor(keys=[STREAMER_FEATURE], values=rows, lengths=feature.lengths())


# ---------------------------------------------------------------------------------------------
# A pretrained streamer embedding (ContentCTR 3.1: E_u from a pretrained ID model)
# ---------------------------------------------------------------------------------------------
# state_dict keys of a streamer table in a run's model.pt: an ID baseline's sum-pooled
# "streamer_id" bag (…embedding_bags.streamer_id.weight) or a content model's table.
_SOURCE_SUFFIXES = (".embedding_bags.streamer_id.weight", f".embeddings.{STREAMER_TABLE}.weight")


def source_streamer_table(run_dir: Union[str, Path]) -> Tensor:
    """The streamer table ``[rows, k]`` of a finished run (``RUN/model.pt``): an ID baseline's
    ``streamer_id`` embedding (DCN-M, Wide&Deep, DeepFM, DIFM) or a content model's table."""
    path = Path(run_dir) / "model.pt"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no trained model to take the streamer embedding from (streamer_init)")
    state = torch.load(path, weights_only=False, map_location="cpu")["state_dict"]
    found = [k for k in state if k.endswith(_SOURCE_SUFFIXES)]
    if len(found) != 1:
        raise ValueError(f"{path}: expected exactly one streamer table (a key ending in {_SOURCE_SUFFIXES}), "
                         f"found {found or 'none'}")
    return state[found[0]].detach().float()


def project_table(table: Tensor, width: int) -> Tensor:
    """The fixed projection of a ``[rows, k]`` table to ``[rows, width]`` (docs/MODEL.md, "A pretrained
    streamer embedding"):

    * ``k == width``: the table itself;
    * ``k < width``: zero-padded columns, ``[E, 0]`` (every inner product between rows is kept);
    * ``k > width``: ``E V_w``, the coordinates in the top-``width`` right singular vectors of
      ``E = U S V^T`` (the rank-``width`` subspace that keeps the most of the rows' inner products,
      Eckart-Young), each vector's sign fixed so its largest-magnitude entry is positive.
    """
    rows, k = table.shape
    if k == width:
        return table.clone()
    if k < width:
        return torch.cat([table, table.new_zeros(rows, width - k)], dim=1)
    _, _, vh = torch.linalg.svd(table.double(), full_matrices=False)
    v = vh[:width].T  # [k, width]
    sign = torch.sign(v.gather(0, v.abs().argmax(dim=0, keepdim=True)))
    return (table.double() @ (v * sign)).to(table.dtype)


def init_streamer_table(weight: Tensor, run_dir: Union[str, Path]) -> None:
    """Copy the projected source table of ``run_dir`` into ``weight`` ``[rows, id_dim]`` (in place).

    Rows are vocabulary rows; the source run must have the same streamer vocabulary (trained on the
    same data: the trainer checks it with :func:`check_same_vocabulary`), here its row count is checked.
    """
    source = source_streamer_table(run_dir)
    if source.shape[0] != weight.shape[0]:
        raise ValueError(
            f"{Path(run_dir) / 'model.pt'}: its streamer table has {source.shape[0]} rows, this model's "
            f"{weight.shape[0]}: streamer_init needs a run trained on the same data (same streamer vocabulary)"
        )
    with torch.no_grad():
        weight.copy_(project_table(source, weight.shape[1]))


def check_same_vocabulary(run_dir: Union[str, Path], streamer_raw: np.ndarray) -> None:
    """Raise unless ``RUN/vocab.npz``'s streamers equal ``streamer_raw`` (this run's vocabulary), so the
    rows copied by :func:`init_streamer_table` belong to the same streamers."""
    path = Path(run_dir) / "vocab.npz"
    source = np.load(path)["streamer"]
    if not np.array_equal(source, np.asarray(streamer_raw)):
        raise ValueError(f"{path}: the source run's streamer vocabulary ({len(source)} streamers) differs from "
                         f"this run's ({len(streamer_raw)}): streamer_init needs a run trained on the same data")
