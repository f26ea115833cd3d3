"""Issue 22, finding 10 (the parts that need no cluster): run-time adapter management is opt-in and admin-only."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.frontend.args import parse
from services.frontend.lora import LoraRoutes
from services.frontend.lora_flags import LoraAdminOptions
from shared.engine.lora_args import LoraOptions
from shared.engine.lora_source import LoraSourceError, check_name, fetch
from shared.http import Request


def _req(path: str, body: dict, key: str = "") -> Request:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return Request("POST", path, "", headers, json.dumps(body).encode(), None)


def test_the_routes_are_off_by_default_and_take_only_the_admin_key() -> None:
    off = LoraRoutes(None, LoraAdminOptions())  # type: ignore[arg-type]
    resp = asyncio.run(off.load(_req("/v1/load_lora_adapter", {"lora_name": "a", "lora_path": "a"})))
    assert resp.status == 404
    on = LoraRoutes(None, LoraAdminOptions(runtime_updates=True, admin_api_key="adm"))  # type: ignore[arg-type]
    for key in ("", "inference", "adm2"):
        resp = asyncio.run(on.unload(_req("/v1/unload_lora_adapter", {"lora_name": "a"}, key)))
        assert resp.status == 401


def test_the_frontend_needs_an_admin_key_of_its_own(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("SHOAL_ADMIN_API_KEY", raising=False)
    with pytest.raises(SystemExit):
        parse(["--enable-lora-runtime-updates"])
    with pytest.raises(SystemExit):
        parse(["--enable-lora-runtime-updates", "--api-key", "k", "--admin-api-key", "k"])
    (tmp_path / "key").write_text("from-file\n")
    cfg = parse(["--enable-lora-runtime-updates", "--admin-api-key-file", str(tmp_path / "key")])
    assert cfg.lora_admin.admin_api_key == "from-file" and "from-file" not in repr(cfg)
    assert not parse([]).lora_admin.runtime_updates


def test_names_and_paths_are_checked(tmp_path) -> None:
    for bad in ("", "a b", "-x", ".x", "x" * 65, "a/b", "é"):
        with pytest.raises(LoraSourceError):
            check_name(bad)
    with pytest.raises(LoraSourceError, match="served model"):
        check_name("tiny", ("tiny",))
    check_name("sql-v2.1_a")
    (tmp_path / "root").mkdir()
    opts = LoraOptions(lora_root=str(tmp_path / "root"))
    for path in ("../", "/etc", str(tmp_path), "..", "org/name"):
        with pytest.raises(LoraSourceError, match="--lora-root"):
            fetch(path, opts)
    (tmp_path / "root" / "big").mkdir()
    (tmp_path / "root" / "big" / "adapter_config.json").write_text("{}")
    (tmp_path / "root" / "big" / "adapter_model.safetensors").write_bytes(b"\0" * 2048)
    with pytest.raises(LoraSourceError, match="max-lora-bytes"):
        fetch("big", LoraOptions(lora_root=str(tmp_path / "root"), max_lora_bytes=1024))
    assert fetch("big", opts) == str((tmp_path / "root" / "big").resolve())


def test_hub_downloads_are_opt_in_and_take_only_safetensors_within_the_cap(monkeypatch, tmp_path) -> None:
    import huggingface_hub

    class _Sibling:
        def __init__(self, name: str, size: int) -> None:
            self.rfilename, self.size = name, size

    class _Info:
        siblings = [_Sibling("adapter_config.json", 10), _Sibling("adapter_model.safetensors", 5000),
                    _Sibling("adapter_model.bin", 10**9)]

    got: dict = {}
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", lambda self, repo, files_metadata: _Info())

    def download(repo: str, allow_patterns: list[str]) -> str:
        got["patterns"] = allow_patterns
        (tmp_path / "adapter_config.json").write_text("{}")
        (tmp_path / "adapter_model.safetensors").write_bytes(b"\0" * 5000)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", download)
    with pytest.raises(LoraSourceError, match="lora-allow-hub-download"):
        fetch("org/adapter", LoraOptions())
    with pytest.raises(LoraSourceError, match="max-lora-bytes"):
        fetch("org/adapter", LoraOptions(allow_hub_download=True, max_lora_bytes=4000))
    assert "patterns" not in got  # refused before anything was downloaded
    assert fetch("org/adapter", LoraOptions(allow_hub_download=True)) == str(tmp_path)
    assert got["patterns"] == ["adapter_config.json", "*.safetensors"]
