"""The training ``output_dir``: whose it is, whether a run may resume in it, and how a run finishes in it.

Nothing is lost: a folder holding files we did not write is refused; a finished run is kept unless
``overwrite_output_dir``, and even then it is cleared only once the new run has been validated (``begin``); a resume
whose result-changing settings differ from the run's record is refused; two runs never share a folder (a lock, with
stale locks of killed runs detected); final outputs are written aside and moved in, ``finished.json`` last.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from ..config.schema import RESOLVED_CONFIG_FILE
from ..utils.errors import UserError, check_writable_folder

RUN_RECORD = "run_record.json"  # the config the run started with: our mark on the folder, checked on resume
FINISHED = "finished.json"  # written last: the run is complete
LOCK = ".lock"
FINISHING = ".finishing"  # final outputs are assembled here, then moved into place
# settings that do not change what is trained: they may differ on a resume
HARMLESS_ON_RESUME = {"logging_steps", "save_steps", "save_total_limit", "report_to", "eval", "output_dir",
                      "resume_from_checkpoint", "overwrite_output_dir", "dataset_processes"}
# what a run of ours may leave behind, cleared by overwrite_output_dir
OUR_OUTPUTS = ("adapter_config.json", "adapter_model.safetensors", "README.md", RESOLVED_CONFIG_FILE,
               "train_metrics.json", "run_summary.json", "telemetry.jsonl", "training_args.bin", "tokenizer.json",
               "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja", "vocab.json", "merges.txt",
               "tokenizer.model", "added_tokens.json", "eval", FINISHED, RUN_RECORD, FINISHING)


def checkpoints(out: Path) -> list[Path]:
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def checkpoint_problem(checkpoint: Path) -> str | None:
    """Why a checkpoint cannot be resumed from (a kill mid-save, a truncated file), or None."""
    from safetensors import safe_open

    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return "no readable trainer_state.json"
    for weights in checkpoint.glob("*.safetensors"):
        try:
            with safe_open(str(weights), "pt") as f:
                for key in f.keys():  # reading each tensor catches a truncated file, not only a bad header
                    f.get_slice(key)[:]
        except Exception:  # safetensors raises its own error types
            return f"{weights.name} is unreadable"
    return None


def _is_ours(out: Path) -> bool:
    return any((out / name).exists() for name in (RUN_RECORD, FINISHED, "adapter_config.json")) or bool(checkpoints(out))


def is_finished(out: Path) -> bool:
    # adapter_config.json without finished.json: a run finished by an earlier version of this package
    return (out / FINISHED).is_file() or ((out / "adapter_config.json").is_file() and not (out / RUN_RECORD).is_file())


def changed_settings(recorded: dict, current: dict) -> list[str]:
    return [f"{key} {recorded.get(key)!r} -> {current.get(key)!r}" for key in sorted(set(recorded) | set(current))
            if key not in HARMLESS_ON_RESUME and recorded.get(key) != current.get(key)]


@dataclass
class RunPlan:
    out: Path
    resume: str | None  # checkpoint to resume from
    start_over: bool  # overwrite_output_dir with a run of ours to clear (done in ``begin``, not before)


def plan(cfg, config: dict) -> RunPlan:
    """Decide what to do with ``output_dir`` before anything loads; writes nothing."""
    out = Path(cfg.output_dir)
    resume = cfg.resume_from_checkpoint
    check_writable_folder(out, "output_dir")
    if out.is_dir() and any(out.iterdir()) and not _is_ours(out):
        names = ", ".join(sorted(p.name for p in out.iterdir())[:3])
        raise UserError(f"output_dir {out} holds files this package did not write ({names}, ...); "
                        "choose a new or empty output_dir")
    if resume not in (None, "auto", "false", "False"):
        problem = checkpoint_problem(Path(resume)) if Path(resume).is_dir() else "folder not found"
        if problem:
            raise UserError(f"resume_from_checkpoint: {resume}: {problem}; point it at a checkpoint-N folder "
                            "of an earlier run, or set resume_from_checkpoint: auto")
        return RunPlan(out, resume, False)
    if cfg.overwrite_output_dir:
        return RunPlan(out, None, out.is_dir() and _is_ours(out))
    if out.is_dir() and is_finished(out):
        raise UserError(f"output_dir {out} already holds a finished run; choose another output_dir "
                        "or set overwrite_output_dir: true to replace it")
    found = checkpoints(out) if out.is_dir() else []
    if not found:
        return RunPlan(out, None, False)
    if resume != "auto":
        raise UserError(
            f"output_dir {out} holds checkpoints of an unfinished run ({found[-1].name}); set "
            "resume_from_checkpoint: auto to continue it, or overwrite_output_dir: true to start over"
        )
    record = out / RUN_RECORD
    if record.is_file():
        changed = changed_settings(json.loads(record.read_text())["config"], config)
        if changed:
            raise UserError(f"output_dir {out} holds a run started with other settings ({'; '.join(changed)}); "
                            "resume it with its own settings, or set overwrite_output_dir: true to start over")
    for checkpoint in reversed(found):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return RunPlan(out, str(checkpoint), False)
        print(f"note: skipping {checkpoint.name} ({problem}; a run killed while saving it?)", file=sys.stderr)
    return RunPlan(out, None, False)


def _lock_owner(lock: Path) -> dict:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return {}


def acquire_lock(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK
    mine = json.dumps({"pid": os.getpid(), "host": socket.gethostname()})
    for _ in range(2):
        try:
            with open(lock, "x") as f:
                f.write(mine)
            return
        except FileExistsError:
            owner = _lock_owner(lock)
            alive = owner.get("host") != socket.gethostname() or _pid_alive(owner.get("pid"))
            if alive:
                raise UserError(f"output_dir {out} is in use by another run (process {owner.get('pid')} on "
                                f"{owner.get('host')}); wait for it, or delete {lock} if no run uses it") from None
            print(f"note: removing the stale lock of process {owner.get('pid')} (killed?) in {out}", file=sys.stderr)
            lock.unlink(missing_ok=True)
    raise UserError(f"output_dir {out}: could not take its lock {lock}; rerun")


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def release_lock(out: Path) -> None:
    lock = out / LOCK
    if _lock_owner(lock).get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


def begin(run: RunPlan, config: dict) -> None:
    """Main process, once the new run is known to be valid: take the folder, clear the old run if asked, record."""
    acquire_lock(run.out)
    if run.start_over:
        for path in [*checkpoints(run.out), *(run.out / name for name in OUR_OUTPUTS)]:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
    record = run.out / RUN_RECORD
    if not record.is_file() or run.resume is None:
        started = datetime.datetime.now().isoformat(timespec="seconds")
        record.write_text(json.dumps({"started": started, "config": config}, indent=1, default=str))


def finishing_dir(out: Path) -> Path:
    """Where the final outputs are assembled; empty at the start."""
    tmp = out / FINISHING
    shutil.rmtree(tmp, ignore_errors=True)
    return tmp


def finish(out: Path) -> None:
    """Move the assembled outputs into place, then mark the run finished (a kill before that leaves it resumable)."""
    tmp = out / FINISHING
    for item in tmp.iterdir():
        target = out / item.name
        if target.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    tmp.rmdir()
    stamp = datetime.datetime.now().isoformat(timespec="seconds")
    (out / FINISHED).write_text(json.dumps({"finished": stamp}) + "\n")
