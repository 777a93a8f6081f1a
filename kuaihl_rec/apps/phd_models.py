"""The rows of the PHD comparison (``kuaihl phd``): which models, how each is built, the papers' numbers.

The PHD models read :class:`~kuaihl_rec.data.phd.examples.PHDBatch`, not ``LiveBatch``, so they are
not entries of the model registry (whose contract is ``forward(LiveBatch) -> [b, n]``); this table
is their one list. PR-Net comes from ``baselines`` (the application layer may import it).
"""

from __future__ import annotations

from typing import Callable, Dict, NamedTuple, Optional

from torch import nn

from baselines.pr_net import PAPER_MAP, PR_NET_VARIANTS, build_pr_net
from kuaihl_rec.data.phd.contract import PHDData
from kuaihl_rec.model.content_hl import ContentHL, ContentHLConfig
from kuaihl_rec.model.history_kernel import HistoryKernelFusion


class PHDRow(NamedTuple):
    """A comparison row: ``build(data) -> model`` (None for a reference scorer), whether it reads the
    user's history, one line, and the papers' PHD-GIFs mAP (None where none is reported)."""

    build: Optional[Callable[[PHDData], nn.Module]]
    uses_history: bool
    doc: str
    paper_map: Optional[float]


def _hl(**fields: object) -> Callable[[PHDData], nn.Module]:
    def build(data: PHDData) -> nn.Module:
        window = max(v.n_segments for v in data.videos.values())
        return ContentHL(data.visual_dim, data.text_dim, ContentHLConfig(window=window, **fields))
    return build


def _pr(name: str) -> Callable[[PHDData], nn.Module]:
    def build(data: PHDData) -> nn.Module:
        return build_pr_net(name, data.visual_dim, d=32)
    return build


def _kernel(build: Callable[[PHDData], nn.Module]) -> Callable[[PHDData], nn.Module]:
    def fused(data: PHDData) -> nn.Module:
        return HistoryKernelFusion(build(data), data.visual_dim + data.text_dim)
    return fused


PR_NET_DOCS = {
    "pr_net": "PR-Net (eq. 1-9)", "pr_net_G": "PR-Net_G: generic preference only",
    "pr_net_U": "PR-Net_U: user-specific only",
    "pr_net_meanU": "PR-Net_meanU: mean history", "pr_net_meanU+G": "PR-Net_meanU+G: mean history + generic",
    "pr_net_h0": "PR-Net_h0: no history clip", "pr_net_h5": "PR-Net_h5: at most 5 history clips",
    "pr_net_residual": "PR-Net_residual: per-frame residual block in place of M",
}

PHD_ROWS: Dict[str, PHDRow] = {
    "contentctr_hl": PHDRow(_hl(), True, "ContentCTR-HL (history feature, fully visible, point + align)", 21.89),
    "contentctr_hl_no_history": PHDRow(_hl(use_history=False), False,
                                       "ContentCTR-HL w/o history: the generic highlight model", 19.55),
    "contentctr_hl+less_is_more": PHDRow(_hl(survey="less_is_more"), True,
                                         "ContentCTR-HL + Less-is-More pair loss with learned confidences", None),
    "contentctr_hl+tao_highlight": PHDRow(_hl(survey="tao_highlight"), True,
                                          "ContentCTR-HL + TaoHighlight graph fine-tuning and L_ag", None),
    **{name: PHDRow(_pr(name), cfg.preference != "generic" and cfg.history_size != 0, PR_NET_DOCS[name],
                    PAPER_MAP[name]) for name, cfg in PR_NET_VARIANTS.items()},
    "pr_net_G+history_kernel": PHDRow(_kernel(_pr("pr_net_G")), True,
                                      "PR-Net_G + population-referenced history kernel (ours, late fusion)", None),
    "contentctr_hl_no_history+history_kernel": PHDRow(
        _kernel(_hl(use_history=False)), True,
        "ContentCTR-HL w/o history + population-referenced history kernel (ours, late fusion)", None),
    "random": PHDRow(None, False, "reference: uniform random segment scores", None),
    "position_prior": PHDRow(None, False, "reference: earlier segments first", None),
}

# The papers' other PHD-GIFs rows (mAP %), reported beside ours (PR-Net Table 1, ContentCTR Table 2).
PAPER_OTHER_ROWS = {"Video2GIF": 14.75, "A-VHD": 16.68, "PHD-GIFs": 16.25, "Adaptive-H-FCSN": 15.65,
                    "PAC-Net": 17.51, "ShowMe": 16.40}
GENERIC_ROW = "contentctr_hl_no_history"
# Each trained row's history-free counterpart of the same architecture (the paired comparison of the report).
GENERIC_OF = {**{name: GENERIC_ROW for name in PHD_ROWS if name.startswith("contentctr_hl")},
              **{name: "pr_net_G" for name in PR_NET_VARIANTS}, "pr_net_G+history_kernel": "pr_net_G"}
