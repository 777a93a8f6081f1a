"""Does the user's history help on the synthetic personalised world? Diagnosis probes (docs/HIGHLIGHTS.md,
"Does history help? diagnosis"). Single seed, CPU; prints figures (mAP x 100 on the test users, PHD protocol).

Part 1 (no training, closed-form probes):

* ``truth``: the world's utility with the user's true affinities (full) vs its generic part only.
* ``topic-profile (true topics)``: generic part + beta x the share of the user's history clips whose
  shot has the target shot's topic (truth topics; the ceiling of "identify the interest from 8 clips").
* ``linear generic``: ridge regression of the segment label on the observable features (train users).
* ``cluster profile``: linear generic + beta x the user's profile over k-means clusters of the
  observable features (history clip segments -> clusters; no truth), scored with the user's own and
  with another user's history; beta chosen on the train users.

Part 2 (``--train``): trains PR-Net, PR-Net_G, ContentCTR-HL (+ w/o history) for ``--epochs`` and prints own vs
other-history mAP, the spread of the user weight and attention across users, and the gradient reaching the
history pathway.

    OMP_NUM_THREADS=1 nice -n 10 python bench/bench_phd_history.py [--seed 0] [--preset generic]
        [--train --epochs 10 [--loo] [--rows pr_net,pr_net_G,...]]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from scipy.cluster.vq import kmeans2

from kuaihl_rec.data.phd.examples import (UserExample, clip_range, leave_one_out_examples, segment_labels,
                                          user_examples)
from kuaihl_rec.data.phd.world import PHDTruth, generate_phd_world, phd_world_config
from kuaihl_rec.metrics.phd import PHDItem, phd_evaluate


def _map(data, examples: Sequence[UserExample], scores: Sequence[np.ndarray]) -> float:
    items = [PHDItem(e.user_id, e.selections, data.videos[e.video_id].n_segments * data.segment_seconds, s,
                     data.segment_seconds) for e, s in zip(examples, scores)]
    return float(phd_evaluate(items)["map"])  # already x 100


def _other(examples: Sequence[UserExample]) -> List[UserExample]:
    """Each user with the next user's history (the report's "other user's history")."""
    return [dataclasses.replace(e, history=examples[(i + 1) % len(examples)].history) for i, e in enumerate(examples)]


def _features(video) -> np.ndarray:
    return np.concatenate([video.visual, video.text], axis=1).astype(np.float64)


def _segment_topics(truth: PHDTruth, data) -> Dict[str, np.ndarray]:
    out = {}
    for vid, g in truth.shots.groupby("video_id", sort=False):
        t = np.empty(data.videos[vid].n_segments, int)
        gen = np.empty(data.videos[vid].n_segments)
        for first, end, topic, gv in zip(g["first"], g["end"], g["topic"], g["generic"]):
            t[first:end], gen[first:end] = topic, gv
        out[vid] = np.stack([t, gen])
    return out


def _history_segments(data, e: UserExample, clip_segments: int = 8):
    """(video_id, first, end) of each history clip, as the models read them."""
    out = []
    for vid, start, dur in e.history:
        f, g = clip_range(start, dur, data.segment_seconds, data.videos[vid].n_segments, clip_segments)
        out.append((vid, f, g))
    return out


def _profile(keys: Sequence[int], k: int, alpha: float = 0.5) -> np.ndarray:
    counts = np.bincount(np.asarray(keys, int), minlength=k).astype(float)
    return (counts + alpha) / (counts.sum() + k * alpha)


def truth_probes(data, truth: PHDTruth, test: Sequence[UserExample], cfg) -> Dict[str, float]:
    seg = _segment_topics(truth, data)
    aff = {}
    for uid, g in truth.interests.groupby("user_id", sort=False):
        a = np.zeros(cfg.n_topics)
        a[g["topic"].to_numpy()] = cfg.interests_per_user * g["weight"].to_numpy()
        aff[uid] = a
    full = [cfg.preference_signal * aff[e.user_id][seg[e.video_id][0].astype(int)] + cfg.generic_weight * seg[e.video_id][1]
            for e in test]
    generic = [seg[e.video_id][1] for e in test]
    out = {"truth utility (true affinities)": _map(data, test, full), "truth generic part": _map(data, test, generic)}

    def hist_topics(e):
        return [int(seg[v][0][f]) for v, f, _ in _history_segments(data, e)]

    for name, exs in (("own", test), ("other", _other(test))):
        best = []
        for beta in (0.5, 1.0, 2.0, 4.0):
            sc = [cfg.generic_weight * seg[e.video_id][1]
                  + beta * cfg.preference_signal * _profile(hist_topics(e), cfg.n_topics)[seg[e.video_id][0].astype(int)]
                  for e in exs]
            best.append((_map(data, test, sc), beta))
        if name == "own":
            beta_own = max(best)[1]
        out[f"truth generic + true-topic history profile, {name} history"] = dict((b, m) for m, b in best)[beta_own]
    return out


def observable_probes(data, train: Sequence[UserExample], test: Sequence[UserExample], n_clusters: int,
                      seed: int, project_generic: bool) -> Dict[str, float]:
    """Probes that read only observable features (no truth)."""
    x_tr = [_features(data.videos[e.video_id]) for e in train]
    y_tr = [segment_labels(e.selections, data.videos[e.video_id].n_segments, data.segment_seconds) for e in train]
    x, y = np.concatenate(x_tr), np.concatenate(y_tr)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    xs = (x - mu) / sd
    xa = np.c_[xs, np.ones(len(xs))]
    w = np.linalg.solve(xa.T @ xa + 1.0 * np.eye(xa.shape[1]), xa.T @ y)

    def gen_score(vid):  # z-scored within the video, so beta below is in units of the generic score's sd
        s = np.c_[(_features(data.videos[vid]) - mu) / sd, np.ones(data.videos[vid].n_segments)] @ w
        return (s - s.mean()) / (s.std() + 1e-9)

    # clusters of all train-pool segments (observable); optionally with the generic direction projected out
    all_x = np.concatenate([(_features(v) - mu) / sd for v in data.videos.values()])
    direction = w[:-1] / np.linalg.norm(w[:-1])

    def proj(z):
        return z - np.outer(z @ direction, direction) if project_generic else z

    centroids, _ = kmeans2(proj(all_x), n_clusters, seed=seed, minit="++")

    def assign(z):
        d = ((proj(z)[:, None, :] - centroids[None]) ** 2).sum(-1)
        return d.argmin(1)

    cache = {vid: assign((_features(v) - mu) / sd) for vid, v in data.videos.items()}

    def personal(exs, beta):
        out = []
        for e in exs:
            keys = [int(np.bincount(cache[v][f:g]).argmax()) for v, f, g in _history_segments(data, e)]
            p = _profile(keys, n_clusters)
            out.append(gen_score(e.video_id) + beta * n_clusters * p[cache[e.video_id]])
        return out

    betas = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)
    tr = {b: _map(data, train, personal(train, b)) for b in betas}
    beta = max(tr, key=tr.get)
    print("  train-user mAP by beta:", {b: round(m, 2) for b, m in tr.items()})
    tag = "generic projected out" if project_generic else "raw features"
    return {
        "linear generic (ridge on features)": _map(data, test, [gen_score(e.video_id) for e in test]),
        f"linear generic + cluster profile ({tag}, beta={beta}), own history": _map(data, test, personal(test, beta)),
        f"linear generic + cluster profile ({tag}, beta={beta}), other history": _map(data, test,
                                                                                    personal(_other(test), beta)),
    }


def kernel_probe(data, train: Sequence[UserExample], test: Sequence[UserExample], latent_dim: int,
                 seed: int, population: bool = True, project: bool = True, smoothing: bool = True,
                 fuse_with: Optional[Dict[str, tuple]] = None) -> Dict[str, float]:
    """Observable likelihood-ratio probe (no truth): features -> top ``latent_dim`` principal components with
    the ridge generic direction projected out, each target segment smoothed over +-1 neighbours, each history
    clip the mean of its segments; ``personal_t = log mean_j exp(kappa cos(x_t, h_j))`` minus the same over a
    population of 400 train users' clips; score = z-scored ridge generic + beta personal (beta, kappa on train).
    ``fuse_with`` {name: (train scores, test scores)} of trained generic models: the same late fusion with the
    z-scored model score in place of the ridge generic."""
    x_tr = np.concatenate([_features(data.videos[e.video_id]) for e in train])
    y_tr = np.concatenate([segment_labels(e.selections, data.videos[e.video_id].n_segments, data.segment_seconds)
                           for e in train])
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-9
    xa = np.c_[(x_tr - mu) / sd, np.ones(len(x_tr))]
    w = np.linalg.solve(xa.T @ xa + np.eye(xa.shape[1]), xa.T @ y_tr)
    _, _, vt = np.linalg.svd((x_tr - mu) / sd, full_matrices=False)
    basis = vt[:latent_dim].T  # [D, latent]
    gdir = basis.T @ w[:-1]
    gdir /= np.linalg.norm(gdir)

    def emb(vid):
        v = data.videos[vid]
        z = ((_features(v) - mu) / sd) @ basis
        return z - np.outer(z @ gdir, gdir) if project else z

    cache = {vid: emb(vid) for vid in data.videos}

    def unit(z):
        return z / (np.linalg.norm(z, axis=-1, keepdims=True) + 1e-9)

    def smooth(z):
        if not smoothing:
            return z
        pad = np.pad(z, ((1, 1), (0, 0)), mode="edge")
        return (pad[:-2] + pad[1:-1] + pad[2:]) / 3.0

    def clips(e):
        return unit(np.stack([cache[v][f:g].mean(0) for v, f, g in _history_segments(data, e)]))

    def gen(vid):
        s = np.c_[(_features(data.videos[vid]) - mu) / sd, np.ones(data.videos[vid].n_segments)] @ w
        return (s - s.mean()) / (s.std() + 1e-9)

    rng = np.random.default_rng(seed)
    pop = np.concatenate([clips(train[i]) for i in rng.choice(len(train), size=min(400, len(train)), replace=False)])

    def lse_mean(c):
        return np.log(np.exp(c).mean(-1))

    def zscore(a):
        return (a - a.mean()) / (a.std() + 1e-9)

    def score(exs, beta, kappa, base=None):
        out = []
        for i, e in enumerate(exs):
            x = unit(smooth(cache[e.video_id]))
            g = gen(e.video_id) if base is None else zscore(base[i])
            ref = lse_mean(kappa * x @ pop.T) if population else 0.0
            out.append(g + beta * (lse_mean(kappa * x @ clips(e).T) - ref))
        return out

    grid = [(b, k) for b in (0.0, 0.25, 0.5, 1.0, 2.0) for k in (2.0, 5.0, 10.0)]
    if fuse_with is not None:
        out = {}
        for name, (s_tr, s_te) in fuse_with.items():
            tr = {bk: _map(data, train, score(train, *bk, base=s_tr)) for bk in grid}
            beta, kappa = max(tr, key=tr.get)
            out[f"{name} alone"] = _map(data, test, s_te)
            for who, exs in (("own", test), ("other", _other(test))):
                out[f"{name} + kernel history ratio (beta={beta}, kappa={kappa}), {who} history"] = _map(
                    data, test, score(exs, beta, kappa, base=s_te))
        return out
    tr = {bk: _map(data, train, score(train, *bk)) for bk in grid}
    beta, kappa = max(tr, key=tr.get)
    tag = f"beta={beta}, kappa={kappa}" + "".join(
        f", no {n}" for n, on in (("population ratio", population), ("generic projection", project),
                                  ("smoothing", smoothing)) if not on)
    return {f"linear generic + kernel history ratio ({tag}), own history": _map(data, test, score(test, beta, kappa)),
            f"linear generic + kernel history ratio ({tag}), other history": _map(data, test,
                                                                                 score(_other(test), beta, kappa))}


def history_on_interest(data, truth: PHDTruth, users: Sequence[UserExample]) -> float:
    """Share of history clips whose shot's true topic is one of the user's interests (reads truth)."""
    seg = _segment_topics(truth, data)
    interests = {u: set(g["topic"]) for u, g in truth.interests.groupby("user_id", sort=False)}
    hits = [int(seg[v][0][f]) in interests[e.user_id] for e in users for v, f, _ in _history_segments(data, e)]
    return float(np.mean(hits))


def cluster_purity(data, truth: PHDTruth, n_clusters: int, seed: int) -> float:
    """Share of segments whose cluster's majority true topic is their topic (diagnostic, reads truth)."""
    seg = _segment_topics(truth, data)
    x = np.concatenate([_features(v) for v in data.videos.values()])
    t = np.concatenate([seg[vid][0] for vid in data.videos]).astype(int)
    z = (x - x.mean(0)) / x.std(0)
    _, lab = kmeans2(z, n_clusters, seed=seed, minit="++")
    hit = sum(np.bincount(t[lab == c]).max() for c in range(n_clusters) if (lab == c).any())
    return hit / len(t)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="default", help="world preset (generic = the preference_signal 0 twin)")
    ap.add_argument("--set", action="append", default=[], metavar="KNOB=VALUE")
    ap.add_argument("--train", action="store_true", help="also train the models (part 2)")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--loo", action="store_true", help="train on every selection of each train user (leave one out)")
    ap.add_argument("--rows", default="pr_net,pr_net_G,contentctr_hl,contentctr_hl_no_history")
    args = ap.parse_args(argv)
    overrides = {k: type(getattr(phd_world_config(), k))(v) for k, v in (s.split("=", 1) for s in args.set)}
    cfg = phd_world_config(args.preset, seed=args.seed, **overrides)
    t0 = time.perf_counter()
    data, truth = generate_phd_world(cfg)
    train, test = user_examples(data, "train"), user_examples(data, "test")
    print(f"# synthetic world {args.preset} seed {args.seed} {overrides or ''}: {len(train)} train / {len(test)} test users")
    print(f"cluster purity of k-means({cfg.n_topics}) on the raw features vs true topics: "
          f"{cluster_purity(data, truth, cfg.n_topics, args.seed):.3f}")
    print(f"share of history clips on one of the user's interest topics: {history_on_interest(data, truth, test):.3f}"
          f" (chance {cfg.topics_per_video / cfg.n_topics:.2f} per video topic)")
    for k, v in truth_probes(data, truth, test, cfg).items():
        print(f"{k:<95s} {v:6.2f}")
    for pg in (False, True):
        for k, v in observable_probes(data, train, test, cfg.n_topics, args.seed, pg).items():
            print(f"{k:<95s} {v:6.2f}")
    for flags in ({}, {"population": False}, {"project": False}, {"smoothing": False}):
        for k, v in kernel_probe(data, train, test, cfg.latent_dim, args.seed, **flags).items():
            print(f"{k:<95s} {v:6.2f}")
    print(f"(part 1: {time.perf_counter() - t0:.1f} s)")
    if args.train:
        # why: part 2 needs torch-backed models; part 1 stays numpy-only
        from bench.phd_history_models import train_probes  # noqa: PLC0415
        if args.loo:
            train = leave_one_out_examples(train)
            print(f"leave-one-out training examples: {len(train)}")
        generic = train_probes(data, train, test, args.rows.split(","), args.epochs, args.seed)
        if generic:
            print("# late fusion: z-scored generic model + population-referenced history kernel (beta, kappa on train)")
            base_train = user_examples(data, "train")
            fuse = {n: (sc[0][:len(base_train)], sc[1]) for n, sc in generic.items()}  # LOO keeps them first
            for k, v in kernel_probe(data, base_train, test, cfg.latent_dim, args.seed, fuse_with=fuse).items():
                print(f"{k:<95s} {v:6.2f}")


if __name__ == "__main__":
    main()
