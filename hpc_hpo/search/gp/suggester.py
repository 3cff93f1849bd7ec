"""The worker's Bayesian step: a replica of the search history and the point it suggests next.

The master sends each worker only what it has not seen yet (``update``) and the points
running elsewhere (``suggest(pending)``). The replica averages repeated evaluations of a
point, fits the GP on the standardised averages, adds the pending points as fantasies
(kriging believer: each pending point is believed to score the GP's mean there, and the
incumbent includes those beliefs, so the acquisition vanishes at every pending point), and
maximises the acquisition. It never proposes a point already observed, nor one within 1% of
the unit-cube diagonal of a point another worker is evaluating right now (that information
is on its way; refining near finished points is how the search converges, and is allowed).

Failed trials are not skipped: a point whose evaluations all failed is imputed the worst
value observed so far, so the search steers away from regions that crash (a learning rate
that diverges) instead of proposing them again.

With early stopping (:mod:`hpc_hpo.search.stopping`) an observation also carries the trial's
values at the rungs it reached (and its final value if it ran to the end). The GP then models
one budget, as BOHB does: the highest rung that at least ``max(MIN_POINTS, dimensions + 1)``
trials reached, each at its value there (a trial of a Hyperband bracket that started above it, at
its first rung above). Trials stopped below that rung are not dropped: they lost to others at a
lower rung, so they are imputed the worst value seen at the modelled rung, and the search learns
where not to go. Their early values are never taken at face value (an early loss
is not comparable with a final one). Imputing instead their value at their last rung moved by the
median gain of the trials that went on (a typical learning curve) did worse on the synthetic
curves of ``benchmarks/early_stopping.py``: median regret 0.0093 against 0.0023 (5 seeds).

Hyperparameters are refitted (from the previous fit as a warm start, and every tenth time
also from the default) at every step while there are at most ``ALWAYS_REFIT_BELOW`` points,
then every ``REFIT_EVERY`` steps or when the history has grown by a fifth; in between the
posterior keeps the last hyperparameters and the last step's Cholesky factor, extended by the points that
came since (and by the pending points, as fantasies: :meth:`GaussianProcess.extended`). Large histories: the fit
uses at most ``MAX_FIT`` points (the best quarter plus a random spread of the rest) and the
posterior at most ``MAX_POSTERIOR`` chosen the same way, so a suggestion stays well under a
second at 2,000 observations while the best region keeps every point.

A look-ahead (:meth:`BayesSuggester.prepare`) does the next step while the worker's trial runs; the
step after the trial folds in what finished meanwhile: a short refit, the prepared candidates scored
again, a short refinement. From ``KEEP_POSTERIOR_FROM`` finished points, where that would cost nearly a
whole step, the prepared posterior is kept instead: a result for a point that was pending only changes a
value there, a result elsewhere extends the Cholesky factor by a row, and the prepared candidates are
ranked again (no refit, no new candidates).

The step runs with one BLAS thread: its matrices are small (at most a few hundred rows), where
threads cost more than they give, and several workers share a node. With OpenBLAS's default
threads, 8 workers on 2 cores took 144 ms per step instead of 60. The objective keeps the
threads it had.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from scipy.linalg import cho_solve, solve_triangular
from threadpoolctl import ThreadpoolController

from ..bayes_options import DEFAULTS as DEFAULT_OPTIONS
from ..space import Space
from .acquisition import acquisition
from .encoding import Encoding
from .kernel import matern52, scaled_sq_dist
from .model import GaussianProcess
from .optimize import local_candidates, ranked_points
from .warping import transform

log = logging.getLogger(__name__)

#: No suggestion closer to a pending point than this fraction of the unit-cube diagonal.
PENDING_RADIUS = 0.01
MAX_FIT = 200
MAX_POSTERIOR = 1000
#: Finished points needed before the GP is trusted; until then, quasi-random exploration.
MIN_POINTS = 3
FIT_MAXITER = 60
FRESH_START_EVERY = 10
ALWAYS_REFIT_BELOW = 100
REFIT_EVERY = 5
TOP_FOR_LOCAL_SEARCH = 5
#: Candidates a look-ahead keeps for the next step to score again (:meth:`BayesSuggester.prepare`).
PREPARED = 256
#: The short local refinement when a prepared step is folded in: starts (besides the best points), iterations.
FOLD_STARTS = 3
FOLD_INCUMBENT_STARTS = 3
FOLD_MAXITER = 15
#: ... and the refit of the hyperparameters then, warm from the prepared step's (without it Branin's median
#: regret at 50 evaluations with 8 workers was 15 times that of the whole step).
FOLD_FIT_MAXITER = 10
#: From this many finished points (the posterior is then a subset of them) a prepared step keeps its posterior and
#: folds new results into it (:meth:`BayesSuggester._fold_into_kept_posterior`): tens of milliseconds, not 0.1-0.3 s.
KEEP_POSTERIOR_FROM = MAX_POSTERIOR
#: ... adding at most this many of the results it did not have as pending (the best quarter, then a random spread)
#: to the kept posterior, which models a subset of the history anyway: the fold-in stays tens of milliseconds
#: when a trial's worth of results came in (thousands, with thousands of workers).
KEPT_NEW_ROWS = 128


@dataclass
class _Point:
    params: dict[str, Any]
    total: float = 0.0
    successes: int = 0
    failures: int = 0
    levels: tuple[float, ...] = ()  # minimised values at the rungs reached (+ final), with a stopping rule


def _first_known(levels: tuple[float, ...]) -> float | None:
    """The first finite value of ``levels`` (a trial's values from the modelled rung on), or None."""
    return next((v for v in levels if math.isfinite(v)), None)


@dataclass
class _KeptPosterior:
    """What folding results in without a new step needs, kept from a prepared step (its hyperparameters).

    A GP's covariances depend on where the points are, not on their values. A result for a point that was
    pending (believed at the mean) only changes a value; a result elsewhere adds a row to the Cholesky
    factor and lowers the standard deviation at the candidates by a rank-k term. Both are a fraction of a
    step: triangular solves against the prepared factor, no refit, no new candidates.
    """
    points: int  # finished points then: those added since are new
    modelled: list[tuple]  # keys of the finished points in the posterior, in its order
    fantasies: list[tuple]  # keys of the pending points believed at the mean, after them
    gp: GaussianProcess  # the prepared posterior over the modelled points and the fantasies
    pending_cross: np.ndarray  # K(fantasies, modelled): each fantasy's belief is the mean over the modelled
    candidates_cross: np.ndarray  # K(candidates, modelled + fantasies)
    candidates_solved: np.ndarray  # L^-1 K(modelled + fantasies, candidates)
    candidates_var: np.ndarray  # the posterior variance at the candidates


@dataclass
class _Prepared:
    """A step done ahead: the best candidates then, for the options it used, at that many observations."""
    options: tuple
    candidates: np.ndarray
    observations: int
    kept: _KeptPosterior | None = None


class _Model(NamedTuple):
    """The posterior of a step and how it was built."""
    gp: GaussianProcess
    X: np.ndarray  # every finished point, encoded
    y: np.ndarray  # their values, transformed
    best: float  # the incumbent, beliefs at pending points included
    pending_unit: np.ndarray | None  # every pending point in the unit cube
    modelled: np.ndarray  # indices of the finished points in the posterior, in its order
    fantasies: list[dict[str, Any]]  # the pending points believed at the mean, after them


def _options_key(options: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, v) for k, v in options.items() if k in DEFAULT_OPTIONS))


class BayesSuggester:
    """A replica of the history (values to minimise) and the GP step over it."""

    def __init__(self, space: Space, minimize: bool, rng: np.random.Generator):
        self.space = space
        self.encoding = Encoding(space)
        self.sign = 1.0 if minimize else -1.0
        self.rng = rng
        self._points: dict[tuple, _Point] = {}
        self._theta: np.ndarray | None = None
        self._fits = 0
        self._fitted_points = 0
        self._since_fit = 0
        self.observations = 0
        self._prepared: _Prepared | None = None
        self._base: GaussianProcess | None = None  # the last step's GP before fantasies, to extend at the next
        self._threadpools = ThreadpoolController()
        #: How the last :meth:`suggest` chose its point, for the worker's log: "explore" (too few points yet, or the
        #: step failed), "whole" (fit, candidates, refinement), "fold" (the prepared step with what came since),
        #: "kept posterior" (the prepared step's posterior extended by what came since, no new GP).
        self.last_step = ""

    @property
    def keeps_posterior(self) -> bool:
        """Whether a step prepared now keeps its posterior for the fold-in (:data:`KEEP_POSTERIOR_FROM`): folding a
        trial's worth of results into it then costs a tenth of a whole step."""
        return len(self._points) >= KEEP_POSTERIOR_FROM

    def update(self, observations: Iterable[tuple]) -> None:
        """Add finished trials (params, value or None if the trial failed or was stopped early[, values at the
        rungs it reached]) to the replica."""
        for observation in observations:
            params, value = observation[0], observation[1]
            levels = observation[2] if len(observation) > 2 else ()
            key = self.space.key(params)
            point = self._points.get(key)
            if point is None:
                point = self._points[key] = _Point(dict(params))
            if len(levels) > len(point.levels):
                point.levels = tuple(self.sign * v if math.isfinite(v) else math.inf for v in levels)
            if value is None:
                if not levels:
                    point.failures += 1
            else:
                point.total += self.sign * value
                point.successes += 1
            self.observations += 1

    def suggest(self, pending: list[Mapping[str, Any]], options: Mapping[str, Any] | None = None,
                slot: int = 0) -> dict[str, Any]:
        """The next point: the acquisition's maximum among points neither observed nor pending.

        ``slot`` k > 0: k other workers choose at the same moment from (nearly) the same history, and would find the
        same maximum; this one takes the best point after k better ones, each at least PENDING_RADIUS from the
        better ones, as if the points the others take were pending.
        """
        options = {**DEFAULT_OPTIONS, **(options or {})}
        exclude = set(self._points) | {self.space.key(p) for p in pending}
        points = list(self._points.values())
        self.last_step = "explore"
        if sum(p.successes > 0 or bool(p.levels) for p in points) < MIN_POINTS:
            return self._explore(exclude)
        try:
            with self._threadpools.limit(limits=1, user_api="blas"):
                return self._gp_step(points, pending, exclude, options, slot)
        except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
            self.last_step = "explore"
            log.warning("Bayesian step failed (%s: %s); proposing an unexplored point instead", type(exc).__name__, exc)
            return self._explore(exclude)

    def _needs_fit(self, n: int) -> bool:
        """Refit the hyperparameters every time while points are few, then every REFIT_EVERY steps
        or when the history has grown by a fifth since the last fit, while it fits in MAX_POSTERIOR (beyond, the
        fit sees MAX_FIT of them either way; with thousands of workers a history grows by a fifth at every step)."""
        if self._theta is None or n <= ALWAYS_REFIT_BELOW:
            return True
        return self._since_fit >= REFIT_EVERY or (n > 1.2 * self._fitted_points and self._fitted_points < MAX_POSTERIOR)

    def _values(self, points: list[_Point]) -> np.ndarray:
        if any(p.levels for p in points):
            return self._values_at_a_rung(points)
        ok = [p.total / p.successes for p in points if p.successes]
        worst = max(ok)
        return np.array([p.total / p.successes if p.successes else worst for p in points])

    def _values_at_a_rung(self, points: list[_Point]) -> np.ndarray:
        """Each point's value at the highest rung enough points reached; the worst there for the others."""
        needed = max(MIN_POINTS, len(self.space.params) + 1)
        depth = max(len(p.levels) for p in points)
        reached = [sum(len(p.levels) > level for p in points) for level in range(depth)]
        level = max((i for i, n in enumerate(reached) if n >= needed), default=0)
        values = [_first_known(p.levels[level:]) for p in points]
        there = [v for v in values if v is not None]
        worst = max(there) if there else 0.0
        return np.array([worst if v is None else v for v in values])

    def _subset(self, values: np.ndarray, limit: int) -> np.ndarray:
        """Indices of at most ``limit`` points: the best quarter, then a random spread of the rest."""
        n = len(values)
        if n <= limit:
            return np.arange(n)
        order = np.argsort(values, kind="stable")
        best = order[: limit // 4]
        rest = self.rng.choice(order[limit // 4:], size=limit - len(best), replace=False)
        return np.sort(np.concatenate([best, rest]))

    def prepare(self, pending: list[Mapping[str, Any]], options: Mapping[str, Any] | None = None) -> None:
        """Do the next :meth:`suggest`'s work ahead, while this worker's trial runs (in a helper thread).

        The full step (fit, thousands of candidates, local refinement) with ``pending`` as the running
        trials, this worker's own included; it keeps the best :data:`PREPARED` candidates. The next
        ``suggest`` only folds in what finished meanwhile: the posterior with the last hyperparameters
        (one Cholesky, no fit), the kept candidates and fresh ones around the best points scored again,
        and the pending points of that moment kept at a distance as always. Never raises: without a
        prepared step, ``suggest`` does the whole step.
        """
        self._prepared = None
        options = {**DEFAULT_OPTIONS, **(options or {})}
        points = list(self._points.values())
        if sum(p.successes > 0 or bool(p.levels) for p in points) < MIN_POINTS:
            return
        try:
            with self._threadpools.limit(limits=1, user_api="blas"):
                model = self._posterior(points, pending, refit=True)
                top = np.argsort(model.y, kind="stable")[:TOP_FOR_LOCAL_SEARCH]
                ranked, _ = ranked_points(model.gp, self.encoding, self.rng, self.encoding.to_unit(model.X[top]),
                                          options["acquisition"], model.best, options["xi"], options["kappa"])
                ranked = self._apart(ranked, model.pending_unit)[:PREPARED]  # its own trial among them: not known yet
                kept = self._keep_posterior(model, ranked) if self.keeps_posterior else None
        except (np.linalg.LinAlgError, ValueError, FloatingPointError) as exc:
            log.warning("Bayesian look-ahead failed (%s: %s); the next step is done in full", type(exc).__name__, exc)
            return
        self._prepared = _Prepared(_options_key(options), ranked, self.observations, kept)

    def _keep_posterior(self, model: _Model, candidates: np.ndarray) -> _KeptPosterior:
        gp, keys = model.gp, list(self._points)
        n = len(model.modelled)
        cross = matern52(scaled_sq_dist(candidates, gp.X_, gp.lengthscales_), gp.s2_)
        solved = solve_triangular(gp.L_, cross.T, lower=True, check_finite=False)
        return _KeptPosterior(
            points=len(keys), modelled=[keys[i] for i in model.modelled],
            fantasies=[self.space.key(p) for p in model.fantasies], gp=gp,
            pending_cross=matern52(scaled_sq_dist(gp.X_[n:], gp.X_[:n], gp.lengthscales_), gp.s2_),
            candidates_cross=cross, candidates_solved=solved,
            candidates_var=np.maximum(gp.s2_ - np.einsum("ij,ij->j", solved, solved), 1e-12))

    def _gp_step(self, points: list[_Point], pending: list[Mapping[str, Any]], exclude: set[tuple],
                 options: Mapping[str, Any], slot: int = 0) -> dict[str, Any]:
        prepared, self._prepared = self._prepared, None
        if prepared is not None and (prepared.options != _options_key(options)
                                     or self.observations - prepared.observations > max(8, prepared.observations // 2)):
            prepared = None  # prepared for another phase, or long ago: the full step
        if prepared is not None and prepared.kept is not None:
            folded = self._fold_into_kept_posterior(points, prepared, options)
            if folded is not None:
                self.last_step = "kept posterior"
                ranked, _ = folded
                pending_unit = self.encoding.to_unit(self.encoding.encode(list(pending))) if pending else None
                return self._first_allowed(ranked, pending_unit, exclude, slot)
        self.last_step = "whole" if prepared is None else "fold"
        model = self._posterior(points, pending, refit=True,
                                maxiter=FIT_MAXITER if prepared is None else FOLD_FIT_MAXITER)
        top = np.argsort(model.y, kind="stable")[:TOP_FOR_LOCAL_SEARCH]
        acquisition = (options["acquisition"], model.best, options["xi"], options["kappa"])
        best_unit = self.encoding.to_unit(model.X[top])
        if prepared is None:
            ranked, _ = ranked_points(model.gp, self.encoding, self.rng, best_unit, *acquisition)
        else:  # fold in what finished since: the kept candidates and fresh ones near the best, refined briefly
            kept = np.vstack([prepared.candidates, local_candidates(self.encoding, self.rng, best_unit)])
            ranked, _ = ranked_points(model.gp, self.encoding, self.rng, best_unit, *acquisition, X=kept,
                                      n_starts=FOLD_STARTS, n_incumbent_starts=FOLD_INCUMBENT_STARTS,
                                      maxiter=FOLD_MAXITER)
        return self._first_allowed(ranked, model.pending_unit, exclude, slot)

    def _fold_into_kept_posterior(self, points: list[_Point], prepared: _Prepared,
                      options: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """The prepared candidates ranked again with the results that came since, without a new step
        (:class:`_KeptPosterior`), and their acquisition values, best first; None when a result repeated a finished
        point: then the usual fold.

        With thousands of workers the usual fold costs nearly a whole step (the posterior over a thousand points
        and hundreds of fantasies, then scoring and refining); the results that came since are a few percent of
        the modelled points. What this leaves out: a refit, the refinement around a new best point, and the new
        results in the beliefs at the points still pending.
        """
        fold = prepared.kept
        keys = list(self._points)
        new = keys[fold.points:]
        if self.observations - prepared.observations != len(new):
            return None
        index = {key: i for i, key in enumerate(keys)}
        believed = set(fold.fantasies)
        elsewhere = [key for key in new if key not in believed]  # results for points the posterior lacks
        y = transform(self._values(points))
        if len(elsewhere) > KEPT_NEW_ROWS:
            chosen = self._subset(y[[index[key] for key in elsewhere]], KEPT_NEW_ROWS)
            elsewhere = [elsewhere[i] for i in chosen]
        modelled = y[[index[key] for key in fold.modelled]]
        n = len(fold.modelled)
        beliefs = fold.pending_cross @ cho_solve((fold.gp.L_[:n, :n], True), modelled, check_finite=False)
        finished = np.array([key in index for key in fold.fantasies], dtype=bool)
        values = np.concatenate([modelled, np.where(finished, [y[index.get(key, 0)] for key in fold.fantasies],
                                                    beliefs)])
        gp, var = fold.gp, fold.candidates_var
        candidates = prepared.candidates
        if elsewhere:
            X_new = self.encoding.encode([self._points[key].params for key in elsewhere])
            values = np.concatenate([values, y[[index[key] for key in elsewhere]]])
            gp = gp.extended(X_new, values)
            m = len(fold.gp.X_)
            new_cross = matern52(scaled_sq_dist(X_new, candidates, gp.lengthscales_), gp.s2_)
            w = solve_triangular(gp.L_[m:, m:], new_cross - gp.L_[m:, :m] @ fold.candidates_solved, lower=True,
                                 check_finite=False)
            var = np.maximum(var - np.einsum("ij,ij->j", w, w), 1e-12)
            mean = np.hstack([fold.candidates_cross, new_cross.T]) @ gp.alpha_
        else:
            mean = fold.candidates_cross @ cho_solve((gp.L_, True), values, check_finite=False)
        best = min(float(y.min()), float(beliefs[~finished].min(initial=np.inf)))
        scores = acquisition(options["acquisition"], mean, np.sqrt(var), best, options["xi"], options["kappa"])[0]
        order = np.argsort(-scores, kind="stable")
        return candidates[order], scores[order]

    def _posterior(self, points: list[_Point], pending: list[Mapping[str, Any]], refit: bool,
                   maxiter: int = FIT_MAXITER) -> _Model:
        """The GP over the history (hyperparameters refitted when due and ``refit``), with the pending
        points as fantasies at its mean."""
        X = self.encoding.encode([p.params for p in points])
        y = transform(self._values(points))

        if self._theta is None or (refit and self._needs_fit(len(points))):
            fit_idx = self._subset(y, MAX_FIT)
            fresh_start = self._fits % FRESH_START_EVERY == 0  # now and then also from the default, not only warm
            self._theta = GaussianProcess.fit(X[fit_idx], y[fit_idx], theta0=self._theta, maxiter=maxiter,
                                              from_default=fresh_start and maxiter == FIT_MAXITER).theta_
            self._fits += 1
            self._fitted_points, self._since_fit = len(points), 0
        self._since_fit += 1
        post_idx = self._subset(y, MAX_POSTERIOR)
        gp = self._base_posterior(X[post_idx], y[post_idx])

        best = float(y.min())
        fresh = [p for p in pending if self.space.key(p) not in self._points]
        pending_unit = self.encoding.to_unit(self.encoding.encode(list(pending))) if pending else None
        if fresh:
            P = self.encoding.encode(fresh)
            believed = gp.mean(P)
            gp = gp.condition_on(P, believed)
            best = min(best, float(believed.min()))
        return _Model(gp, X, y, best, pending_unit, post_idx, fresh)

    def _base_posterior(self, X: np.ndarray, y: np.ndarray) -> GaussianProcess:
        """The GP over the history's points ``X`` with the last fitted theta: the last step's, extended by the
        points that came since, when the hyperparameters are the same and ``X`` only grew (the usual case
        between two fits, while the history fits in MAX_POSTERIOR); otherwise computed anew."""
        last = self._base
        if (last is not None and last.theta_ is self._theta and len(last.X_) <= len(X)
                and np.array_equal(last.X_, X[:len(last.X_)])):
            gp = last.extended(X[len(last.X_):], y)
        else:
            gp = GaussianProcess(X, y, self._theta)
        self._base = gp
        return gp

    def _apart(self, ranked: np.ndarray, pending_unit: np.ndarray | None) -> np.ndarray:
        """The encoded points of ``ranked`` at least PENDING_RADIUS of the diagonal from every pending point."""
        if pending_unit is None or not len(ranked):
            return ranked
        unit = self.encoding.to_unit(ranked)
        nearest = np.sqrt(((unit[:, None, :] - pending_unit[None, :, :]) ** 2).sum(-1)).min(axis=1)
        return ranked[nearest >= PENDING_RADIUS * math.sqrt(unit.shape[1])]

    def _first_allowed(self, ranked: np.ndarray, pending_unit: np.ndarray | None, exclude: set[tuple],
                       slot: int = 0) -> dict[str, Any]:
        """The best-ranked point neither observed nor pending, nor next to a pending point; with ``slot`` k, the
        (k+1)-th such point of those at least PENDING_RADIUS apart."""
        ranked = self._apart(ranked, pending_unit)  # never next to a point another worker is evaluating right now
        passed: list[np.ndarray] = []  # the better points left to the workers in the slots before this one
        for start in range(0, len(ranked), 64):
            block = ranked[start:start + 64]
            unit = self.encoding.to_unit(block)
            radius = PENDING_RADIUS * math.sqrt(unit.shape[1])
            for params, point in zip(self.encoding.decode(block), unit, strict=True):
                if self.space.key(params) in exclude:
                    continue
                if any(np.sqrt(((point - other) ** 2).sum()) < radius for other in passed):
                    continue
                if len(passed) == slot:
                    return params
                passed.append(point)
        return self._explore(exclude)

    def _explore(self, exclude: set[tuple]) -> dict[str, Any]:
        """A random point not seen yet (any random point once the space is exhausted)."""
        for _ in range(100):
            params = self.space.sample(self.rng, 1)[0]
            if self.space.key(params) not in exclude:
                return params
        return params

