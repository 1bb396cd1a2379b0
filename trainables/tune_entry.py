"""The Ray Tune entry point of one SSL trial: `trainables.train` with Tune's report and checkpoint.

Tune calls it with the sweep's plain dict config, {"trial": <trial config>, "sweep": <where the
trial belongs>}; only the trial config reaches `train`."""
from __future__ import annotations

from typing import Callable

TrainFunction = Callable[[dict, Callable[[dict, str], None], "str | None"], object]


def run_under_tune(train_fn: TrainFunction, trial_config: dict) -> None:
    """Run `train_fn(config, report, resume_from)` inside a Tune trial: every report becomes a Tune
    result with a checkpoint (copied by Tune before the trainable deletes its directory), and a
    retried or restored trial resumes from its latest checkpoint."""
    from ray import tune

    def report(metrics: dict, checkpoint_dir: str) -> None:
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))

    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        train_fn(trial_config, report, None)
        return
    with checkpoint.as_directory() as directory:
        train_fn(trial_config, report, directory)


def ssl_trial(config: dict) -> None:
    """The function trainable of the `ssl` trainable kind."""
    import ray

    from trainables.train import train

    trial_config = dict(config["trial"])
    if not trial_config.get("cpus"):
        # Ray does not pin a trial to its CPUs; without this torch would use every core.
        assigned = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        trial_config["cpus"] = max(1, int(assigned))
    run_under_tune(train, trial_config)
