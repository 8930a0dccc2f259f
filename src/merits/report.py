"""Result tables in the layout of the paper's Table I, as Markdown, JSON and a bar chart."""

from __future__ import annotations

import json
from pathlib import Path

from merits.metrics import mean_std

# Table I rows, in the paper's order: (row name, stage directory name)
ROWS = (
    ("Audio I", "stage1_audio"),
    ("Audio II", "stage2_audio"),
    ("Text I", "stage1_text"),
    ("Text II", "stage2_text"),
    ("Audio+Text III", "stage3"),
)


def summarise(per_seed: dict[str, dict[int, dict]], split: str = "test") -> dict:
    """{stage: {seed: metrics}} -> {stage: {weighted_f1: mean/std/values, accuracy: ..., macro_f1: ..., seeds}}."""
    out = {}
    for stage, seeds in per_seed.items():
        runs = [m[split] for m in seeds.values() if split in m]
        if not runs:
            continue
        out[stage] = {k: mean_std([r[k] for r in runs]) for k in ("weighted_f1", "accuracy", "macro_f1")}
        out[stage]["seeds"] = sorted(seeds)
    return out


def table_one(summaries: dict[str, dict]) -> str:
    """Markdown Table I: one row per stage present, one column per dataset; test weighted F1 (%) mean ± std."""
    datasets = list(summaries)
    header = "| Modality (stage) | " + " | ".join(datasets) + " |"
    lines = [header, "|---|" + "---|" * len(datasets)]
    for row, stage in ROWS:
        if not any(stage in s for s in summaries.values()):
            continue
        cells = []
        for d in datasets:
            w = summaries[d].get(stage, {}).get("weighted_f1")
            cells.append(f"{100 * w['mean']:.2f} ± {100 * w['std']:.2f}" if w else "–")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    seeds = sorted({n for s in summaries.values() for st in s.values() for n in st.get("seeds", [])})
    lines.append("")
    lines.append(f"Test weighted F1 (%), mean ± std over seeds {seeds}.")
    return "\n".join(lines)


def plot_stages(summary: dict, path: str | Path, title: str) -> Path:
    """Bar chart of test weighted F1 per stage with the per-seed spread, so one sees which stage helped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(row, summary[stage]["weighted_f1"]) for row, stage in ROWS if stage in summary]
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(rows), 3.6))
    means = [100 * w["mean"] for _, w in rows]
    ax.bar(range(len(rows)), means, yerr=[100 * w["std"] for _, w in rows], capsize=4, color="#4c78a8")
    for i, (_, w) in enumerate(rows):
        ax.scatter([i] * len(w["values"]), [100 * v for v in w["values"]], color="black", s=8, zorder=3)
        ax.text(i, means[i] + 1, f"{means[i]:.1f}", ha="center", fontsize=9)
    ax.set_xticks(range(len(rows)), [r for r, _ in rows])
    ax.set_ylabel("test weighted F1 (%)")
    ax.set_ylim(0, min(100, max(means + [1]) * 1.25))
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(experiment_dir: Path, dataset: str, per_seed: dict, notes=()) -> str:
    """Write results.json, report.md and stages.png under ``experiment_dir``; return the Markdown.

    notes: lines printed under the table (e.g. how many test utterances were left out for bad audio)."""
    summary = summarise(per_seed)
    md = "\n".join([table_one({dataset: summary}), *notes])
    per_class = {stage: {seed: m["test"]["per_class"] for seed, m in seeds.items() if "test" in m}
                 for stage, seeds in per_seed.items()}
    (experiment_dir / "results.json").write_text(json.dumps(
        {"dataset": dataset, "summary": summary, "per_class": per_class, "notes": list(notes),
         "per_seed": {st: {str(k): {s: v for s, v in m.items() if s in ("validation", "test", "best_epoch",
                                                                           "seconds_per_epoch")}
                           for k, m in seeds.items()} for st, seeds in per_seed.items()}},
        indent=2))
    (experiment_dir / "report.md").write_text(f"# {experiment_dir.name}\n\n{md}\n")
    if summary:
        plot_stages(summary, experiment_dir / "stages.png", f"{dataset}: test weighted F1 per stage")
    return md
