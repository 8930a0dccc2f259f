"""What ``merits predict`` shows beside the per-utterance table: each conversation's emotion shares
(conversations.csv), a timeline of the labels per turn (timelines.png), and the summary it prints."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from merits.data.manifest import _listing


def conversations(table: pd.DataFrame, labels: tuple[str, ...]) -> pd.DataFrame:
    """conversations.csv: per conversation, how much of each predicted emotion, at a glance (turn order kept).

    dominant: the most frequent predicted label; a tie goes to the label predicted with more total confidence (not to
    the class order), and ``tied`` names every label of the tie so that it is never silent."""
    done = table[table["predicted"] != ""]
    rows = []
    for conv, g in done.groupby("conversation_id", sort=False):  # conversations in input order
        g = g.sort_values("turn", kind="stable")
        counts = g["predicted"].value_counts()
        tied = sorted(counts.index[counts == counts.max()])
        dominant = max(tied, key=lambda n: (g.loc[g["predicted"] == n, "confidence"].sum(), -tied.index(n)))
        rows.append({"conversation_id": conv, "utterances": len(g), "dominant": dominant,
                     "tied": ", ".join(tied) if len(tied) > 1 else "",
                     **{f"share_{n}": round(float(counts.get(n, 0) / len(g)), 6) for n in labels},
                     "mean_confidence": round(float(g["confidence"].mean()), 4),
                     "first": g["predicted"].iloc[0], "last": g["predicted"].iloc[-1]})
    return pd.DataFrame(rows)


def shares(table: pd.DataFrame, labels: tuple[str, ...]) -> dict[str, dict]:
    """{conversation id: {shares, dominant, tied, mean_confidence}} of the conversations table, as the typed
    results and the service answer them (a conversation with no predicted turn is absent)."""
    out = {}
    if not (table["predicted"] != "").any():
        return out
    for r in conversations(table, labels).to_dict("records"):
        out[r["conversation_id"]] = {"shares": {n: r[f"share_{n}"] for n in labels}, "dominant": r["dominant"],
                                     "tied": [t.strip() for t in r["tied"].split(",") if t.strip()],
                                     "mean_confidence": r["mean_confidence"]}
    return out


def plot_timelines(table: pd.DataFrame, labels: tuple[str, ...], path: str | Path, most: int = 12) -> Path:
    """The predicted label of every turn of the first ``most`` conversations, one panel each; fainter = less sure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    done = table[table["predicted"] != ""]
    convs = list(dict.fromkeys(done["conversation_id"]))[:most]
    cols = min(3, max(len(convs), 1))
    rows = -(-max(len(convs), 1) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 0.9 + 0.32 * len(labels) * rows), squeeze=False)
    colours = plt.get_cmap("tab10")
    index = {n: i for i, n in enumerate(labels)}
    timed = "start" in done.columns and done["start"].notna().all()  # seconds where the audio was cut, else turns
    for ax, conv in zip(axes.flat, convs):
        g = done[done["conversation_id"] == conv].sort_values("turn")
        x = g["start"].to_numpy(float) if timed else g["turn"].to_numpy()
        y = g["predicted"].map(index).to_numpy()
        ax.plot(x, y, color="0.8", lw=1, zorder=1)
        ax.scatter(x, y, c=[colours(i % 10) for i in y], alpha=(0.25 + 0.75 * g["confidence"]).clip(0, 1).to_numpy(),
                   s=30, zorder=2)
        ax.set_yticks(range(len(labels)), labels, fontsize=7)
        ax.set_ylim(-0.5, len(labels) - 0.5)
        ax.set_title(str(conv), fontsize=8)
        ax.set_xlabel("seconds" if timed else "turn", fontsize=7)
        if not timed:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(convs):]:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def format_summary(summary: dict) -> str:
    """A few lines a user reads at a glance: what was predicted with what, the label counts, gold scores."""
    n_conv, names = summary["conversations"], summary["stage_labels"]
    lines = [f"{summary['predicted']} of {summary['utterances']} utterances in {n_conv} conversation{'s' * (n_conv != 1)}, "
             f"{names[summary['stage']]} of {summary['run']} ({_seeds(summary['seeds'])}"
             f"{'; online: each turn from the turns up to it' if summary.get('online') else ''})", "",
             "| predicted | utterances | share |", "|---|---|---|"]
    total = max(summary["predicted"], 1)
    for name, n in summary["predicted_counts"].items():
        lines.append(f"| {name} | {n} | {percent(n, total)} |")
    if summary["scores"]:
        lines += ["", "Against the input's gold labels:", "",
                  "| stage | split | weighted F1 (%) | macro F1 (%) | accuracy (%) | n |", "|---|---|---|---|---|---|"]
        for s, by_split in summary["scores"].items():
            for split, m in by_split.items():
                lines.append(f"| {names[s]} | {split} | {100 * m['weighted_f1']:.2f} | {100 * m['macro_f1']:.2f} | "
                             f"{100 * m['accuracy']:.2f} | {m['n']} |")
    if summary["left_out"]:
        lines += ["", f"left out (bad audio): {len(summary['left_out'])}: {_listing(summary['left_out'])}"]
    if summary.get("notes"):
        lines += ["", *(f"note: {n}" for n in summary["notes"])]
    return "\n".join(lines)


def percent(n: int, total: int) -> str:
    """A share for people: 1 of 2,405 is "< 0.1 %", never a misleading "0.0 %"; 2,404 of 2,405 is "> 99.9 %"."""
    share = 100 * n / max(total, 1)
    if 0 < share < 0.05:
        return "< 0.1 %"
    if 99.95 <= share < 100:
        return "> 99.9 %"
    return f"{share:.1f} %"


def format_preview(table: pd.DataFrame, rows: int = 10, width: int = 60) -> str:
    """The first utterances as a Markdown table: conversation, turn, transcript (cut), prediction, confidence."""
    head = table.head(rows)
    lines = ["| conversation | turn | text | predicted | confidence |", "|---|---|---|---|---|"]
    for r in head.itertuples():
        text = str(getattr(r, "text", "")).replace("|", "/").replace("\n", " ")
        text = text if len(text) <= width else text[:width - 1] + "…"
        conf = f"{r.confidence:.2f}" if r.predicted else ""
        lines.append(f"| {r.conversation_id} | {r.turn} | {text} | {r.predicted or '(left out)'} | {conf} |")
    if len(table) > rows:
        lines.append(f"\n... and {len(table) - rows} more utterances")
    return "\n".join(lines)


def _seeds(seeds: list[int]) -> str:
    return f"seed {seeds[0]}" if len(seeds) == 1 else f"probabilities averaged over seeds {seeds}"
