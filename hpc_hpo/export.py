"""``hpc_hpo export``: a results file as CSV or JSON, one row per trial."""

from __future__ import annotations

import csv
import io
import json
import math
from typing import Any

from .store import Results

_FIRST = ["trial_id", "status", "value"]


def columns(results: Results) -> list[str]:
    """Trial id, status and value first, then parameters, metrics, and the bookkeeping columns."""
    params = [c for c in results.columns if c.startswith("param_")]
    metrics = [f"metric_{name}" for name in results.metric_names]
    rest = [c for c in results.columns if c not in _FIRST and c not in params]
    return _FIRST + params + metrics + rest


def _clean(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def to_csv(results: Results) -> str:
    out = io.StringIO()
    names = columns(results)
    writer = csv.DictWriter(out, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in results.records():
        writer.writerow({k: ("" if _clean(record[k]) is None else record[k]) for k in names})
    return out.getvalue()


def to_json(results: Results) -> str:
    names = columns(results)
    rows = [{k: _clean(record[k]) for k in names} for record in results.records()]
    return json.dumps(rows, indent=1, ensure_ascii=False) + "\n"


def export(results: Results, fmt: str) -> str:
    return to_csv(results) if fmt == "csv" else to_json(results)
