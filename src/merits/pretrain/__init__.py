"""Text pretraining on teacher pseudo-labels (MERITS-L's "RoBERTa-FT"): ``finetune.pretrain(manifest, out, cfg)``
fine-tunes a text encoder on the pseudo-labelled manifest :mod:`merits.teach` exports; its settings are
:class:`PretrainConfig`. Transcribing the speech is :mod:`merits.asr`, labelling it :mod:`merits.teach`.
"""

from merits.pretrain.config import PretrainConfig

__all__ = ["PretrainConfig"]
