"""CARE, the MERITS-L paper's speech encoder: the model (:mod:`merits.care.model`)."""

from merits.care.model import CareConfig, CareModel, CareOutput

__all__ = ["CareConfig", "CareModel", "CareOutput"]
