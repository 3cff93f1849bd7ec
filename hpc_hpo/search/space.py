"""The search space: parameter types, their validation, and the map to and from the unit cube.

Each searchable parameter maps a number ``u`` in [0, 1] to a value and back. Random search
draws ``u`` uniformly; the Gaussian process works on ``u`` too, so log scales and integer
rounding are handled once, here. Integers own equal-width bins of the (log-)transformed
range, and a value maps back to the centre of its bin, so ``from_unit(to_unit(v)) == v``.

Plain Python and numpy only: no MPI, no h5py.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

Scalar = str | int | float | bool

#: Parameter names become HDF5 column names (``param_<name>``), so they stay plain.
NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")

PARAM_TYPES = ("float", "int", "categorical", "fixed")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, (float, np.floating))


def _scalar_kind(value: Any) -> str | None:
    """The kind of a TOML scalar: 'str', 'bool', 'int', 'float', or None if not a scalar."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, (bool, np.bool_)):
        return "bool"
    if _is_int(value):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    return None


def _fmt(value: Any) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


@dataclass(frozen=True)
class FloatParam:
    """A real number in [low, high], sampled uniformly or, with ``log``, log-uniformly."""

    name: str
    low: float
    high: float
    log: bool = False

    type = "float"
    searchable = True
    discrete = False

    def _bounds(self) -> tuple[float, float]:
        return (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)

    def from_unit(self, u: np.ndarray) -> list[float]:
        a, b = self._bounds()
        x = a + np.asarray(u, dtype=float) * (b - a)
        values = np.exp(x) if self.log else x
        return np.clip(values, self.low, self.high).tolist()

    def to_unit(self, values: Sequence[float]) -> np.ndarray:
        a, b = self._bounds()
        x = np.log(np.asarray(values, dtype=float)) if self.log else np.asarray(values, dtype=float)
        return np.clip((x - a) / (b - a), 0.0, 1.0)

    def check(self, value: Any, where: str) -> float:
        if not _is_number(value):
            raise ConfigError(f"{where}: must be a number for float parameter '{self.name}' (got {_fmt(value)})")
        value = float(value)
        if not self.low <= value <= self.high:
            raise ConfigError(f"{where}: must lie in [{self.low!r}, {self.high!r}] (got {value!r})")
        return value

    def grid(self, steps: int | None, where: str) -> list[float]:
        if steps is None:
            raise ConfigError(f"{where}: float parameter '{self.name}' needs 'steps' for a grid (got none)")
        if steps == 1:
            return self.from_unit(np.array([0.5]))
        return self.from_unit(np.linspace(0.0, 1.0, steps))

    def describe(self) -> dict[str, Any]:
        return {"type": "float", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class IntParam:
    """An integer in [low, high] (both included), uniform or, with ``log``, log-uniform."""

    name: str
    low: int
    high: int
    log: bool = False

    type = "int"
    searchable = True
    discrete = True

    @property
    def cardinality(self) -> int:
        return self.high - self.low + 1

    def _edges(self) -> tuple[float, float]:
        # Each integer owns the bin [v - 0.5, v + 0.5] of the (log-)transformed axis.
        if self.log:
            return math.log(self.low - 0.5), math.log(self.high + 0.5)
        return self.low - 0.5, self.high + 0.5

    def from_unit(self, u: np.ndarray) -> list[int]:
        a, b = self._edges()
        x = a + np.asarray(u, dtype=float) * (b - a)
        values = np.rint(np.exp(x) if self.log else x)
        return np.clip(values, self.low, self.high).astype(np.int64).tolist()

    def to_unit(self, values: Sequence[int]) -> np.ndarray:
        a, b = self._edges()
        v = np.asarray(values, dtype=float)
        x = np.log(v) if self.log else v
        return np.clip((x - a) / (b - a), 0.0, 1.0)

    def check(self, value: Any, where: str) -> int:
        if not _is_int(value):
            raise ConfigError(f"{where}: must be an integer for int parameter '{self.name}' (got {_fmt(value)})")
        value = int(value)
        if not self.low <= value <= self.high:
            raise ConfigError(f"{where}: must lie in [{self.low}, {self.high}] (got {value})")
        return value

    def grid(self, steps: int | None, where: str) -> list[int]:
        if steps is None or steps >= self.cardinality:
            return list(range(self.low, self.high + 1))
        if steps == 1:
            return self.from_unit(np.array([0.5]))
        spaced = np.geomspace(self.low, self.high, steps) if self.log else np.linspace(self.low, self.high, steps)
        return sorted(set(np.rint(spaced).astype(np.int64).tolist()))

    def describe(self) -> dict[str, Any]:
        return {"type": "int", "low": self.low, "high": self.high, "log": self.log}


@dataclass(frozen=True)
class CategoricalParam:
    """One of a list of choices (all strings, all booleans, or all numbers)."""

    name: str
    choices: tuple[Scalar, ...]

    type = "categorical"
    searchable = True
    discrete = True

    @property
    def cardinality(self) -> int:
        return len(self.choices)

    @property
    def kind(self) -> str:
        """'str', 'bool', 'int' or 'float': the type shared by every choice."""
        return _scalar_kind(self.choices[0]) or "str"

    def from_unit(self, u: np.ndarray) -> list[Scalar]:
        k = len(self.choices)
        idx = np.minimum((np.asarray(u, dtype=float) * k).astype(np.int64), k - 1)
        return [self.choices[i] for i in idx.tolist()]

    def to_unit(self, values: Sequence[Scalar]) -> np.ndarray:
        k = len(self.choices)
        return np.array([(self.index(v) + 0.5) / k for v in values], dtype=float)

    def _matches(self, choice: Scalar, value: Any) -> bool:
        same_kind = _scalar_kind(choice) == _scalar_kind(value)
        numeric = self.kind in ("int", "float") and _is_number(value)
        return (same_kind or numeric) and choice == value

    def index(self, value: Scalar) -> int:
        for i, choice in enumerate(self.choices):
            if self._matches(choice, value):
                return i
        raise ValueError(f"{value!r} is not a choice of '{self.name}'")

    def check(self, value: Any, where: str) -> Scalar:
        for choice in self.choices:
            if self._matches(choice, value):
                return choice
        raise ConfigError(f"{where}: must be one of {list(self.choices)!r} (got {_fmt(value)})")

    def grid(self, steps: int | None, where: str) -> list[Scalar]:
        return list(self.choices)

    def describe(self) -> dict[str, Any]:
        return {"type": "categorical", "choices": list(self.choices)}


@dataclass(frozen=True)
class FixedParam:
    """A constant handed to every trial; not searched, but stored with each trial."""

    name: str
    value: Scalar

    type = "fixed"
    searchable = False
    discrete = True
    cardinality = 1

    @property
    def kind(self) -> str:
        return _scalar_kind(self.value) or "str"

    def check(self, value: Any, where: str) -> Scalar:
        if value != self.value or _scalar_kind(value) != _scalar_kind(self.value):
            raise ConfigError(f"{where}: '{self.name}' is fixed to {self.value!r} (got {_fmt(value)})")
        return self.value

    def grid(self, steps: int | None, where: str) -> list[Scalar]:
        return [self.value]

    def describe(self) -> dict[str, Any]:
        return {"type": "fixed", "value": self.value}


Param = FloatParam | IntParam | CategoricalParam | FixedParam


class Space:
    """An ordered set of parameters; turns unit-cube points into parameter dicts and back."""

    def __init__(self, params: Iterable[Param]):
        self.params: tuple[Param, ...] = tuple(params)
        self.names: tuple[str, ...] = tuple(p.name for p in self.params)
        self.searchable: tuple[Param, ...] = tuple(p for p in self.params if p.searchable)
        self.fixed: dict[str, Scalar] = {p.name: p.value for p in self.params if isinstance(p, FixedParam)}
        self._by_name = {p.name: p for p in self.params}

    def __getitem__(self, name: str) -> Param:
        return self._by_name[name]

    def __iter__(self):
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Space) and self.params == other.params

    def __repr__(self) -> str:
        return f"Space({list(self.params)!r})"

    @property
    def dim(self) -> int:
        """Number of searched (non-fixed) parameters: the dimension of the unit cube."""
        return len(self.searchable)

    @property
    def is_discrete(self) -> bool:
        return all(p.discrete for p in self.params)

    @property
    def cardinality(self) -> int | None:
        """Number of distinct points for an all-discrete space, None if any float."""
        if not self.is_discrete:
            return None
        return math.prod(p.cardinality for p in self.params)

    def from_unit(self, u: np.ndarray) -> list[dict[str, Scalar]]:
        """Map an (n, dim) array of unit-cube points to n parameter dicts (native Python types)."""
        u = np.atleast_2d(np.asarray(u, dtype=float))
        columns = [p.from_unit(u[:, j]) for j, p in enumerate(self.searchable)]
        names = [p.name for p in self.searchable]
        if columns:
            points = [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]
        else:
            points = [{} for _ in range(len(u))]
        if self.fixed:
            for point in points:
                point.update(self.fixed)
        return points

    def to_unit(self, points: Sequence[Mapping[str, Scalar]]) -> np.ndarray:
        """Map parameter dicts to an (n, dim) array in the unit cube."""
        columns = [p.to_unit([pt[p.name] for pt in points]) for p in self.searchable]
        return np.column_stack(columns) if columns else np.zeros((len(points), 0))

    def sample(self, rng: np.random.Generator, n: int) -> list[dict[str, Scalar]]:
        """n points drawn uniformly in the unit cube (so log-uniform on log parameters)."""
        return self.from_unit(rng.random((n, self.dim)))

    def check_point(self, point: Any, where: str) -> dict[str, Scalar]:
        """Validate a user-given point: every searched parameter present, nothing unknown."""
        if not isinstance(point, Mapping):
            raise ConfigError(f"{where}: must be a table of parameter values (got {point!r})")
        unknown = [k for k in point if k not in self._by_name]
        if unknown:
            raise ConfigError(f"{where}.{unknown[0]}: not a parameter of the space (parameters: {', '.join(self.names)})")
        checked: dict[str, Scalar] = {}
        for p in self.params:
            if p.name in point:
                checked[p.name] = p.check(point[p.name], f"{where}.{p.name}")
            elif isinstance(p, FixedParam):
                checked[p.name] = p.value
            else:
                raise ConfigError(f"{where}: missing a value for parameter '{p.name}' (got keys {sorted(point)})")
        return checked

    def key(self, point: Mapping[str, Scalar]) -> tuple:
        """A hashable identity of a point, for duplicate detection."""
        return tuple(point[name] for name in self.names)

    def describe(self) -> dict[str, dict[str, Any]]:
        return {p.name: p.describe() for p in self.params}


_ALLOWED_KEYS = {
    "float": ("type", "low", "high", "log"),
    "int": ("type", "low", "high", "log"),
    "categorical": ("type", "choices"),
    "fixed": ("type", "value"),
}


def parse_space(table: Any, where: str = "space") -> Space:
    """Build a Space from the ``[space]`` table of an experiment file, validating every field."""
    if not isinstance(table, Mapping):
        raise ConfigError(f"{where}: must be a table of parameters (got {table!r})")
    if not table:
        raise ConfigError(f"{where}: at least one parameter is required (got an empty table)")
    return Space(parse_param(name, spec, f"{where}.{name}") for name, spec in table.items())


def parse_param(name: str, spec: Any, where: str) -> Param:
    if not NAME_PATTERN.match(name):
        raise ConfigError(
            f"{where}: a parameter name must start with a letter or '_' and use letters, digits, '_', '.', '-' "
            f"(at most 64 characters) (got {name!r})"
        )
    if not isinstance(spec, Mapping):
        raise ConfigError(f'{where}: must be a table such as {{ type = "float", low = 0.0, high = 1.0 }} (got {spec!r})')
    ptype = spec.get("type")
    if ptype is None:
        raise ConfigError(f"{where}.type: is required (one of {', '.join(PARAM_TYPES)})")
    if ptype not in _ALLOWED_KEYS:
        raise ConfigError(f"{where}.type: unknown parameter type (allowed: {', '.join(PARAM_TYPES)}) (got {ptype!r})")
    for key in spec:
        if key not in _ALLOWED_KEYS[ptype]:
            allowed = ", ".join(_ALLOWED_KEYS[ptype])
            raise ConfigError(f"{where}.{key}: unknown key for a {ptype} parameter (allowed: {allowed})")
    if ptype in ("float", "int"):
        return _parse_range(name, ptype, spec, where)
    if ptype == "categorical":
        return _parse_categorical(name, spec, where)
    return _parse_fixed(name, spec, where)


def _parse_range(name: str, ptype: str, spec: Mapping[str, Any], where: str) -> Param:
    bounds = {}
    for key in ("low", "high"):
        if key not in spec:
            raise ConfigError(f"{where}.{key}: is required for a {ptype} parameter")
        value = spec[key]
        if ptype == "int" and not _is_int(value):
            raise ConfigError(f"{where}.{key}: must be an integer (got {_fmt(value)})")
        if ptype == "float" and not (_is_number(value) and math.isfinite(value)):
            raise ConfigError(f"{where}.{key}: must be a finite number (got {_fmt(value)})")
        bounds[key] = int(value) if ptype == "int" else float(value)
    low, high = bounds["low"], bounds["high"]
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: must be true or false (got {_fmt(log)})")
    if low >= high:
        raise ConfigError(f"{where}: 'low' must be < 'high' (got low={low!r}, high={high!r})")
    if log and low <= 0:
        raise ConfigError(f"{where}: 'log = true' needs 'low' > 0 (got low={low!r})")
    if ptype == "int":
        return IntParam(name, low, high, log)
    return FloatParam(name, low, high, log)


def _parse_categorical(name: str, spec: Mapping[str, Any], where: str) -> CategoricalParam:
    choices = spec.get("choices")
    if not isinstance(choices, list):
        raise ConfigError(f"{where}.choices: must be a list of values (got {choices!r})")
    if not choices:
        raise ConfigError(f"{where}.choices: must not be empty (got [])")
    kinds = [_scalar_kind(c) for c in choices]
    if None in kinds:
        bad = choices[kinds.index(None)]
        raise ConfigError(f"{where}.choices: each choice must be a string, number or boolean (got {bad!r})")
    if len(set(kinds)) > 1 and set(kinds) != {"int", "float"}:
        raise ConfigError(f"{where}.choices: choices must all be strings, all numbers or all booleans (got {choices!r})")
    if set(kinds) == {"int", "float"}:
        choices = [float(c) for c in choices]
    if "float" in kinds and not all(math.isfinite(c) for c in choices):
        raise ConfigError(f"{where}.choices: numeric choices must be finite (got {choices!r})")
    seen = []
    for c in choices:
        if c in seen:
            raise ConfigError(f"{where}.choices: choices must be distinct ({c!r} appears twice)")
        seen.append(c)
    return CategoricalParam(name, tuple(choices))


def _parse_fixed(name: str, spec: Mapping[str, Any], where: str) -> FixedParam:
    if "value" not in spec:
        raise ConfigError(f"{where}.value: is required for a fixed parameter")
    value = spec["value"]
    if _scalar_kind(value) is None:
        raise ConfigError(f"{where}.value: must be a string, number or boolean (got {value!r})")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}.value: must be finite (got {value!r})")
    return FixedParam(name, value)
