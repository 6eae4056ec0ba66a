"""A small Hugging Face Hub-compatible HTTP server for round-trip tests, and the `local_hub` fixture.

It speaks the subset of the Hub API that the real `huggingface_hub` client (2.x) uses for
`create_repo`, `upload_folder`/`create_commit`, `model_info`/`repo_info`, `list_repo_tree`,
`hf_hub_download`, `snapshot_download` and transformers' `from_pretrained`:

    POST /api/repos/create
    POST /api/validate-yaml                          -> the README.md front matter parses (YAML, model-index)
    POST /api/{type}s/{ns}/{name}/preupload/{rev}   -> every file "regular" (inline base64 in the commit)
    POST /api/{type}s/{ns}/{name}/commit/{rev}      -> ndjson: header, file, deletedFile, deletedFolder
    GET  /api/{type}s/{ns}/{name}[/revision/{rev}]  -> info with sha and siblings
    GET  /api/{type}s/{ns}/{name}/tree/{rev}[/{path}]
    HEAD/GET /[{type}s/]{ns}/{name}/resolve/{rev}/{path}  -> ETag, X-Repo-Commit, Content-Length, no redirect

Why "regular" for every file: the real Hub answers "lfs" for large or binary files, after which the client
uploads through Xet or LFS storage, protocols this server does not emulate; the client honours whatever the
preupload endpoint answers, so inline upload is the client's own code path, just used for every file.
Blobs are stored on disk by their git blob id; each commit is a full {path: blob id} snapshot.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml

TOKEN = "hf_local_hub_test_token"


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob, which the Hub uses as the ETag of regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubServer:
    """The state (repos, commits, blobs under `root`) and the HTTP server thread."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.repos: dict[tuple[str, str], dict] = {}  # (type, repo_id) -> {"private", "commits": [...]}
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)  # port 0: the OS picks a free port
        self.httpd.hub = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def files(self, repo_type: str, repo_id: str, rev: str) -> tuple[str, dict[str, str]] | None:
        """(commit id, {path: blob id}) of branch "main" or of a commit id; None when unknown."""
        commits = self.repos[(repo_type, repo_id)]["commits"]
        for commit in reversed(commits):
            if rev == "main" or commit["oid"] == rev:
                return commit["oid"], commit["files"]
        return None

    def blob(self, oid: str) -> bytes:
        return (self.root / "blobs" / oid).read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server_version = "rankface-local-hub/1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    # ---------------------------------------------------------------- plumbing
    @property
    def hub(self) -> HubServer:
        return self.server.hub  # type: ignore[attr-defined]

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, obj, headers: dict | None = None) -> None:
        self._reply(status, json.dumps(obj).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _error(self, status: int, code: str | None, message: str, head: bool = False, **headers) -> None:
        # The client maps X-Error-Code to RepositoryNotFoundError / RevisionNotFoundError / EntryNotFoundError.
        extra = {"X-Error-Code": code} if code else {}
        body = json.dumps({"error": message}).encode()
        self._reply(status, body, {"Content-Type": "application/json", "X-Error-Message": message, **extra, **headers},
                    head=head)

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {TOKEN}"

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _route(self) -> tuple[list[str], dict]:
        split = urlsplit(self.path)
        return [unquote(p) for p in split.path.strip("/").split("/")], parse_qs(split.query)

    def _repo(self, repo_type: str, repo_id: str, head: bool = False) -> dict | None:
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo["private"] and not self._authorized()):
            self._error(404, "RepoNotFound", f"Repository not found: {repo_id}", head=head)
            return None
        return repo

    # ---------------------------------------------------------------- verbs
    def do_POST(self) -> None:
        parts, _ = self._route()
        if parts == ["api", "validate-yaml"]:  # the client checks a README.md's metadata before uploading it
            return self._validate_yaml(json.loads(self._body())["content"])
        if not self._authorized():
            return self._error(401, None, "Invalid credentials in Authorization header")
        if parts == ["api", "repos", "create"]:
            return self._create_repo(json.loads(self._body()))
        if len(parts) >= 6 and parts[0] == "api" and parts[4] in ("preupload", "commit"):
            repo_type, repo_id, rev = parts[1][:-1], f"{parts[2]}/{parts[3]}", "/".join(parts[5:])
            with self.hub.lock:
                if self._repo(repo_type, repo_id) is None:
                    return None
                if rev != "main":
                    return self._error(404, "RevisionNotFound", f"this server commits to 'main' only, not {rev!r}")
                if parts[4] == "preupload":
                    return self._preupload(repo_type, repo_id, json.loads(self._body()))
                return self._commit(repo_type, repo_id, self._body())
        return self._error(404, None, f"unknown endpoint POST {self.path}")

    def do_GET(self, head: bool = False) -> None:
        parts, query = self._route()
        with self.hub.lock:
            if parts[:1] == ["api"] and len(parts) >= 4:
                repo_type, repo_id = parts[1][:-1], f"{parts[2]}/{parts[3]}"
                if self._repo(repo_type, repo_id, head) is None:
                    return None
                if len(parts) == 4 or parts[4] == "revision":
                    return self._info(repo_type, repo_id, "/".join(parts[5:]) or "main")
                if parts[4] == "tree" and len(parts) >= 6:
                    return self._tree(repo_type, repo_id, parts[5], "/".join(parts[6:]), query)
            if "resolve" in parts:
                i = parts.index("resolve")
                prefix = parts[: i - 2]
                repo_type = prefix[0][:-1] if prefix else "model"
                if len(prefix) <= 1 and i >= 2 and len(parts) > i + 2:
                    return self._resolve(repo_type, "/".join(parts[i - 2 : i]), parts[i + 1], "/".join(parts[i + 2 :]),
                                         head)
        return self._error(404, None, f"unknown endpoint GET {self.path}", head=head)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    # ---------------------------------------------------------------- endpoints
    def _create_repo(self, payload: dict) -> None:
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        repo_type = payload.get("type") or "model"
        url = self.hub.url + ("" if repo_type == "model" else f"/{repo_type}s") + f"/{repo_id}"
        with self.hub.lock:
            if (repo_type, repo_id) in self.hub.repos:
                return self._json(409, {"error": "You already created this repo", "url": url})
            private = payload.get("private") or payload.get("visibility") == "private"
            # A new Hub repo has one initial commit holding .gitattributes; an empty snapshot is enough here.
            initial = {"oid": hashlib.sha1(f"init {repo_id} {time.time_ns()}".encode()).hexdigest(), "files": {},
                       "title": "initial commit"}
            self.hub.repos[(repo_type, repo_id)] = {"private": bool(private), "commits": [initial]}
        return self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, content: str) -> None:
        from huggingface_hub.repocard_data import model_index_to_eval_results

        match = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, re.DOTALL)
        try:
            metadata = yaml.safe_load(match.group(1)) if match else {}
            if not isinstance(metadata, dict):
                raise TypeError(f"metadata must be a YAML mapping, got {type(metadata).__name__}")
            if "model-index" in metadata:
                model_index_to_eval_results(metadata["model-index"])
        except (yaml.YAMLError, TypeError, KeyError, ValueError, AttributeError) as err:  # the Hub's 400
            return self._json(400, {"errors": [{"message": f"{type(err).__name__}: {err}"}], "warnings": []})
        return self._json(200, {"errors": [], "warnings": []})

    def _preupload(self, repo_type: str, repo_id: str, payload: dict) -> None:
        _, current = self.hub.files(repo_type, repo_id, "main")
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": current.get(f["path"])}
                 for f in payload["files"]]
        return self._json(200, {"files": files, "commitOid": self.hub.files(repo_type, repo_id, "main")[0]})

    def _commit(self, repo_type: str, repo_id: str, body: bytes) -> None:
        parent, files = self.hub.files(repo_type, repo_id, "main")
        files, title = dict(files), ""
        for line_no, line in enumerate(body.decode().splitlines(), start=1):
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                title = value["summary"]
                if value.get("parentCommit") not in (None, parent):
                    return self._error(412, None, f"parentCommit {value['parentCommit']} is not the head {parent}")
            elif key == "file":
                data = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value[
                    "content"].encode()
                oid = git_blob_id(data)
                (self.hub.root / "blobs" / oid).write_bytes(data)
                files[value["path"]] = oid
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: o for p, o in files.items() if not p.startswith(prefix)}
            else:  # lfsFile: never requested, since preupload answers "regular" for every file
                return self._error(400, None, f"commit line {line_no}: unsupported operation {key!r}")
        oid = hashlib.sha1(json.dumps([parent, title, sorted(files.items())]).encode()).hexdigest()
        self.hub.repos[(repo_type, repo_id)]["commits"].append({"oid": oid, "files": files, "title": title})
        url = self.hub.url + ("" if repo_type == "model" else f"/{repo_type}s") + f"/{repo_id}/commit/{oid}"
        return self._json(200, {"success": True, "commitOid": oid, "commitUrl": url, "pullRequestUrl": None})

    def _info(self, repo_type: str, repo_id: str, rev: str) -> None:
        found = self.hub.files(repo_type, repo_id, rev)
        if found is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        sha, files = found
        siblings = [{"rfilename": p, "size": (self.hub.root / "blobs" / o).stat().st_size, "blobId": o}
                    for p, o in sorted(files.items())]
        return self._json(200, {"id": repo_id, "sha": sha, "private": self.hub.repos[(repo_type, repo_id)]["private"],
                                "siblings": siblings, "tags": [], "lastModified": "2026-01-01T00:00:00.000Z"})

    def _tree(self, repo_type: str, repo_id: str, rev: str, path: str, query: dict) -> None:
        found = self.hub.files(repo_type, repo_id, rev)
        if found is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries: dict[str, dict] = {}
        for file_path, oid in sorted(found[1].items()):
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix):].split("/")
            # Folders on the way to the file: all of them when recursive, the first one otherwise.
            for depth in range(1, len(rest) if recursive else min(len(rest), 2)):
                folder = prefix + "/".join(rest[:depth])
                entries.setdefault(folder, {"type": "directory", "path": folder, "oid": git_blob_id(folder.encode())})
            if recursive or len(rest) == 1:
                size = (self.hub.root / "blobs" / oid).stat().st_size
                entries[file_path] = {"type": "file", "path": file_path, "oid": oid, "size": size}
        if prefix and not entries:
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}")
        return self._json(200, list(entries.values()))

    def _resolve(self, repo_type: str, repo_id: str, rev: str, path: str, head: bool) -> None:
        if self._repo(repo_type, repo_id, head) is None:
            return None
        found = self.hub.files(repo_type, repo_id, rev)
        if found is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
        sha, files = found
        if path not in files:
            # X-Repo-Commit on a miss lets the client cache the file's absence for this commit.
            return self._error(404, "EntryNotFound", f"{path} does not exist on {rev}", head=head,
                               **{"X-Repo-Commit": sha})
        data = self.hub.blob(files[path])
        headers = {"ETag": f'"{files[path]}"', "X-Repo-Commit": sha, "Content-Type": "application/octet-stream",
                   "Accept-Ranges": "bytes"}
        start = _range_start(self.headers.get("Range"))
        if start:  # the client resumes an interrupted download with "Range: bytes=N-"
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self._reply(206, data[start:], headers, head)
        return self._reply(200, data, headers, head)


def _range_start(header: str | None) -> int:
    if not header or not header.startswith("bytes=") or not header[6:].endswith("-"):
        return 0
    return int(header[6:-1])


@pytest.fixture
def local_hub(tmp_path, monkeypatch) -> Iterator[HubServer]:
    """A running `HubServer` with the Hub client pointed at it, online, with a dummy token, for one test.

    `huggingface_hub` reads HF_ENDPOINT and HF_HUB_OFFLINE into module constants at import time (and the
    module-level `HfApi` instance copies the endpoint), so the environment variables alone do not reach an
    already imported client: the constants are patched too. The Hub cache goes to the test's tmp dir.
    """
    from huggingface_hub import constants, hf_api

    hub = HubServer(tmp_path / "hub_server").start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # read by is_offline_mode() on every request
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "ENDPOINT", hub.url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf_cache"))
    monkeypatch.setattr(hf_api.api, "endpoint", hub.url)
    # transformers keeps one HfApi of its own, made on first use with the endpoint of that moment: left alone it
    # would call the previous test's (stopped) server, and each call would wait out http_backoff's retries (~45 s).
    import transformers.utils.hub

    monkeypatch.setattr(transformers.utils.hub, "_hf_api", None)
    try:
        yield hub
    finally:
        hub.stop()
