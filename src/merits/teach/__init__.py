"""Pseudo-labels for text pretraining (MERITS-L): teachers label transcripts, a store keeps every answer, agreement
checks teachers against a reference.

    prompt       the paper's prompt (verbatim) and the strict parser of an answer
    base         the Teacher interface, Answer, TeacherError / BudgetExhausted
    chat         an OpenAI-compatible chat-completions server over HTTP (ChatTeacher)
    local_lm     a causal LM in-process with transformers (LocalLMTeacher)
    vader        the VADER lexicon (VaderTeacher)
    registry     teacher name -> (config class, factory); build_teacher(TeachConfig)
    label_store  every answer in one SQLite file; the pseudo-labelled manifest
    agreement    overlap, Cohen's kappa and confusion against gold sentiment or valence
    run          the resumable labelling run, TeachConfig, the entry points of ``merits teach`` / ``merits agreement``

Heavy back-ends (aiohttp, transformers, VADER) are imported only when a teacher of that kind is built or run.
Fine-tuning on the pseudo-labels is :mod:`merits.pretrain`.
"""

from merits.teach.agreement import AgreementConfig, AgreementTable, agreement_table, cohen_kappa, valence_to_sentiment
from merits.teach.base import Answer, BudgetExhausted, Teacher, TeacherError
from merits.teach.chat import ChatTeacher, ChatTeacherConfig
from merits.teach.label_store import LabelStore, join_labels, pseudo_labelled_manifest
from merits.teach.local_lm import LocalLMTeacher, LocalTeacherConfig
from merits.teach.prompt import PAPER_TEMPLATE, SENTIMENTS, Prompt, PromptConfig, parse_label, template_hash
from merits.teach.registry import TEACHERS, build_teacher, register_teacher
from merits.teach.run import LabelRun, TeachConfig, label_manifest, run_agreement, run_teach
from merits.teach.vader import VaderTeacher, VaderTeacherConfig

__all__ = [
    "PAPER_TEMPLATE", "SENTIMENTS", "Prompt", "PromptConfig", "parse_label", "template_hash",
    "Answer", "BudgetExhausted", "Teacher", "TeacherError",
    "ChatTeacher", "ChatTeacherConfig", "LocalLMTeacher", "LocalTeacherConfig", "VaderTeacher", "VaderTeacherConfig",
    "TEACHERS", "build_teacher", "register_teacher",
    "LabelStore", "join_labels", "pseudo_labelled_manifest", "LabelRun", "TeachConfig", "label_manifest",
    "run_teach", "run_agreement", "AgreementConfig", "AgreementTable", "agreement_table", "cohen_kappa",
    "valence_to_sentiment",
]
