"""The teachers by name: ``teacher: chat | local | vader`` in a teach config picks one here.

Each entry is the teacher's config class and its factory ``(config, prompt) -> Teacher``. The config comes from the
:class:`~merits.teach.run.TeachConfig` section of the same name (``chat:``, ``local:``, ``vader:``); a teacher
registered from outside, without a section there, gets its config class' defaults. A new back-end::

    register_teacher("mine", MyTeacherConfig, lambda cfg, prompt: MyTeacher(cfg, prompt=prompt))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from merits.errors import ConfigError
from merits.teach.base import Teacher
from merits.teach.chat import ChatTeacher, ChatTeacherConfig
from merits.teach.local_lm import LocalLMTeacher, LocalTeacherConfig
from merits.teach.prompt import Prompt
from merits.teach.vader import VaderTeacher, VaderTeacherConfig


@dataclass(frozen=True)
class TeacherKind:
    config: type                                  # the dataclass of its settings
    build: Callable[[object, Prompt], Teacher]    # (settings, prompt) -> the teacher


TEACHERS: dict[str, TeacherKind] = {
    "chat": TeacherKind(ChatTeacherConfig, lambda cfg, prompt: ChatTeacher(cfg, prompt=prompt)),
    "local": TeacherKind(LocalTeacherConfig, lambda cfg, prompt: LocalLMTeacher(cfg, prompt=prompt)),
    "vader": TeacherKind(VaderTeacherConfig, lambda cfg, prompt: VaderTeacher(cfg)),  # no prompt: a lexicon
}


def register_teacher(name: str, config: type, build: Callable[[object, Prompt], Teacher]) -> None:
    """Make ``teacher: name`` build with ``build(settings, prompt)``, its settings a ``config`` instance."""
    TEACHERS[name] = TeacherKind(config, build)


def check_teacher(name: str) -> None:
    if name not in TEACHERS:
        raise ConfigError(f"teacher: {name!r} is not one of {list(TEACHERS)}")


def build_teacher(cfg) -> Teacher:
    """The teacher a :class:`merits.teach.TeachConfig` names, built from its own config section and the prompt."""
    check_teacher(cfg.teacher)
    kind = TEACHERS[cfg.teacher]
    settings = getattr(cfg, cfg.teacher, None)
    if settings is None:
        settings = kind.config()
    if not isinstance(settings, kind.config):
        raise ConfigError(f"{cfg.teacher}: expected {kind.config.__name__} settings, got {type(settings).__name__}")
    return kind.build(settings, Prompt.from_config(cfg.prompt))
