"""LLM-guided text pretraining (MERITS-L): ASR transcribes unlabelled speech (``asr``, ``wer``), teachers label the
transcripts, a store keeps every answer, agreement checks teachers against a reference, and the pseudo-labelled
manifest feeds the text-encoder fine-tuning (``finetune``, "RoBERTa-FT").

Heavy back-ends (aiohttp, transformers, VADER) are imported only when a teacher of that kind is built.
"""

from merits.pretrain.agreement import AgreementTable, agreement_table, cohen_kappa, valence_to_sentiment
from merits.pretrain.label_store import LabelStore, join_labels, pseudo_labelled_manifest
from merits.pretrain.prompt import PAPER_TEMPLATE, SENTIMENTS, Prompt, parse_label, template_hash
from merits.pretrain.teach import LabelRun, label_manifest, run_agreement, run_teach
from merits.pretrain.teachers import (Answer, BudgetExhausted, ChatTeacher, LocalLMTeacher, Teacher, TeacherError,
                                      VaderTeacher, build_teacher)

__all__ = [
    "PAPER_TEMPLATE", "SENTIMENTS", "Prompt", "parse_label", "template_hash",
    "Answer", "BudgetExhausted", "ChatTeacher", "LocalLMTeacher", "Teacher", "TeacherError", "VaderTeacher",
    "build_teacher", "LabelStore", "join_labels", "pseudo_labelled_manifest", "LabelRun", "label_manifest",
    "run_teach", "run_agreement", "AgreementTable", "agreement_table", "cohen_kappa", "valence_to_sentiment",
]
