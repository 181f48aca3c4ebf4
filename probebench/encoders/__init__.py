"""Encoders: the contract (`base`), the transformer skeleton (`tokens`) and how it reads keys and attention
(`attention`), one adapter per library, loading from registry entries or names (`load`, `by_name`), and the
protocol card (`card`)."""

from probebench.encoders.base import Encoder, Features, Preprocess
from probebench.encoders.load import Spec, build, load_encoder, resolve

__all__ = ["Encoder", "Features", "Preprocess", "Spec", "build", "load_encoder", "resolve"]
