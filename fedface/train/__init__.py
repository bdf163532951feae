"""The one local training routine, used by centralized runs, Flower clients and the gradient attacks alike."""
from fedface.train.loop import (NonFiniteLossError, StepRecord, TrainConfig, TrainResult, augment_batch, make_optimizer,
                                pick_device, train_local, train_step)

__all__ = ["NonFiniteLossError", "StepRecord", "TrainConfig", "TrainResult", "augment_batch", "make_optimizer", "pick_device",
           "train_local", "train_step"]
