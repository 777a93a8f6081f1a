"""The content model's streamer id path, beyond the table itself (docs/MODEL.md, "Unseen streamers"):
id dropout into the unknown row.

The streamer table is a TorchRec ``EmbeddingCollection`` with one table ``"streamer"`` read by the
feature ``"streamer_id"``, one id per window; vocabulary row 0 is the unknown streamer (a cold-start
streamer at test time, see ``kuaihl_rec/data/windows.py``).
"""

from __future__ import annotations

import torch
from torch import nn
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
