"""The report of :mod:`kuaihl_rec.data.validate`: problems by kind, each with its count and first examples.

A :class:`ValidationReport` is what ``kuaihl validate`` prints (:meth:`ValidationReport.format`) and
writes as JSON (:meth:`ValidationReport.to_dict`); ``ok`` is False as soon as one error was added.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from kuaihl_rec.data.schema import FeatureSizes

MAX_EXAMPLES = 5


@dataclasses.dataclass
class Problem:
    """One kind of problem: how many rows it hit and the first few places, already worded."""

    kind: str
    count: int
    examples: List[str]


@dataclasses.dataclass
class ValidationReport:
    """What :func:`validate_path` found. ``ok`` is False when any error was found."""

    path: str
    n_files: int = 0
    n_rows: int = 0
    n_rooms: int = 0
    n_streamers: int = 0
    sizes: Optional[FeatureSizes] = None
    errors: "OrderedDict[str, Problem]" = dataclasses.field(default_factory=OrderedDict)
    rejections: Dict[str, int] = dataclasses.field(default_factory=dict)
    splits: Dict[str, int] = dataclasses.field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors

    def add(self, kind: str, count: int, examples: Sequence[str]) -> None:
        if count <= 0:
            return
        prob = self.errors.setdefault(kind, Problem(kind, 0, []))
        prob.count += int(count)
        room = MAX_EXAMPLES - len(prob.examples)
        prob.examples.extend(list(examples)[:room])

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "ok": self.ok,
            "n_files": self.n_files,
            "n_rows": self.n_rows,
            "n_rooms": self.n_rooms,
            "n_streamers": self.n_streamers,
            "feature_sizes": dataclasses.asdict(self.sizes) if self.sizes else None,
            "errors": {k: {"count": p.count, "examples": p.examples} for k, p in self.errors.items()},
            "rejections": dict(self.rejections),
            "rooms_per_split": dict(self.splits),
        }

    def format(self) -> str:
        lines = [
            f"{self.path}: {self.n_rows} rows, {self.n_rooms} rooms, {self.n_streamers} streamers "
            f"in {self.n_files} file(s)"
        ]
        if self.sizes:
            s = self.sizes
            lines.append(f"  feature sizes: visual {s.visual_tokens} x {s.visual_dim}, text {s.text_dim}")
        if self.splits:
            lines.append("  rooms per split: " + ", ".join(f"{k} {v}" for k, v in self.splits.items()))
        for name, count in self.rejections.items():
            lines.append(f"  rejected: {count} {name.replace('_', ' ')}")
        if self.ok:
            lines.append("  OK: the table satisfies the segment-data contract")
        else:
            lines.append(
                f"  INVALID: {sum(p.count for p in self.errors.values())} problem(s) of {len(self.errors)} kind(s)"
            )
            for prob in self.errors.values():
                lines.append(f"  - {prob.kind}: {prob.count}")
                lines.extend(f"      {ex}" for ex in prob.examples)
        return "\n".join(lines)
