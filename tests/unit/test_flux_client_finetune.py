"""flux_client's fine-tuning without a server (httpx.MockTransport): the ZIP and JSON of POST /v1/finetune,
details, list, delete, polling get_result to Ready, generation at /v1/{model}-finetuned, and the CLI's
`finetune` and `generate --finetune` through main(argv) with the transport put into FluxClient."""

from __future__ import annotations

import asyncio
import base64
import functools
import io
import json
import zipfile

import httpx
import pytest

from flux_client import AsyncFluxClient, FluxAPIError, FluxClient, JobFailed, JobUpdate
from flux_client import client as client_module
from flux_client.cli import main as cli_main
from flux_client.finetune import parse_finetune, training_zip

FT_ID = "f" * 32
JOB_ID = "a" * 32


def client(handler, **options) -> FluxClient:
    return FluxClient("http://flux.test", "k", transport=httpx.MockTransport(handler), poll_interval_s=0, **options)


def training_folder(tmp_path):
    folder = tmp_path / "set"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"png a")
    (folder / "a.txt").write_text("a TOK drawing")
    (folder / "b.JPG").write_bytes(b"jpg b")
    (folder / "c.webp").write_bytes(b"webp c")
    (folder / ".DS_Store").write_bytes(b"mac")
    (folder / "._a.png").write_bytes(b"mac fork")
    (folder / "notes.md").write_text("not training data")
    (folder / "sub").mkdir()
    (folder / "sub" / "d.png").write_bytes(b"nested")
    return folder


def zip_contents(file_data: str) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(base64.b64decode(file_data))) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def progress(fraction: float) -> dict:
    return {"id": FT_ID, "status": "Pending", "progress": fraction, "details": {"stage": "training"}}


# -- create -------------------------------------------------------------------------------------


def test_create_finetune_sends_a_zip_of_the_folders_images_and_captions_alone_and_the_settings(tmp_path):
    seen = {}

    def handler(request):
        seen.update(path=request.url.path, key=request.headers.get("x-key"), body=json.loads(request.content))
        return httpx.Response(200, json={"finetune_id": FT_ID, "id": FT_ID, "polling_url": "u"})

    with client(handler) as flux:
        finetune_id = flux.create_finetune(
            training_folder(tmp_path), "my look", mode="character", trigger_word="ZED", iterations=50, lora_rank=16
        )
    assert finetune_id == FT_ID and seen["path"] == "/v1/finetune" and seen["key"] == "k"
    body = seen["body"]
    assert zip_contents(body.pop("file_data")) == {
        "a.png": b"png a",
        "a.txt": b"a TOK drawing",
        "b.JPG": b"jpg b",
        "c.webp": b"webp c",
    }
    assert body == {
        "finetune_comment": "my look",
        "mode": "character",
        "trigger_word": "ZED",
        "iterations": 50,
        "lora_rank": 16,
    }


def test_create_finetune_leaves_unset_settings_to_the_server_and_takes_a_list_of_files(tmp_path):
    seen = {}

    def handler(request):
        seen["body"] = json.loads(request.content)
        return httpx.Response(200, json={"finetune_id": FT_ID, "id": FT_ID, "polling_url": "u"})

    folder = training_folder(tmp_path)
    with client(handler) as flux:
        flux.create_finetune([folder / "a.png", folder / "sub" / "d.png"], "two")
    assert set(zip_contents(seen["body"].pop("file_data"))) == {"a.png", "d.png"}
    assert seen["body"] == {"finetune_comment": "two", "mode": "style", "trigger_word": "TOK"}


def test_training_files_are_checked_before_anything_is_sent(tmp_path):
    (tmp_path / "only.txt").write_text("a caption without an image")
    (tmp_path / "x.gif").write_bytes(b"gif")
    with pytest.raises(ValueError, match="no images"):
        training_zip(tmp_path)
    with pytest.raises(ValueError, match="no such folder"):
        training_zip(tmp_path / "missing")
    with pytest.raises(ValueError, match="neither an image"):
        training_zip([tmp_path / "x.gif"])
    (tmp_path / "b").mkdir()
    for folder in (tmp_path, tmp_path / "b"):
        (folder / "same.png").write_bytes(b"p")
    with pytest.raises(ValueError, match="two files named 'same.png'"):
        training_zip([tmp_path / "same.png", tmp_path / "b" / "same.png"])


def test_api_refusals_come_out_in_the_apis_words(tmp_path):
    def handler(request):
        problem = {"loc": ["body", "trigger_word"], "msg": "String should match pattern"}
        return httpx.Response(422, json={"detail": [problem]})

    with client(handler) as flux, pytest.raises(FluxAPIError) as raised:
        flux.create_finetune(training_folder(tmp_path), "x", trigger_word="1bad")
    assert (raised.value.status_code, raised.value.message) == (422, "trigger_word: String should match pattern")


# -- details, list, delete ------------------------------------------------------------------------


def test_details_list_and_delete():
    requests = []

    def handler(request):
        body = json.loads(request.content) if request.content else None
        requests.append((request.method, request.url.path, dict(request.url.params), body))
        if request.url.path == "/v1/finetune_details":
            return httpx.Response(200, json={"finetune_id": FT_ID, "status": "Ready", "default_strength": 1.2})
        if request.url.path == "/v1/my_finetunes":
            return httpx.Response(200, json={"finetunes": [FT_ID, "b" * 32]})
        return httpx.Response(200, json={"finetune_id": FT_ID, "deleted": True})

    with client(handler) as flux:
        assert flux.finetune_details(FT_ID)["default_strength"] == 1.2
        assert flux.my_finetunes() == [FT_ID, "b" * 32]
        assert flux.delete_finetune(FT_ID) == {"finetune_id": FT_ID, "deleted": True}
    assert requests == [
        ("GET", "/v1/finetune_details", {"finetune_id": FT_ID}, None),
        ("GET", "/v1/my_finetunes", {}, None),
        ("POST", "/v1/delete_finetune", {}, {"finetune_id": FT_ID}),
    ]


def test_a_missing_finetune_is_a_404_with_the_apis_message():
    def handler(request):
        return httpx.Response(404, json={"detail": f"No finetune {FT_ID!r}"})

    with client(handler) as flux, pytest.raises(FluxAPIError, match=f"HTTP 404: No finetune '{FT_ID}'"):
        flux.finetune_details(FT_ID)


# -- wait -----------------------------------------------------------------------------------------


def test_wait_finetune_polls_get_result_to_ready_reporting_percent_once_per_change():
    answers = iter(
        [
            progress(0.0),
            progress(0.0),
            httpx.Response(503, json={"detail": "restarting"}),
            progress(0.4),
            {
                "id": FT_ID,
                "status": "Ready",
                "progress": 1.0,
                "result": {"finetune_id": FT_ID, "default_strength": 1.1},
            },
        ]
    )
    paths = set()

    def handler(request):
        paths.add((request.url.path, request.url.params["id"]))
        answer = next(answers)
        return answer if isinstance(answer, httpx.Response) else httpx.Response(200, json=answer)

    updates = []
    with client(handler) as flux:
        result = flux.wait_finetune(FT_ID, on_progress=updates.append, poll_interval_s=0)
    assert result == {"finetune_id": FT_ID, "default_strength": 1.1}
    assert paths == {("/v1/get_result", FT_ID)}
    assert [(update.status, update.step) for update in updates] == [("Pending", 0), ("Pending", 40), ("Ready", 100)]
    assert updates[1] == JobUpdate(FT_ID, stage="training", step=40, total=100)


def test_wait_finetune_raises_job_failed_with_the_error_and_async_polls_too():
    def handler(request):
        return httpx.Response(200, json={"id": FT_ID, "status": "Error", "details": {"error": "out of memory"}})

    with client(handler) as flux, pytest.raises(JobFailed, match="ended Error: out of memory"):
        flux.wait_finetune(FT_ID, poll_interval_s=0)

    answers = iter([progress(0.5), {"id": FT_ID, "status": "Ready", "result": {"finetune_id": FT_ID}}])

    async def main():
        updates = []

        async def report(update):
            updates.append(update.step)

        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=next(answers)))
        async with AsyncFluxClient("http://flux.test", "k", transport=transport) as flux:
            result = await flux.wait_finetune(FT_ID, on_progress=report, poll_interval_s=0)
        return result, updates

    assert asyncio.run(main()) == ({"finetune_id": FT_ID}, [50, 100])


# -- generation with a finetune -------------------------------------------------------------------


@pytest.mark.parametrize(("text", "parsed"), [(f"{FT_ID}:1.5", (FT_ID, 1.5)), (FT_ID, (FT_ID, None))])
def test_parse_finetune(text, parsed):
    assert parse_finetune(text) == parsed


@pytest.mark.parametrize(("text", "message"), [(":1.5", "has no id"), (f"{FT_ID}:strong", "must be a number")])
def test_parse_finetune_refuses_with_the_right_form(text, message):
    with pytest.raises(ValueError, match=message):
        parse_finetune(text)


def test_submit_with_a_finetune_posts_to_the_finetuned_route():
    bodies = []

    def handler(request):
        bodies.append((request.url.path, json.loads(request.content)))
        return httpx.Response(200, json={"id": JOB_ID, "polling_url": "u"})

    with client(handler) as flux:
        flux.submit("a TOK cat", "flux-2-klein-9b", finetune=FT_ID, finetune_strength=1.5, seed=3)
        flux.submit("a TOK cat", finetune=FT_ID)
    assert bodies == [
        (
            "/v1/flux-2-klein-9b-finetuned",
            {"prompt": "a TOK cat", "num_images": 1, "seed": 3, "finetune_id": FT_ID, "finetune_strength": 1.5},
        ),
        ("/v1/flux-2-klein-4b-finetuned", {"prompt": "a TOK cat", "num_images": 1, "finetune_id": FT_ID}),
    ]


# -- the CLI --------------------------------------------------------------------------------------


@pytest.fixture
def served(monkeypatch):
    """The CLI's FluxClient talks to `served.handler` (set by the test); requests are recorded."""

    class Served:
        requests: list = []
        handler = None

    def record(request):
        Served.requests.append(request)
        return Served.handler(request)

    monkeypatch.setattr(
        client_module,
        "FluxClient",
        functools.partial(client_module.FluxClient, transport=httpx.MockTransport(record), poll_interval_s=0),
    )
    return Served


def cli(*argv: str) -> int:
    return cli_main([*argv, "--url", "http://flux.test", "--key", "k"])


def test_cli_finetune_create_waits_and_prints_the_id_and_result(tmp_path, served, capsys):
    answers = iter([progress(0.5), {"id": FT_ID, "status": "Ready", "result": {"default_strength": 1.2}}])

    def handler(request):
        if request.url.path == "/v1/finetune":
            return httpx.Response(200, json={"finetune_id": FT_ID, "id": FT_ID, "polling_url": "u"})
        return httpx.Response(200, json=next(answers))

    served.handler = handler
    folder = training_folder(tmp_path)
    assert cli("finetune", "create", str(folder), "--trigger", "ZED", "--iterations", "20", "--wait") == 0
    body = json.loads(served.requests[0].content)
    assert set(zip_contents(body.pop("file_data"))) == {"a.png", "a.txt", "b.JPG", "c.webp"}
    assert body == {"finetune_comment": "set", "mode": "style", "trigger_word": "ZED", "iterations": 20}
    assert capsys.readouterr().out.splitlines() == [FT_ID, f"finetune {FT_ID} Ready (default strength 1.2)"]


def test_cli_finetune_list_show_delete(served, capsys):
    def handler(request):
        if request.url.path == "/v1/my_finetunes":
            return httpx.Response(200, json={"finetunes": [FT_ID, "b" * 32]})
        if request.url.path == "/v1/finetune_details":
            return httpx.Response(200, json={"finetune_id": FT_ID, "status": "Pending"})
        return httpx.Response(200, json={"finetune_id": FT_ID, "deleted": True})

    served.handler = handler
    assert cli("finetune", "list") == 0
    assert capsys.readouterr().out.split() == [FT_ID, "b" * 32]
    assert cli("finetune", "show", FT_ID) == 0
    assert json.loads(capsys.readouterr().out) == {"finetune_id": FT_ID, "status": "Pending"}
    assert cli("finetune", "delete", FT_ID) == 0
    assert capsys.readouterr().out.strip() == f"deleted {FT_ID}"
    assert json.loads(served.requests[-1].content) == {"finetune_id": FT_ID}


def test_cli_finetune_errors_are_the_apis_message_and_exit_1(tmp_path, served, capsys):
    served.handler = lambda request: httpx.Response(404, json={"detail": f"No finetune {FT_ID!r}"})
    assert cli("finetune", "delete", FT_ID) == 1
    assert capsys.readouterr().err.strip() == f"flux-serve finetune delete: HTTP 404: No finetune '{FT_ID}'"
    assert cli("finetune", "create", str(tmp_path / "missing")) == 1
    assert "no such folder" in capsys.readouterr().err
    assert len(served.requests) == 1  # the missing folder was found before sending


def test_cli_generate_with_a_finetune_and_strength(tmp_path, served, capsys):
    image = f"http://flux.test/v1/images/{JOB_ID}/0.png?exp=1&sig=x"

    def handler(request):
        if request.url.path.endswith("-finetuned"):
            return httpx.Response(200, json={"id": JOB_ID, "polling_url": "u"})
        if request.url.path.endswith("/events"):
            return httpx.Response(404, json={"detail": "Not Found"})
        if request.url.path == f"/v1/jobs/{JOB_ID}":
            return httpx.Response(200, json={"id": JOB_ID, "status": "Ready", "seed": 7, "images": [image]})
        return httpx.Response(200, content=b"png")

    served.handler = handler
    assert cli("generate", "a TOK cat", "--finetune", f"{FT_ID}:1.5", "--out", str(tmp_path)) == 0
    submitted = served.requests[0]
    assert submitted.url.path == "/v1/flux-2-klein-4b-finetuned"
    assert json.loads(submitted.content) == {
        "prompt": "a TOK cat",
        "num_images": 1,
        "finetune_id": FT_ID,
        "finetune_strength": 1.5,
    }
    assert (tmp_path / f"{JOB_ID}-0.png").read_bytes() == b"png"


def test_cli_refuses_a_bad_finetune_strength_before_contacting_anything(capsys):
    with pytest.raises(SystemExit):
        cli("generate", "x", "--finetune", f"{FT_ID}:strong")
    assert "must be a number" in capsys.readouterr().err
