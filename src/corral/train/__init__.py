"""Fine-tuning: one readable training loop (full or LoRA), checkpoints, resume, DDP, the starter model."""

from corral.train.loop import TrainResult, train
from corral.train.spec import LoraSpec, TrainSpec, load_spec, parse_spec

__all__ = ["LoraSpec", "TrainResult", "TrainSpec", "load_spec", "parse_spec", "train"]
