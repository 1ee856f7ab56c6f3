"""The main job's summary: every step's figures, each operating point's BLEU and latency, the scenario's overall
rows, and the targets the main job is judged by (README, docs/results.md "Main job").

The targets: the dynamic translator within budget for at least 95 % of the stream; its BLEU at least 3 above the
best static point that also stays within budget that often; the served points spanning at least 4x in latency
(else there is little to switch between).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from dynhat.errors import DataError
from dynhat.inference.points import PointLibrary, sentences_text
from dynhat.recipes.scenario import RELIABLE_PCT, safe_static
from dynhat.runtime.report import markdown_table

BLEU_MARGIN = 3.0
SPAN = 4.0
OVERALL_COLUMNS = ("run", "within_pct", "mean_ms", "bleu", "switches", "switch_p99_ms", "max_adapt_sentences")
POINT_COLUMNS = ("point", "decoder_layers", "beam", "measured_ms", "valid_loss", "bleu", "served",
                 "scenario_within_pct", "scenario_mean_ms", "scenario_bleu")


def point_rows(library: PointLibrary, scenario: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per operating point, fastest first: its on-device latency and BLEU from the search, and, for a
    served point, how it did alone through the scenario."""
    served = {p.id for p in library.efficient()}
    alone = {row["run"].removeprefix("static "): row for row in scenario if row["run"].startswith("static ")}
    rows = []
    for p in sorted(library.unique(), key=lambda p: p.latency_ms):
        run = alone.get(p.id, {})
        rows.append({"point": p.id, "decoder_layers": p.config.decoder_layer_num, "beam": p.beam,
                     "measured_ms": None if p.measured_ms is None else round(p.measured_ms, 2),
                     "valid_loss": round(p.valid_loss, 3), "bleu": p.bleu, "served": p.id in served,
                     "scenario_within_pct": run.get("within_pct"), "scenario_mean_ms": run.get("mean_ms"),
                     "scenario_bleu": run.get("bleu")})
    return rows


def targets(library: PointLibrary, scenario: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The main job's targets, each with what was measured and whether it is met."""
    dynamic = next((row for row in scenario if row["run"] == "dynamic"), None)
    statics = {row["run"]: row for row in scenario if row["run"].startswith("static ")}
    if dynamic is None or not statics:
        raise DataError("the scenario's report has no dynamic run or no static point: run the scenario again "
                        "(remove the run directory's scenario/ folder)")
    safe, always = safe_static(statics)
    gap = round(dynamic["bleu"] - statics[safe]["bleu"], 2)
    # no switching can beat the reliable point by more than the best static point's BLEU does on the same stream
    ceiling = max(row["bleu"] for row in statics.values()) - statics[safe]["bleu"]
    quality = (f"{dynamic['bleu']} vs {statics[safe]['bleu']} (`{safe.removeprefix('static ')}`, "
               f"{statics[safe]['within_pct']} % within" + ("" if always else f"; none stays ≥ {RELIABLE_PCT:g} %, "
                                                             "so the most reliable, to beat on both")
               + f"): {gap:+.2f}, of at most {ceiling:+.2f} (the best point's BLEU above it)",
               gap >= BLEU_MARGIN and (always or dynamic["within_pct"] > statics[safe]["within_pct"]))
    served = [p.latency_ms for p in library.efficient()]
    span = max(served) / min(served)
    return [
        {"target": f"dynamic within budget ≥ {RELIABLE_PCT:g} % of sentences",
         "measured": f"{dynamic['within_pct']} %", "met": dynamic["within_pct"] >= RELIABLE_PCT},
        {"target": f"dynamic BLEU ≥ {BLEU_MARGIN:g} above the best static point ≥ {RELIABLE_PCT:g} % within budget",
         "measured": quality[0], "met": quality[1]},
        {"target": f"served points span ≥ {SPAN:g}x in latency",
         "measured": f"{span:.1f}x ({min(served):.1f}-{max(served):.1f} ms, {len(served)} points)",
         "met": span >= SPAN},
    ]


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as the main job prints it: one line per step, then the tables and targets."""
    data, model, lat = summary["data"], summary["model"], summary["latency"]
    noise = lat["noise"]
    lines = [
        f"data      Multi30k ({data['source']}): validation {data['valid']} sentences (search fitness on "
        f"{data['fitness_sentences']}), {data['test_split']} {data['test']} (scenario stream "
        f"{data['scenario_sentences']}); points' BLEU on {sentences_text(*data['bleu_set'])}",
        f"model     {model['kind']} {model['source']} (sha256 {str(model['sha256'])[:12]}), space {model['space']}, "
        f"{model.get('updates')} updates, {model.get('wall_hours')} h of training",
        f"latency   {lat['rows']} SubTransformers, {'paired' if noise['paired'] else 'drift-probed'} ({noise['why']}); "
        f"drift {lat['drift']['min']:.3f}..{lat['drift']['max']:.3f}; predictor held-out MAPE "
        f"{lat['predictor_test']['mape_pct']:.2f} %, RMSE {lat['predictor_test']['rmse_ms']:.2f} ms",
        f"search    {len(summary['points'])} operating points, {sum(r['served'] for r in summary['points'])} served "
        f"({summary['points_file']})", "",
        f"Operating points (measured ms: HAT's protocol, {summary['threads']} thread(s); BLEU: sacreBLEU, beam of "
        "the point; scenario: the point alone through every phase):", "",
        markdown_table(summary["points"], POINT_COLUMNS), "",
        f"Scenario, overall (every phase: {summary['scenario_table']}):", "",
        markdown_table(summary["scenario"], OVERALL_COLUMNS), "",
        "Targets:"]
    lines += [f"- [{'met' if t['met'] else 'NOT met'}] {t['target']}: {t['measured']}" for t in summary["targets"]]
    lines += ["", f"timeline: {summary['timeline']}",
              "minutes: " + ", ".join(f"{k} {v:.1f}" for k, v in summary["minutes"].items()), "",
              f"serve these points: {serve_command(summary)}"]
    return "\n".join(lines)


def serve_command(summary: Mapping[str, Any]) -> str:
    """The command that serves the job's points, with a budget the slowest served point meets at full resources."""
    model = summary["model"]
    source = model["name"] if model["kind"] == "shipped release" else summary["checkpoint"]
    slowest = max(row["measured_ms"] for row in summary["points"] if row["served"])
    return f"dynhat serve {source} --points {summary['points_file']} --budget-ms {math.ceil(slowest / 10) * 10}"

