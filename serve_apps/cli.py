"""`flux-serve`: the server's commands (run, keys, plan, history, retention); `generate`, `finetune` and `telegram` are the
client's (flux_client) and are handed to `python -m flux_client` without importing it.

Every heavy import (ray, torch, the builder, the database) is made inside the command that needs it, so
`flux-serve --help` and a mistyped argument answer at once.
"""

from __future__ import annotations

import argparse
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from serve_apps.config import AppArgs

CLIENT_COMMANDS = {
    "generate": "generate images through the HTTP API and save them (same as `python -m flux_client generate`)",
    "telegram": "run the Telegram bot (configured by env; see README; needs flux-serve[bot])",
    "finetune": "train, list, show and delete finetunes through the HTTP API (same as `python -m flux_client finetune`)",
    "rerun": "make a job again and say whether its images match (same as `python -m flux_client rerun`)",
}
DEV_KEY_FILE = Path(os.environ.get("FLUX_SERVE_KEY_FILE", Path.home() / ".config" / "flux-serve" / "api-key"))
RAY_TOKEN_FILE = Path.home() / ".ray" / "auth_token"


def local_api_key() -> str:
    """FLUX_API_KEYS' first key, or a key generated once for this machine and kept in DEV_KEY_FILE."""
    from serve_apps.security.auth import KEYS_ENV

    configured = [key.strip() for key in os.environ.get(KEYS_ENV, "").split(",") if key.strip()]
    if configured:
        return configured[0]
    if DEV_KEY_FILE.exists():
        key = DEV_KEY_FILE.read_text().strip()
    else:
        key = "fsk_" + secrets.token_urlsafe(24)
        DEV_KEY_FILE.parent.mkdir(parents=True, exist_ok=True)
        DEV_KEY_FILE.write_text(key + "\n")
        DEV_KEY_FILE.chmod(0o600)
    os.environ[KEYS_ENV] = key
    return key


def logical_gpus_needed(applications: list[dict]) -> int:
    """Enough logical GPUs for every replica at its max, so placement is really scheduled."""
    from serve_apps.builder import validate_args

    total = 0.0
    for application in applications:
        args = validate_args(application.get("args", {}))
        total += sum(m.num_gpus * m.autoscaling.max_replicas for m in args.models.values())
        families = {args.spec(model).text_encoder.family for model in args.models}
        total += args.encoder.num_gpus * args.encoder.autoscaling.max_replicas * len(families)
        if args.training.enabled:
            total += args.training.num_gpus  # one training at a time beside the models
    return max(1, math.ceil(total))


class StopRequested(Exception):
    """SIGTERM or SIGINT (Ctrl-C) asked `flux-serve run` to stop."""


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals() -> None:
    """From now on SIGTERM and SIGINT raise StopRequested in the main thread, wherever it is (starting or serving).
    Called again right after ray.init, which puts its own SIGTERM handler in place (a SystemExit(15)) and, under
    it, absl's failure handler of Ray's core worker."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, request_stop)


def request_stop(signum: int, _frame) -> NoReturn:
    ignore_stop_signals()
    raise StopRequested(signal.Signals(signum).name)


def ignore_stop_signals() -> None:
    """A second Ctrl-C or SIGTERM while stopping changes nothing. And absl's failure handler, if a SIGTERM reached it
    (during ray.init), armed a 3 s alarm that aborts the process (SIGABRT, exit 134): a stop takes longer, so it is
    cancelled."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    signal.alarm(0)


def run(config_path: Path, num_gpus: int | None) -> NoReturn:
    """Serve until SIGTERM or Ctrl-C, then stop in order and exit 0, whenever the signal comes (even mid-start)."""
    stop_on_signals()
    try:
        serve_until_stopped(config_path, num_gpus)
    except StopRequested as stop:
        reason = str(stop)
    except SystemExit as exit_request:
        if exit_request.code != signal.SIGTERM:
            raise
        reason = "SIGTERM"  # during ray.init, whose own handler turns it into SystemExit(15)
    stop_in_order(reason, config_path)


def serve_until_stopped(config_path: Path, num_gpus: int | None) -> NoReturn:
    import ray
    import torch
    import yaml
    from ray import serve

    from serve_apps.builder import build_app
    from serve_apps.security.auth import KEYS_ENV

    config = yaml.safe_load(config_path.read_text())
    applications = config["applications"]
    key = local_api_key()
    physical_gpus = torch.cuda.device_count()
    gpus = physical_gpus or num_gpus or logical_gpus_needed(applications)
    http = config.get("http_options", {})
    host, port = http.get("host", "127.0.0.1"), int(http.get("port", 8000))

    context = ray.init(num_gpus=gpus, dashboard_host="127.0.0.1", include_dashboard=True)
    stop_on_signals()
    serve.start(http_options={"host": host, "port": port})
    for application in applications:
        serve.run(
            build_app(application.get("args", {})),
            name=application["name"],
            route_prefix=application.get("route_prefix", "/"),
            blocking=False,
        )
    base = f"http://{host}:{port}"
    kind = "physical" if physical_gpus else "logical (emulated; models run on the CPU)"
    print(
        f"""
flux-serve is up.
  API:        {base}   (docs: {base}/docs)
  API key:    {key}   (send as x-key; set {KEYS_ENV} to choose your own)
  GPUs:       {gpus} {kind}
  Dashboard:  http://{context.dashboard_url}   (token: `ray get-auth-token`, or the file {RAY_TOKEN_FILE})

Try:
  curl -s -X POST {base}/v1/flux-2-klein-4b -H "x-key: {key}" -H "Content-Type: application/json" \\
       -d '{{"prompt": "a red circle on a blue background"}}'
Ctrl-C (or SIGTERM) stops it.""",
        flush=True,
    )
    while True:
        time.sleep(3600)  # a stop signal raises out of the sleep


def stop_in_order(reason: str, config_path: Path) -> NoReturn:
    """Serve first (its proxies take no new request; its replicas end, the ingress before the model workers),
    then Ray, then exit 0 at once.

    Jobs in flight stay Pending in the database with their lease: the next start's orphan sweeper adopts them
    once their heartbeat is jobs.stale_after_s old, and runs them again. `os._exit` skips the interpreter's own
    teardown: nothing is left to run, and threads Ray's libraries started could still be running there."""
    ignore_stop_signals()
    print(f"\n{reason}: stopping flux-serve (a second signal is ignored).", flush=True)
    import ray
    from ray import serve

    exit_code = 0
    if ray.is_initialized():
        try:
            serve.shutdown()
        except Exception as error:  # Ray's shutdown below still ends every replica, only not in order
            print(f"Serve did not stop in order ({error!r}); stopping Ray anyway.", file=sys.stderr, flush=True)
            exit_code = 1
    ray.shutdown()
    print(f"flux-serve stopped.{pending_jobs_note(config_path)}", flush=True)
    sys.stderr.flush()
    os._exit(exit_code)


def pending_jobs_note(config_path: Path) -> str:
    """What the next start will find: the jobs left Pending (in flight when Serve stopped), which it adopts."""
    from serve_apps.store import Database

    try:
        args = app_args_from(config_path)
        pending = Database.open(args.database_url).jobs.count_pending()
    except Exception as error:
        return f" (the jobs left Pending could not be counted: {error})"
    if not pending:
        return ""
    return (
        f" {pending} job(s) left Pending: the next start adopts and runs them once their heartbeat is"
        f" jobs.stale_after_s ({args.jobs.stale_after_s:g} s) old."
    )


def app_args_from(config_path: Path) -> AppArgs:
    """The validated args of the config's first application (without importing the builder, and so Ray,
    unless they are invalid: its ConfigError words the problems)."""
    import yaml
    from pydantic import ValidationError

    from serve_apps.config import AppArgs

    if not config_path.exists():
        sys.exit(f"{config_path} not found: run from the project folder or pass --config PATH.")
    args = yaml.safe_load(config_path.read_text())["applications"][0].get("args", {})
    try:
        return AppArgs.model_validate(args or {})
    except ValidationError:
        from serve_apps.builder import ConfigError, validate_args

        try:
            return validate_args(args)
        except ConfigError as error:
            sys.exit(str(error))


def keys_command(options) -> None:
    """Keys live in the database (hashes only), so every replica sees a new or revoked key at once."""
    from serve_apps.security.auth import ADMIN, USER, hash_key, key_id
    from serve_apps.store import Database

    keys = Database.open(app_args_from(options.config).database_url).keys
    if options.keys_command == "create":
        key = "fsk_" + secrets.token_urlsafe(24)
        keys.add_key(hash_key(key), options.name, ADMIN if options.admin else USER)
        print(f"{key}\n(key id {key_id(hash_key(key))}; shown once: only its hash is kept)")
    elif options.keys_command == "list":
        for entry in keys.list_keys():
            created = datetime.fromtimestamp(entry["created_at"], timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            print(f"{key_id(entry['hash'])}  {entry['name']:<20} {entry['role']:<6} {created}")
    else:
        revoked = keys.revoke_key(options.key_id)
        if not revoked:
            sys.exit(f"No key with id or name {options.key_id!r}; see `flux-serve keys list`.")
        print(f"revoked {revoked} key(s); every replica refuses them from the next request")


def history_command(options) -> None:
    from serve_apps.store import Database
    from serve_apps.store.storage import JobStore

    args = app_args_from(options.config)
    db = Database.open(args.database_url)
    if options.history_command == "import-files":
        from serve_apps.store.legacy_import import import_files

        counts = import_files(JobStore(args.storage_url, args.storage_options), db)
        print(", ".join(f"{count} {what}" for what, count in counts.items()))
        return
    from serve_apps.jobs.history import export_history
    from serve_apps.security.auth import hash_key, key_id

    count = export_history(db.jobs, options.out, key_id(hash_key(options.key)) if options.key else None)
    print(f"wrote {count} job(s) to {options.out}")


def retention_command(options) -> None:
    from serve_apps.jobs.retention import apply_retention, expired
    from serve_apps.store import Database
    from serve_apps.store.storage import JobStore

    args = app_args_from(options.config)
    jobs, days = Database.open(args.database_url).jobs, args.jobs.retention_days
    if options.dry_run:
        print(f"{len(expired(jobs, days))} finished job(s) older than {days:g} days would be deleted")
        return
    count = apply_retention(jobs, JobStore(args.storage_url, args.storage_options), days)
    print(f"deleted {count} finished job(s) older than {days:g} days, with their images")


def hand_to_client(arguments: list[str]) -> NoReturn:
    """Run `python -m flux_client ARGUMENTS` in this process's place (same interpreter, exit code and signals;
    the server never imports the client)."""
    command = [sys.executable, "-m", "flux_client", *arguments]
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "nt":  # no exec on Windows: a child, and its exit code
        sys.exit(subprocess.call(command))
    os.execv(sys.executable, command)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="flux-serve", description="Self-hosted FLUX.2 [klein] on Ray Serve")
    parser.add_argument("--config", type=Path, default=Path("serve_config.yaml"))
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="start a local Ray and serve serve_config.yaml")
    run_parser.add_argument("--num-gpus", type=int, default=None, help="logical GPUs when none is physical")
    keys_parser = commands.add_parser("keys", help="manage API keys in the database (hashes only)")
    key_commands = keys_parser.add_subparsers(dest="keys_command", required=True)
    create_parser = key_commands.add_parser("create", help="make a key and print it once")
    create_parser.add_argument("--name", required=True)
    create_parser.add_argument("--admin", action="store_true", help="may also manage every key's LoRA adapters")
    key_commands.add_parser("list", help="key ids, names and dates")
    key_commands.add_parser("revoke", help="remove a key by id or name").add_argument("key_id")
    plan_parser = commands.add_parser("plan", help="which models fit on which GPUs, from real memory needs")
    plan_parser.add_argument("--gpus", required=True, help="e.g. 1x24GB or 2x80GB")
    plan_parser.add_argument("--models", nargs="*", help="default: the config's models")
    history_parser = commands.add_parser("history", help="job history")
    history_commands = history_parser.add_subparsers(dest="history_command", required=True)
    export_parser = history_commands.add_parser("export", help="write job records to Parquet")
    export_parser.add_argument("--out", type=Path, required=True)
    export_parser.add_argument("--key", help="only this API key's jobs")
    retention_parser = commands.add_parser("retention", help="delete finished jobs older than jobs.retention_days")
    retention_parser.add_argument("--dry-run", action="store_true", help="only count what would be deleted")
    history_commands.add_parser(
        "import-files", help="copy job records kept as files by earlier versions into the database (the files stay)"
    )
    for name, help_text in CLIENT_COMMANDS.items():
        commands.add_parser(name, help=help_text, add_help=False)  # its arguments are the client CLI's to parse
    options, client_arguments = parser.parse_known_args(argv)
    if options.command in CLIENT_COMMANDS:
        hand_to_client([options.command, *client_arguments])
    if client_arguments:
        parser.error(f"unrecognized arguments: {' '.join(client_arguments)}")
    if options.command == "run":
        app_args_from(options.config)
        run(options.config, options.num_gpus)
    elif options.command == "keys":
        keys_command(options)
    elif options.command == "plan":
        from serve_apps.plan import PlanError, make_plan, render

        if options.models:
            models = options.models
        else:
            app_args = app_args_from(options.config)
            models = [app_args.spec(name) for name in app_args.models]  # served names of the operator's own too
        try:
            print(render(make_plan(models, options.gpus)))
        except PlanError as error:
            sys.exit(str(error))
    elif options.command == "retention":
        retention_command(options)
    else:
        history_command(options)


if __name__ == "__main__":
    main()
