"""The ``uncertainty_ladder`` group of results.nc: every rung's summary of every parameter, side by side.

Layout (one Dataset):

- dim ``rung`` (coordinate: rung names in ladder order, e.g. ``mle_wald``, ``bootstrap_bayesian``,
  ``map_laplace``, ``advi_fullrank``, ``nuts``, ``exact``), then each parameter's own dims (``component``,
  ...), with the coordinates the other groups use;
- per parameter ``name`` (report order in the attr ``parameters``, JSON): ``name`` (rung, ...) the
  rung's point summary (MLE, MAP, or the mean of its draws), ``name_sd``, ``name_lower``,
  ``name_upper`` (rung, ...) its sd and interval (equal-tailed ``interval_prob`` for draws, Wald for
  the MLE); NaN where a rung does not give that number; each carries the attr ``label_dims``;
- per rung: ``assumes`` (rung,) the one sentence the report shows, ``seconds`` (rung,) its cost,
  ``pareto_k`` (rung,) PSIS's k where the rung has one (VI), NaN elsewhere;
- attrs: ``interval_prob``, ``parameters``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["GROUP", "PARTITION_GROUP", "STATISTICS", "RungSummary", "coclustering_dataset", "draws_summary",
           "ladder_dataset"]

GROUP = "uncertainty_ladder"

#: Suffixes of the per-parameter variables ("" is the point summary).
STATISTICS = ("", "_sd", "_lower", "_upper")


@dataclass(frozen=True, slots=True)
class RungSummary:
    """One rung's numbers: ``values[name]`` maps ``"estimate"``, ``"sd"``, ``"lower"``, ``"upper"`` (any
    may be missing) to arrays of the parameter's shape."""

    rung: str
    assumes: str
    values: Mapping[str, Mapping[str, np.ndarray]]
    seconds: float = float("nan")
    pareto_k: float = float("nan")
    extra: Mapping[str, float] = field(default_factory=dict)


def draws_summary(draws: Mapping[str, np.ndarray], prob: float) -> dict[str, dict[str, np.ndarray]]:
    """Mean, sd and equal-tailed ``prob`` interval of each draws array (S, ...), NaN draws (failed
    replicates) left out."""
    tail = (1 - prob) / 2
    out = {}
    for name, values in draws.items():
        values = np.asarray(values, dtype=float)
        ok = np.all(np.isfinite(values.reshape(values.shape[0], -1)), axis=1)
        kept = values[ok]
        if kept.shape[0] == 0:
            nan = np.full(values.shape[1:], np.nan)
            out[name] = {"estimate": nan, "sd": nan, "lower": nan, "upper": nan}
            continue
        out[name] = {"estimate": kept.mean(axis=0), "sd": kept.std(axis=0, ddof=1) if len(kept) > 1 else
                     np.full(values.shape[1:], np.nan), "lower": np.quantile(kept, tail, axis=0),
                     "upper": np.quantile(kept, 1 - tail, axis=0)}
    return out


def ladder_dataset(rungs: Sequence[RungSummary], dims: Mapping[str, tuple[str, ...]],
                   label_dims: Mapping[str, tuple[str, ...]], coords: Mapping[str, np.ndarray], interval_prob: float):
    """The group's Dataset from the rungs in ladder order; ``dims`` the parameters' dims in report order."""
    import xarray as xr

    names = [r.rung for r in rungs]
    if len(set(names)) != len(names):
        raise ValueError(f"rung names repeat: {names}")
    data_vars = {}
    for name, param_dims in dims.items():
        shape = None
        for r in rungs:
            for value in r.values.get(name, {}).values():
                shape = np.shape(value)
        if shape is None:
            continue
        for suffix, key in zip(STATISTICS, ("estimate", "sd", "lower", "upper")):
            stacked = np.full((len(rungs), *shape), np.nan)
            for i, r in enumerate(rungs):
                value = r.values.get(name, {}).get(key)
                if value is not None:
                    stacked[i] = value
            data_vars[name + suffix] = xr.Variable(("rung", *param_dims), stacked,
                                                   attrs={"label_dims": " ".join(label_dims.get(name, ()))})
    data_vars["assumes"] = xr.Variable(("rung",), np.array([r.assumes for r in rungs], dtype=object))
    data_vars["seconds"] = xr.Variable(("rung",), np.array([r.seconds for r in rungs], dtype=float))
    data_vars["pareto_k"] = xr.Variable(("rung",), np.array([r.pareto_k for r in rungs], dtype=float))
    used = {d for name in dims for d in dims[name]}
    ds = xr.Dataset(data_vars, coords={"rung": names, **{d: np.asarray(c) for d, c in coords.items() if d in used}})
    ds.attrs["interval_prob"] = float(interval_prob)
    ds.attrs["parameters"] = json.dumps([name for name in dims if name in ds])
    return ds


#: The label-free clustering group.
PARTITION_GROUP = "coclustering"


def coclustering_dataset(similarities: Mapping[str, np.ndarray], em_labels: np.ndarray, obs_dim: str,
                         obs_coords: np.ndarray, points: Mapping[str, object] | None = None,
                         balls: Mapping[str, object] | None = None):
    """The ``coclustering`` group.

    ``similarities`` source name (``"posterior"``, ``"bootstrap_nonparametric"``, ``"advi_fullrank"``,
    ``"exact"``, ...) -> (N, N) similarity matrix; ``em_labels`` (N,) EM's hard labels, which order the
    heat maps; ``points`` loss -> :class:`emvsbayes.ladder.partition.PointPartition`, ``balls`` loss ->
    its :class:`emvsbayes.ladder.partition.CredibleBall`.

    Layout: ``similarity`` (source, obs, obs_to); ``em_labels`` (obs,); per loss (dim ``loss``):
    ``point_labels`` (loss, obs), ``expected_loss``, ``n_clusters``, and the ball's ``ball_radius``,
    ``ball_horizontal`` (loss, obs), ``ball_horizontal_distance``, ``ball_upper`` / ``ball_lower``
    (loss, obs) with ``_distance`` and ``_clusters``; attr ``ball_prob``. ``obs`` is ``obs_dim``.
    """
    import xarray as xr

    to_dim = f"{obs_dim}_to"
    sources = list(similarities)
    data_vars = {
        "similarity": ((("source", obs_dim, to_dim)), np.stack([np.asarray(similarities[s], dtype=float)
                                                               for s in sources])),
        "em_labels": ((obs_dim,), np.asarray(em_labels, dtype=np.int64)),
    }
    coords = {"source": sources, obs_dim: np.asarray(obs_coords), to_dim: np.asarray(obs_coords)}
    attrs = {}
    if points:
        losses = list(points)
        coords["loss"] = losses
        data_vars["point_labels"] = (("loss", obs_dim), np.stack([points[k].labels for k in losses]))
        data_vars["expected_loss"] = (("loss",), np.array([points[k].expected_loss for k in losses]))
        data_vars["n_clusters"] = (("loss",), np.array([points[k].n_clusters for k in losses]))
        if balls:
            b = [balls[k] for k in losses]
            data_vars["ball_radius"] = (("loss",), np.array([x.radius for x in b]))
            for part in ("horizontal", "upper_vertical", "lower_vertical"):
                short = part.split("_")[0]
                data_vars[f"ball_{short}"] = (("loss", obs_dim), np.stack([getattr(x, part) for x in b]))
                data_vars[f"ball_{short}_distance"] = (("loss",), np.array([getattr(x, f"{part}_distance") for x in b]))
            data_vars["ball_upper_clusters"] = (("loss",), np.array([x.upper_vertical_clusters for x in b]))
            data_vars["ball_lower_clusters"] = (("loss",), np.array([x.lower_vertical_clusters for x in b]))
            attrs["ball_prob"] = float(b[0].prob)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
