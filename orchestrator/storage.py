"""Where a sweep lives. A sweep directory (<storage>/<name>/) holds sweep.yaml (the validated spec,
so that `resume`, `status` and `report` need nothing else), optuna.db (one study per cell), tune/
(Ray Tune's experiment), report/, and with seeds until decided rounds.json (each look at the claims
and why the rounds ended, written by the searcher). With a storage URI (s3://bucket/sweeps), tune/ and a copy of
sweep.yaml live at <URI>/<name>/ and the rest in ./sweeps-runs/<name>/; `resume <URI>/<name>` works
from any machine, rebuilding the Optuna studies from Ray's saved searcher state when they are not
there."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Iterator, Optional

from orchestrator.spec import DEFAULT_STORAGE, LoadedSpec, SpecError, is_uri, load_spec, spec_from_yaml_text

SPEC_FILE = "sweep.yaml"
OPTUNA_FILE = "optuna.db"
TUNE_DIR = "tune"
REPORT_DIR = "report"
ROUNDS_FILE = "rounds.json"
# Held by the driver that runs the sweep; the kernel releases it when that process ends, killed or not.
LOCK_FILE = ".driver.lock"


def optuna_url(sweep_dir: Path) -> str:
    return f"sqlite:///{sweep_dir / OPTUNA_FILE}"


def tune_path(loaded: LoadedSpec) -> str:
    """Ray Tune's experiment directory (a local path or a URI)."""
    return f"{loaded.tune_storage}/{TUNE_DIR}"


def read_remote_text(uri: str) -> Optional[str]:
    import pyarrow.fs  # pyarrow only for sweeps kept behind a storage URI

    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    if filesystem.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
        return None
    with filesystem.open_input_stream(path) as stream:
        return stream.read().decode()


def write_remote_text(uri: str, text: str) -> None:
    import pyarrow.fs  # pyarrow only for sweeps kept behind a storage URI

    filesystem, path = pyarrow.fs.FileSystem.from_uri(uri)
    filesystem.create_dir(path.rsplit("/", 1)[0])
    with filesystem.open_output_stream(path) as stream:
        stream.write(text.encode())


def fetch_remote_sweep(uri: str) -> Path:
    """The local directory of the sweep stored at `uri`, made from its spec copy when missing."""
    text = read_remote_text(f"{uri.rstrip('/')}/{SPEC_FILE}")
    if text is None:
        raise SpecError([f"{uri}: no sweep here; give the URI of a sweep's folder, <storage>/<name>, holding {SPEC_FILE}"])
    loaded = spec_from_yaml_text(text, f"{uri}/{SPEC_FILE}")
    loaded.sweep_dir.mkdir(parents=True, exist_ok=True)
    if not (loaded.sweep_dir / SPEC_FILE).exists():
        (loaded.sweep_dir / SPEC_FILE).write_text(text)
    return loaded.sweep_dir


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
    path = sweep_dir / SPEC_FILE
    return spec_from_yaml_text(path.read_text(), str(path))


def ensure_new_sweep(loaded: LoadedSpec) -> None:
    if loaded.remote_dir and read_remote_text(f"{loaded.remote_dir}/{SPEC_FILE}") is not None:
        where = loaded.remote_dir
    elif (loaded.sweep_dir / SPEC_FILE).exists():
        where = str(loaded.sweep_dir)
    else:
        return
    raise SpecError([f"{loaded.source}: name: sweep directory {where} exists already; "
                     f"`dualsweep resume {where}` continues it, or choose another name"])


def create_sweep_dir(loaded: LoadedSpec) -> None:
    """The sweep directory with its spec copy (and the copy beside Ray's experiment for a URI)."""
    loaded.sweep_dir.mkdir(parents=True, exist_ok=True)
    (loaded.sweep_dir / SPEC_FILE).write_text(loaded.yaml_text)
    if loaded.remote_dir:
        write_remote_text(f"{loaded.remote_dir}/{SPEC_FILE}", loaded.yaml_text)


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
