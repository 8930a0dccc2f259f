"""Result tables in the layout of the paper's Table I, as Markdown, JSON and a bar chart."""

from __future__ import annotations

import json
import os
from pathlib import Path

from merits.errors import MeritsError
from merits.metrics import mean_std

# The rows come from the experiment's stage graph (merits.stages.graph): (row name, stage directory name) pairs,
# saved in results.json so that `merits report RUN1 RUN2` can lay several runs side by side.
ABLATION_FINAL = "Hierarchical (II, then III)"


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


def table_one(summaries: dict[str, dict], rows) -> str:
    """Markdown Table I: one row per stage present, one column per dataset; test weighted F1 (%) mean ± std."""
    datasets = list(summaries)
    header = "| Modality (stage) | " + " | ".join(datasets) + " |"
    lines = [header, "|---|" + "---|" * len(datasets), *_rows(summaries, rows)]
    seeds = sorted({n for s in summaries.values() for st in s.values() for n in st.get("seeds", [])})
    lines.append("")
    lines.append(f"Test weighted F1 (%), mean ± std over seeds {seeds}.")
    return "\n".join(lines)


def ablation_table(summaries: dict[str, dict], rows, ablations) -> str:
    """Markdown: the hierarchy's final stage vs each ablation, per dataset ("" when no run has an ablation)."""
    if not any(name in s for s in summaries.values() for _, name in ablations):
        return ""
    datasets = list(summaries)
    final = (ABLATION_FINAL, rows[-1][1])
    lines = ["| Training of Stages II + III | " + " | ".join(datasets) + " |", "|---|" + "---|" * len(datasets),
             *_rows(summaries, [final, *ablations])]
    return "\n".join(lines)


def _rows(summaries: dict[str, dict], rows) -> list[str]:
    out = []
    for row, stage in rows:
        if not any(stage in s for s in summaries.values()):
            continue
        cells = []
        for d in summaries:
            w = summaries[d].get(stage, {}).get("weighted_f1")
            cells.append(f"{100 * w['mean']:.2f} ± {100 * w['std']:.2f}" if w else "–")
        out.append(f"| {row} | " + " | ".join(cells) + " |")
    return out


def per_class_table(per_class: dict[str, dict], labels: dict[str, str]) -> str:
    """Markdown: test F1 (%) per class (rows) and stage (columns), mean over seeds; shows which classes a stage helped."""
    stages = [st for st in labels if per_class.get(st)]
    if not stages:
        return ""
    classes = list(next(iter(per_class[stages[0]].values())))
    lines = ["| class | " + " | ".join(labels[st] for st in stages) + " |", "|---|" + "---|" * len(stages)]
    for c in classes:
        cells = [f"{100 * mean_std([seed[c]['f1'] for seed in per_class[st].values()])['mean']:.1f}" for st in stages]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_stages(summary: dict, labels: dict[str, str], path: str | Path, title: str) -> Path:
    """Bar chart of test weighted F1 per stage with the per-seed spread, so one sees which stage helped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(labels[stage], summary[stage]["weighted_f1"]) for stage in labels if stage in summary]
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


def write_report(experiment_dir: Path, dataset: str, per_seed: dict, graph, notes=None) -> str:
    """Write results.json, report.md and stages.png under ``experiment_dir``; return the Markdown.

    graph: the experiment's stage graph (row names and order). notes: lines printed under the table (e.g. how many
    test utterances were left out for bad audio); None keeps those of the previous report."""
    previous = experiment_dir / "results.json"
    if notes is None:
        notes = json.loads(previous.read_text()).get("notes", []) if previous.is_file() else []
    rows, ablations, labels = graph.rows(), graph.rows(hierarchy=False), graph.labels
    summary = summarise(per_seed)
    per_class = {stage: {seed: m["test"]["per_class"] for seed, m in seeds.items() if "test" in m}
                 for stage, seeds in per_seed.items()}
    sections = [table_one({dataset: summary}, rows), *notes]
    if ablation := ablation_table({dataset: summary}, rows, ablations):
        sections += ["", "Ablation (test weighted F1 %):", "", ablation]
    if classes := per_class_table(per_class, labels):
        sections += ["", "Test F1 (%) per class, mean over seeds:", "", classes]
    md = "\n".join(sections)
    _write_atomic(experiment_dir / "results.json", json.dumps(
        {"dataset": dataset, "rows": rows, "ablations": ablations, "labels": labels, "summary": summary,
         "per_class": per_class,
         "notes": list(notes),
         "per_seed": {st: {str(k): {s: v for s, v in m.items() if s in ("validation", "test", "best_epoch",
                                                                           "seconds_per_epoch")}
                           for k, m in seeds.items()} for st, seeds in per_seed.items()}},
        indent=2))
    _write_atomic(experiment_dir / "report.md", f"# {experiment_dir.name}\n\n{md}\n")
    if summary:
        plot_stages(summary, labels, experiment_dir / "stages.png", f"{dataset}: test weighted F1 per stage")
    return md


def _write_atomic(path: Path, text: str) -> None:
    """Seed processes finishing at once each rewrite the report: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def combine(experiment_dirs, out: str | Path | None = None) -> str:
    """Table I (and the ablation) with one column per finished experiment, read from each ``results.json``; with
    ``out``, also write it there as table.md and a grouped bar chart stages.png (one colour per experiment)."""
    summaries, runs_rows, ablations, labels = {}, [], {}, {}
    for d in map(Path, experiment_dirs):
        path = d / "results.json"
        if not path.is_file():
            raise MeritsError(f"{d} has no results.json: is it a finished experiment directory (runs/<name>)?")
        result = json.loads(path.read_text())
        if "rows" not in result:
            raise MeritsError(f"{path} was written by an older merits: rebuild it with merits report {d}")
        name = result["dataset"] if result["dataset"] not in summaries else f"{result['dataset']} ({d.name})"
        summaries[name] = result["summary"]
        runs_rows.append([tuple(r) for r in result["rows"]])
        ablations.update({stage: label for label, stage in result["ablations"]})
        labels.update(result["labels"])
    # the rows in their graphs' order: those of the run with the most stages, then any the others add
    runs_rows.sort(key=len, reverse=True)
    row_list = list(dict.fromkeys(r for rows in runs_rows for r in rows))
    ablation_list = [(label, st) for st, label in ablations.items()]
    ablation = ablation_table(summaries, row_list, ablation_list)
    md = table_one(summaries, row_list) + (f"\n\nAblation (test weighted F1 %):\n\n{ablation}" if ablation else "")
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(md + "\n")
        plot_datasets(summaries, labels, out / "stages.png")
    return md


def plot_datasets(summaries: dict[str, dict], labels: dict[str, str], path: str | Path) -> Path:
    """Grouped bars: test weighted F1 per stage (x) for each experiment (colour), with the seed spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [st for st in labels if any(st in s for s in summaries.values())]
    width = 0.8 / len(summaries)
    fig, ax = plt.subplots(figsize=(1.5 + 1.4 * len(stages), 3.8))
    for k, (name, summary) in enumerate(summaries.items()):
        xs = [i + (k - (len(summaries) - 1) / 2) * width for i, st in enumerate(stages) if st in summary]
        ws = [summary[st]["weighted_f1"] for st in stages if st in summary]
        ax.bar(xs, [100 * w["mean"] for w in ws], width, yerr=[100 * w["std"] for w in ws], capsize=3, label=name)
    ax.set_xticks(range(len(stages)), [labels[st] for st in stages])
    ax.set_ylabel("test weighted F1 (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
