"""User errors: one clear line, exit status 2, no traceback."""

from __future__ import annotations

import functools
import os
import sys
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
