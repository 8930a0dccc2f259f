"""The label words' log-probabilities from llama.cpp over a GGUF file, read as it is (no dequantisation):
the local teacher's ``backend: llama_cpp`` (see :mod:`merits.teach.local_lm`).

Every prompt is the same chat up to the transcript: that shared prefix is evaluated once and its KV cache kept;
each transcript then costs only its own tokens and the few after it (the rest of the user turn, the assistant
turn's start). The scores are the log-softmax of the next-token logits at the assistant turn's first position,
taken at each label's first token(s).
"""

from __future__ import annotations

import numpy as np

from merits.errors import ModelNotFoundError
from merits.teach.base import TeacherError

SENTINEL = "\x00MERITS-TRANSCRIPT\x00"  # stands for the transcript while the chat template is rendered once


class LlamaScorer:
    def __init__(self, gguf: str, threads: int | None = None, n_ctx: int = 1024):
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ModelNotFoundError("local.backend=llama_cpp needs llama-cpp-python (pip install llama-cpp-python)") from e
        import os

        threads = threads or os.cpu_count()  # for the prompt too (n_threads_batch): scoring is all prompt
        self.llm = Llama(model_path=gguf, n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, n_batch=512,
                         logits_all=False, verbose=False)
        self._prefix: list[int] | None = None
        self._suffix_template = ""

    def render(self, messages: list[dict]) -> str:
        """The chat as the GGUF's own chat template writes it, the assistant turn opened."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        meta = self.llm.metadata
        template = meta.get("tokenizer.chat_template")
        if not template:
            raise TeacherError(f"{self.llm.model_path} has no chat template in its metadata; use backend=transformers")
        vocab = lambda key: self.llm.detokenize([int(meta[key])], special=True).decode() if key in meta else ""  # noqa: E731
        formatter = Jinja2ChatFormatter(template, vocab("tokenizer.ggml.eos_token_id"), vocab("tokenizer.ggml.bos_token_id"),
                                        add_generation_prompt=True)
        return formatter(messages=messages).prompt

    def tokens(self, text: str, first: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=first, special=True)

    def set_prompt(self, messages_of) -> None:
        """``messages_of(text)`` gives the chat for one transcript: rendered once around a sentinel, split there,
        the prefix evaluated and kept."""
        rendered = self.render(messages_of(SENTINEL))
        if rendered.count(SENTINEL) != 1:
            raise TeacherError("the prompt must hold the transcript exactly once ([sentence] in the template)")
        before, self._suffix_template = rendered.split(SENTINEL)
        self._prefix = self.tokens(before, first=True)
        self.llm.reset()
        self.llm.eval(self._prefix)

    def first_token(self, word: str) -> int:
        return self.tokens(word, first=False)[0]

    def log_probs(self, text: str) -> np.ndarray:
        """(vocab,) next-token log-probabilities after the prompt holding ``text``, the assistant turn opened."""
        import llama_cpp

        if self._prefix is None:
            raise RuntimeError("set_prompt first")
        rest = self.tokens(text + self._suffix_template, first=False)
        if len(self._prefix) + len(rest) > self.llm.n_ctx():
            room = self.llm.n_ctx() - len(self._prefix) - len(self.tokens(self._suffix_template, first=False))
            rest = self.tokens(text, first=False)[:max(room, 1)] + self.tokens(self._suffix_template, first=False)
        self.llm.n_tokens = len(self._prefix)  # keep the prefix's KV cache; eval drops what came after it
        self.llm.eval(rest)
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self.llm.ctx), shape=(self.llm.n_vocab(),))
        logits = logits.astype(np.float64)
        return logits - (np.log(np.exp(logits - logits.max()).sum()) + logits.max())
