"""Raw production ids -> embedding-table rows, inside the inference module (so exports take raw ids).

A lookup is an ``nn.Module`` with ``forward(raw int64 [b]) -> (rows int64 [b], known bool [b])``;
``known`` is False where the id had no row of its own and the cold-start row 0 was used.
:class:`ContentInference` takes any such module (``lookup=``); the default is the run's
vocabulary, :class:`VocabLookup`.

Id spaces that do not fit a vocabulary (see ``docs/SERVING.md``): a hashed table is a lookup
``rows = 1 + h(raw) mod (R - 1)`` with the same ``h`` used in training; a TorchRec
managed-collision table (``MCHManagedCollisionModule``) keeps, like :class:`VocabLookup`, a sorted
buffer of raw ids and the row each maps to, so its lookup is the same ``searchsorted`` over those
two buffers, exported with the rest of the model.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import torch
from torch import Tensor, nn


class VocabLookup(nn.Module):
    """The training split's vocabulary (``vocab.npz``): row ``r + 1`` <-> ``raw[r]``, row 0 = unknown.

    ``raw``: sorted unique raw ids, int64 ``[V]`` (``kuaihl_rec.data.windows.IdVocab.raw``).
    ``forward`` is ``searchsorted`` (O(b log V), exportable); ids beyond int64 cannot occur.
    """

    def __init__(self, raw: np.ndarray) -> None:
        super().__init__()
        vocab = np.asarray(raw, dtype=np.int64)
        if vocab.ndim != 1 or len(vocab) == 0 or np.any(np.diff(vocab) <= 0):
            raise ValueError(
                "the streamer vocabulary must be a non-empty, strictly increasing int64 array (vocab.npz 'streamer')"
            )
        self.register_buffer("raw", torch.from_numpy(vocab.copy()), persistent=True)

    @property
    def num_rows(self) -> int:
        return int(self.raw.shape[0]) + 1

    def forward(self, streamer_id: Tensor) -> Tuple[Tensor, Tensor]:
        vocab = self.raw
        pos = torch.searchsorted(vocab, streamer_id).clamp(max=vocab.shape[0] - 1)
        known = vocab[pos] == streamer_id
        return torch.where(known, pos + 1, torch.zeros_like(pos)), known
