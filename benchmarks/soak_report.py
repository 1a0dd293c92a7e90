"""The soak's figures, its checks, and the report it prints.

``request_figures`` turns the plan and the clients' tally into the figures
(outcomes, latencies, images per context, pushes...); ``checks`` judges the
whole run's figures; ``print_report`` prints them.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from benchmarks import harness
from benchmarks.soak_clients import Tally
from benchmarks.soak_plan import FIRST_ERRORS, Request
from dockyard.workers.launcher import WorkerProcess

OUTCOMES = ("built", "joined", "hit")  # the cache sources, in the order they are reported
NEVER = 1e18  # a time after every other


# ---------------------------------------------------------------------------------------------- figures


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max, rounded; empty for no values."""
    if not values:
        return {}
    return {"p50": round(harness.percentile(values, 0.5), 3), "p90": round(harness.percentile(values, 0.9), 3),
            "p99": round(harness.percentile(values, 0.99), 3), "max": round(max(values), 3)}


def request_figures(plan: Sequence[Request], tally: Tally) -> dict[str, Any]:
    """What the requests got: counts, failures, outcomes, hosts, latencies, images, late joins, pushes."""
    results = tally.results
    outcomes = Counter(r["cache"] for r in results)
    out: dict[str, Any] = {
        "builds_requested": len(plan),
        "builds_answered": tally.answered,
        "builds_succeeded": len(results),
        "builds_not_sent": tally.not_sent,
        "distinct_contexts": len({r.context for r in plan}),
        "distinct_requests": len({(r.context, r.tag) for r in plan}),
        "failures": failure_figures(tally),
        "outcomes": {source: outcomes.get(source, 0) for source in OUTCOMES}
        | {k: v for k, v in outcomes.items() if k not in OUTCOMES},
        "answers_by_host": dict(Counter(r["host"] for r in results)),
        "built_by_host": dict(Counter(r["host"] for r in results if r["cache"] == "built")),
        "latency_s": percentiles([r["latency_s"] for r in results]),
        "latency_by_outcome_s": {
            source: percentiles([r["latency_s"] for r in results if r["cache"] == source]) for source in outcomes},
    }
    out.update(image_figures(results))
    out["joined_sent_after_build_answered"] = late_joins(results)
    out["pushes"] = push_figures(plan, tally)
    return out


def failure_figures(tally: Tally) -> dict[str, Any]:
    failures = tally.errors + tally.push_errors
    return {
        "count": len(failures) + tally.not_sent,
        "builds": len(tally.errors), "pushes": len(tally.push_errors), "not_sent": tally.not_sent,
        "first": [f"#{e['index']} {e['tag']}: {e['error']}" for e in failures[:FIRST_ERRORS]],
        "error_types": dict(Counter(e["error"].split(":", 1)[0] for e in failures)),
    }


def image_figures(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Distinct image ids; contexts answered with several images, or from several hosts."""
    images_per_context: dict[int, set[str]] = defaultdict(set)
    hosts_per_context: dict[int, set[str]] = defaultdict(set)
    for record in results:
        images_per_context[record["context"]].add(record["image_id"])
        hosts_per_context[record["context"]].add(record["host"])
    return {
        "distinct_image_ids": len({r["image_id"] for r in results}),
        "contexts_with_several_images": sorted(c for c, ids in images_per_context.items() if len(ids) > 1),
        "contexts_on_several_hosts": sorted(c for c, hs in hosts_per_context.items() if len(hs) > 1),
    }


def late_joins(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Answers labelled "joined" for requests sent after their content's build had been answered:
    there was no running build to join (the tags were applied to a cached image: a hit)."""
    first_built: dict[int, float] = {}
    for record in results:
        if record["cache"] == "built":
            first_built[record["context"]] = min(first_built.get(record["context"], NEVER), record["answered_at"])
    late = [r for r in results if r["cache"] == "joined" and r["sent_at"] > first_built.get(r["context"], NEVER)]
    return {
        "count": len(late),
        "examples": [f"#{r['index']} {r['tag']}" for r in late[:5]],
        "same_tag_as_an_earlier_answer": sum(
            any(o["tag"] == r["tag"] and o["answered_at"] < r["sent_at"] for o in results) for r in late),
    }


def push_figures(plan: Sequence[Request], tally: Tally) -> dict[str, Any]:
    pushes = tally.pushes
    return {"requested": sum(r.push for r in plan[: tally.next_index]), "ok": len(pushes),
            "failed": len(tally.push_errors), "outcomes": dict(Counter(p["cache"] for p in pushes)),
            "latency_s": percentiles([p["latency_s"] for p in pushes]),
            "pushed_from_builder": sum(p["host"] == p["built_on"] for p in pushes)}


def request_list(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every answered request in plan order, its times in seconds from the first one sent."""
    t0 = min((r["sent_at"] for r in results), default=0.0)
    return [
        {**{k: v for k, v in r.items() if k not in ("sent_at", "answered_at")},
         "sent_s": round(r["sent_at"] - t0, 3), "answered_s": round(r["answered_at"] - t0, 3)}
        for r in sorted(results, key=lambda r: r["index"])]


def log_findings(workers: Iterable[WorkerProcess]) -> dict[str, Any]:
    """ERROR/WARNING/Traceback lines in the worker logs (first few of each worker)."""
    found: dict[str, Any] = {}
    for worker in workers:
        try:
            lines = worker.log_path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        bad = [line for line in lines if re.search(r"\b(ERROR|WARNING|CRITICAL)\b|Traceback", line)]
        found[worker.host_id] = {"count": len(bad), "first": [line[:300] for line in bad[:8]]}
    return found


# ---------------------------------------------------------------------------------------------- checks


def _check(ok: bool, detail: Any) -> dict[str, Any]:
    return {"ok": bool(ok), "detail": detail}


def checks(out: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every check of the run, by name: ``{"ok": bool, "detail": ...}``."""
    if "builds_requested" not in out:
        return {"run completed": _check(False, "the run stopped before its figures were taken")}
    return {**_request_checks(out, args), **_engine_checks(out), **_state_checks(out)}


def _request_checks(out: dict[str, Any], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    seen = out.get("test_runs_seen", {})
    return {
        "no test run sharing the engines": _check(not seen.get("before") and not seen.get("during"), seen),
        "no failures": _check(out["failures"]["count"] == 0, out["failures"]["count"]),
        "every request answered": _check(
            out["builds_succeeded"] == out["builds_requested"],
            f"{out['builds_succeeded']}/{out['builds_requested']}"),
        "wall within budget": _check(out["wall_s"] <= args.max_wall, f"{out['wall_s']} s <= {args.max_wall:g} s"),
    }


def _engine_checks(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    engine = out["engine_builds"]
    total = engine["total"]
    built = out["outcomes"].get("built", 0)
    return {
        "one engine build per distinct context": _check(
            total == out["distinct_contexts"] == engine["contexts_built"]
            and not engine["contexts_built_more_than_once"] and not engine["stream_errors"],
            f"engine RUN starts {total} for {engine['contexts_built']} contexts (distinct contexts "
            f"{out['distinct_contexts']}), built more than once: {engine['contexts_built_more_than_once']}, "
            f"event stream errors: {engine['stream_errors']}"),
        "'built' answers match engine builds": _check(built == total, f"built {built}, engine {total}"),
        "one image per context": _check(
            not out["contexts_with_several_images"] and out["distinct_image_ids"] == out["distinct_contexts"],
            f"{out['distinct_image_ids']} image ids for {out['distinct_contexts']} contexts; "
            f"several: {out['contexts_with_several_images'][:10]}"),
        "tags where the answers say": _check(
            not out["tags"]["mismatches"], f"{out['tags']['references_checked']} references, "
            f"{len(out['tags']['mismatches'])} wrong: {out['tags']['mismatches'][:5]}"),
    }


def _state_checks(out: dict[str, Any]) -> dict[str, dict[str, Any]]:
    after = out["redis_after"]
    ratios = {name: w["ratio_end_over_start"] for name, w in out["memory"]["per_worker"].items()}
    return {
        "every dockyard-soak: key has a TTL": _check(
            not after["soak_keys_without_ttl"], after["soak_keys_without_ttl"][:10]),
        "no unexpected key without TTL": _check(
            not after["unexpected_no_ttl"],
            [(k["key"], k["class"], k["length"]) for k in after["unexpected_no_ttl"]][:10]),
        "worker memory end/start <= 1.5": _check(all(r is not None and r <= 1.5 for r in ratios.values()), ratios),
        "cleanup left nothing": _cleanup_check(out["cleanup"]),
    }


def _cleanup_check(cleanup: dict[str, Any]) -> dict[str, Any]:
    return _check(
        not any(cleanup.get("images_left", {"?": 1}).values()) and cleanup.get("redis_keys_left") == 0
        and not cleanup.get("workers_still_running") and not cleanup.get("temp_dir_left")
        and not cleanup.get("image_removal", {}).get("errors")
        and not cleanup.get("registry_manifests", {}).get("errors"),
        {k: cleanup.get(k) for k in ("images_left", "redis_keys_left", "workers_still_running", "temp_dir_left")})


# ---------------------------------------------------------------------------------------------- output


def _kb(value: int) -> str:
    return f"{value / 1024:.1f} MiB"


def print_report(out: dict[str, Any]) -> None:
    """The run's figures and checks, for a reader."""
    lines = ["", "=" * 78, f"dockyard soak, run {out.get('run_id')}", "=" * 78]
    if "builds_requested" in out:
        lines += _request_lines(out) + _redis_lines(out) + _memory_lines(out)
    lines.append(f"cleanup                     {json.dumps(out.get('cleanup'), default=str)}")
    lines.append("checks")
    for name, check in out.get("checks", {}).items():
        lines.append(f"    {'ok  ' if check['ok'] else 'FAIL'} {name}: {check['detail']}")
    if out.get("worker_logs"):
        lines.append(f"worker logs kept in {out['worker_logs']}")
    lines.append(f"soak {'PASSED' if out.get('passed') else 'FAILED'} in {out.get('whole_run_s')} s")
    print("\n".join(lines), flush=True)


def _request_lines(out: dict[str, Any]) -> list[str]:
    opts = out["options"]
    failures = out["failures"]
    engine = out["engine_builds"]
    lines = [
        f"builds requested            {out['builds_requested']}  ({out['distinct_contexts']} distinct contexts, "
        f"{out['distinct_requests']} distinct context+tag, {opts['clients']} client threads, "
        f"2 workers x concurrency {opts['concurrency']})",
        f"answered ok                 {out['builds_succeeded']}   not sent {out['builds_not_sent']}",
        f"failures                    {failures['count']}  (builds {failures['builds']}, pushes "
        f"{failures['pushes']}, not sent {failures['not_sent']})",
    ]
    lines += [f"    {line}" for line in failures["first"]]
    return lines + [
        "outcomes by cache source    " + "  ".join(f"{k} {v}" for k, v in out["outcomes"].items()),
        f"  'joined' answers to requests sent after their content's build was answered: "
        f"{out['joined_sent_after_build_answered']}",
        f"answers by host             {out['answers_by_host']}   'built' by host {out['built_by_host']}",
        f"wall time                   {out['wall_s']:.1f} s  (budget {opts['max_wall']:g} s; "
        f"workers ready in {out['workers_ready_s']} s; whole run {out['whole_run_s']} s)",
        f"request latency (s)         {out['latency_s']}",
        f"engine builds (RUN starts)  {engine['total']}  per engine {engine['per_engine']}, contexts built "
        f"{engine['contexts_built']}, runs per context {engine['runs_per_context_histogram']}",
        f"test runs seen on the host  {out['test_runs_seen']}",
        f"distinct image ids          {out['distinct_image_ids']}   contexts with several images "
        f"{len(out['contexts_with_several_images'])}, on several hosts {len(out['contexts_on_several_hosts'])}",
        f"tags verified on engines    {out['tags']['references_checked']} references, "
        f"{len(out['tags']['mismatches'])} wrong",
        f"pushes                      {out['pushes']['ok']}/{out['pushes']['requested']} ok, outcomes "
        f"{out['pushes']['outcomes']}, latency {out['pushes']['latency_s']}",
    ]


def _redis_lines(out: dict[str, Any]) -> list[str]:
    lines = []
    for when in ("before", "after"):
        snap = out[f"redis_{when}"]
        lines.append(f"redis keys {when:<6}           {snap['total']} total, {snap['no_ttl']} without TTL, "
                     f"{snap['soak_keys']} dockyard-soak:* ({len(snap['soak_keys_without_ttl'])} without TTL), "
                     f"server used_memory {snap['used_memory_bytes'] / 2**20:.1f} MiB")
    lines.append("  keys without TTL after:")
    for entry in out["redis_after"]["no_ttl_keys"]:
        lines.append(f"    {entry['key']!r:<60} {entry['type']:<5} len {entry['length']}  [{entry['class']}]")
    lines.append("  keys after, by pattern: " + ", ".join(
        f"{p} {n}" for p, n in list(out["redis_after"]["by_pattern"].items())[:14]))
    lines.append(f"  pub/sub clients on the db after: {out['redis_pubsub_after']}")
    return lines


def _memory_lines(out: dict[str, Any]) -> list[str]:
    lines = ["worker memory (VmRSS, main + pool children)"]
    for name, w in out["memory"]["per_worker"].items():
        lines.append(f"    {name:<24} start {_kb(w['start_kb'])}  mid {_kb(w['mid_kb'])}  end {_kb(w['end_kb'])}  "
                     f"peak {_kb(w['peak_kb'])}  end/start {w['ratio_end_over_start']}  "
                     f"end/mid {w['ratio_end_over_mid']}  processes {w['processes']}")
    lines.append(f"soak client process RSS {out['memory']['client_kb']} kB")
    lines.append(f"redis connections by holder {out['memory']['redis_connections']}")
    for name, logs in out.get("worker_log_warnings", {}).items():
        lines.append(f"worker log {name}: {logs['count']} WARNING/ERROR lines" +
                     "".join(f"\n    {line}" for line in logs["first"][:4]))
    return lines
