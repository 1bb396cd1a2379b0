"""One SSL trial: data, augmentations, models, methods, training, evaluation. Knows nothing of sweeps.

- contract: what the orchestrator relies on (trial kinds, their validation, metrics, artifacts)
- train: the trial itself, `train(config, report)`; tune_entry: its Ray Tune entry points
- config: the trial config's schema; errors, registry: one-line user errors, name registries
- data/: the datasets; augment: batched views of images
- models, methods/, losses, optim: backbones and heads, one file per SSL method, their losses
- evaluate, diagnostics, provenance: kNN and probes, spectra and collapse, where numbers come from
- stand_in: a cheap analytic trial for orchestrator tests; theory: the papers' analytic dynamics"""
from trainables.errors import ConfigError
from trainables.train import train

__all__ = ["train", "ConfigError"]
