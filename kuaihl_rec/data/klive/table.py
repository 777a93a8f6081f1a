"""Assembling the segment table of a KLive release.

The checked, sorted rows become an Arrow table in the segment-table contract of
:mod:`kuaihl_rec.data.schema`; the vector columns are ``list<float32>`` in chunks whose
int32 offsets cannot overflow.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
import pyarrow as pa

from kuaihl_rec.data.klive.rooms import SortedRows
from kuaihl_rec.data.klive.shards import ShardRows
from kuaihl_rec.data.schema import FeatureSizes, arrow_schema

# int32 offsets of list<float32>: a longer column is split into chunks.
MAX_LIST_VALUES = 2**31 - 1


def list_column(values: np.ndarray, max_list_values: int = MAX_LIST_VALUES) -> pa.ChunkedArray:
    """An (n, d) float32 array as list<float32>, in chunks of at most ``max_list_values`` floats
    (at least one row each), so their int32 offsets cannot overflow."""
    n_rows, dim = values.shape
    flat = np.ascontiguousarray(values).reshape(-1)
    rows_per_chunk = max(1, max_list_values // max(dim, 1))
    chunks = []
    for start in range(0, n_rows, rows_per_chunk):
        stop = min(n_rows, start + rows_per_chunk)
        if dim:
            offsets = pa.array(np.arange(0, (stop - start) * dim + 1, dim, dtype=np.int32))
        else:
            offsets = pa.array(np.zeros(stop - start + 1, np.int32))
        chunks.append(pa.ListArray.from_arrays(offsets, pa.array(flat[start * dim: stop * dim], type=pa.float32())))
    return pa.chunked_array(chunks, type=pa.list_(pa.float32()))


def feature_sizes(shard_rows: ShardRows) -> FeatureSizes:
    """The release's FeatureSizes: one visual token of the image width, and the text width."""
    dims = shard_rows.sizes.dims
    return FeatureSizes(visual_tokens=1, visual_dim=int(dims["image_feaure"]), text_dim=int(dims["text_feaure"]))


def take_sorted_vectors(shard_rows: ShardRows, order: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The (image, text) vectors of all rows, permuted by ``order``; frees the chunks of ``shard_rows``."""
    image = np.concatenate([chunk.image for chunk in shard_rows.chunks])[order]
    text = np.concatenate([chunk.text for chunk in shard_rows.chunks])[order]
    shard_rows.chunks.clear()
    return image, text


def assemble_table(
    rows: SortedRows, streamer: np.ndarray, segment: np.ndarray, image: np.ndarray, text: np.ndarray,
    splits: Sequence[str], max_list_values: int = MAX_LIST_VALUES,
) -> pa.Table:
    """The segment table: ``streamer_id, live_id, segment, timestamp, lvtr, visual, text, split``.

    ``streamer``, ``segment``, ``image`` and ``text`` are aligned with the sorted ``rows``;
    split code ``k`` becomes ``splits[k]``; ``max_list_values`` bounds the floats per chunk of
    the vector columns (see :func:`list_column`).
    """
    split_names = np.array(splits, dtype=object)
    columns = {
        "streamer_id": pa.array(streamer, type=pa.int64()),
        "live_id": pa.array(rows.live_id, type=pa.int64()),
        "segment": pa.array(segment.astype(np.int32), type=pa.int32()),
        "timestamp": pa.array(rows.timestamp, type=pa.int64()),
        "lvtr": pa.array(rows.lvtr, type=pa.float32()),
        "visual": list_column(image, max_list_values),
        "text": list_column(text, max_list_values),
        "split": pa.array(split_names[rows.split_code], type=pa.string()),
    }
    schema = arrow_schema(columns)
    return pa.Table.from_arrays([columns[field.name] for field in schema], schema=schema)
