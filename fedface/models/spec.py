"""The shape contract between a client's pipeline and its networks.

A protection says what ``model_input`` it produces (``Protection.output_spec``); the backbone stem, the MixUp policy
network and the attacks' decoders are built for that shape. The spec lives with the networks because every network
is sized by it, and a protection (which may hold a network) imports networks, never the other way round.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputSpec:
    """Shape of a protection's ``model_input`` for one image: channels, height, width."""

    channels: int
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)
