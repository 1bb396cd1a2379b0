"""The sweep spec: schema (schema.py), loading with overrides (loading.py), every check before Ray
starts (checks.py), the expansion into grid cells and trial configs (cells.py), and the plan in
numbers: trials, confirmation seeds, confidence (plan.py)."""
from orchestrator.messages import SpecError
from orchestrator.spec.cells import CONFIRM, SEARCH, SWEEP_KEY, Cell, build_trial_config, cell_params, expand_cells
from orchestrator.spec.loading import LoadedSpec, load_spec, spec_from_yaml_text, tracking_uri
from orchestrator.spec.plan import planned_trials, sweep_info
from orchestrator.spec.schema import DEFAULT_STORAGE, SearchParam, SweepSpec, is_uri

__all__ = ["SpecError", "LoadedSpec", "load_spec", "spec_from_yaml_text", "tracking_uri", "SweepSpec", "SearchParam",
           "DEFAULT_STORAGE", "is_uri", "Cell", "expand_cells", "build_trial_config", "cell_params", "SEARCH",
           "CONFIRM", "SWEEP_KEY", "planned_trials", "sweep_info"]
