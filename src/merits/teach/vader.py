"""The VADER teacher: a lexicon, not an LLM; the non-LLM baseline of the teacher study. vaderSentiment is imported
only when one is built."""

from __future__ import annotations

from dataclasses import dataclass

from merits.errors import ConfigError
from merits.teach.base import Answer, batched, teacher_config
from merits.teach.prompt import template_hash


@dataclass
class VaderTeacherConfig:
    positive_threshold: float = 0.05           # compound >= this -> positive (VADER authors' convention)
    negative_threshold: float = -0.05          # compound <= this -> negative; between -> neutral

    def __post_init__(self) -> None:
        if self.negative_threshold > self.positive_threshold:
            raise ConfigError("vader.negative_threshold must not exceed vader.positive_threshold")


class VaderTeacher:
    """VADER compound score -> positive (>= positive_threshold), negative (<= negative_threshold), else neutral.

    ``VaderTeacher(cfg)`` with a :class:`VaderTeacherConfig`, or ``VaderTeacher(positive_threshold=0.1)``.
    """

    name = "vader"

    def __init__(self, *args, **kwargs):
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.cfg = teacher_config(VaderTeacherConfig, args, kwargs)
        self.positive_threshold = self.cfg.positive_threshold
        self.negative_threshold = self.cfg.negative_threshold
        self._analyzer = SentimentIntensityAnalyzer()
        # VADER has no prompt: its thresholds play that role (same text, other thresholds -> other labels).
        self.prompt_text = (f"vader: compound >= {self.positive_threshold} -> positive, "
                            f"<= {self.negative_threshold} -> negative, else neutral")
        self.prompt_hash = template_hash(self.prompt_text)

    def _one(self, text: str) -> Answer:
        compound = self._analyzer.polarity_scores(text)["compound"]
        label = ("positive" if compound >= self.positive_threshold
                 else "negative" if compound <= self.negative_threshold else "neutral")
        return Answer(f"compound={compound:.4f}", label, "ok")

    def label(self, texts, on_result=None):
        return batched(texts, 256, lambda batch: [self._one(t) for t in batch], on_result)

    def __repr__(self) -> str:
        return f"VaderTeacher(positive_threshold={self.positive_threshold}, negative_threshold={self.negative_threshold})"
