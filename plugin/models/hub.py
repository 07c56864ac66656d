"""Sharing a trained adapter (or a merged model) on the Hugging Face Hub, through ``huggingface_hub``.

One commit holds the whole folder, so an upload that fails leaves nothing half-written on the hub. ``HF_ENDPOINT``
points at another hub (a mirror, an on-premise hub) as everywhere in the Hugging Face stack.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ..utils.errors import UserError


def check_can_push(repo_id: str) -> None:
    """Before anything heavy: a repo id of the form owner/name, a token (HF_TOKEN or `hf auth login`), not offline."""
    from huggingface_hub import constants, get_token

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"hub repo {repo_id!r}: give it as owner/name (e.g. alice/llama-7b-mor)")
    if constants.HF_HUB_OFFLINE:
        raise UserError(f"pushing to {repo_id} needs the hub, but HF_HUB_OFFLINE is set: unset it, or push later "
                        f"with python -m plugin.export OUTPUT_DIR --push_to_hub {repo_id}")
    if not get_token():
        raise UserError(f"pushing to {repo_id} needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")


def push_folder(folder: Path, repo_id: str, private: bool = False, what: str = "adapter") -> str:
    """Create ``repo_id`` if needed and upload ``folder`` in one commit; returns the commit's URL."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HTTPError

    check_can_push(repo_id)
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private or None, exist_ok=True)  # None: the owner's default
        commit = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=f"Upload {what}",
                                   ignore_patterns=["checkpoint-*", "*.lock", ".*"])
    except HfHubHTTPError as err:
        raise UserError(f"the hub refused the upload to {repo_id}: {str(err).splitlines()[0]}") from None
    except (HTTPError, OSError) as err:  # no network, connection refused, DNS, timeouts
        raise UserError(f"cannot reach the hub at {api.endpoint} to push {repo_id} ({type(err).__name__}); "
                        "nothing was uploaded: check the network (or HF_ENDPOINT) and rerun") from None
    print(f"pushed {folder} to {repo_id}: {commit.commit_url}", file=sys.stderr)
    return commit.commit_url
