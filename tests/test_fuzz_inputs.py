"""Bad input, fuzzed: random and mutated sweep YAMLs and command-line overrides for `validate`,
`run --dry-run` and `train` end valid (exit 0) or in one-line errors (exit 2), never a traceback,
and a command that refuses writes nothing.

The sweeps mutated are the real ones (sweeps/) and the error corpus (tests/sweep_corpus/). `train`
is fuzzed up to its validation only: an input the trial config refuses goes through the whole
command, one it accepts would start training and is not run. Every bug the fuzzer found is a plain
case at the end of this file."""
from __future__ import annotations

import contextlib
import io
import string
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from orchestrator.cli import main
from orchestrator.overrides import OverrideError, parse_overrides
from trainables import ConfigError
from trainables.contract import ssl_trial_config

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([ROOT / "sweeps" / "quickstart.yaml", *(ROOT / "sweeps" / "claims").glob("*.yaml"),
                  *(ROOT / "tests" / "sweep_corpus").glob("*.yaml")])
ERROR_PREFIX = "dualsweep: error: "

# Reproducible in CI (derandomize, no example database), no per-example deadline (a valid sweep's
# validation builds every cell's trial config, up to seconds on a busy machine).
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --- running the CLI in-process ----------------------------------------------------------------
def run_cli(argv: list[str], workdir: Path) -> tuple[int, str, str]:
    """`dualsweep <argv>` in `workdir`: its exit code, stdout and stderr. An exception escaping
    main() fails the test with its traceback."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(workdir), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's own refusals
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def assert_valid_or_one_line_errors(code: int, err: str) -> None:
    """Exit 0, or exit 2 with error lines only: each a whole problem on one line (validate reports
    every problem of a sweep, one line each), none a traceback or the rest of a multi-line dump."""
    assert code in (0, 2), (code, err)
    if code == 0:
        return
    lines = err.splitlines()
    assert lines, "exit 2 without saying why"
    assert "Traceback" not in err, err
    for line in lines:
        assert line.startswith(ERROR_PREFIX) and line.strip(), err


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """The working directory of every fuzzed command; it must stay empty (no sweep directory,
    no MLflow store)."""
    return tmp_path_factory.mktemp("fuzz-cwd")


def assert_nothing_written(workdir: Path) -> None:
    assert not list(workdir.iterdir()), f"a command left {sorted(p.name for p in workdir.iterdir())}"


# --- what the fuzzer draws ---------------------------------------------------------------------
# Values as a user types them after `key=`: numbers that overflow or are not numbers, YAML that
# does not close, OmegaConf's missing marker and interpolations, paths, unicode.
TYPED_VALUES = ["", " ", "-1", "0", "1", "2", "3.5", "1e-9", "nan", "inf", "-inf", "1e309", "-1e309",
                "99999999999999999999", "[", "]", "{", "{a: }", "{a: 1}", "[1, [2]]", "[]", "{}", "null", "~",
                "true", "???", "${oops}", "${sizes.x}", "${oc.env:NO_SUCH_VARIABLE_HERE}", "${", "none", "0-0",
                "512-0-128", "0", "digits", "simclr", "sparse_coding", "cifar10", "~nobody_here/x", "a=b", ":",
                "ü", "日本語", "\u202e", "\t", "'", '"', "\\", "%", "*a", "&a", "!!python/object:os.system"]
TRIAL_KEYS = ["method", "batch_size", "epochs", "seed", "cpus", "device", "precision", "method_kwargs",
              "method_kwargs.temperature", "method_kwargs.ema_tau", "model", "model.projector", "model.width",
              "model.depth", "model.backbone", "model.init_spectrum_decay", "data", "data.name", "data.root",
              "data.download", "data.options", "data.options.n", "data.options.base", "data.options.bits",
              "data.options.composites", "data.test_fraction", "data.image_size", "data.augment",
              "data.split_seed", "optim.name", "optim.lr", "optim.warmup_epochs", "optim.momentum",
              "eval.knn_k", "eval.fewshot_k", "eval.collapse_threshold", "eval.linear_probe_steps"]
SWEEP_KEYS = ["name", "description", "scale", "sizes", "sizes.cpu", "trainable", "trial", "grid", "grid.method",
              "grid.batch_size", "search", "search.sampler", "search.trials_per_cell", "search.params",
              "search.params.optim.lr", "search.params.optim.lr.type", "search.params.optim.lr.low",
              "search.params.optim.lr.choices", "search.params.optim.lr.methods", "scheduler", "scheduler.type",
              "scheduler.grace_period", "scheduler.reduction_factor", "seeds", "confirm", "confirm.until_decided",
              "confirm.max_seeds", "confirm.alpha", "resources", "resources.cpu", "resources.gpu", "metric",
              "mode", "seed", "max_concurrent", "tracking", "tracking.experiment", "claims",
              *(f"trial.{key}" for key in TRIAL_KEYS)]
# A command line cannot hold a NUL byte; everything else can.
ARGV_TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)
NAME_PART = st.text(string.ascii_letters + string.digits + "_", min_size=1, max_size=6)
RANDOM_KEYS = st.one_of(
    st.lists(NAME_PART, min_size=1, max_size=3).map(".".join),
    st.sampled_from(["a..b", ".a", "a.", "a[0]", "trial[0]", "a b", "ü", "1", "-x", "--x", "trial.", "grid..x"]),
    ARGV_TEXT,
)
ARGV_VALUES = st.one_of(st.sampled_from(TYPED_VALUES), ARGV_TEXT,
                        st.integers(-10**25, 10**25).map(str), st.floats().map(str))


def overrides(keys: list[str], options: bool = True) -> st.SearchStrategy[list[str]]:
    """`key=value` arguments (mostly of known keys), and now and then a bare word or a lone `=`;
    with `options`, also words that argparse reads as options ("-x", "--", "--verbose=9")."""
    pair = st.tuples(st.one_of(st.sampled_from(keys), RANDOM_KEYS), ARGV_VALUES).map("=".join)
    arg = st.one_of(pair, pair, pair, ARGV_TEXT, st.sampled_from(["=", "=1", "key=", "a=b=c"]))
    if options:
        arg = st.one_of(arg, st.sampled_from(["--", "-x", "--verbose=9", "--address", "--nope=1", "-1"]))
    else:
        arg = arg.filter(lambda word: not word.startswith("-"))
    return st.lists(arg, max_size=4)


SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.sampled_from(TYPED_VALUES),
                    st.text(max_size=10))
YAML_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3),
                            st.dictionaries(st.one_of(st.sampled_from(SWEEP_KEYS), NAME_PART, st.integers(-3, 3)),
                                            inner, max_size=3)),
    max_leaves=6,
)


def load_tree(path: Path) -> Any:
    """The sweep file as plain data, or None where it is not a YAML mapping (the corpus has such)."""
    try:
        tree = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    except Exception:  # noqa: BLE001 - a corpus file that is not YAML is mutated as text only
        return None
    return tree if isinstance(tree, dict) else None


def locations(tree: Any) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in the tree, depth first."""
    found = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else []
    for key, value in list(items):
        found.append((tree, key))
        found += locations(value)
    return found


def sections(tree: Any) -> list[dict]:
    """Every mapping in the tree, the top level first."""
    found = [tree] if isinstance(tree, dict) else []
    values = tree.values() if isinstance(tree, dict) else tree if isinstance(tree, list) else []
    for value in values:
        found += sections(value)
    return found


@st.composite
def mutated_sweep(draw) -> bytes:
    """A real or corpus sweep file with keys dropped, values replaced by others of any type, and
    unknown keys inserted; or its text truncated, cut or spliced with random bytes."""
    path = draw(st.sampled_from(SOURCES))
    tree = load_tree(path)
    if tree is not None and draw(st.booleans()):
        for _ in range(draw(st.integers(1, 3))):
            op = draw(st.sampled_from(["drop", "replace", "replace", "insert"]))
            if op == "insert":
                section = draw(st.sampled_from(sections(tree)))
                section[draw(st.one_of(st.sampled_from(SWEEP_KEYS), NAME_PART))] = draw(YAML_VALUES)
                continue
            places = locations(tree)
            if not places:
                break
            container, key = draw(st.sampled_from(places))
            if op == "drop":
                del container[key]
            else:
                container[key] = draw(YAML_VALUES)
        return yaml.safe_dump(tree, allow_unicode=True, sort_keys=False).encode()
    text = path.read_bytes()
    op = draw(st.sampled_from(["truncate", "cut", "splice"]))
    at = draw(st.integers(0, len(text)))
    if op == "truncate":
        return text[:at]
    if op == "cut":
        return text[:at] + text[at + draw(st.integers(1, 40)):]
    splice = st.one_of(st.binary(min_size=1, max_size=8),
                       st.sampled_from([b"\t", b": ", b"- ", b"{", b"[", b"]", b"'", b"\xff\xfe", b"\x00", b"\n  ", b"&a *a"]))
    return text[:at] + draw(splice) + text[at:]


# --- the properties ------------------------------------------------------------------------------
def check_sweep_command(command: list[str], text: bytes, args: list[str], workdir: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-sweep-") as folder:
        path = Path(folder) / "sweep.yaml"
        path.write_bytes(text)
        code, _, err = run_cli([command[0], str(path), *args, *command[1:]], workdir)
    assert_valid_or_one_line_errors(code, err)
    assert_nothing_written(workdir)


COMMANDS = st.sampled_from([["validate"], ["run", "--dry-run"]])


@settings(max_examples=60, **FUZZ)
@given(command=COMMANDS, sweep=mutated_sweep())
def test_mutated_sweep_files(command, sweep, workdir):
    check_sweep_command(command, sweep, [], workdir)


@settings(max_examples=40, **FUZZ)
@given(command=COMMANDS, source=st.sampled_from(SOURCES), args=overrides(SWEEP_KEYS))
def test_sweep_overrides(command, source, args, workdir):
    check_sweep_command(command, source.read_bytes(), args, workdir)


def train_validation_refuses(args: list[str]) -> bool:
    """Whether `dualsweep train <args>` stops at validation: True for a one-line ConfigError or
    OverrideError, False for a config that would train. Anything else raised fails the test."""
    try:
        ssl_trial_config(parse_overrides(args, example="method=vicreg"))
    except (ConfigError, OverrideError):
        return True
    return False


@settings(max_examples=300, **FUZZ)
@given(args=overrides(TRIAL_KEYS, options=False))
def test_train_overrides(args, workdir):
    # Only a refused config reaches main(): an accepted one would train. (No "-" words: argparse
    # would read "--resume" or "--" as its own; the sweep commands fuzz those.)
    if train_validation_refuses(args):
        code, _, err = run_cli(["train", *args], workdir)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert_valid_or_one_line_errors(code, err)
    assert_nothing_written(workdir)


# --- what the fuzzer found, each once more as a plain case -----------------------------------------
@pytest.mark.parametrize("args,message", [
    # YAML's own parser errors escaped parse_overrides as tracebacks.
    (["data.options.n=a\x17"], "override 'data.options.n=a\\x17': the value is not valid YAML (unacceptable "
                               "character #x0017: control characters are not allowed)"),
    (["optim.lr={"], "override 'optim.lr={': the value is not valid YAML (did not find expected node content)"),
    (["method=*a"], "override 'method=*a': the value is not valid YAML (found undefined alias)"),
    # An interpolation was left for the first read of the key, which raised outside validation.
    (["cpus=${oops}"], "cpus: Interpolation key 'oops' not found"),
    (["method_kwargs.temperature=???"], "method_kwargs.temperature: '???' (OmegaConf's missing value) is not a value"),
    # A list where a mapping belongs was OmegaConf's bare TypeError; a nested list passed list[int].
    (["data.options=[1]"], "data.options: wrong type: a list where a mapping belongs"),
    (["data.name=gaussian_aug", "data.options.noisy=[[8]]"], "data.options.noisy: must be a list of int values"),
    # Keys and paths holding line breaks made the error several lines.
    (["a\nb=1"], "a\\nb: unknown key"),
    (["data.root=x\u2028y"], "x\\u2028y does not exist"),
])
def test_train_errors_found_by_fuzzing(args, message, tmp_path):
    code, out, err = run_cli(["train", *args], tmp_path)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and err.startswith(ERROR_PREFIX) and message in err, err


QUICKSTART = ROOT / "sweeps" / "quickstart.yaml"
SMALL = "name: x\ntrial: {data: {name: digits}, epochs: 4}\n"


@pytest.mark.parametrize("text,args,message", [
    # OmegaConf's bare TypeError (a list where a mapping belongs, or the reverse) escaped load_spec.
    (SMALL + "search:\n  params:\n    optim.lr: [0.1, 1]\n", [],
     "search.params.optim.lr: wrong type: a list where a mapping belongs"),
    (SMALL + "search:\n  params:\n    optim.lr: {type: choice, choices: [0.1], methods: {simclr: 1}}\n", [],
     "search.params.optim.lr.methods: wrong type: a mapping where a list belongs"),
    ("name: x\ntrial: {data: {name: digits, options: [1]}}\n", [],
     "trial.data.options: wrong type: a list where a mapping belongs"),
    (QUICKSTART.read_text(), ["grid=[1]"], "grid: wrong type: a list where a mapping belongs"),
    # OmegaConf let a list into list[int]; hashing the seeds then raised.
    (SMALL + "seeds: [[], 2]\n", [], "seeds: must be a list of int values, got [[], 2]"),
    # A section given a scalar was named by no key.
    (SMALL + "confirm: 3\n", [], "confirm: wrong type: 3 where a mapping belongs"),
    # argparse printed its usage block over two lines.
    (SMALL, ["--nope=1"], "dualsweep: error: unrecognized arguments: --nope=1 (see dualsweep --help)"),
    (SMALL, ["--verbose=9"], "argument --verbose: invalid choice: 9 (choose from 0, 1, 2)"),
    # A key holding a line break.
    ('name: x\ntrial: {"a\\nb": 1}\n', [], "a\\nb: unknown key"),
], ids=["param-list", "methods-mapping", "options-list", "grid-override-list", "nested-seed", "section-scalar",
        "unknown-option", "bad-choice", "key-line-break"])
def test_sweep_errors_found_by_fuzzing(text, args, message, tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    code, out, err = run_cli(["run", str(path), *args, "--dry-run"], workdir)
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and err.startswith(ERROR_PREFIX) and message in err, err
    assert_nothing_written(workdir)
