"""The teacher study (the paper's Fig. 3) with the offline teachers: does pretraining the text encoder on a teacher's
pseudo-labels of unlabelled podcast transcripts help Stage I text on MELD and CMU-MOSI?

    python benchmarks/teacher_study.py [--segments 5000] [--agreement-sample 2000] [--seeds 0 1 2] [--meld-seeds 0 1]

For each teacher (VADER; SmolLM2-135M-Instruct with constrained choice decoding; and none = no pretraining):
1. label the podcast segments (`podcast_vtt`, a seeded sample) into a SQLite label store (resumable);
2. pretrain all-MiniLM-L6-v2 on the pseudo-labels (random 80/20 split, selection on validation);
3. Stage I (+ II) text on MELD (offline profile) and on CMU-MOSI (Poria split, mosi-offline profile, text only)
   from the pretrained encoder, over the seeds;
4. the teacher's agreement with MELD's gold `Sentiment` on a seeded sample of MELD training utterances.
SmolLM2 with the paper's free-form prompt answers in the requested form for none of the utterances (see
labelling_throughput.json), so it is used in `choice` decoding (its distribution restricted to the three labels,
contextually calibrated); its free-form run is recorded too.
Every step is cached (label store, pretraining, stages), so an interrupted run continues; the JSON is rewritten
after each step, and `<dataset>_seeds_<teacher>` says which seeds a figure covers.
Writes benchmarks/results/teacher_study.json.
"""

from __future__ import annotations

import argparse
import sys

from common import DATA, MOSI_TABLE, PROJECT, bench_config, write_result
from merits.config import load_config
from merits.pretrain import PretrainConfig
from merits.data import prepare
from merits.metrics import mean_std
from merits.pipeline import run_experiment
from merits.pretrain import PretrainConfig
from merits.pretrain.finetune import ENCODER, pretrain
from merits.teach import LabelStore, LocalLMTeacher, VaderTeacher, agreement_table, label_manifest
from merits.teach import pseudo_labelled_manifest

WORK = PROJECT / ".cache" / "teacher_study"
PODCASTS = DATA / "podcast_asr" / "vtt"


def teachers() -> dict:
    return {"vader": VaderTeacher(),
            "smollm2": LocalLMTeacher(decoding="choice", calibrate=True, batch_size=16),
            # the teach-qwen profile's teacher (merits[qwen]): llama.cpp, lowercase label words, no prior correction
            "qwen": LocalLMTeacher("Qwen2.5-Coder-1.5B-Instruct", decoding="choice", backend="llama_cpp",
                                   spellings="lowercase", calibrate=False, batch_size=16, threads=1)}


AGREEMENT = {"meld": {"reference": "sentiment"},  # gold sentiment; CMU-MOSI: polarity (score < 0 / > 0)
             "mosi": {"reference": "valence", "negative_below": 0.0, "positive_above": 0.0}}


def table_reference(manifest, options: dict):
    """The three-class reference the agreement compares with, over the sample's rows that have one."""
    from merits.teach.agreement import reference_labels

    ref, _ = reference_labels(manifest, **options)
    return ref[ref != ""]


def agreement_figures(key: str, teacher, corpus: str, manifest, store) -> dict:
    """The teacher's agreement (overlap, Cohen's kappa, confusion) with MELD's gold sentiment or CMU-MOSI's
    polarity on a seeded sample, labelling it first (resumable)."""
    import time

    out = {}
    options = AGREEMENT[corpus]
    start = time.perf_counter()
    run = label_manifest(manifest, teacher, store)
    rows = store.table(manifest.corpus, teacher.name)
    table = agreement_table(manifest, store, teachers=[teacher.name], **options)
    (r,) = table.to_dict()["teachers"]
    name = "sentiment" if corpus == "meld" else "polarity"
    out.update({f"{corpus}_{name}_agreement_{key}": r["overlap"] / 100, f"{corpus}_{name}_kappa_{key}": r["kappa"],
                f"{corpus}_{name}_confusion_{key}": r["confusion"],
                f"{corpus}_{name}_agreement_markdown_{key}": table.to_markdown(),
                f"{corpus}_agreement_labels_per_s_{key}": len(rows) / max(float(rows["latency_s"].sum()), 1e-9),
                f"{corpus}_agreement_seconds_this_call_{key}": time.perf_counter() - start,
                f"{corpus}_agreement_asked_this_call_{key}": run.asked,
                f"{corpus}_agreement_sample_{key}": len(manifest.table),
                f"{corpus}_always_neutral_agreement": float((table_reference(manifest, options) == "neutral").mean())})
    return out


def stage1_on(dataset: str, name: str, encoder: str | None, seeds: list[int]) -> dict:
    """Stage I (+ II) text on MELD or CMU-MOSI from ``encoder`` (None: the offline encoder, no pretraining)."""
    profile, extra = {"meld": ("offline", []), "mosi": ("mosi-offline", ["modalities=[text]"])}[dataset]
    overrides = [f"name=study-{dataset}-{name}", "seeds=[" + ", ".join(map(str, seeds)) + "]", *extra]
    if encoder:
        overrides.append(f"text_encoder.model={encoder}")
    result = run_experiment(bench_config(profile, overrides))
    runs = result["per_seed"]["stage1_text"].values()
    s1 = mean_std([m["test"]["weighted_f1"] for m in runs])
    s2 = mean_std([m["test"]["weighted_f1"] for m in result["per_seed"]["stage2_text"].values()])
    return {f"{dataset}_stage1_wf1_mean_{name}": s1["mean"], f"{dataset}_stage1_wf1_std_{name}": s1["std"],
            f"{dataset}_stage1_wf1_per_seed_{name}": s1["values"], f"{dataset}_seeds_{name}": seeds,
            f"{dataset}_stage1_seconds_per_seed_{name}": [round(m["stage_seconds"], 1) for m in runs],
            f"{dataset}_stage2_wf1_mean_{name}": s2["mean"], f"{dataset}_stage2_wf1_std_{name}": s2["std"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=5000, help="podcast segments to label (seeded sample)")
    ap.add_argument("--agreement-sample", type=int, default=2000, help="MELD training utterances for agreement")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--meld-seeds", type=int, nargs="+", help="MELD seeds if fewer (MELD Stage I is the slow part)")
    ap.add_argument("--pretrain-epochs", type=int, default=5)
    ap.add_argument("--teachers", default="vader,smollm2", help="comma-separated, of vader, smollm2, qwen")
    ap.add_argument("--agreement-corpora", default="meld,mosi", help="with --agreement-only: meld, mosi or both")
    ap.add_argument("--speed-sample", type=int, default=0,
                    help="with --agreement-only: also time each teacher alone on this many MELD test utterances "
                         "(a fresh instance, nothing stored): <teacher>_labels_per_s")
    ap.add_argument("--agreement-only", action="store_true",
                    help="only the teachers' agreement with MELD sentiment and CMU-MOSI polarity (kept beside the "
                         "committed figures of the other teachers)")
    args = ap.parse_args()
    figures: dict = {"segments": args.segments, "agreement_sample": args.agreement_sample, "seeds": args.seeds,
                     "pretrain_epochs": args.pretrain_epochs, "timings_s": {}, "notes": []}
    if args.agreement_only:  # the study's other figures stay as committed
        import json

        from common import RESULTS

        figures = json.loads((RESULTS / "teacher_study.json").read_text())

    def save() -> None:
        write_result("teacher_study", figures)

    if args.agreement_only:
        meld = prepare("meld")
        sample = meld.select(meld.split("train").sample(args.agreement_sample, random_state=0)["utterance_id"])
        mosi = prepare("mosi", MOSI_TABLE)
        mosi_sample = mosi.select(mosi.table.sample(min(args.agreement_sample, len(mosi.table)),
                                                    random_state=0)["utterance_id"])
        WORK.mkdir(parents=True, exist_ok=True)
        study = teachers()
        with LabelStore(WORK / "labels.sqlite") as store:
            for key in args.teachers.split(","):
                for corpus, manifest in (("meld", sample), ("mosi", mosi_sample)):
                    if corpus in args.agreement_corpora.split(","):
                        figures.update(agreement_figures(key, study[key], corpus, manifest, store))
                        save()
        for key in args.teachers.split(",") if args.speed_sample else ():
            import os
            import time

            texts = meld.split("test")["text"].head(args.speed_sample).tolist()
            teacher = teachers()[key]  # fresh: its load is timed apart, its answers are not stored
            start = time.perf_counter()
            teacher.label(texts[:1])
            loaded = time.perf_counter() - start
            start = time.perf_counter()
            teacher.label(texts)
            figures.update({f"{key}_labels_per_s": len(texts) / (time.perf_counter() - start),
                            f"{key}_speed": {"texts": len(texts), "load_and_first_label_seconds": loaded,
                                             "threads": getattr(getattr(teacher, "cfg", None), "threads", None),
                                             "load_average_1min": os.getloadavg()[0]}})
            save()
        return

    corpus = prepare("podcast_vtt", PODCASTS, max_segments=args.segments, seed=0)
    meld = prepare("meld")
    sample = meld.select(meld.split("train").sample(args.agreement_sample, random_state=0)["utterance_id"])
    WORK.mkdir(parents=True, exist_ok=True)
    encoders = {"none": None}
    with LabelStore(WORK / "labels.sqlite") as store:
        study = {k: t for k, t in teachers().items() if k in args.teachers.split(",")}
        for name, teacher in study.items():
            run = label_manifest(corpus, teacher, store)
            label_manifest(sample, teacher, store)
            # timings from the store and the pretraining record, so that a resumed study reports the first run's
            stored = store.table("podcast_vtt", teacher.name)
            figures[f"podcast_invalid_rate_{name}"] = run.invalid_rate
            figures[f"podcast_labels_per_s_{name}"] = len(stored) / max(stored["latency_s"].sum(), 1e-9)
            figures["timings_s"][f"label_podcasts_{name}"] = round(float(stored["latency_s"].sum()), 1)
            pseudo = pseudo_labelled_manifest(corpus, store, teacher)
            figures[f"pseudo_label_counts_{name}"] = pseudo.table["label"].value_counts().to_dict()
            cfg = load_config(None, [f"train.epochs={args.pretrain_epochs}", "train.patience=2"], cls=PretrainConfig)
            m = pretrain(pseudo, WORK / f"pretrained-{name}", cfg)
            figures["timings_s"][f"pretrain_{name}"] = round(m["stage_seconds"], 1)
            figures[f"pretrain_validation_wf1_{name}"] = m["validation"]["weighted_f1"]
            figures[f"pretrain_best_epoch_{name}"] = m["best_epoch"]
            encoders[name] = str(WORK / f"pretrained-{name}" / ENCODER)
            save()
        # the paper's free-form protocol with the same small model: how many answers are usable at all
        free = LocalLMTeacher(batch_size=16)
        probe = sample.select(sample.table["utterance_id"].head(200))
        free_run = label_manifest(probe, free, store)
        probe_rows = store.table("meld", free.name)
        figures["smollm2_generate_probe"] = {"utterances": 200, "invalid_rate": free_run.invalid_rate,
                                             "labels_per_s": len(probe_rows) / max(probe_rows["latency_s"].sum(), 1e-9),
                                             "example_answers": probe_rows["raw"].head(5).tolist()}
        table = agreement_table(sample, store, reference="sentiment")
        figures["agreement_markdown"] = table.to_markdown()
        names = {key: teacher.name for key, teacher in study.items()}
        rows = {r["teacher"]: r for r in table.to_dict()["teachers"]}
        for key, teacher_name in names.items():
            r = rows[teacher_name]
            figures[f"meld_sentiment_agreement_{key}"] = r["overlap"] / 100
            figures[f"meld_sentiment_kappa_{key}"] = r["kappa"]
        figures["meld_sentiment_agreement_none"] = None
        if free.name in rows:  # overlap over the labelled answers: undefined (None) when none was valid
            overlap = rows[free.name]["overlap"]
            figures["meld_sentiment_agreement_smollm2_generate"] = None if overlap != overlap else overlap / 100
        save()

    # Seeds are added one at a time, CMU-MOSI (fast) first: each call reuses the cached seeds before it, and the
    # JSON is rewritten after each, so an interrupted study still reports every finished seed.
    meld_seeds = args.meld_seeds or args.seeds
    plan = [("mosi", args.seeds)] + [("meld", meld_seeds[:k]) for k in range(1, len(meld_seeds) + 1)]
    for dataset, seeds in plan:
        for name, encoder in encoders.items():
            figures.update(stage1_on(dataset, name, encoder, seeds))
            save()
    print({k: v for k, v in figures.items() if "wf1_mean" in k or "agreement_" in k})


if __name__ == "__main__":
    sys.exit(main())
