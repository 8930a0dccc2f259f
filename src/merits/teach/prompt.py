"""The teacher prompt (the paper's, verbatim, by default) and the strict parser of the teacher's answer.

The MERITS-L paper asks GPT-3.5-Turbo, with the transcript substituted for ``[sentence]``:

    You are a sentiment classification bot. Given the [sentence], classify as positive, negative or neutral
    sentiment. Please give the sentiment and no extra text as output.

Every stored label records :func:`template_hash` of the prompt that produced it, so labels made with different
prompts never mix and a changed prompt relabels instead of reusing stale answers.
"""

from __future__ import annotations

import hashlib
import json
import string
from dataclasses import dataclass

from merits.errors import ConfigError

PLACEHOLDER = "[sentence]"
PAPER_TEMPLATE = ("You are a sentiment classification bot. Given the [sentence], classify as positive, negative or "
                  "neutral sentiment. Please give the sentiment and no extra text as output.")
SENTIMENTS = ("negative", "neutral", "positive")  # class order used everywhere (confusion matrices, manifests)
# Stripped from both ends of an answer before matching: ASCII punctuation plus the typographic quotes and
# dashes chat models like to add ("“Positive”", "**Negative**", "neutral!"). Nothing inside a word is touched.
_EDGE = string.punctuation + string.whitespace + "“”‘’«»–—…"


def template_hash(template: str = PAPER_TEMPLATE, system: str | None = None) -> str:
    """Content hash of a prompt (user template + optional system message), 16 hex digits."""
    return hashlib.sha256(json.dumps([template, system]).encode()).hexdigest()[:16]


@dataclass
class PromptConfig:
    template: str | None = None                # None = the paper's prompt verbatim; must contain "[sentence]"
    system: str | None = None                  # optional system message sent before it


@dataclass(frozen=True)
class Prompt:
    """A chat prompt: an optional system message and a user template holding ``[sentence]``."""

    template: str = PAPER_TEMPLATE
    system: str | None = None

    def __post_init__(self) -> None:
        if PLACEHOLDER not in self.template:
            raise ConfigError(f"prompt.template must contain {PLACEHOLDER!r} where the transcript goes; "
                              f"got {self.template!r}")

    @classmethod
    def from_config(cls, cfg: PromptConfig) -> "Prompt":
        return cls(cfg.template or PAPER_TEMPLATE, cfg.system)

    def render(self, text: str) -> str:
        return self.template.replace(PLACEHOLDER, text)

    def messages(self, text: str) -> list[dict]:
        """OpenAI-style chat messages for one transcript."""
        system = [{"role": "system", "content": self.system}] if self.system else []
        return system + [{"role": "user", "content": self.render(text)}]

    def hash(self) -> str:
        return template_hash(self.template, self.system)


def parse_label(answer: str | None) -> str | None:
    """``positive`` / ``negative`` / ``neutral``, or None when the answer is anything else.

    Tolerates case, surrounding whitespace and punctuation ("Positive.", " NEGATIVE\\n", "neutral!"). Anything
    more ("I think it is positive", "mixed", "") is invalid: a guess would put noise into the pseudo-labels,
    and the raw answer is kept so that a better parser can be applied later.
    """
    if not answer:
        return None
    word = answer.strip(_EDGE).lower()
    return word if word in SENTIMENTS else None
