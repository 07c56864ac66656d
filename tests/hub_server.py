"""A local stand-in for the Hugging Face Hub's HTTP API: what ``huggingface_hub``'s create_repo + upload_folder call
(repo creation, card metadata check, pre-upload, commit with every file sent inline), on 127.0.0.1. Uploaded files are kept in
``server.repos[repo_id][path]``; requests without the expected token get 401, as on the hub."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Hub(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append(self.path)
        if self.headers.get("Authorization") != f"Bearer {self.server.token}":
            return self._reply(401, {"error": "Invalid credentials in Authorization header"})
        parts = self.path.split("?")[0].strip("/").split("/")
        if parts[:3] == ["api", "repos", "create"]:
            spec = json.loads(body)
            repo_id = f"{spec['organization']}/{spec['name']}" if spec.get("organization") else spec["name"]
            self.server.repos.setdefault(repo_id, {})
            self.server.visibility[repo_id] = spec.get("visibility") or ("private" if spec.get("private") else "public")
            return self._reply(200, {"url": f"{self.server.url}/{repo_id}", "name": repo_id})
        if parts == ["api", "validate-yaml"]:  # the model card's metadata, checked before the commit
            return self._reply(200, {})
        if parts[:2] == ["api", "models"] and parts[4] == "preupload":
            files = json.loads(body)["files"]
            return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                               for f in files], "commitOid": "0" * 40})
        if parts[:2] == ["api", "models"] and parts[4] == "commit":
            repo_id = f"{parts[2]}/{parts[3]}"
            if self.server.fail_commits:
                return self._reply(403, {"error": "You have read access but not the required permissions for this operation."})
            staged = {}
            for line in body.decode().splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    staged[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            self.server.repos[repo_id].update(staged)  # a commit lands whole or not at all
            return self._reply(200, {"commitUrl": f"{self.server.url}/{repo_id}/commit/{'1' * 40}",
                                     "commitOid": "1" * 40, "success": True})
        return self._reply(404, {"error": f"not served here: {self.path}"})


class LocalHub:
    def __init__(self, token: str = "hf_local_test_token") -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
        self.server.token = token
        self.server.repos = {}
        self.server.visibility = {}
        self.server.requests = []
        self.server.fail_commits = False
        self.server.url = self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.token = token
        self.repos = self.server.repos
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "LocalHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
