"""One SSL trial: data, augmentations, models, methods, training, evaluation. Knows nothing of sweeps."""
from trainables.errors import ConfigError
from trainables.train import train

__all__ = ["train", "ConfigError"]
