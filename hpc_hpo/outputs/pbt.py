"""What a pbt phase did, read from the results file: the population, the exploits, what checkpoints took, and the
schedule of the best member (the values it trained with, by epoch range), for ``status``, ``best`` and the report.

A segment is a row with ``member >= 0``; its ``parent`` is the segment whose checkpoint it restored, so the lineage
of any segment is the chain of parents back to a member's first segment.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from .._toml import tomllib
from ..results.checkpoints import disk_use
from ..results.reader import Results
from ..results.records import DONE, describe_params


def segment_rows(records: list[dict]) -> list[dict]:
    """The rows of pbt segments (none in a file without pbt, or of a format before the pbt columns)."""
    return [r for r in records if int(r.get("member", -1)) >= 0]


def searched_names(results: Results) -> list[str]:
    """The parameters a schedule shows: those searched (fixed ones never change)."""
    return [name for name, spec in results.space.items() if spec.get("type") != "fixed"]


def lineage(rows_by_id: dict[int, dict], trial_id: int) -> list[dict]:
    """The segments that led to ``trial_id``'s checkpoint, first first (the chain of parents)."""
    chain, seen = [], set()
    current = rows_by_id.get(trial_id)
    while current is not None and current["trial_id"] not in seen:
        chain.append(current)
        seen.add(current["trial_id"])
        current = rows_by_id.get(int(current["parent"]))
    return chain[::-1]


def schedule(chain: list[dict], names: list[str]) -> list[dict[str, Any]]:
    """The lineage as epoch ranges with the values trained in each (consecutive segments with the same values
    merged): ``[{"start_epoch", "end_epoch", "params", "members"}]``."""
    ranges: list[dict[str, Any]] = []
    for row in chain:
        params = {n: _plain(row[f"param_{n}"]) for n in names}
        if ranges and ranges[-1]["params"] == params and ranges[-1]["end_epoch"] == row["start_epoch"]:
            ranges[-1]["end_epoch"] = int(row["end_epoch"])
            if int(row["member"]) not in ranges[-1]["members"]:
                ranges[-1]["members"].append(int(row["member"]))
        else:
            ranges.append({"start_epoch": int(row["start_epoch"]), "end_epoch": int(row["end_epoch"]),
                           "params": params, "members": [int(row["member"])]})
    return ranges


def schedule_text(ranges: list[dict[str, Any]]) -> list[str]:
    """``epochs 0-7     lr=0.01 dropout=0.2   (member 3)``: one line per range, end epoch inclusive."""
    spans = [f"{r['start_epoch']}-{r['end_epoch'] - 1}" for r in ranges]
    width = max(map(len, spans), default=3)
    return [f"epochs {span:<{width}}  {describe_params(r['params'])}  (member{'s' if len(r['members']) > 1 else ''} "
            f"{', '.join(map(str, r['members']))})" for span, r in zip(spans, ranges, strict=True)]


def pbt_options(results: Results) -> dict[str, Any] | None:
    """The options of the file's first pbt phase, as stored, or None without one."""
    try:
        phases = tomllib.loads(str(results.attrs.get("config", ""))).get("phase", [])
    except tomllib.TOMLDecodeError:
        return None
    return next((p for p in phases if isinstance(p, dict) and p.get("strategy") == "pbt"), None)


def workdir_of(results: Results) -> Path | None:
    """The experiment's workdir as stored: as given if it exists from here, else next to the results file."""
    try:
        workdir = tomllib.loads(str(results.attrs.get("config", ""))).get("experiment", {}).get("workdir", "")
    except tomllib.TOMLDecodeError:
        return None
    if not workdir:
        return None
    path = Path(workdir)
    if path.is_absolute() or path.is_dir():
        return path
    return Path(results.path).resolve().parent / path.name


def pbt_summary(results: Results, records: list[dict] | None = None) -> dict[str, Any] | None:
    """The population at this moment: members, segments, exploits, failures, checkpoints (saved and on disk), and
    the best member's lineage and schedule; None for a file without pbt segments."""
    options = pbt_options(results)
    records = results.records() if records is None else records
    rows = segment_rows(records)
    if options is None or not rows:
        return None
    by_id = {int(r["trial_id"]): r for r in rows}
    finished = [r for r in rows if r["status"] != "running"]
    done = [r for r in finished if r["status"] == DONE]
    exploits = [r for r in finished if int(r["parent"]) >= 0 and int(r["parent"]) in by_id
                and by_id[int(r["parent"])]["member"] != r["member"]]
    saved = [float(r["checkpoint_mb"]) for r in done if math.isfinite(r["checkpoint_mb"]) and r["checkpoint_mb"] > 0]
    workdir = workdir_of(results)
    on_disk, disk_mb = disk_use(workdir) if workdir is not None else (0, 0.0)
    summary: dict[str, Any] = {
        "members": len({int(r["member"]) for r in rows}), "population": int(options.get("population", 0)),
        "interval": int(options.get("interval", 0)), "epochs": int(options.get("epochs", 0)),
        "mode": str(options.get("mode", "async")), "explore": str(options.get("explore", "perturb")),
        "segments": len(finished), "exploits": len(exploits), "failed": len(finished) - len(done),
        "epochs_trained": sum(int(r["end_epoch"]) - int(r["start_epoch"]) for r in done),
        "checkpoints_saved": len(saved), "checkpoints_mb": sum(saved),
        "checkpoint_mb_median": statistics.median(saved) if saved else 0.0,
        "checkpoints_on_disk": on_disk, "disk_mb": disk_mb, "best": None,
    }
    if done:
        minimize = results.minimize
        best = min(done, key=lambda r: r["value"] if minimize else -r["value"])
        chain = lineage(by_id, int(best["trial_id"]))
        summary["best"] = {"trial_id": int(best["trial_id"]), "member": int(best["member"]),
                           "value": float(best["value"]), "end_epoch": int(best["end_epoch"]),
                           "lineage": [int(r["trial_id"]) for r in chain],
                           "schedule": schedule(chain, searched_names(results))}
    return summary


def pbt_text(s: dict[str, Any]) -> str:
    """``4 members (async, perturb), 42 segments of 2 epochs (84 epochs), 9 exploits, 0 failed; checkpoints: ...``."""
    return (f"{s['members']} members ({s['mode']}, {s['explore']}), {s['segments']} segments of {s['interval']} "
            f"epoch{'s' if s['interval'] != 1 else ''} ({s['epochs_trained']} epochs trained), {s['exploits']} "
            f"exploit{'s' if s['exploits'] != 1 else ''}, {s['failed']} failed; checkpoints: {s['checkpoints_saved']} "
            f"saved ({_mb(s['checkpoints_mb'])} in all, {_mb(s['checkpoint_mb_median'])} each), "
            f"{s['checkpoints_on_disk']} on disk now ({_mb(s['disk_mb'])})")


def _mb(mb: float) -> str:
    if mb >= 1000:
        return f"{mb / 1000:.1f} GB"
    if mb >= 1:
        return f"{mb:.1f} MB"
    return f"{mb * 1000:.0f} kB"


def _plain(value: Any) -> Any:
    value = value.item() if hasattr(value, "item") else value
    return value.decode() if isinstance(value, bytes) else value
