"""Frequency-domain building blocks: 8x8 block DCT, the PPFR-FD masking steps and analysis network, FaceObfuscator."""
from fedface.freq.analysis import ChannelGate, channel_energy, privacy_loss
from fedface.freq.bdct import ZIGZAG, bdct, block_grid, dct_matrix, ibdct
from fedface.freq.obfuscator import obfuscate, recover
from fedface.freq.ppfr import (
    STEPS,
    coefficients,
    energy_report,
    mask,
    mix_channels,
    select_channels,
    self_normalize,
    shuffle1,
    shuffle1_permutation,
    shuffle2,
    sort_by_energy,
)

__all__ = [
    "STEPS",
    "ZIGZAG",
    "ChannelGate",
    "bdct",
    "block_grid",
    "channel_energy",
    "coefficients",
    "dct_matrix",
    "energy_report",
    "ibdct",
    "mask",
    "mix_channels",
    "obfuscate",
    "privacy_loss",
    "recover",
    "select_channels",
    "self_normalize",
    "shuffle1",
    "shuffle1_permutation",
    "shuffle2",
    "sort_by_energy",
]
