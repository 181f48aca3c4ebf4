"""Encoders: the contract (`base`), one adapter per library, and loading from registry entries (`load`)."""

from probebench.encoders.base import Encoder, Features, Preprocess
from probebench.encoders.load import Spec, build, load_encoder, resolve

__all__ = ["Encoder", "Features", "Preprocess", "Spec", "build", "load_encoder", "resolve"]
