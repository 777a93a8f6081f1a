"""The rows of ``kuaihl compare``: entries (a registered model + a loss preset + overrides), the
families they come from (read from the model registry), the shared training budget."""

from __future__ import annotations

import dataclasses
from typing import Any, List, Optional, Sequence, Tuple

import baselines  # noqa: F401  (registers the ID baselines explicitly, also when not installed)
from kuaihl_rec.losses import LOSS_PRESETS, PAPER_SCALE_SUFFIX
from kuaihl_rec.metrics import REPORTED_METRICS
from kuaihl_rec.model.registry import list_models, model_info

METRIC_KEYS = REPORTED_METRICS


@dataclasses.dataclass(frozen=True)
class Entry:
    """One row of a table: a registered model trained with a loss preset (None = the model's own)."""

    name: str
    model: str
    loss: Optional[str] = None
    overrides: Tuple[Tuple[str, Any], ...] = ()  # model overrides (create_model keywords)

    @property
    def paper_tau(self) -> Optional[float]:
        """The papers' KLive tau-b for this row, for orientation (read from the model registry): the
        model's own number when the row trains it as registered, the loss-ablation number when it
        trains it with another loss preset; None for rows the papers do not have."""
        if self.overrides:
            return None
        paper = model_info(self.model).paper
        if self.loss is None:
            return paper.get("tau")
        # the papers' numbers were trained at their pair scale: "<row>@sum" shows the same number as "<row>"
        return paper.get("loss_ablation", {}).get(self.loss.removesuffix(PAPER_SCALE_SUFFIX))


def _family_rows(family: str, key: str) -> Tuple[Entry, ...]:
    """One row per registered model of ``family`` whose paper numbers hold ``key`` (registry order)."""
    return tuple(Entry(name, name) for name in list_models(family=family) if key in model_info(name).paper)


ID_BASELINES = tuple(Entry(name, name) for name in list_models(family="id_baseline"))
TABLE1_VARIANTS = _family_rows("content", "tau") + (
    # Our extension: the content model that also reads the room's measured engagement so far
    # when the score is needed: what the ID models read (counters, hour, position in the room) +
    # the freshest complete label (LVTR of segment t - 2, WindowConfig.label_delay).
    Entry("content+engagement", "content", overrides=(("use_counters", True),)),
    # ... trained with the pointwise loss alone: the loss ablation's best row on the *validation*
    # rooms of the default world (point 0.514 vs the papers' point+L1+align 0.496, 1 seed)
    Entry("content+engagement+point", "content", "point", overrides=(("use_counters", True),)),
)
# Unseen streamers (docs/MODEL.md, "Unseen streamers"): the papers' content model with id dropout into
# the unknown row, the rate the ID baselines use (baselines.features.FEATURE_DEFAULTS, 0.2).
COLD_START = (
    Entry("content+id_dropout", "content", overrides=(("id_dropout", 0.2),)),
    # ... and our recommended row (engagement token, pointwise loss) with the same id dropout
    Entry(
        "content+engagement+point+id_dropout",
        "content",
        "point",
        overrides=(("id_dropout", 0.2), ("use_counters", True)),
    ),
)
# A pretrained streamer embedding (ContentCTR 3.1 takes E_u from a pretrained ID model): the content
# model's table initialised from the DCN-M run of the same seed ("@dcn_m", the best ID model of the
# README's tables), its 16-wide streamer_id embedding zero-padded to d (kuaihl_rec/model/streamer.py),
# fine-tuned or frozen.
PRETRAINED_ID = (
    Entry("content+pretrained_id", "content", overrides=(("streamer_init", "@dcn_m"),)),
    Entry(
        "content+pretrained_id_frozen", "content", overrides=(("streamer_freeze", True), ("streamer_init", "@dcn_m"))
    ),
)
LOSS_ABLATION = tuple(Entry(f"loss:{loss}", "content", loss) for loss in model_info("content").paper["loss_ablation"])
# The same rows at the papers' pair scale (sum over each window's kept pairs, averaged over windows;
# kuaihl_rec/losses/pairwise.py), for every row with a pairwise term.
LOSS_ABLATION_SUM = tuple(
    Entry(f"{e.name}{PAPER_SCALE_SUFFIX}", "content", f"{e.loss}{PAPER_SCALE_SUFFIX}")
    for e in LOSS_ABLATION
    if f"{e.loss}{PAPER_SCALE_SUFFIX}" in LOSS_PRESETS
)
MODALITY_ABLATION = _family_rows("content", "drop_pct")
#: An override value replaced by the world directory the row is trained on (``model.media`` of a raw-media world).
WORLD_DIR = "<world>"
# Encoders in the training loop (ContentCTR 3.3 / 4.3.2; kuaihl_rec/model/content_e2e.py): only on a raw-media
# world (`kuaihl world --preset tiny_media`, `--set raw_media=true`), so not among the default rows. The encoders'
# own learning rate is fixed at 1e-4 (the heads' rate is searched as for every row; docs/MODEL.md section 12).
RAW_MEDIA = (
    Entry("content_e2e", "content_e2e", overrides=(("encoder_lr", 1e-4), ("finetune", True), ("media", WORLD_DIR))),
    Entry("content_e2e_frozen", "content_e2e", overrides=(("finetune", False), ("media", WORLD_DIR))),
)
ALL_ENTRIES = (
    ID_BASELINES + TABLE1_VARIANTS + COLD_START + PRETRAINED_ID + LOSS_ABLATION + LOSS_ABLATION_SUM + MODALITY_ABLATION
)


@dataclasses.dataclass(frozen=True)
class CompareBudget:
    """The same training budget for every entry: the ``small`` training preset's (4 epochs over
    windows at stride 4, early stopping after 2 epochs without a better validation tau-b). A
    smaller budget (2 epochs at stride 8) left the content model under-trained (test tau-b 0.45
    against 0.54) while the ID models had already converged: it measured the budget, not the models."""

    epochs: int = 4
    stride: int = 4
    batch_size: int = 48
    patience: int = 2
    lr_grid: Tuple[float, ...] = (1e-3, 3e-3)
    seeds: int = 3


def entries_for(names: Optional[Sequence[str]]) -> List[Entry]:
    """The entries named (registry names or row names), or all of them."""
    if not names:
        return list(ALL_ENTRIES)
    by_name = {e.name: e for e in ALL_ENTRIES + RAW_MEDIA}
    out = []
    for name in names:
        if name in by_name:
            out.append(by_name[name])
        else:
            if name not in list_models():
                raise KeyError(f"unknown model or row {name!r}; rows: {sorted(by_name)}; models: {list_models()}")
            out.append(Entry(name, name))
    # a row that reads another row's runs ("@row" overrides) brings that row along
    for source in [v[1:] for e in list(out) for _, v in e.overrides if isinstance(v, str) and v.startswith("@")]:
        if source not in {e.name for e in out}:
            out.append(by_name.get(source, Entry(source, source)))
    return out


def _training_key(entry: Entry) -> Tuple[str, str, Tuple[Tuple[str, Any], ...]]:
    """What a run of ``entry`` trains: (model, resolved loss configuration, overrides). Two rows
    with the same key (e.g. ``content`` and ``loss:point+L1+align``, whose loss presets are equal)
    share their runs instead of training the same thing twice."""

    loss = entry.loss or default_loss(entry.model)
    return entry.model, repr(LOSS_PRESETS[loss]), tuple(sorted(entry.overrides))


def default_loss(model: str) -> str:
    """The loss preset a registered model trains with by default (its registry entry)."""
    return model_info(model).default_loss
