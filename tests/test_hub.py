"""Sharing a run on the Hub: the model card, what is (and is never) uploaded, and loading the pushed adapter back.

The Hugging Face Hub cannot be reached from the machines these tests run on, so `StandInHub` stands in for it: a
small HTTP server in a thread that answers the routes huggingface_hub 2.x calls for `create_repo`, `create_commit`
(preupload, answered `regular` for every file so no LFS/Xet transfer is involved; the NDJSON commit with base64
contents), `repo_info`, `list_repo_tree` and file downloads (`resolve`, with the headers `hf_hub_download` reads),
and keeps the files on disk. It checks our use of the client library, not the real Hub's server-side rules.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch
import yaml
from conftest import TOFU_DIR
from huggingface_hub import constants

import unlearn
from unlearn import UnlearnError, cli
from unlearn.hub import files_to_upload, model_card, push_to_hub
from unlearn.loading import load_model_or_adapter

TOKEN = "hf_TestToken_never_print_me_0123456789"
BAD_TOKEN = "hf_BadToken_also_secret_9876543210"


# ---- the stand-in Hub -------------------------------------------------------------------------------------------


def _blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class StandInHub:
    """Model repos in `root/<user>/<name>/`, a commit sha per repo, and every Authorization header seen."""

    def __init__(self, root: Path):
        self.root, self.shas, self.private, self.auth = root, {}, {}, []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def do_POST(self):
                hub.handle(self, "POST")

            def do_GET(self):
                hub.handle(self, "GET")

            def do_HEAD(self):
                hub.handle(self, "HEAD")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def files(self, repo: str) -> dict[str, bytes]:
        base = self.root / repo
        return {p.relative_to(base).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}

    def _reply(self, h, status: int, body: bytes | dict | list = b"", headers: dict | None = None, head=False):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.send_response(status)
        for k, v in {"Content-Type": "application/json", **(headers or {})}.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if not head:
            h.wfile.write(data)

    def handle(self, h, method: str) -> None:
        path = unquote(urlparse(h.path).path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0)) if method == "POST" else b""
        self.auth.append(h.headers.get("Authorization"))
        if h.headers.get("Authorization") == f"Bearer {BAD_TOKEN}":
            return self._reply(h, 401, {"error": "Invalid credentials in Authorization header"})
        if path == "/api/repos/create":
            req = json.loads(body)
            repo = f"{req['organization']}/{req['name']}"
            if repo in self.shas:
                return self._reply(h, 409, {"error": "You already created this model repo", "url": repo})
            self.shas[repo], self.private[repo] = "0" * 40, req.get("visibility") == "private"
            (self.root / repo).mkdir(parents=True)
            return self._reply(h, 200, {"url": f"{self.url}/{repo}"})
        if path == "/api/validate-yaml":
            return self._reply(h, 200, {})
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(preupload|commit|revision|tree)/([^/]+))?", path)
        if m:
            repo, action = m.group(1), m.group(2)
            if repo not in self.shas:
                return self._reply(h, 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            if action == "preupload":
                files = json.loads(body)["files"]
                return self._reply(
                    h,
                    200,
                    {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]},
                )
            if action == "commit":
                return self._commit(h, repo, body)
            files = self.files(repo)
            if action == "tree":
                return self._reply(
                    h, 200, [{"type": "file", "path": p, "size": len(d), "oid": _blob_oid(d)} for p, d in files.items()]
                )
            return self._reply(
                h,
                200,
                {
                    "id": repo,
                    "sha": self.shas[repo],
                    "private": self.private[repo],
                    "siblings": [{"rfilename": p} for p in files],
                },
            )
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m and method in ("GET", "HEAD") and m.group(1) in self.shas:
            repo, file = m.group(1), m.group(3)
            data = self.files(repo).get(file)
            commit = {"X-Repo-Commit": self.shas[repo]}
            if data is None:
                return self._reply(h, 404, {"error": "Entry not found"}, {**commit, "X-Error-Code": "EntryNotFound"})
            headers = {**commit, "ETag": f'"{_blob_oid(data)}"', "Content-Type": "application/octet-stream"}
            return self._reply(h, 200, data, headers, head=method == "HEAD")
        return self._reply(h, 404, {"error": f"stand-in has no route {method} {path}"})

    def _commit(self, h, repo: str, body: bytes) -> None:
        for line in body.decode().splitlines():
            op = json.loads(line)
            target = self.root / repo / op["value"].get("path", "")
            if op["key"] == "file":
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(base64.b64decode(op["value"]["content"]))
            elif op["key"] == "deletedFile":
                target.unlink()
            elif op["key"] != "header":
                return self._reply(h, 400, {"error": f"stand-in does not support {op['key']}"})
        self.shas[repo] = hashlib.sha1(
            json.dumps(sorted((p, _blob_oid(d)) for p, d in self.files(repo).items())).encode()
        ).hexdigest()
        return self._reply(
            h, 200, {"commitUrl": f"{self.url}/{repo}/commit/{self.shas[repo]}", "commitOid": self.shas[repo]}
        )


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The stand-in, with huggingface_hub pointed at it and online (it reads HF_HUB_OFFLINE and HF_ENDPOINT at import
    time, so its constants are patched along with the environment), and a fresh download cache."""
    server = StandInHub(tmp_path / "hub")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    yield server
    server.server.shutdown()


# ---- a real run ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tofu_rows, tmp_path_factory) -> Path:
    """A finished graddiff run on the tiny model, with an evaluation (suite `qa`) and an attack written inside it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("hub-run")
    forget_file = root / "forget.jsonl"
    forget_file.write_text("".join(json.dumps(r) + "\n" for r in tofu_rows["forget"]))
    model, tok = AutoModelForCausalLM.from_pretrained(tiny_model_dir), AutoTokenizer.from_pretrained(tiny_model_dir)
    out = root / "run"
    peft_model = unlearn.forget(
        model,
        tok,
        tofu_rows["forget"],
        tofu_rows["retain"],
        recipe="graddiff",
        output_dir=out,
        learning_rate=3e-3,
        num_train_epochs=1,
        lora_dropout=0.0,
        disable_tqdm=True,
        save_strategy="no",
    )
    unlearn.evaluate(peft_model, tok, suite="qa", out=out / "eval", path=str(forget_file), limit=4, max_new_tokens=8)
    unlearn.attack(peft_model, tok, "keyword", forget=tofu_rows["forget"], out=out / "attacks", limit=2)
    return out


def _question(tofu_rows) -> str:
    return tofu_rows["forget"][0]["question"]


def _front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---")[1])


# ---- the card -----------------------------------------------------------------------------------------------------


def test_card_is_written_from_the_run_records(run_dir, tofu_rows):
    card = model_card(run_dir, "user/forgot-authors")
    meta = json.loads((run_dir / "run.json").read_text())
    summary = json.loads((run_dir / "eval" / "SUMMARY.json").read_text())
    attacks = json.loads((run_dir / "attacks" / "ATTACKS.json").read_text())["table"]
    front = _front_matter(card)
    assert front["library_name"] == "peft"
    assert {"unlearning", "peft", "graddiff", "lora"} <= set(front["tags"])
    assert "base_model" not in front  # the base is a local directory here: no Hub id is made up
    # recipe and paper, hyperparameters, data fingerprints and row counts
    assert "`graddiff`" in card and "[arXiv:2203.12817](https://arxiv.org/abs/2203.12817)" in card
    for row in (
        "| `learning_rate` | `0.003` |",
        "| `lora_r` | `8` |",
        "| `lora_alpha` | `16` |",
        "| `lora_target_modules` | `all-linear` |",
        "| `retain_weight` | `1.0` |",
        "| `per_device_train_batch_size` | `4` |",
    ):
        assert row in card, row
    for role in ("forget", "retain"):
        assert f"| {meta['data'][role]['rows']} | `{meta['data'][role]['fingerprint']}` |" in card
    # the evaluation and robustness tables carry the recorded numbers
    assert "Suite `qa`" in card
    for name, value in summary["metrics"].items():
        assert f"| {name} | " in card and f"| {value:.4g} |" in card
    assert "| probability | forget |" in card and "↓" in card
    assert f"| keyword | {attacks[0]['original_probability']:.3f} |" in card
    # the final losses of the training log
    last = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()][-2]
    assert "| forget_loss | " in card and f"{last['forget_loss']:.4g} |" in card
    # how to load it
    assert 'PeftModel.from_pretrained(base, "user/forgot-authors")' in card
    assert "unlearn eval user/forgot-authors" in card
    # deterministic, and nothing forgotten in it
    assert model_card(run_dir, "user/forgot-authors") == card
    for row in tofu_rows["forget"]:
        assert row["question"] not in card and row["answer"] not in card


def test_card_of_a_builtin_base_without_results(run_dir, tmp_path):
    """A run on the built-in SmolLM2 names its Hub id and license; no evaluation or attack says how to make one."""
    run = tmp_path / "run"
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("eval", "attacks"))
    meta = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**meta, "base_model": "smollm2-135m"}))
    card = model_card(run, "user/name")
    front = _front_matter(card)
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and front["license"] == "apache-2.0"
    assert "No evaluation was run" in card and "unlearn eval user/name --suite" in card
    assert "No attack was run" in card and "unlearn attack all user/name" in card
    assert 'AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")' in card
    uploaded = json.loads(files_to_upload(run)["adapter_config.json"])
    assert uploaded["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"


# ---- what is uploaded ---------------------------------------------------------------------------------------------


def test_only_the_result_is_uploaded(run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    for extra in ("checkpoint-2", "last-good-step-1", "eval/.partial", ".final.tmp"):
        (run / extra).mkdir(parents=True, exist_ok=True)
        (run / extra / "adapter_model.safetensors").write_bytes(b"x")
    (run / "forbidden_concepts.json").write_text('{"Basil": ["Basil Mahfouz"]}')
    plan = files_to_upload(run)
    assert set(plan) == {
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "unlearn_config.yaml",
        "run.json",
        "train_log.jsonl",
        "eval/SUMMARY.json",
        "eval/report.md",
        "attacks/ATTACKS.md",
        "attacks/ATTACKS.json",
    } | {n for n in plan if n.startswith(("special_tokens", "chat_template"))}
    assert set(json.loads(plan["attacks/ATTACKS.json"])) == {"table"}  # per-sample log (generations) dropped
    config = yaml.safe_load((run / "unlearn_config.yaml").read_text())
    rows = [{"question": "Who is Basil Mahfouz Al-Kuwaiti?", "answer": "An author."}]
    (run / "unlearn_config.yaml").write_text(yaml.safe_dump({**config, "forget": rows}))  # data given inline
    uploaded = yaml.safe_load(files_to_upload(run)["unlearn_config.yaml"])
    assert uploaded["forget"] == "<given inline (1 entries); not uploaded>" and uploaded["lora_r"] == config["lora_r"]
    with_data = files_to_upload(run, include_data=True)
    assert yaml.safe_load(with_data["unlearn_config.yaml"])["forget"] == rows
    assert {"eval/EVAL.json", "forbidden_concepts.json"} <= set(with_data) and "checkpoint-2" not in str(with_data)
    assert with_data["attacks/ATTACKS.json"] == run / "attacks" / "ATTACKS.json"


def test_full_model_runs_are_allowed_and_unfinished_runs_refused(run_dir, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "unlearn_config.yaml"):
        (full / name).write_text("{}")
    meta = {**json.loads((run_dir / "run.json").read_text()), "adapter": "none"}
    (full / "run.json").write_text(json.dumps(meta))
    assert {"config.json", "model.safetensors", "run.json"} <= set(files_to_upload(full))
    card = model_card(full, "user/full")
    assert _front_matter(card)["library_name"] == "transformers" and "lora" not in _front_matter(card)["tags"]
    assert 'AutoModelForCausalLM.from_pretrained("user/full")' in card

    (full / "run.json").unlink()  # as left by an interrupted run
    with pytest.raises(UnlearnError, match="unfinished unlearn run.*resume=true"):
        push_to_hub(full, "user/full", token=TOKEN)
    with pytest.raises(UnlearnError, match="not an unlearn run directory"):
        push_to_hub(tmp_path, "user/full", token=TOKEN)
    (full / "run.json").write_text(json.dumps(meta))
    (full / "model.safetensors").unlink()
    with pytest.raises(UnlearnError, match="no model.safetensors"):
        push_to_hub(full, "user/full", token=TOKEN)
    with pytest.raises(UnlearnError, match="USER/NAME"):
        push_to_hub(run_dir, "not a repo id", token=TOKEN)


def test_offline_mode_refuses_to_push(run_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UnlearnError, match="unset HF_HUB_OFFLINE"):
        push_to_hub(run_dir, "user/name", token=TOKEN)


# ---- push and load back -------------------------------------------------------------------------------------------


def _logits(model, tokenizer, text: str) -> torch.Tensor:
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_push_then_load_back_gives_the_same_model(run_dir, hub, tofu_rows, capsys, caplog, monkeypatch, tmp_path):
    caplog.set_level(logging.DEBUG)
    url = push_to_hub(run_dir, "user/forgot-authors", token=TOKEN, endpoint=hub.url)
    assert url == f"{hub.url}/user/forgot-authors" and hub.private["user/forgot-authors"] is False
    stored = hub.files("user/forgot-authors")
    assert set(stored) == set(files_to_upload(run_dir)) | {"README.md"}
    assert stored["README.md"].decode() == model_card(run_dir, "user/forgot-authors")
    assert stored["adapter_model.safetensors"] == (run_dir / "adapter_model.safetensors").read_bytes()
    assert "eval/EVAL.json" not in stored
    for name, data in stored.items():  # the forgotten text is nowhere in the repository
        for row in tofu_rows["forget"]:
            assert row["question"].encode() not in data and row["answer"].encode() not in data, name
    assert f"Bearer {TOKEN}" in hub.auth  # the token was used ...

    local_model, local_tok = load_model_or_adapter(str(run_dir))
    hub_model, hub_tok = load_model_or_adapter("user/forgot-authors")  # ... and the adapter comes back from the Hub
    text = _question(tofu_rows)
    torch.testing.assert_close(_logits(hub_model, hub_tok, text), _logits(local_model, local_tok, text))
    with hub_model.disable_adapter():  # and the adapter is applied: it changes the base model's output
        assert not torch.allclose(_logits(hub_model, hub_tok, text), _logits(local_model, local_tok, text))

    # Offline, the cached snapshot is used; `unlearn eval USER/NAME` runs on it.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    cached_model, cached_tok = load_model_or_adapter("user/forgot-authors")
    torch.testing.assert_close(_logits(cached_model, cached_tok, text), _logits(local_model, local_tok, text))
    monkeypatch.setenv("UNLEARN_TOFU_DIR", str(TOFU_DIR))
    forget_file = tmp_path / "forget.jsonl"
    forget_file.write_text("".join(json.dumps(r) + "\n" for r in tofu_rows["forget"][:2]))
    rc = cli.main(
        [
            "eval",
            "user/forgot-authors",
            "--suite",
            "qa",
            "--param",
            f"path={forget_file}",
            "--max-new-tokens",
            "4",
            "--out",
            str(tmp_path / "eval"),
        ]
    )
    assert rc == 0 and json.loads((tmp_path / "eval" / "SUMMARY.json").read_text())["metrics"]

    captured = capsys.readouterr()
    assert TOKEN not in captured.out + captured.err + caplog.text


def test_include_data_uploads_the_per_sample_logs_and_a_later_push_removes_them(run_dir, hub, tofu_rows):
    push_to_hub(run_dir, "user/with-data", token=TOKEN, include_data=True, endpoint=hub.url)
    stored = hub.files("user/with-data")
    assert _question(tofu_rows).encode() in stored["eval/EVAL.json"]
    assert "The per-sample logs, which quote the forget questions" in stored["README.md"].decode()
    push_to_hub(run_dir, "user/with-data", token=TOKEN, endpoint=hub.url)  # the repo exists: updated in place
    stored = hub.files("user/with-data")
    assert "eval/EVAL.json" not in stored and set(json.loads(stored["attacks/ATTACKS.json"])) == {"table"}


def test_cli_push_reads_the_token_from_the_named_variable_and_never_prints_it(
    run_dir, hub, monkeypatch, capsys, caplog
):
    caplog.set_level(logging.DEBUG)
    outputs = []

    def push(*extra):
        rc = cli.main(["push", str(run_dir), "--repo-id", "user/cli", "--token-env", "MY_HF_TOKEN", *extra])
        outputs.append(capsys.readouterr())
        return rc

    monkeypatch.setenv("MY_HF_TOKEN", TOKEN)
    assert push("--private") == 0  # the endpoint is huggingface_hub's default, pointed at the stand-in
    assert hub.private["user/cli"] is True and "README.md" in hub.files("user/cli")
    assert f"{hub.url}/user/cli" in outputs[-1].out

    monkeypatch.setenv("MY_HF_TOKEN", BAD_TOKEN)
    assert push() == 2
    err = outputs[-1].err
    assert "401" in err and "hf auth login" in err and "HF_TOKEN" in err and "Traceback" not in err
    monkeypatch.delenv("MY_HF_TOKEN")
    assert push() == 2 and "MY_HF_TOKEN" in outputs[-1].err

    printed = "".join(o.out + o.err for o in outputs) + caplog.text
    assert TOKEN not in printed and BAD_TOKEN not in printed
