"""The one command line: ``merits <step> ...``.

    merits demo                         Stage I + II text on the embedded MELD with the offline encoder
    merits prepare meld --root DIR      build, check and save a corpus manifest; print its counts
    merits train CONFIG [key=value ...] run an experiment (every stage, every seed) and print Table I
    merits report RUN_DIR [RUN_DIR ...] print the report of a finished experiment (several: one Table I);
                                        --metric macro_f1 / micro_f1 --classes a,b: another metric
    merits asr MANIFEST --out DIR       transcribe a manifest's audio (faster-whisper), resumable
    merits wer REF HYP                  word error rate of transcripts against references
    merits teach CONFIG [key=value ...] label a manifest's transcripts with a teacher (LLM or VADER) into a store
    merits pseudolabel CONFIG [...]     the same at corpus scale on Ray (ASR where needed, teacher actors, export)
    merits agreement CONFIG [key=value ...]  the stored teachers' agreement with gold sentiment or valence
    merits pretrain MANIFEST --out DIR  fine-tune the text encoder on pseudo-labels ("RoBERTa-FT")
    merits care pretrain MANIFEST --out DIR  pretrain CARE, the paper's speech encoder (resumable)
    merits predict RUN_DIR INPUT        emotions of new conversations (text, recordings) with a trained experiment
    merits export RUN_DIR OUT           a trained run as a self-contained model folder (weights, model card)
    merits serve RUN_DIR                the trained run as an HTTP service with a web page (FastAPI + uvicorn)
                                        (predict and serve take a run folder or an exported one alike)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from merits.errors import ConfigError, MeritsError

log = logging.getLogger("merits")
DEMO_CONFIG = "offline"


def _options(items) -> dict:
    """``--option key=value`` pairs (adapter options), parsed as every override is."""
    from merits.config import parse_overrides

    return parse_overrides(items)


def cmd_prepare(args) -> int:
    from merits.data import prepare

    manifest = prepare(args.corpus, args.root, **_options(args.option))
    print(manifest.report())
    if args.out:
        print(f"manifest written to {manifest.save(args.out)}")
    # what merits train would say only later: label problems (warnings with their fix), and what would stop it
    for problem in manifest.label_problems():
        print(f"warning: {problem}", file=sys.stderr)
    if manifest.labels:  # a labelled corpus: can it be trained on?
        try:
            manifest.require_labels(unlabelled="context")
        except MeritsError as e:
            print(f"error: {e} (merits train would stop here)", file=sys.stderr)
            return 2
    return 0


def cmd_train(args) -> None:
    from merits.experiment import load_experiment
    from merits.pipeline import run_experiment

    cfg = load_experiment(args.config, args.overrides)
    result = run_experiment(cfg, args.seed)
    if not result["table"]:  # a data-parallel process other than rank 0: rank 0 prints
        return
    print()
    print(result["table"])
    print(f"\nreport, per-class scores and plots: {result['dir']}/ (report.md, results.json, stages.png, "
          f"<stage>/seed-<k>/confusion_test.png)")
    print(f"emotions of new conversations with it: merits predict {result['dir']} CONVERSATIONS.csv|RECORDINGS_DIR")


def cmd_demo(args) -> None:
    args.config, args.seed = DEMO_CONFIG, None
    cmd_train(args)


def cmd_report(args) -> None:
    from merits.pipeline import report_run

    classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
    if classes is not None and args.metric is None:
        raise ConfigError("--classes needs --metric (e.g. --metric micro_f1 --classes anger,joy,sadness)")
    if len(args.run_dirs) > 1:  # one Table I column per experiment (e.g. one per dataset)
        from merits.report import combine

        if args.metric:  # each run's report rebuilt in that metric first (from its confusion matrices)
            for run in args.run_dirs:
                report_run(run, args.metric, classes)
        from merits.report import metric_suffix

        print(combine(args.run_dirs, args.out, metric_suffix(args.metric, classes)))
        if args.out:
            print(f"\nwritten to {args.out}/table.md and {args.out}/stages.png")
        return
    # rebuilt from every finished seed (seeds may have run in parallel)
    print(report_run(args.run_dirs[0], args.metric, classes))
    if args.metric:
        from merits.report import metric_suffix

        print(f"\nwritten beside the run's own report: report{metric_suffix(args.metric, classes)}.md "
              f"(the run's report.md and results.json are unchanged)")


def cmd_asr(args) -> None:
    from merits.asr import ASRConfig, transcribe_manifest
    from merits.config import load_config
    from merits.data import load_manifest_or_corpus

    overrides = list(args.overrides)
    for flag, key in (("model", "model"), ("batch_size", "batch_size"), ("beam_size", "beam_size"),
                      ("threads", "threads"), ("compute_type", "compute_type"), ("device", "device")):
        if getattr(args, flag) is not None:
            overrides.append(f"{key}={getattr(args, flag)}")
    if args.language is not None:  # "auto" asks Whisper to detect the language
        overrides.append("language=" + ("null" if args.language.lower() in ("auto", "none", "null") else args.language))
    if args.vad:
        overrides.append("vad=true")
    if args.segment:
        overrides.append("segment=true")
    cfg = load_config(args.config, overrides, cls=ASRConfig)
    from merits.runs import check_output

    check_output(args.out, [args.manifest])  # never over the input, never inside a trained run
    manifest = load_manifest_or_corpus(args.manifest, args.root, **_options(args.option))
    result = transcribe_manifest(manifest, args.out, cfg)
    r = result.report
    what = "recordings" if cfg.segment else "utterances"
    print(f"transcribed {r['transcribed']} {what} ({r['run']['transcribed']} now, {r['run']['reused']} reused), "
          f"{r['audio_seconds']:.1f} s of audio; real-time factor this run: {r['run']['rtf']}")
    if cfg.segment:
        print(f"cut into {r['segments']} utterances (Whisper's segments), one conversation per recording")
    if r["empty"]["count"]:
        print(f"empty transcripts: {r['empty']['count']} ({', '.join(r['empty']['ids'][:10])}"
              f"{' ...' if r['empty']['count'] > 10 else ''})")
    if r["skipped"]["count"]:
        print(f"left out for bad audio: {r['skipped']['count']} (see {result.directory / 'asr_report.json'})")
    if "wer_vs_input_text" in r:
        print(f"WER against the input manifest's text: {r['wer_vs_input_text']['wer']:.4f}")
    print(f"manifest with transcripts written to {result.directory}")


def cmd_wer(args) -> None:
    import json

    from merits.asr.wer import Normalizer, read_texts, score_by_id

    norm = Normalizer(lowercase=not args.case_sensitive, strip_punctuation=not args.keep_punctuation)
    score, missing = score_by_id(read_texts(args.ref), read_texts(args.hyp), norm)
    for u in score.utterances if args.per_utterance else ():
        print(f"{u.utterance_id}\t{'n/a' if u.wer is None else f'{u.wer:.4f}'}\t{u.alignment.errors}/{u.alignment.ref_words}")
    shown = "n/a (no reference words)" if score.wer is None else f"{score.wer:.4f}"
    print(f"WER {shown}: {score.errors} errors (S {score.substitutions}, D {score.deletions}, I {score.insertions}) "
          f"in {score.ref_words} reference words, {len(score.utterances)} utterances")
    if missing:
        print(f"{len(missing)} references had no hypothesis (counted as deletions): {', '.join(missing[:5])}")
    if args.json:
        Path(args.json).write_text(json.dumps({**score.to_dict(), "missing_hypotheses": missing}, indent=2))


def cmd_pretrain(args) -> None:
    from merits.config import load_config
    from merits.data import load_manifest_or_corpus
    from merits.pretrain import PretrainConfig
    from merits.pretrain.finetune import pretrain

    cfg = load_config(args.config, args.overrides, cls=PretrainConfig)
    m = pretrain(load_manifest_or_corpus(args.manifest), args.out, cfg)
    from merits.distributed import Distributed

    if not Distributed.current().is_main:  # several processes (torchrun / accelerate launch): rank 0 reports
        return
    v = m["validation"]
    print(f"pretrained on {m['utterances']['train']} pseudo-labelled utterances "
          f"({m['dropped']['no_label']} without a valid label left out); validation on {m['utterances']['validation']}: "
          f"weighted F1 {v['weighted_f1']:.3f}, accuracy {v['accuracy']:.3f} (best epoch {m['best_epoch']})")
    print(f"Stage I text starts from it with: text_encoder.model={m['encoder']}")


def cmd_care(args) -> None:
    from merits.care.pretrain import CarePretrainConfig, pretrain
    from merits.config import load_config
    from merits.data import load_manifest_or_corpus

    cfg = load_config(args.config, args.overrides, cls=CarePretrainConfig)
    r = pretrain(load_manifest_or_corpus(args.manifest), args.out, cfg)
    from merits.distributed import Distributed

    if not Distributed.current().is_main:  # several processes (torchrun / accelerate launch): rank 0 reports
        return
    last = r["history"][-1] if r["history"] else {}
    print(f"CARE pretrained for {last.get('step', 0)} steps on {r['utterances'] - r['validation']} utterances "
          f"({r['validation']} held out; {len(r['skipped'])} left out for bad audio): semantic loss "
          f"{last.get('semantic', float('nan')):.4f}, acoustic loss {last.get('acoustic', float('nan')):.4f}")
    print(f"its embeddings in Stage I speech: speech_encoder.kind=care speech_encoder.model={r['care']}")


def _teach_config(args):
    from merits.config import load_config
    from merits.teach import TeachConfig

    # `merits teach key=value ...` (no profile) starts from the defaults.
    if "=" in args.config:
        return load_config(None, [args.config, *args.overrides], cls=TeachConfig)
    return load_config(args.config, args.overrides, cls=TeachConfig)


def cmd_teach(args) -> int:
    from merits.teach import run_teach

    run = run_teach(_teach_config(args))
    print(run.summary(), file=sys.stderr if run.failed else sys.stdout)
    # 2: the teacher failed; 3: the budget stopped the run (scripts can tell; a rerun continues); 0: all labelled
    return 2 if run.failed else 3 if run.stopped else 0


def cmd_pseudolabel(args) -> int:
    from merits.config import load_config
    from merits.teach.corpus import CorpusLabelConfig, label_corpus

    overrides = list(args.overrides) + ([f"ray.address={args.address}"] if args.address else [])
    if "=" in args.config:  # no profile: the defaults (vader), as merits teach
        cfg = load_config(None, [args.config, *overrides], cls=CorpusLabelConfig)
    else:
        cfg = load_config(args.config, overrides, cls=CorpusLabelConfig)
    run = label_corpus(cfg)
    print(run.summary(), file=sys.stderr if run.failed else sys.stdout)
    return 2 if run.failed else 3 if run.stopped else 0


def cmd_agreement(args) -> None:
    import json

    from merits.teach import run_agreement

    table = run_agreement(_teach_config(args), args.teacher)
    print(table.to_markdown())
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(table.to_dict(), indent=2))
        print(f"\nwritten to {args.json}")


def _seed(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise MeritsError(f"--seed takes seed numbers or 'all', got {value!r}") from None


def cmd_predict(args) -> None:
    from merits.asr import ASRConfig
    from merits.config import load_config
    from merits.data import load_prediction_input
    from merits.predict import TrainedRun, predict_run
    from merits.prediction_report import format_preview, format_summary

    run = TrainedRun.open(args.run_dir)
    manifest = load_prediction_input(args.input, run.labels, args.root, **_options(args.option))
    asr = load_config(None, ([f"model={args.asr_model}"] if args.asr_model else [])
                      + (["segment=true"] if args.segment else []), cls=ASRConfig)
    out = args.out or str(Path("predictions") / Path(args.input.rstrip("/")).stem)
    from merits.runs import check_output

    check_output(out, [args.input])  # never over the input, never inside a trained run (its stage files)
    seeds = None
    if args.seed:  # "all", or seed numbers; several are an ensemble (probabilities averaged)
        seeds = run.seeds if args.seed == ["all"] else [_seed(v) for v in args.seed]
    result = predict_run(run, manifest, out, seeds, args.stage, args.device, asr, args.online or bool(args.window),
                         args.window)
    print(format_summary(result.summary))
    print()
    print(format_preview(result.table))
    print(f"\nper-utterance predictions: {result.directory / 'predictions.csv'}")


def cmd_export(args) -> None:
    from merits.export import export_run

    seeds = None if not args.seed else [_seed(v) for v in args.seed]
    done = export_run(args.run_dir, args.out, seeds, args.stage)
    print(f"exported {done['stage']} (seeds {done['seeds']}) of {args.run_dir} into {done['out']}: "
          f"{done['export_mb']:.1f} MB (the run folder: {done['run_folder_mb']:.1f} MB); weights licence "
          f"{done['licence']}; see {Path(done['out']) / 'model_card.md'}")


def cmd_serve(args) -> None:
    from merits.config import load_config
    from merits.predict import TrainedRun
    from merits.serve import ServeConfig, serve

    overrides = list(args.overrides) + [f"{k}={getattr(args, k)}" for k in ("host", "port") if getattr(args, k)]
    if args.seed:
        seeds = TrainedRun.open(args.run_dir).seeds if args.seed == ["all"] else [_seed(v) for v in args.seed]
        overrides.append(f"seeds={seeds}")
    cfg = load_config(args.config, overrides, cls=ServeConfig)
    serve(args.run_dir, cfg)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="merits", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # -q / --debug before the step or after it (merits prepare x --debug): every step's parser shares them
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="no progress bars, warnings only")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error, not just its message")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error, not just its message")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("prepare", parents=[common], help="build and check a corpus manifest")
    p.add_argument("corpus", help="meld | iemocap | mosi | msp_podcast | custom | podcast_vtt | audio_folder")
    p.add_argument("--root", help="the raw release (default for meld: the embedded text CSVs)")
    p.add_argument("--out", help="directory to save manifest.csv + manifest.json")
    p.add_argument("--option", "-o", action="append", help="adapter option key=value (repeatable)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", parents=[common], help="run an experiment from a config")
    p.add_argument("config", help="a YAML file, or a shipped profile name (offline, meld, iemocap, mosi)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stage1_text.epochs=2 seeds=[0]")
    p.add_argument("--seed", type=int, action="append", help="train only this seed of the config's seeds (repeatable): "
                                                             "one process per seed, merged by merits report RUN_DIR")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", parents=[common], help="the main job on the embedded default (MELD text, offline encoder)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the offline profile")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("report", parents=[common], help="print the report of a finished experiment, or one Table I for several")
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", help="with several runs: also write table.md and a grouped bar chart stages.png here")
    p.add_argument("--metric", help="the table's metric: weighted_f1 (default: the run's), macro_f1, micro_f1, accuracy")
    p.add_argument("--classes", help="with --metric: the classes it averages over, comma-separated (e.g. every class "
                                     "but 'others' for micro F1)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("asr", parents=[common], help="transcribe a manifest's audio into a new manifest (resumable)")
    p.add_argument("manifest", help="a manifest directory (merits prepare --out), or a corpus name built with --root/-o")
    p.add_argument("--out", required=True, help="output directory: manifest + transcripts.jsonl + asr_report.json")
    p.add_argument("--root", help="the raw release, when MANIFEST is a corpus name")
    p.add_argument("--option", "-o", action="append", help="adapter option key=value, when MANIFEST is a corpus name")
    p.add_argument("--config", help="an ASR config YAML (e.g. asr/paper, the shipped Whisper large-v3 profile); default: the offline settings")
    p.add_argument("--model", help="tiny.en (packaged, default), large-v3, a CTranslate2 hub id or a local directory")
    p.add_argument("--vad", action="store_true", help="decode only the speech regions found by Silero VAD")
    p.add_argument("--segment", action="store_true", help="each recording is a whole conversation: its Whisper "
                                                          "segments become the utterances (start/end/text)")
    p.add_argument("--language", help="language code (default en); auto = detect")
    p.add_argument("--batch-size", type=int, help="utterance pieces decoded together (default 8)")
    p.add_argument("--beam-size", type=int, help="beam width (default 5)")
    p.add_argument("--threads", type=int, help="CTranslate2 CPU threads (default 0 = its default)")
    p.add_argument("--compute-type", help="CTranslate2 quantisation (default int8)")
    p.add_argument("--device", help="cpu (default) | cuda | auto")
    p.add_argument("overrides", nargs="*", help="more ASR config key=value, e.g. audio.on_error=skip drop_empty=true")
    p.set_defaults(func=cmd_asr)

    p = sub.add_parser("wer", parents=[common], help="word error rate of hypotheses against references, paired by utterance id")
    p.add_argument("ref", help="references: a manifest directory, or a .csv / .jsonl with utterance_id,text")
    p.add_argument("hyp", help="hypotheses: same forms (e.g. the --out directory of merits asr)")
    p.add_argument("--case-sensitive", action="store_true", help="do not lower-case before comparing")
    p.add_argument("--keep-punctuation", action="store_true", help="do not strip punctuation before comparing")
    p.add_argument("--per-utterance", action="store_true", help="print id, WER, errors/reference words per utterance")
    p.add_argument("--json", help="also write the scores (corpus and per utterance) to this JSON file")
    p.set_defaults(func=cmd_wer)

    p = sub.add_parser("pretrain", parents=[common], help="fine-tune the text encoder on teacher pseudo-labels (RoBERTa-FT)")
    p.add_argument("manifest", help="a manifest directory whose label column holds pseudo-labels (merits teach)")
    p.add_argument("--out", required=True, help="output directory; the encoder lands in <out>/checkpoint/encoder")
    p.add_argument("--config", help="a YAML file of PretrainConfig values (default: the offline encoder)")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. text_encoder.model=roberta-large train.epochs=10")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("care", parents=[common], help="CARE, the paper's speech encoder: pretrain it on unlabelled speech")
    care = p.add_subparsers(dest="care_command", required=True)
    p = care.add_parser("pretrain", parents=[common], help="pretrain CARE (step-based, resumable) on a manifest's audio + transcripts")
    p.add_argument("manifest", help="a manifest directory with audio_path and text (merits asr writes one)")
    p.add_argument("--out", required=True, help="output directory; the model lands in <out>/care")
    p.add_argument("--config", default="care/offline", help="care/offline (default: a small CARE for a CPU) or "
                                                            "care/paper (the published setting), or a YAML file")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. steps=2000 batch_size=16 precision=bf16")
    p.set_defaults(func=cmd_care)

    p = sub.add_parser("pseudolabel", parents=[common], help="corpus-scale pseudo-labelling on Ray: ASR where needed, teacher actors, "
                                          "the label store, the export (resumable)")
    p.add_argument("config", help="a teach profile (teach-vader, teach-local, teach-openai) or YAML file, or directly "
                                  "the first key=value override")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. ray.workers=4 ray.total_concurrency=256 "
                                                "chat.structured=choice export=manifests/pseudo")
    p.add_argument("--address", help="a Ray cluster to run on (ray://head:10001, or auto); default: a local Ray")
    p.set_defaults(func=cmd_pseudolabel)

    p = sub.add_parser("teach", parents=[common], help="pseudo-label transcripts with a teacher into the label store (resumable)")
    p.add_argument("config", help="a YAML file or shipped profile (teach-vader, teach-local, teach-openai), "
                                  "or directly the first key=value override")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. data.corpus=meld splits=[train] limit=200 "
                                                "chat.base_url=http://localhost:8000/v1 export=manifests/pseudo")
    p.set_defaults(func=cmd_teach)

    p = sub.add_parser("agreement", parents=[common], help="agreement of stored teacher labels with gold sentiment or valence")
    p.add_argument("config", help="the teach config (its store and manifest are read), or the first key=value")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. agreement.reference=valence agreement.negative_below=3")
    p.add_argument("--teacher", action="append", help="only this teacher name (repeatable; default: all stored)")
    p.add_argument("--json", help="also write the table as JSON to this file")
    p.set_defaults(func=cmd_agreement)

    p = sub.add_parser("predict", parents=[common], help="predict the emotions of new conversations with a trained experiment")
    p.add_argument("run_dir", help="a finished experiment directory (runs/<name>, written by merits train) or a "
                                   "model folder exported from one (merits export)")
    p.add_argument("input", help="a .csv / .jsonl of conversations (manifest columns; split optional), a folder of "
                                 "recordings (one sub-folder per conversation), a manifest directory, or a corpus name")
    p.add_argument("--out", help="output directory (default predictions/<input name>)")
    p.add_argument("--seed", nargs="+", help="the trained seed to use (default: the run's first); several, or 'all', "
                                             "average their probabilities (an ensemble)")
    p.add_argument("--stage", help="stop at this stage (stage1_text ... stage3; default: the run's last)")
    p.add_argument("--device", help="cpu | cuda | auto (default auto: this machine's GPU if it has one)")
    p.add_argument("--asr-model", help="Whisper model for inputs without transcripts (default tiny.en, packaged)")
    p.add_argument("--segment", action="store_true", help="each recording is a whole conversation (a call): Whisper "
                                                          "cuts it into utterances first")
    p.add_argument("--online", action="store_true", help="predict each turn from the conversation up to it only "
                                                         "(as a live system would), not the whole conversation")
    p.add_argument("--window", type=int, help="with --online on a bidirectional run: each turn from its last N turns "
                                               "only (linear time for long calls; causal runs need none)")
    p.add_argument("--root", help="the raw release, when INPUT is a corpus name")
    p.add_argument("--option", "-o", action="append", help="adapter option key=value (repeatable)")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", parents=[common], help="a trained run as a self-contained model folder to share (weights, settings, "
                                      "model card, licence)")
    p.add_argument("run_dir", help="a finished experiment directory (runs/<name>)")
    p.add_argument("out", help="the model folder to write (new, or an earlier export, which is replaced)")
    p.add_argument("--seed", nargs="+", help="the seeds to export (default: every seed finished for every stage: "
                                             "an ensemble)")
    p.add_argument("--stage", help="the last stage to export (default: the run's last)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("serve", parents=[common], help="a trained run as an HTTP service with a web page (FastAPI + uvicorn)")
    p.add_argument("run_dir", help="a finished experiment directory (runs/<name>) or an exported model folder")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--seed", nargs="+", help="the trained seed(s) to use; several or 'all': an ensemble")
    p.add_argument("--config", help="a YAML file of ServeConfig values")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. max_upload_mb=20 live_window=20 asr.model=base")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    # key=value overrides may also follow options (merits pretrain M --out D train.epochs=2): argparse alone
    # stops collecting positionals at the first option
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "overrides") or any(e.startswith("-") or "=" not in e for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = list(args.overrides) + extra
    if args.quiet:
        os.environ["MERITS_QUIET"] = "1"
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s",
                        datefmt="%H:%M:%S")
    for noisy in ("transformers", "httpx", "urllib3", "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        rc = args.func(args)
    except BrokenPipeError:  # `merits report RUN | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (MeritsError, OSError) as e:  # bad input, a full disk, a permission: one line; --debug: the traceback
        if args.debug:
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the failures of libraries underneath, said as what they mean for the user
        message = _library_error(e)
        if message is None or args.debug:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished stages are kept under runs/ and skipped on the next run", file=sys.stderr)
        return 130
    return rc or 0


def _library_error(e: Exception) -> str | None:
    """A failure raised by a library merits stands on (not one of merits' own errors), as one line with what to do;
    None for anything else (a bug: its traceback is shown)."""
    import pickle
    import sqlite3

    text = str(e).splitlines()[0] if str(e) else type(e).__name__
    if "No space left on device" in str(e):  # safetensors and others wrap the OSError in their own
        return (f"the disk is full ({text}); free space and run the command again: finished stages and stored "
                "answers are kept, the stage being written is redone")
    if isinstance(e, sqlite3.DatabaseError):
        return (f"a SQLite store is damaged ({text}); copy out what it still holds with "
                "`sqlite3 STORE .recover | sqlite3 RECOVERED.sqlite` and point the command at the copy")
    if isinstance(e, pickle.UnpicklingError):
        return (f"a checkpoint holds pickled objects that merits refuses to load (weights_only): {text}; delete it "
                "(the stage or step is then computed again)")
    return None


if __name__ == "__main__":
    sys.exit(main())
