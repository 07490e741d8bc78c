"""The numbers of a soak run: requests, failures and latency by route (Locust's own stats),
statuses (5xx, 429), memory and connections per minute with the drift between minute 5 (a
third of a run shorter than 10 minutes) and the end, job runs, and the audit."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from locust.env import Environment


def routes(env: Environment, statuses: dict[str, Counter[int]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for (name, _method), entry in sorted(env.stats.entries.items()):
        if not entry.num_requests:
            continue
        codes = statuses.get(name, Counter())
        out[name] = {
            "requests": entry.num_requests,
            "failures": entry.num_failures,
            "p50_ms": entry.get_response_time_percentile(0.5),
            "p99_ms": entry.get_response_time_percentile(0.99),
            "max_ms": round(entry.max_response_time or 0),
            "status_5xx": sum(n for code, n in codes.items() if code >= 500),
            "status_429": codes.get(429, 0),
            "statuses": {str(code): n for code, n in sorted(codes.items())},
        }
    return out


def errors(env: Environment) -> list[dict[str, Any]]:
    return [
        {"name": e.name, "error": str(e.error)[:300], "occurrences": e.occurrences}
        for e in sorted(env.stats.errors.values(), key=lambda e: -e.occurrences)
    ][:30]


def drift(samples: list[dict[str, Any]], minutes: float) -> dict[str, Any]:
    """RSS of each process at minute 5 (a third of a run shorter than 10 minutes) and at the
    end: one sample each, and the median of the samples in the minute from there (in the last
    minute), which a request's allocation in flight at one sample does not move."""
    if len(samples) < 2:
        return {}
    mark = 5.0 if minutes >= 10 else minutes / 3
    first = next((s for s in samples if s["minute"] >= mark), samples[0])
    last = samples[-1]
    early = [s for s in samples if mark <= s["minute"] < mark + 1] or [first]
    late = [s for s in samples if s["minute"] >= last["minute"] - 1] or [last]
    out = {}
    for name, rss in last["rss"].items():
        out[name] = {"from_minute": first["minute"], "to_minute": last["minute"]}
        for key, label in (("rss_mb", "rss"), ("anon_mb", "anon")):
            before, after = first["rss"][name].get(key), rss.get(key)
            if not before or after is None:
                continue
            out[name].update(
                {
                    f"{label}_mb_from": before,
                    f"{label}_mb_to": after,
                    f"{label}_drift_pct": _pct(before, after),
                }
            )
            medians = (
                statistics.median(s["rss"][name][key] for s in early),
                statistics.median(s["rss"][name][key] for s in late),
            )
            out[name].update(
                {
                    f"{label}_median_mb_from": round(medians[0], 1),
                    f"{label}_median_mb_to": round(medians[1], 1),
                    f"{label}_median_drift_pct": _pct(*medians),
                    "median_samples": [len(early), len(late)],
                }
            )
    return out


def stalls(logs: dict[str, Path]) -> dict[str, Any]:
    """Per process, the event loop's stalls its log reports (hub.core.stalls): how many, their
    summed and longest seconds, and the places (innermost hub frame) that held the loop
    longest, summed."""
    out: dict[str, Any] = {}
    for name, path in logs.items():
        seconds: list[float] = []
        places: defaultdict[str, float] = defaultdict(float)
        for line in path.read_text(errors="replace").splitlines():
            if "event loop stalled" not in line:
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            seconds.append(float(entry.get("seconds", 0.0)))
            frames = entry.get("hub_frames") or ["(no frame)"]
            places[frames[-1]] += seconds[-1]
        top = sorted(places.items(), key=lambda kv: -kv[1])[:5]
        out[name] = {
            "stalls": len(seconds),
            "seconds": round(sum(seconds), 1),
            "longest": round(max(seconds, default=0.0), 2),
            "places": {place: round(s, 1) for place, s in top},
        }
    return out


def _pct(before: float, after: float) -> float:
    return round(100 * (after - before) / before, 1)


def text(report: dict[str, Any]) -> str:
    """The report for a person (the JSON file holds everything)."""
    lines = [
        f"soak: {report['minutes']} min, mix {report['preset']}, git {report['git']}",
        f"{'route':<48}{'reqs':>7}{'fail':>6}{'5xx':>5}{'429':>5}{'p50':>7}{'p99':>7}",
    ]
    for name, r in report["routes"].items():
        lines.append(
            f"{name[:47]:<48}{r['requests']:>7}{r['failures']:>6}{r['status_5xx']:>5}"
            f"{r['status_429']:>5}{r['p50_ms']:>7.0f}{r['p99_ms']:>7.0f}"
        )
    lines.append(f"5xx: {report['status_5xx']}   429: {report['status_429']}")
    for name, d in report["rss_drift"].items():
        lines.append(
            f"RSS {name}: {d['rss_mb_from']} MB (min {d['from_minute']}) -> {d['rss_mb_to']} MB "
            f"(min {d['to_minute']}): {d['rss_drift_pct']} %"
            + (
                f"; anonymous {d['anon_mb_from']} -> {d['anon_mb_to']} MB: {d['anon_drift_pct']} %"
                if "anon_mb_from" in d
                else ""
            )
        )
        if "rss_median_mb_from" in d:
            lines.append(
                f"    medians of a minute {d['median_samples']}: {d['rss_median_mb_from']} -> "
                f"{d['rss_median_mb_to']} MB: {d['rss_median_drift_pct']} %"
                + (
                    f"; anonymous {d['anon_median_mb_from']} -> {d['anon_median_mb_to']} MB: "
                    f"{d['anon_median_drift_pct']} %"
                    if "anon_median_mb_from" in d
                    else ""
                )
            )
    lines.append(
        f"PostgreSQL connections (max total): {report['pg_connections_max']}"
        f" (samples refused a connection: {report.get('pg_connections_refused', 0)})"
    )
    samples = report["samples"]
    if len(samples) > 1 and "cpu_s" in samples[-1]:
        span = 60 * (samples[-1]["minute"] - samples[0]["minute"]) or 1.0
        used = {
            name: round((cpu - samples[0]["cpu_s"][name]) / span, 2)
            for name, cpu in samples[-1]["cpu_s"].items()
        }
        lines.append(f"CPU cores used on average (a hub process counts its parsers): {used}")
    for name, s in report.get("stalls", {}).items():
        lines.append(
            f"event loop {name}: {s['stalls']} stalls, {s['seconds']} s, longest {s['longest']} s"
        )
        lines.extend(f"    {seconds:>7} s  {place}" for place, seconds in s["places"].items())
    for item in report.get("database_activity", [])[:12]:
        lines.append(
            f"db {item['backend_seconds']:>6} backend-s  {item['wait'][:24]:<24} "
            f"{item['statement'][:70]}"
        )
    lines.append(f"job runs: {report['job_runs']}")
    audit = report["audit"]
    for part, result in audit.items():
        if isinstance(result, dict):
            lines.append(f"audit {part}: {'ok' if result.get('ok') else 'FAILED'}")
    lines.append(f"AUDIT {'OK' if audit.get('ok') else 'FAILED'}")
    return "\n".join(lines)
