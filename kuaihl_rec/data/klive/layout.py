"""Names and limits of the KLive release layout.

The five fields of a shard row, the shard and mapping file names, the line encodings and
vector styles the reader recognises, and the limits it enforces while reading.
"""

from __future__ import annotations

from typing import Tuple

KLIVE_FIELDS: Tuple[str, ...] = ("live_id", "timestamp", "lvtr", "image_feaure", "text_feaure")
VECTOR_FIELDS: Tuple[str, ...] = ("image_feaure", "text_feaure")
SHARD_SUFFIX = "_test_score_infer_output.log"
SHARD_GLOB = "*" + SHARD_SUFFIX
MAPPING_NAME = "live_id2aid.txt"
LINE_ENCODINGS: Tuple[str, ...] = ("json", "pydict", "tsv-header", "tsv")
VECTOR_STYLES: Tuple[str, ...] = ("comma", "space", "bracket-comma", "bracket-space")

# Timestamps at or above this are taken for milliseconds (year ~5138 in seconds).
MAX_SECONDS = 100_000_000_000
# Lines parsed together: the unit of the bulk Arrow conversions.
CHUNK_LINES = 4096
