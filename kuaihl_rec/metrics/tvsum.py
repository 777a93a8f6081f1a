"""Reference data: the TVSum50 per-annotator importance scores (Song et al., CVPR 2015).

``ydata-tvsum50.mat`` holds, per video, 20 annotators' frame-level importance scores 1..5, the
input of the inter-annotator agreement protocol (Otani et al., CVPR 2019) in
:mod:`kuaihl_rec.metrics.rank_matrices`. Shapes: one ``[20, n_frames]`` int array per video.
"""

from __future__ import annotations

from typing import List

import numpy as np

__all__ = ["read_tvsum_user_anno"]


def read_tvsum_user_anno(mat_path) -> List[np.ndarray]:
    """Read TVSum50's per-video annotations from ``ydata-tvsum50.mat`` (MATLAB v7.3 / HDF5).

    Returns one int array ``[20 annotators, n_frames]`` (importance 1..5) per video,
    in file order. Needs ``h5py`` (a test extra), imported here only.
    """
    import h5py  # noqa: PLC0415 (optional dependency)

    with h5py.File(mat_path, "r") as f:
        group = f["tvsum50"]
        refs = group["user_anno"]
        out = []
        for ref in np.asarray(refs).ravel():
            anno = np.asarray(f[ref])
            out.append(_orient_annotators(anno))
    return out


def _orient_annotators(anno: np.ndarray) -> np.ndarray:
    """MATLAB stores ``frames x 20``; h5py reads it transposed. Return ``[annotators, frames]``."""
    anno = np.rint(anno).astype(np.int64)
    return anno if anno.shape[0] <= anno.shape[1] else anno.T
