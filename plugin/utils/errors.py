"""User errors: one clear line, exit status 2, no traceback."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input (config, paths, flags). The message says what is wrong and how to fix it."""


def exits_cleanly_on_user_error(main: Callable[..., int | None]) -> Callable[..., int]:
    """Wrap a CLI entry point: a UserError prints 'error: ...' on stderr and exits 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs) or 0
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper


@contextlib.contextmanager
def interrupts_stop_the_run():
    """Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt while the block runs, whatever the process inherited.

    A process started where SIGINT is ignored (a background job of a non-interactive shell, as CI and nohup start
    them) gets no KeyboardInterrupt handler from Python: Ctrl-C or ``kill -INT`` did nothing and the run went on to
    its last step. SIGTERM (torchrun stopping its workers, a scheduler's time limit) stops it the same way, so the
    run says where it resumes instead of dying mid-write. The previous handlers come back afterwards.
    """
    if threading.current_thread() is not threading.main_thread():  # handlers can only be set from the main thread
        yield
        return
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def check_writable_folder(path: str | os.PathLike, what: str) -> None:
    """A folder we will write must be creatable there: checked before anything heavy runs, not after."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"{what} {path} exists and is a file; pass a folder")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(f"{what} {path}: {ancestor} is a file, not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(f"{what} {path}: {ancestor} is not writable")


def first_line(err: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message (libraries' messages run long), or its type when it has none."""
    text = str(err).strip()
    return text.splitlines()[0][:limit] if text else type(err).__name__
