"""Result tables in the layout of the paper's Table I, as Markdown, JSON and a bar chart."""

from __future__ import annotations

import json
import os
from pathlib import Path

from merits.errors import MeritsError
from merits.metrics import mean_std, metric_title, score

# The rows come from the experiment's stage graph (merits.stages.graph): (row name, stage directory name) pairs,
# saved in results.json so that `merits report RUN1 RUN2` can lay several runs side by side.
ABLATION_FINAL = "Hierarchical (II, then III)"


def summarise(per_seed: dict[str, dict[int, dict]], split: str = "test", metric=("weighted_f1", ())) -> dict:
    """{stage: {seed: metrics}} -> {stage: {weighted_f1: mean/std/values, accuracy: ..., macro_f1: ..., seeds,
    score: the table's metric (``metric`` = (name, classes)), computed from each seed's confusion matrix}}."""
    out = {}
    for stage, seeds in per_seed.items():
        runs = [m[split] for m in seeds.values() if split in m]
        if not runs:
            continue
        out[stage] = {k: mean_std([r[k] for r in runs]) for k in ("weighted_f1", "accuracy", "macro_f1")}
        out[stage]["score"] = mean_std([score(r, *metric) for r in runs])
        out[stage]["seeds"] = sorted(seeds)
    return out


def _score(stage_summary: dict) -> dict | None:
    """The table's figure of a stage: its ``score``; results.json files written before the metric was selectable
    hold weighted F1 only."""
    return stage_summary.get("score") or stage_summary.get("weighted_f1")


def table_one(summaries: dict[str, dict], rows, title: str = "weighted F1") -> str:
    """Markdown Table I: one row per stage present, one column per dataset; the test metric (%) mean ± std."""
    datasets = list(summaries)
    header = "| Modality (stage) | " + " | ".join(datasets) + " |"
    lines = [header, "|---|" + "---|" * len(datasets), *_rows(summaries, rows)]
    seeds = sorted({n for s in summaries.values() for st in s.values() for n in st.get("seeds", [])})
    lines.append("")
    lines.append(f"Test {title} (%), mean ± std over seeds {seeds}.")
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
            w = _score(summaries[d][stage]) if stage in summaries[d] else None
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


def training_advice(per_seed: dict[str, dict[int, dict]], labels: dict[str, str]) -> list[str]:
    """A line per stage whose epochs look mis-set for this corpus (profiles are tuned on MELD / MOSI): the best
    validation epoch was the last one run (still improving: more ``epochs``), or the first of several (later epochs
    only got worse: a lower ``lr``, or more ``patience`` if validation is small and noisy)."""
    out = []
    for stage, seeds in per_seed.items():
        fits = [(m["best_epoch"], len(m["history"])) for m in seeds.values() if m.get("history")]
        if not fits:
            continue
        best = ", ".join(str(b) for b, _ in fits)
        if all(b == n for b, n in fits) and any(n > 1 for _, n in fits):
            out.append(f"- {labels.get(stage, stage)}: best epoch {best} was the last one run: still improving; "
                       f"try a higher {stage}.epochs")
        elif all(b == 1 and n > 1 for b, n in fits):
            out.append(f"- {labels.get(stage, stage)}: kept epoch 1 (of {max(n for _, n in fits)} run): validation "
                       f"only fell after it; try a lower {stage}.lr, or a higher {stage}.patience for a small, noisy "
                       "validation split")
    return out


def plot_stages(summary: dict, labels: dict[str, str], path: str | Path, title: str,
                metric: str = "weighted F1") -> Path:
    """Bar chart of the test metric per stage with the per-seed spread, so one sees which stage helped."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(labels[stage], _score(summary[stage])) for stage in labels if stage in summary]
    fig, ax = plt.subplots(figsize=(1.2 + 1.3 * len(rows), 3.6))
    means = [100 * w["mean"] for _, w in rows]
    ax.bar(range(len(rows)), means, yerr=[100 * w["std"] for _, w in rows], capsize=4, color="#4c78a8")
    for i, (_, w) in enumerate(rows):
        ax.scatter([i] * len(w["values"]), [100 * v for v in w["values"]], color="black", s=8, zorder=3)
        ax.text(i, means[i] + 1, f"{means[i]:.1f}", ha="center", fontsize=9)
    ax.set_xticks(range(len(rows)), [r for r, _ in rows])
    ax.set_ylabel(f"test {metric} (%)")
    ax.set_ylim(0, min(100, max(means + [1]) * 1.25))
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def metric_suffix(metric: str | None, classes=None) -> str:
    """How the files of a report in a metric asked for are named beside the run's own (``merits report RUN --metric
    macro_f1`` writes report-macro_f1.md, results-macro_f1.json, stages-macro_f1.png): "" for the run's own report."""
    if metric is None:
        return ""
    return f"-{metric}" + ("-" + "-".join(classes) if classes else "")


def write_report(experiment_dir: Path, dataset: str, per_seed: dict, graph, notes=None,
                 metric=("weighted_f1", ()), suffix: str = "") -> str:
    """Write results.json, report.md and stages.png under ``experiment_dir`` (``suffix``: beside them, named by the
    metric asked for, see :func:`metric_suffix`); return the Markdown.

    graph: the experiment's stage graph (row names and order). notes: lines printed under the table (e.g. how many
    test utterances were left out for bad audio); None keeps those of the previous report. metric: the table's
    (name, classes), e.g. ("micro_f1", ["anger", "joy"]); per-class F1 and the other scores are kept as well."""
    previous = experiment_dir / "results.json"
    if notes is None:
        notes = json.loads(previous.read_text()).get("notes", []) if previous.is_file() else []
    rows, ablations, labels = graph.rows(), graph.rows(hierarchy=False), graph.stage_labels
    name, classes = metric[0], list(metric[1] or ())
    title = metric_title(name, classes)
    summary = summarise(per_seed, metric=(name, classes))
    per_class = {stage: {seed: m["test"]["per_class"] for seed, m in seeds.items() if "test" in m}
                 for stage, seeds in per_seed.items()}
    sections = [table_one({dataset: summary}, rows, title), *notes]
    if ablation := ablation_table({dataset: summary}, rows, ablations):
        sections += ["", f"Ablation (test {title} %):", "", ablation]
    if advice := training_advice(per_seed, labels):
        sections += ["", "Training (epochs chosen on validation):", "", *advice]
    if by_class := per_class_table(per_class, labels):
        sections += ["", "Test F1 (%) per class, mean over seeds:", "", by_class]
    md = "\n".join(sections)
    _write_atomic(experiment_dir / f"results{suffix}.json", json.dumps(
        {"dataset": dataset, "metric": {"name": name, "classes": classes, "title": title}, "rows": rows, "ablations": ablations, "labels": labels, "summary": summary,
         "per_class": per_class,
         "notes": list(notes),
         "per_seed": {st: {str(k): {s: v for s, v in m.items() if s in ("validation", "test", "best_epoch",
                                                                           "seconds_per_epoch")}
                           for k, m in seeds.items()} for st, seeds in per_seed.items()}},
        indent=2))
    _write_atomic(experiment_dir / f"report{suffix}.md", f"# {experiment_dir.name}\n\n{md}\n")
    if summary:
        plot_stages(summary, labels, experiment_dir / f"stages{suffix}.png", f"{dataset}: test {title} per stage", title)
    return md


def _write_atomic(path: Path, text: str) -> None:
    """Seed processes finishing at once each rewrite the report: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def combine(experiment_dirs, out: str | Path | None = None, suffix: str = "") -> str:
    """Table I (and the ablation) with one column per finished experiment, read from each ``results.json`` (or
    ``results<suffix>.json``, a metric asked for); with ``out``, also write it there as table.md and a grouped bar
    chart stages.png (one colour per experiment)."""
    summaries, runs_rows, ablations, labels, titles = {}, [], {}, {}, {}
    for d in map(Path, experiment_dirs):
        path = d / f"results{suffix}.json"
        if not path.is_file():
            raise MeritsError(f"{d} has no results.json: is it a finished experiment directory (runs/<name>)?")
        result = json.loads(path.read_text())
        if "rows" not in result:
            raise MeritsError(f"{path} was written by an older merits: rebuild it with merits report {d}")
        name = result["dataset"] if result["dataset"] not in summaries else f"{result['dataset']} ({d.name})"
        summaries[name] = result["summary"]
        titles[(result.get("metric") or {}).get("title", "weighted F1")] = d
        runs_rows.append([tuple(r) for r in result["rows"]])
        ablations.update({stage: label for label, stage in result["ablations"]})
        labels.update(result["labels"])
    if len(titles) > 1:  # one table, one metric: side by side, different metrics would read as one
        raise MeritsError("these runs report different metrics (" + "; ".join(f"{d}: {t}" for t, d in titles.items())
                          + "): rebuild them with one, merits report RUN --metric NAME")
    title = next(iter(titles))
    # the rows in their graphs' order: those of the run with the most stages, then any the others add
    runs_rows.sort(key=len, reverse=True)
    row_list = list(dict.fromkeys(r for rows in runs_rows for r in rows))
    ablation_list = [(label, st) for st, label in ablations.items()]
    ablation = ablation_table(summaries, row_list, ablation_list)
    md = table_one(summaries, row_list, title) + (f"\n\nAblation (test {title} %):\n\n{ablation}" if ablation else "")
    if out:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(md + "\n")
        plot_datasets(summaries, labels, out / "stages.png", title)
    return md


def plot_datasets(summaries: dict[str, dict], labels: dict[str, str], path: str | Path,
                  metric: str = "weighted F1") -> Path:
    """Grouped bars: the test metric per stage (x) for each experiment (colour), with the seed spread."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [st for st in labels if any(st in s for s in summaries.values())]
    width = 0.8 / len(summaries)
    fig, ax = plt.subplots(figsize=(1.5 + 1.4 * len(stages), 3.8))
    for k, (name, summary) in enumerate(summaries.items()):
        xs = [i + (k - (len(summaries) - 1) / 2) * width for i, st in enumerate(stages) if st in summary]
        ws = [_score(summary[st]) for st in stages if st in summary]
        ax.bar(xs, [100 * w["mean"] for w in ws], width, yerr=[100 * w["std"] for w in ws], capsize=3, label=name)
    ax.set_xticks(range(len(stages)), [labels[st] for st in stages])
    ax.set_ylabel(f"test {metric} (%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
