"""Where a sweep lives. A sweep directory (<storage>/<name>/) holds sweep.yaml (the validated spec,
so that `resume`, `status` and `report` need nothing else), optuna.db (one study per cell), tune/
(Ray Tune's experiment), report/, with seeds until decided rounds.json (each look at the claims
and why the rounds ended, written by the searcher), and .dualsweep, the marker that dualsweep made
the directory: the sha256 of its sweep.yaml. Ray's and the searcher's saved state are pickles, so
`resume`, `status`, `report` and `ui` read a sweep only where the marker matches its sweep.yaml.
With a storage URI (s3://bucket/sweeps), tune/ and a copy of sweep.yaml and the marker live at
<URI>/<name>/ and the rest in ./sweeps-runs/<name>/; `resume <URI>/<name>` works from any machine,
rebuilding the Optuna studies from Ray's saved searcher state when they are not there."""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import pickletools
import re
from pathlib import Path
from typing import Iterator, Optional

import yaml
from omegaconf.errors import OmegaConfBaseException

from orchestrator.messages import first_line
from orchestrator.spec import DEFAULT_STORAGE, LoadedSpec, SpecError, is_uri, load_spec, spec_from_yaml_text
from orchestrator.spec.schema import NAME_RULE, SAFE_NAME
from trainables.contract import REPORTED_FILE
from trainables.provenance import package_version

SPEC_FILE = "sweep.yaml"
OPTUNA_FILE = "optuna.db"
TUNE_DIR = "tune"
REPORT_DIR = "report"
ROUNDS_FILE = "rounds.json"
MARKER_FILE = ".dualsweep"
# Held by the driver that runs the sweep; the kernel releases it when that process ends, killed or not.
LOCK_FILE = ".driver.lock"
# Ray Tune's experiment snapshot: each driver (session) writes its own set, named by its start time.
SNAPSHOT_FILE = re.compile(
    r"(?P<kind>experiment_state|searcher-state|search_gen_state|callback-states)-(?P<session>.+)\.(?:json|pkl)")
TUNER_FILE = "tuner.pkl"
SET_ASIDE_DIR = "cut"


def optuna_url(sweep_dir: Path) -> str:
    return f"sqlite:///{sweep_dir / OPTUNA_FILE}"


def tune_path(loaded: LoadedSpec) -> str:
    """Ray Tune's experiment directory (a local path or a URI)."""
    return f"{loaded.tune_storage}/{TUNE_DIR}"


def read_remote(uri: str) -> Optional[bytes]:
    import pyarrow.fs  # pyarrow only for sweeps kept behind a storage URI

    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(path) as stream:
        return stream.read()


def write_remote(uri: str, data: bytes) -> None:
    import pyarrow.fs  # pyarrow only for sweeps kept behind a storage URI

    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    filesystem.create_dir(path.rsplit("/", 1)[0])
    with filesystem.open_output_stream(path) as stream:
        stream.write(data)


def read_local(path: Path) -> Optional[bytes]:
    return path.read_bytes() if path.is_file() else None


def marker(spec_bytes: bytes) -> bytes:
    return json.dumps({"sweep_yaml_sha256": hashlib.sha256(spec_bytes).hexdigest(),
                       "dualsweep": package_version("dualsweep")}).encode() + b"\n"


def verified_spec(where: str, spec_bytes: bytes, marker_bytes: Optional[bytes]) -> LoadedSpec:
    """The spec of the sweep at `where`, refused before anything of the sweep is unpickled unless
    the marker beside it holds its hash, and unless its name is one that `validate` lets through."""
    try:
        recorded = json.loads(marker_bytes)["sweep_yaml_sha256"]
    except (TypeError, ValueError, KeyError):
        recorded = None
    if recorded != hashlib.sha256(spec_bytes).hexdigest():
        raise SpecError([f"{where}: not created by dualsweep, or its {SPEC_FILE} changed since ({MARKER_FILE} missing "
                         f"or holding another hash); dualsweep reads Ray's and the searcher's saved state, which are "
                         "pickles, only from the sweep directories it made"])
    try:
        loaded = spec_from_yaml_text(spec_bytes.decode(), f"{where}/{SPEC_FILE}")
    except (ValueError, yaml.YAMLError, OmegaConfBaseException) as exc:  # e.g. written by another version
        raise SpecError([f"{where}/{SPEC_FILE}: not a sweep this dualsweep ({package_version('dualsweep')}) reads: "
                         f"{first_line(exc)}"]) from None
    if not SAFE_NAME.fullmatch(loaded.spec.name):
        raise SpecError([f"{where}/{SPEC_FILE}: name: {loaded.spec.name!r} is not a safe name: {NAME_RULE}"])
    return loaded


def fetch_remote_sweep(uri: str) -> Path:
    """The local directory of the sweep stored at `uri`, made from its spec copy when missing."""
    uri = uri.rstrip("/")
    spec_bytes = read_remote(f"{uri}/{SPEC_FILE}")
    if spec_bytes is None:
        raise SpecError([f"{uri}: no sweep here; give the URI of a sweep's folder, <storage>/<name>, holding {SPEC_FILE}"])
    loaded = verified_spec(uri, spec_bytes, read_remote(f"{uri}/{MARKER_FILE}"))
    if loaded.remote_dir != uri:
        raise SpecError([f"{uri}: its {SPEC_FILE} places the sweep at {loaded.remote_dir}; give that URI"])
    local = loaded.sweep_dir
    if read_local(local / SPEC_FILE) not in (None, spec_bytes):
        raise SpecError([f"{local}: holds another sweep named {loaded.spec.name}; run the command from another "
                         f"folder (a sweep kept at a URI has its Optuna studies in ./{DEFAULT_STORAGE}/<name>/ there)"])
    local.mkdir(parents=True, exist_ok=True)
    # Written only when missing: a status or report reading the files while a driver runs never sees
    # them half written. The marker first, so a kill in between leaves no sweep.yaml without it.
    for name, data in ((MARKER_FILE, marker(spec_bytes)), (SPEC_FILE, spec_bytes)):
        if not (local / name).exists():
            (local / name).write_bytes(data)
    return local


def find_sweep_dir(sweep: str) -> Path:
    """`sweep` is a sweep directory, a sweep name under ./sweeps-runs, the sweep's YAML file, or
    the URI of a sweep kept in a storage URI."""
    if is_uri(sweep):
        return fetch_remote_sweep(sweep)
    path = Path(sweep)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        path = load_spec(path).sweep_dir
    for candidate in (path, Path(DEFAULT_STORAGE) / sweep):
        if (candidate / SPEC_FILE).is_file():
            return candidate.resolve()
    raise SpecError([f"{sweep}: no sweep here; give a sweep directory (holding {SPEC_FILE}), the name of a "
                     f"sweep under ./{DEFAULT_STORAGE}/, or the sweep's YAML once it has been run"])


def load_sweep_dir(sweep_dir: Path) -> LoadedSpec:
    """The sweep in sweep_dir, once its marker says dualsweep made it (every command that reads a
    sweep's saved state comes through here). Its local files are this directory's, wherever its
    spec says the sweep was made: nothing is read or written outside it (but Ray's experiment at
    the storage URI, for a sweep kept at one)."""
    sweep_dir = sweep_dir.resolve()
    loaded = verified_spec(str(sweep_dir), (sweep_dir / SPEC_FILE).read_bytes(), read_local(sweep_dir / MARKER_FILE))
    return dataclasses.replace(loaded, directory=sweep_dir)


def ensure_new_sweep(loaded: LoadedSpec) -> None:
    if loaded.remote_dir and read_remote(f"{loaded.remote_dir}/{SPEC_FILE}") is not None:
        where = loaded.remote_dir
    elif (loaded.sweep_dir / SPEC_FILE).exists():
        where = str(loaded.sweep_dir)
    else:
        return
    raise SpecError([f"{loaded.source}: name: sweep directory {where} exists already; "
                     f"`dualsweep resume {where}` continues it, or choose another name"])


def create_sweep_dir(loaded: LoadedSpec) -> None:
    """The sweep directory with its marker and spec copy (and both beside Ray's experiment for a URI),
    the marker first: a kill in between leaves no sweep.yaml without it."""
    spec_bytes = loaded.yaml_text.encode()
    loaded.sweep_dir.mkdir(parents=True, exist_ok=True)
    for name, data in ((MARKER_FILE, marker(spec_bytes)), (SPEC_FILE, spec_bytes)):
        (loaded.sweep_dir / name).write_bytes(data)
        if loaded.remote_dir:
            write_remote(f"{loaded.remote_dir}/{name}", data)


@contextlib.contextmanager
def driver_lock(sweep_dir: Path) -> Iterator[None]:
    """One driver per sweep: a second `run` or `resume` of it refuses while the first one lives."""
    with open(sweep_dir / LOCK_FILE, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise SpecError([f"{sweep_dir}: the sweep is being run by {holder}; wait for it to end, or stop it "
                             "(Ctrl-C) before `dualsweep resume`"]) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"process {os.getpid()}")
        lock.flush()
        yield


def write_rounds(sweep_dir: Path, document: dict) -> None:
    """rounds.json, replaced whole: a kill leaves the previous file or the new one."""
    path = sweep_dir / ROUNDS_FILE
    staging = path.with_name(f".{ROUNDS_FILE}.{os.getpid()}")
    staging.write_text(json.dumps(document, indent=2) + "\n")
    os.replace(staging, path)


def read_rounds(sweep_dir: Path) -> dict:
    """rounds.json as the searcher last wrote it; empty before the first look (or with fixed seeds)."""
    path = sweep_dir / ROUNDS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def reads_whole(name: str, data: bytes) -> bool:
    """Whether a snapshot file is complete: the experiment state, JSON that parses; the others, pickles
    (search_gen_state's .json too) whose opcodes run to their STOP, walked, not loaded."""
    try:
        if name.startswith("experiment_state-"):
            json.loads(data)
        else:
            for _ in pickletools.genops(data):
                pass
    except ValueError:
        return False
    return True


def tune_files(tune_dir: str) -> Optional[tuple["pyarrow.fs.FileSystem", str, dict[str, str]]]:
    """Ray Tune's experiment folder (a local path or a URI) as (file system, path, {file name: path} of
    the files at its top), or None while it does not exist."""
    import pyarrow.fs  # Ray's own file system layer: tune/ may be behind a storage URI

    filesystem, root = pyarrow.fs.FileSystem.from_uri(tune_dir) if is_uri(tune_dir) else (
        pyarrow.fs.LocalFileSystem(), tune_dir)
    if filesystem.get_file_info(root).type != pyarrow.fs.FileType.Directory:
        return None
    files = {info.base_name: info.path for info in filesystem.get_file_info(pyarrow.fs.FileSelector(root))
             if info.type == pyarrow.fs.FileType.File}
    return filesystem, root, files


def file_reads_whole(filesystem: "pyarrow.fs.FileSystem", path: str) -> bool:
    with filesystem.open_input_stream(path) as stream:
        return reads_whole(Path(path).name, stream.read())


def newest_experiment_state(tune_dir: str) -> Optional[str]:
    """The newest of Tune's experiment state files that reads whole, for readers (status, report): a
    file of the running driver may be in the middle of its copy, and a killed one's cut short."""
    found = tune_files(tune_dir)
    if found is None:
        return None
    filesystem, _, files = found
    states = sorted((name for name in files if name.startswith("experiment_state-")), reverse=True)
    return next((f"{tune_dir}/{name}" for name in states if file_reads_whole(filesystem, files[name])), None)


def fill_deleted_checkpoints(filesystem: "pyarrow.fs.FileSystem", root: str, experiment_state: str) -> None:
    """Tune deletes a trial's oldest kept checkpoint as soon as a newer one arrives, and its snapshot
    upload may lag a few checkpoints (a trial with short epochs makes several a second): a kill then
    leaves the snapshot naming a checkpoint that is gone, and Tune's restore fails that trial, and its
    retries, with "does not exist on storage anymore". A folder in its place, holding only the epoch
    Tune knows, lets the trial start; it then takes up its newest checkpoint from its folder and
    reports again what Tune does not know (trainables.tune_entry)."""
    import pyarrow.fs  # Ray's own file system layer: tune/ may be behind a storage URI

    with filesystem.open_input_stream(experiment_state) as stream:
        trials = json.loads(stream.read())["trial_data"]
    for trial_json, runtime_json in trials:
        trial, runtime = json.loads(trial_json), json.loads(runtime_json)
        last_result = runtime.get("last_result") or {}
        checkpoint, folder = last_result.get("checkpoint_dir_name"), trial.get("relative_logdir")
        if trial.get("status") in ("TERMINATED", "ERROR") or not checkpoint or not folder:
            continue
        path = f"{root}/{folder}/{checkpoint}"
        if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            filesystem.create_dir(path)
            # The epoch Tune knows, so that the trial reports again only the results after it.
            with filesystem.open_output_stream(f"{path}/{REPORTED_FILE}") as stream:
                epoch = last_result.get("epoch", last_result.get("training_iteration", 0))
                stream.write(json.dumps([{"epoch": epoch}]).encode())


def snapshot_to_restore(tune_dir: str) -> tuple[bool, list[str]]:
    """Whether Ray Tune can restore the experiment in tune_dir, and what was set aside (lines to
    print). Tune copies its snapshot files to the storage in place, not atomically: a driver killed in
    a copy leaves a file cut short (or not copied yet), and Tune, unable to read it, would start the
    experiment over. Each driver (session) writes its own set, but an older set is no way back: it
    names checkpoints Tune has deleted since. So when the newest set is not whole, the whole snapshot
    (every set and tuner.pkl) goes into tune/cut/<session>/, and the sweep starts its Tuner afresh,
    taking up its Optuna trials and its trials' checkpoints, as after a kill before the first snapshot."""
    found = tune_files(tune_dir)
    if found is None:
        return False, []
    filesystem, root, files = found
    sets: dict[str, dict[str, str]] = {}
    for name in files:
        if m := SNAPSHOT_FILE.fullmatch(name):
            sets.setdefault(m["session"], {})[m["kind"]] = name
    if not sets:
        return False, []
    newest = sets[max(sets)]
    # A kill in the upload may also leave a kind not copied yet, where an older set has it.
    missing = sorted({kind for kinds in sets.values() for kind in kinds} - set(newest))
    cut = [name for name in [TUNER_FILE, *newest.values()]
           if name in files and not file_reads_whole(filesystem, files[name])]
    if not cut and not missing:
        if TUNER_FILE not in files or "experiment_state" not in newest:
            return False, []
        fill_deleted_checkpoints(filesystem, root, files[newest["experiment_state"]])
        return True, []
    folder = f"{root}/{SET_ASIDE_DIR}/{max(sets)}"
    filesystem.create_dir(folder)
    for name in [TUNER_FILE, *(name for kinds in sets.values() for name in kinds.values())]:
        if name in files:
            filesystem.move(files[name], f"{folder}/{name}")
    what = f"{cut[0]} cut short" if cut else f"no {missing[0]} of {max(sets)}"
    return False, [f"Ray Tune's snapshot in {root} was left incomplete by a kill ({what}); it is set aside in "
                   f"{SET_ASIDE_DIR}/{max(sets)}/ and the sweep goes on from its Optuna studies and its trials' "
                   "checkpoints"]
