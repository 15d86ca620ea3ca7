"""The command lines the README gives users, run as users run them: the installed console scripts
(`flux-serve`, `flux-lora`) as subprocesses, on a temporary config, database and storage, without Ray.
Each test reads what the command printed and what it left in the database or on disk, so a command that
exits 0 having done nothing, or the wrong thing, fails. Argument errors are also tried through `main(argv)`,
the same parser, to keep them fast."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from deployments.contracts import GenerationParams, ReferenceImage
from lora.adapter_file import ADAPTER_FILENAME, METADATA_KEY, read_header
from serve_apps.config import AppArgs
from serve_apps.jobs.records import JobRecord, JobStatus, Stage
from serve_apps.security.auth import ADMIN, USER, ApiKeys, hash_key, key_id
from serve_apps.store import Database
from serve_apps.store.storage import JobStore, new_job_id
from training.cli import main as flux_lora_main

SCRIPTS = Path(sys.executable).parent  # where `pip install` put flux-serve and flux-lora
DAY_S = 86_400
MODEL = "flux-2-klein-4b"
KEY_ID = "0123456789ab"
USER_KEY = "fsk_history-user"
OLD_UPLOAD, NEW_UPLOAD = "upload_" + "1" * 32, "upload_" + "2" * 32


def run_script(*argv: str | Path) -> subprocess.CompletedProcess:
    """One console script as a user types it; the exit code is the caller's to judge."""
    command = [str(SCRIPTS / str(argv[0])), *map(str, argv[1:])]
    return subprocess.run(command, capture_output=True, text=True, timeout=180, check=False)


def flux_serve(config: Path, *argv: str | Path) -> str:
    done = run_script("flux-serve", "--config", config, *argv)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def storage(tmp_path) -> Path:
    return tmp_path / "storage"


@pytest.fixture
def config(tmp_path, storage) -> Path:
    """A serve_config.yaml of the shape the repository ships, on temporary storage, keeping jobs one day."""
    args = {"storage_url": str(storage), "jobs": {"retention_days": 1}}
    path = tmp_path / "serve_config.yaml"
    path.write_text(yaml.safe_dump({"applications": [{"name": "flux", "args": args}]}))
    return path


@pytest.fixture
def database(config) -> Database:
    """The database the service itself would open for this config (the default: SQLite in the storage)."""
    args = yaml.safe_load(config.read_text())["applications"][0]["args"]
    return Database.open(AppArgs.model_validate(args).database_url)


# flux-serve keys


def created_key(config: Path, name: str, *options: str) -> str:
    """The key `keys create` prints once; its second line names the key's id."""
    key, note = flux_serve(config, "keys", "create", "--name", name, *options).splitlines()
    assert re.fullmatch(r"fsk_[A-Za-z0-9_-]{32}", key), key
    assert f"key id {key_id(hash_key(key))}" in note
    return key


def database_dump(database: Database) -> str:
    """Every row of every table, as SQL. Read through the engine: opening the SQLite file directly and
    closing it would drop this process's POSIX locks on it, and with them its view of later writes."""
    with database.keys.engine.connect() as connection:
        return "\n".join(connection.connection.driver_connection.iterdump())


def test_keys_created_by_the_cli_open_the_api_until_revoked_and_no_listing_shows_them(config, database):
    alice, root = created_key(config, "alice"), created_key(config, "root", "--admin")
    api_keys = ApiKeys(set(), stored_keys=database.keys)  # what every ingress replica checks a request's key with
    assert api_keys.role(alice) == USER and api_keys.role(root) == ADMIN
    assert api_keys.role("fsk_" + "x" * 32) is None

    stored = database_dump(database)
    assert alice not in stored and root not in stored, "the database holds only hashes"
    assert hash_key(alice) in stored

    listing = flux_serve(config, "keys", "list")
    rows = [line.split() for line in listing.splitlines()]
    assert [row[:3] for row in rows] == [
        [key_id(hash_key(alice)), "alice", "user"],
        [key_id(hash_key(root)), "root", "admin"],
    ]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", row[3]) for row in rows), listing
    assert "fsk_" not in listing and hash_key(alice) not in listing and hash_key(root) not in listing

    assert "revoked 1 key(s)" in flux_serve(config, "keys", "revoke", "alice")
    assert api_keys.role(alice) is None, "a revoked key is refused at the next request"
    assert api_keys.role(root) == ADMIN
    assert "revoked 1 key(s)" in flux_serve(config, "keys", "revoke", key_id(hash_key(root)))
    assert api_keys.role(root) is None and flux_serve(config, "keys", "list") == ""

    unknown = run_script("flux-serve", "--config", config, "keys", "revoke", "alice")
    assert unknown.returncode == 1 and "No key with id or name 'alice'" in unknown.stderr


# flux-serve retention


def finished_job(jobs, updated_at: float, references: tuple[ReferenceImage, ...] = ()) -> JobRecord:
    """A Ready job last changed at `updated_at`, written as the service writes one."""
    params = GenerationParams(prompt="p", width=64, height=64, steps=4, guidance=None, seed=1, references=references)
    record = JobRecord(id=new_job_id(), model=MODEL, key_id=KEY_ID, params=params, created_at=updated_at)
    record.status, record.stage, record.updated_at, record.images = JobStatus.READY, Stage.DONE, updated_at, ["0.png"]
    jobs.create(record)
    return record


def aged(path: Path, seconds_ago: float) -> None:
    """Retention judges stored files by their last write, as it finds them on disk or S3."""
    written = time.time() - seconds_ago
    os.utime(path, (written, written))


def stored_reference(store: JobStore, storage: Path, fill: str) -> ReferenceImage:
    """An input image stored two days ago, as a submit stores it under refs/."""
    reference = ReferenceImage(sha256=fill * 64, name=f"{fill * 64}.png", width=64, height=64)
    store.save_reference(reference.name, b"png")
    aged(storage / "refs" / reference.name, 2 * DAY_S)
    return reference


def test_retention_deletes_old_jobs_with_their_files_and_keeps_new_ones(config, database, storage):
    store, jobs, now = JobStore(str(storage)), database.jobs, time.time()
    old_input, shared_input = stored_reference(store, storage, "a"), stored_reference(store, storage, "b")
    old = finished_job(jobs, now - 2 * DAY_S, (old_input, shared_input))
    new = finished_job(jobs, now, (shared_input,))
    running = JobRecord(id=new_job_id(), model=MODEL, key_id=KEY_ID, params=new.params, created_at=old.created_at)
    jobs.create(running)
    for job in (old, new):
        store.save_image(job.id, "0.png", b"png")
    store.save_upload(KEY_ID, OLD_UPLOAD, b"old")
    aged(storage / "uploads" / KEY_ID / f"{OLD_UPLOAD}.png", 2 * DAY_S)
    store.save_upload(KEY_ID, NEW_UPLOAD, b"new")

    assert flux_serve(config, "retention", "--dry-run").startswith("1 finished job(s) older than 1 days")
    assert jobs.load(old.id) is not None and store.load_image(old.id, "0.png") == b"png", "a dry run deletes nothing"
    assert store.load_reference(old_input.name) == b"png" and store.load_upload(KEY_ID, OLD_UPLOAD) == b"old"

    assert flux_serve(config, "retention").startswith("deleted 1 finished job(s) older than 1 days")
    assert jobs.load(old.id) is None and store.load_image(old.id, "0.png") is None
    assert not (storage / "jobs" / old.id).exists()
    assert store.load_reference(old_input.name) is None, "an input image no remaining job names goes"
    assert store.load_upload(KEY_ID, OLD_UPLOAD) is None, "an upload older than retention goes"

    assert jobs.load(new.id).status == JobStatus.READY and store.load_image(new.id, "0.png") == b"png"
    assert jobs.load(running.id).status == JobStatus.PENDING, "an unfinished job stays whatever its age"
    assert store.load_reference(shared_input.name) == b"png", "an input image a kept job names stays"
    assert store.load_upload(KEY_ID, NEW_UPLOAD) == b"new"


# flux-serve history


def legacy_job_file(storage: Path, prompt: str, seed: int, key: str) -> str:
    """A job as earlier versions kept it: jobs/<id>/job.json in the storage folder."""
    job_id = new_job_id()
    request = {
        "prompt": prompt,
        "loras": [],
        "width": 128,
        "height": 64,
        "steps": 4,
        "guidance": None,
        "num_images": 2,
        "output_format": "png",
        "seed": seed,
    }
    stored = {
        "id": job_id,
        "model": MODEL,
        "key_id": key_id(hash_key(key)),
        "status": "Ready",
        "stage": "done",
        "request": request,
        "seed": seed,
        "attempts": 1,
        "created_at": 1_700_000_000.0 + seed,
        "updated_at": 1_700_000_001.0 + seed,
        "images": ["0.png", "1.png"],
        "timings_s": {"encode": 0.1, "denoise": 0.5 + seed, "total": 0.7 + seed},
        "batch": {"images": 2, "requests": 1},
        "error": None,
    }
    folder = storage / "jobs" / job_id
    folder.mkdir(parents=True)
    (folder / "job.json").write_text(json.dumps(stored))
    return job_id


def test_history_import_files_then_export_round_trips_the_records(config, database, storage, tmp_path):
    mine = legacy_job_file(storage, "a red circle", 1, USER_KEY)
    theirs = legacy_job_file(storage, "a blue square", 2, "fsk_someone-else")
    (storage / "loras").mkdir()
    (storage / "loras" / "red.json").write_text(json.dumps({"id": "red", "source": "/loras/red"}))

    assert flux_serve(config, "history", "import-files").strip() == "2 jobs, 0 skipped, 0 unreadable, 1 loras"
    assert flux_serve(config, "history", "import-files").strip() == "0 jobs, 2 skipped, 0 unreadable, 0 loras"
    assert database.adapters.load_lora("red")["source"] == "/loras/red"

    everything = tmp_path / "jobs.parquet"
    assert flux_serve(config, "history", "export", "--out", everything).strip() == f"wrote 2 job(s) to {everything}"
    rows = pq.read_table(everything).to_pylist()
    assert [row["id"] for row in rows] == [mine, theirs], "oldest first"
    assert [(row["prompt"], row["seed"], row["denoise_s"], row["total_s"]) for row in rows] == [
        ("a red circle", 1, 1.5, 1.7),
        ("a blue square", 2, 2.5, 2.7),
    ]
    assert {(row["width"], row["height"], row["num_images"], row["status"], row["encode_s"]) for row in rows} == {
        (128, 64, 2, "Ready", 0.1)
    }
    assert rows[0]["created_at"].timestamp() == 1_700_000_001.0

    only_mine = tmp_path / "mine.parquet"
    assert "wrote 1 job(s)" in flux_serve(config, "history", "export", "--out", only_mine, "--key", USER_KEY)
    assert pq.read_table(only_mine).column("id").to_pylist() == [mine]
    assert pq.read_table(only_mine).column("key_id").to_pylist() == [key_id(hash_key(USER_KEY))]


# flux-lora


@pytest.fixture
def images(tmp_path) -> Path:
    """Three captioned images, as a user's training folder holds them."""
    folder = tmp_path / "images"
    folder.mkdir()
    for colour in ("red", "green", "blue"):
        Image.new("RGB", (48, 48), colour).save(folder / f"{colour}.png")
        (folder / f"{colour}.txt").write_text(f"a {colour} square")
    return folder


def test_flux_lora_train_writes_an_adapter_that_inspect_and_read_header_read(images, tmp_path):
    out = tmp_path / "my-style"
    trained = run_script(
        "flux-lora", "train", "--model", MODEL, "--data", images, "--out", out, "--trigger-word", "mystyle",
        "--weights", "emulated:tiny", "--steps", "1", "--rank", "4", "--resolution", "32", "--batch-size", "2",
        "--device", "cpu", "--tags", "style", "person",
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr
    assert trained.stdout.splitlines()[:2] == [f"adapter: {out / ADAPTER_FILENAME}", f"model card: {out / 'README.md'}"]
    assert "mystyle" in (out / "README.md").read_text()

    header = read_header(out / ADAPTER_FILENAME)
    metadata = json.loads(header.pop("__metadata__")[METADATA_KEY])
    assert (metadata["base_model"], metadata["trigger_word"], metadata["rank"]) == (MODEL, "mystyle", 4)
    assert metadata["tags"] == ["style", "person"] and metadata["training"]["steps"] == 1
    ranks = {tuple(entry["shape"])[0] for name, entry in header.items() if name.endswith("lora_A.weight")}
    assert ranks == {4}
    modules = {name.rsplit(".lora_", 1)[0] for name in header}
    assert any(module.endswith(".attn.to_q") for module in modules), sorted(modules)

    inspected = run_script("flux-lora", "inspect", out)
    assert inspected.returncode == 0, inspected.stderr
    assert json.loads(inspected.stdout) == {
        "path": str(out / ADAPTER_FILENAME),
        "tensors": len(header),
        "rank": 4,
        "modules": len(modules),
        "base_model": MODEL,
        "trigger_word": "mystyle",
        "license": metadata["license"],
        "tags": ["style", "person"],
    }


def test_flux_lora_bad_arguments_exit_2_with_the_fix_before_loading_a_model(images, tmp_path):
    done = run_script(
        "flux-lora", "train", "--model", MODEL, "--data", images, "--out", tmp_path / "out",
        "--trigger-word", "x", "--steps", "0",
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr and "Loading" not in done.stderr
    assert "flux-lora train: error: argument --steps: 0 is not allowed; use 1 or more" in done.stderr
    assert not (tmp_path / "out").exists()


TRAIN_ARGUMENTS = ["train", "--model", MODEL, "--trigger-word", "x", "--weights", "emulated:tiny", "--device", "cpu"]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (["--rank", "0"], "argument --rank: 0 is not allowed; use 1 or more"),
        (["--batch-size", "-1"], "argument --batch-size: -1 is not allowed; use 1 or more"),
        (["--steps", "two"], "argument --steps: invalid positive_int value: 'two'"),
        (["--resolution", "60"], "argument --resolution: 60 is not allowed; use a multiple of 16"),
        (["--dtype", "fp8"], "argument --dtype: invalid choice: 'fp8'"),
        (["--model", "flux-1-dev"], "argument --model: invalid choice: 'flux-1-dev'"),
        (["--data", "no-such-folder"], "--data no-such-folder does not exist"),
    ],
)
def test_flux_lora_train_refuses_a_bad_argument_naming_it(bad, message, images, tmp_path, capsys):
    arguments = [*TRAIN_ARGUMENTS, "--data", str(images), "--out", str(tmp_path / "out"), *bad]
    with pytest.raises(SystemExit) as exit_:
        flux_lora_main(arguments)
    assert exit_.value.code == 2 and message in capsys.readouterr().err


def test_flux_lora_train_refuses_unusable_data_or_weights_naming_the_argument(tmp_path, capsys):
    uncaptioned = tmp_path / "uncaptioned"
    uncaptioned.mkdir()
    Image.new("RGB", (32, 32), "red").save(uncaptioned / "red.png")
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        flux_lora_main([*TRAIN_ARGUMENTS, "--data", str(uncaptioned), "--out", str(out)])
    assert exit_.value.code == 2 and "--data: red.png has no caption: add red.txt" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        flux_lora_main([*TRAIN_ARGUMENTS, "--data", str(uncaptioned), "--out", str(out), "--weights", "no/such/thing"])
    assert exit_.value.code == 2 and "--weights: weights 'no/such/thing' is neither" in capsys.readouterr().err
    assert not out.exists()


def test_flux_lora_inspect_of_a_file_that_is_no_adapter_exits_2_saying_so(tmp_path):
    not_an_adapter = tmp_path / "notes.txt"
    not_an_adapter.write_text("hello")
    done = run_script("flux-lora", "inspect", not_an_adapter)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert f"{not_an_adapter} is not a .safetensors adapter file" in done.stderr
