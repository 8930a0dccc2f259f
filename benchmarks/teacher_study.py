"""The teacher study (the paper's Fig. 3) with the offline teachers: does pretraining the text encoder on a teacher's
pseudo-labels of unlabelled podcast transcripts help Stage I text on MELD and CMU-MOSI?

    python benchmarks/teacher_study.py [--segments 5000] [--agreement-sample 2000] [--seeds 0 1 2]

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
after each step. "none" reuses the runs of meld_text.py and mosi_hierarchy.py when they are cached (same config).
Writes benchmarks/results/teacher_study.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from common import write_result
from merits.config import PretrainConfig, load_config
from merits.data import prepare
from merits.metrics import mean_std
from merits.pipeline import run_experiment
from merits.pretrain import LabelStore, LocalLMTeacher, VaderTeacher, agreement_table, label_manifest
from merits.pretrain import pseudo_labelled_manifest
from merits.pretrain.finetune import ENCODER, pretrain

WORK = Path(".cache/teacher_study")
PODCASTS = "../shared/data/podcast_asr/vtt"


def teachers() -> dict:
    return {"vader": VaderTeacher(),
            "smollm2": LocalLMTeacher(decoding="choice", calibrate=True, batch_size=16)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=5000, help="podcast segments to label (seeded sample)")
    ap.add_argument("--agreement-sample", type=int, default=2000, help="MELD training utterances for agreement")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pretrain-epochs", type=int, default=5)
    args = ap.parse_args()
    figures: dict = {"segments": args.segments, "agreement_sample": args.agreement_sample, "seeds": args.seeds,
                     "pretrain_epochs": args.pretrain_epochs, "timings_s": {}, "notes": []}

    def save() -> None:
        write_result("teacher_study", figures)

    def timed(key: str, fn):
        start = time.perf_counter()
        out = fn()
        figures["timings_s"][key] = round(time.perf_counter() - start, 1)
        return out

    corpus = prepare("podcast_vtt", PODCASTS, max_segments=args.segments, seed=0)
    meld = prepare("meld")
    sample = meld.select(meld.split("train").sample(args.agreement_sample, random_state=0)["utterance_id"])
    WORK.mkdir(parents=True, exist_ok=True)
    encoders = {"none": None}
    with LabelStore(WORK / "labels.sqlite") as store:
        for name, teacher in teachers().items():
            run = timed(f"label_podcasts_{name}", lambda: label_manifest(corpus, teacher, store))
            figures[f"podcast_invalid_rate_{name}"] = run.invalid_rate
            figures[f"podcast_labels_per_s_{name}"] = run.labels_per_s or None  # None when all were stored already
            timed(f"label_meld_sample_{name}", lambda: label_manifest(sample, teacher, store))
            pseudo = pseudo_labelled_manifest(corpus, store, teacher)
            figures[f"pseudo_label_counts_{name}"] = pseudo.table["label"].value_counts().to_dict()
            cfg = load_config(None, [f"train.epochs={args.pretrain_epochs}", "train.patience=2"], cls=PretrainConfig)
            m = timed(f"pretrain_{name}", lambda: pretrain(pseudo, WORK / f"pretrained-{name}", cfg))
            figures[f"pretrain_validation_wf1_{name}"] = m["validation"]["weighted_f1"]
            encoders[name] = str(WORK / f"pretrained-{name}" / ENCODER)
            save()
        # the paper's free-form protocol with the same small model: how many answers are usable at all
        free = LocalLMTeacher(batch_size=16)
        probe = sample.select(sample.table["utterance_id"].head(200))
        free_run = timed("label_meld_probe_smollm2_generate", lambda: label_manifest(probe, free, store))
        figures["smollm2_generate_probe"] = {"utterances": 200, "invalid_rate": free_run.invalid_rate,
                                             "summary": free_run.summary()}
        table = agreement_table(sample, store, reference="sentiment")
        figures["agreement_markdown"] = table.to_markdown()
        names = {"vader": VaderTeacher().name, "smollm2": teachers()["smollm2"].name}
        rows = {r["teacher"]: r for r in table.to_dict()["teachers"]}
        for key, teacher_name in names.items():
            r = rows[teacher_name]
            figures[f"meld_sentiment_agreement_{key}"] = r["overlap"] / 100
            figures[f"meld_sentiment_kappa_{key}"] = r["kappa"]
        figures["meld_sentiment_agreement_none"] = None
        if free.name in rows:
            figures["meld_sentiment_agreement_smollm2_generate"] = rows[free.name]["overlap"] / 100
        save()

    seeds = "seeds=[" + ", ".join(map(str, args.seeds)) + "]"
    for name, encoder in encoders.items():
        for dataset, profile, extra in (("meld", "offline", []), ("mosi", "mosi-offline", ["modalities=[text]"])):
            # "none" runs under the experiment names of meld_text.py / mosi_hierarchy.py: identical stages are reused
            run_name = {"meld": "bench-meld-text", "mosi": "bench-mosi-hierarchy"}[dataset] if encoder is None \
                else f"study-{dataset}-{name}"
            overrides = [f"name={run_name}", seeds, *extra] + ([f"text_encoder.model={encoder}"] if encoder else [])
            result = timed(f"{dataset}_{name}", lambda: run_experiment(load_config(profile, overrides)))
            s1 = mean_std([m["test"]["weighted_f1"] for m in result["per_seed"]["stage1_text"].values()])
            s2 = mean_std([m["test"]["weighted_f1"] for m in result["per_seed"]["stage2_text"].values()])
            figures.update({f"{dataset}_stage1_wf1_mean_{name}": s1["mean"], f"{dataset}_stage1_wf1_std_{name}": s1["std"],
                            f"{dataset}_stage1_wf1_per_seed_{name}": s1["values"],
                            f"{dataset}_stage2_wf1_mean_{name}": s2["mean"], f"{dataset}_stage2_wf1_std_{name}": s2["std"]})
            save()
    print({k: v for k, v in figures.items() if "wf1_mean" in k or "agreement_" in k})


if __name__ == "__main__":
    sys.exit(main())
