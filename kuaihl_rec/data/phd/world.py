"""The synthetic personalised-highlight world (docs/HIGHLIGHTS.md, "Synthetic world").

Hidden structure (kept apart as :class:`PHDTruth`, never in the contract tables):

* ``K`` content topics, each a unit vector ``c_k`` in a latent space of width ``latent_dim``, and
  one "generically interesting" direction ``e_g``.
* A video mixes ``topics_per_video`` topics (Dirichlet(1) weights) and is cut into shots of
  ``shot_segments`` segments; shot ``s`` has a topic ``k_s`` drawn from the mixture and a generic
  interestingness ``g_s ~ N(0, 1)``. Segment ``t`` of shot ``s`` has the latent
  ``z_t = c_{k_s} + cue g_s e_g + shot_jitter eps_s + segment_jitter eps_t`` (``eps ~ N(0, I / latent_dim)``,
  so a jitter is the expected norm of the deviation; ``c_k`` has norm 1) and features
  ``visual_t = A_v z_t + feature_noise eps``, ``text_t = A_t z_t + text_noise eps``
  (``A_v``, ``A_t`` fixed random maps).
* A user has ``interests_per_user`` distinct topics with Dirichlet(``interest_concentration``)
  weights ``w_k`` (a mixture of interests, not one taste); affinity ``a_u(k) = m w_k`` (``m`` the
  number of interests, so the mean affinity over the interests is 1), 0 off the interests.
* User ``u``'s utility for shot ``s``: ``h_us = preference_signal a_u(k_s) + generic_weight g_s
  + highlight_noise eps_us``. On a video the user selects the ``n_sel`` (1 or 2) shots of highest
  utility; each selection is a GIF of ``gif_segments`` segments inside the shot. With
  ``preference_signal = 0`` the utility, hence every selection, is independent of the user's
  interests (only the generic interest and noise remain).
* History: each user's selections on ``history_size`` other videos, drawn by the same rule.
  Target: the user's selections on one target video (train users' targets and test users'
  targets come from disjoint video pools; train users' history from the train pool, test users'
  history from any video but their target).

Deterministic by ``seed``: each part draws from its own child of ``numpy.random.SeedSequence(seed)``.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np
import pandas as pd

from kuaihl_rec.data.phd.contract import PHDData, PHDLabels, PHDVideo


@dataclasses.dataclass(frozen=True)
class PHDWorldConfig:
    """Knobs of the personalised world (docs/HIGHLIGHTS.md lists them with their effect)."""

    seed: int = 0
    n_topics: int = 12
    latent_dim: int = 16
    visual_dim: int = 32
    text_dim: int = 16
    n_videos: int = 700
    test_video_share: float = 0.2
    min_segments: int = 40
    max_segments: int = 80
    min_shot: int = 3
    max_shot: int = 7
    topics_per_video: int = 3
    n_train_users: int = 500
    n_test_users: int = 150
    interests_per_user: int = 3
    interest_concentration: float = 2.0
    history_size: int = 8
    preference_signal: float = 2.0
    generic_weight: float = 0.6
    highlight_noise: float = 0.3
    two_selection_prob: float = 0.3
    min_gif: int = 2
    max_gif: int = 4
    cue: float = 0.8
    shot_jitter: float = 0.3
    segment_jitter: float = 0.2
    feature_noise: float = 0.3
    text_noise: float = 0.6
    segment_seconds: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.interests_per_user <= self.n_topics:
            raise ValueError(f"interests_per_user must be in [1, n_topics = {self.n_topics}], got "
                             f"{self.interests_per_user}")
        if not 1 <= self.topics_per_video <= self.n_topics:
            raise ValueError(f"topics_per_video must be in [1, n_topics], got {self.topics_per_video}")
        if self.preference_signal < 0 or self.generic_weight < 0 or self.highlight_noise < 0:
            raise ValueError("preference_signal, generic_weight and highlight_noise must be >= 0")
        if self.history_size < 0 or self.history_size >= self.n_videos:
            raise ValueError(f"history_size must be in [0, n_videos), got {self.history_size}")
        if not (2 <= self.min_shot <= self.max_shot and self.max_shot <= self.min_segments):
            raise ValueError("shots need 2 <= min_shot <= max_shot <= min_segments")
        if not 1 <= self.min_gif <= self.max_gif:
            raise ValueError("GIFs need 1 <= min_gif <= max_gif")


# Named presets: "default" is the personalised world; "generic" is its preference_signal = 0 twin.
PHD_PRESETS: Dict[str, PHDWorldConfig] = {
    "default": PHDWorldConfig(),
    "generic": PHDWorldConfig(preference_signal=0.0),
    "tiny": PHDWorldConfig(n_videos=60, n_train_users=40, n_test_users=12, min_segments=20, max_segments=30,
                           history_size=4),
}


@dataclasses.dataclass(frozen=True)
class PHDTruth:
    """What generated the world: ``shots`` (video_id, shot, first, end (segments), topic, generic),
    ``interests`` (user_id, topic, weight), ``topics`` ``[K, latent_dim]``, ``generic_direction``."""

    shots: pd.DataFrame
    interests: pd.DataFrame
    topics: np.ndarray
    generic_direction: np.ndarray


def utility(topics: np.ndarray, generic: np.ndarray, affinity: np.ndarray, noise: np.ndarray,
            config: PHDWorldConfig) -> np.ndarray:
    """``h_s = preference_signal a(k_s) + generic_weight g_s + highlight_noise eps_s`` for the shots
    of one video: ``topics`` int ``[S]``, ``generic`` ``[S]``, ``affinity`` ``[K]``, ``noise`` ``[S]``."""
    c = config
    return c.preference_signal * affinity[topics] + c.generic_weight * generic + c.highlight_noise * noise


def _rngs(seed: int) -> Dict[str, np.random.Generator]:
    names = ("space", "videos", "users", "assign", "select")
    children = np.random.SeedSequence(seed).spawn(len(names))
    return {name: np.random.default_rng(child) for name, child in zip(names, children)}


def _video(rng: np.random.Generator, c: PHDWorldConfig, topics: np.ndarray, e_g: np.ndarray,
           maps: Tuple[np.ndarray, np.ndarray]) -> Tuple[PHDVideo, np.ndarray]:
    """One video's features and its shots ``[S, 4]`` (first, end, topic, generic as float)."""
    n = int(rng.integers(c.min_segments, c.max_segments + 1))
    chosen = rng.choice(c.n_topics, size=c.topics_per_video, replace=False)
    mix = rng.dirichlet(np.ones(c.topics_per_video))
    shots, first = [], 0
    while first < n:
        end = min(n, first + int(rng.integers(c.min_shot, c.max_shot + 1)))
        if n - end < c.min_shot:
            end = n
        shots.append((first, end, int(rng.choice(chosen, p=mix)), float(rng.normal())))
        first = end
    z = np.empty((n, c.latent_dim))
    for first, end, topic, g in shots:
        scale = 1.0 / np.sqrt(c.latent_dim)  # jitters are given as expected norms (the topic vector has norm 1)
        base = topics[topic] + c.cue * g * e_g + c.shot_jitter * scale * rng.normal(size=c.latent_dim)
        z[first:end] = base + c.segment_jitter * scale * rng.normal(size=(end - first, c.latent_dim))
    visual = z @ maps[0] + c.feature_noise * rng.normal(size=(n, c.visual_dim))
    text = z @ maps[1] + c.text_noise * rng.normal(size=(n, c.text_dim))
    return PHDVideo(visual.astype(np.float32), text.astype(np.float32)), np.asarray(shots, dtype=np.float64)


def _select(rng: np.random.Generator, c: PHDWorldConfig, shots: np.ndarray, affinity: np.ndarray,
            n_select: int) -> List[Tuple[float, float]]:
    """The user's GIFs on one video: ``(start_s, duration_s)`` inside the ``n_select`` best shots."""
    h = utility(shots[:, 2].astype(int), shots[:, 3], affinity, rng.normal(size=len(shots)), c)
    out = []
    for s in np.argsort(-h, kind="stable")[:n_select]:
        first, end = int(shots[s, 0]), int(shots[s, 1])
        length = int(rng.integers(c.min_gif, min(c.max_gif, end - first) + 1))
        start = first + int(rng.integers(0, end - first - length + 1))
        out.append((start * c.segment_seconds, length * c.segment_seconds))
    return out


def generate_phd_world(config: Optional[PHDWorldConfig] = None) -> Tuple[PHDData, PHDTruth]:
    """The world of ``config`` (default :data:`PHD_PRESETS` ``"default"``): contract data and truth."""
    c = config or PHD_PRESETS["default"]
    rng = _rngs(c.seed)
    topics = rng["space"].normal(size=(c.n_topics, c.latent_dim))
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    e_g = rng["space"].normal(size=c.latent_dim)
    e_g /= np.linalg.norm(e_g)
    maps = (rng["space"].normal(size=(c.latent_dim, c.visual_dim)) / np.sqrt(c.latent_dim),
            rng["space"].normal(size=(c.latent_dim, c.text_dim)) / np.sqrt(c.latent_dim))
    videos: Dict[str, PHDVideo] = {}
    shot_rows, shots_of = [], {}
    for i in range(c.n_videos):
        vid = f"v{i:05d}"
        videos[vid], shots_of[vid] = _video(rng["videos"], c, topics, e_g, maps)
        shot_rows += [(vid, j, int(f), int(e), int(k), g) for j, (f, e, k, g) in enumerate(shots_of[vid])]
    n_test_videos = max(1, int(round(c.test_video_share * c.n_videos)))
    pools = {"train": np.arange(c.n_videos - n_test_videos), "test": np.arange(c.n_videos - n_test_videos, c.n_videos)}
    sel_rows, user_rows, interest_rows = [], [], []
    n_users = c.n_train_users + c.n_test_users
    for u in range(n_users):
        uid, split = f"u{u:05d}", "train" if u < c.n_train_users else "test"
        interests = rng["users"].choice(c.n_topics, size=c.interests_per_user, replace=False)
        weights = rng["users"].dirichlet(np.full(c.interests_per_user, c.interest_concentration))
        affinity = np.zeros(c.n_topics)
        affinity[interests] = c.interests_per_user * weights
        interest_rows += [(uid, int(k), float(w)) for k, w in zip(interests, weights)]
        target = int(rng["assign"].choice(pools[split]))
        # train users' history stays in the train pool (test targets are never seen in training)
        others = np.setdiff1d(pools["train"] if split == "train" else np.arange(c.n_videos), [target])
        history = rng["assign"].choice(others, size=c.history_size, replace=False)
        user_rows.append((uid, split))
        for v, role in [(target, "target")] + [(int(h), "history") for h in history]:
            vid = f"v{v:05d}"
            n_select = 1 + int(rng["select"].random() < c.two_selection_prob) if role == "target" else 1
            for start, duration in _select(rng["select"], c, shots_of[vid], affinity, n_select):
                sel_rows.append((uid, vid, start, duration, role))
    labels = PHDLabels(
        pd.DataFrame(sel_rows, columns=["user_id", "video_id", "start", "duration", "role"]),
        pd.DataFrame(user_rows, columns=["user_id", "split"]),
        {vid: video.n_segments * c.segment_seconds for vid, video in videos.items()},
    )
    truth = PHDTruth(
        pd.DataFrame(shot_rows, columns=["video_id", "shot", "first", "end", "topic", "generic"]),
        pd.DataFrame(interest_rows, columns=["user_id", "topic", "weight"]),
        topics, e_g,
    )
    return PHDData(c.segment_seconds, videos, labels), truth


def phd_world_config(preset: str = "default", **overrides: object) -> PHDWorldConfig:
    """The preset ``preset`` with ``overrides`` (unknown field -> TypeError, unknown preset -> KeyError)."""
    if preset not in PHD_PRESETS:
        raise KeyError(f"unknown PHD world preset {preset!r}; known: {sorted(PHD_PRESETS)}")
    fields = {f.name for f in dataclasses.fields(PHDWorldConfig)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise TypeError(f"unknown PHD world knob(s) {unknown}; valid: {sorted(fields)}")
    return dataclasses.replace(PHD_PRESETS[preset], **overrides)
