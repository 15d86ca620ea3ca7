"""The CLI and the bot without a server: option parsing, the CLI's refusals before any request, the bot's
config and keyboards. No Ray here."""

from __future__ import annotations

import sys

import pytest

from flux_client import config as client_config
from flux_client.bot_config import BotConfig, ConfigError
from flux_client.bot_keyboards import Buttons, apply_setting, parse_callback, settings_keyboard
from flux_client.bot_options import ChatSettings, OptionError, parse_prompt, repeat_job, resolve_model
from flux_client.bot_signing import CallbackSigner
from flux_client.cli import main as cli_main
from flux_client.options import parse_lora

JOB_ID = "a" * 32
MODELS = ["flux-2-klein-4b", "flux-2-klein-9b"]


@pytest.mark.parametrize(
    ("text", "parsed"), [("style", ("style", 1.0)), ("style:0.8", ("style", 0.8)), ("my:style:-1", ("my:style", -1.0))]
)
def test_parse_lora(text, parsed):
    assert parse_lora(text) == parsed


@pytest.mark.parametrize("text", [":0.5", "style:strong"])
def test_parse_lora_refuses_with_the_right_form(text):
    with pytest.raises(ValueError, match=r"ID:SCALE|must be a number"):
        parse_lora(text)


def test_cli_refuses_a_bad_lora_before_contacting_anything(capsys):
    with pytest.raises(SystemExit) as exit_code:
        cli_main(["generate", "x", "--lora", "style:strong", "--url", "http://127.0.0.1:9"])
    assert exit_code.value.code == 2 and "must be a number, e.g. style:0.8" in capsys.readouterr().err


def test_cli_reports_an_unreachable_service_and_exits_1(capsys):
    assert cli_main(["generate", "x", "--url", "http://127.0.0.1:9", "--key", "k"]) == 1
    assert "cannot reach the flux-serve API at http://127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("images", "message"),
    [(["missing.png"], "--image missing.png: no such file"), (["a.png"] * 5, "at most 4 --image per job; got 5.")],
)
def test_cli_refuses_bad_input_images_before_contacting_anything(tmp_path, monkeypatch, capsys, images, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.png").write_bytes(b"png")
    arguments = [part for image in images for part in ("--image", image)]
    assert cli_main(["generate", "x", *arguments, "--url", "http://127.0.0.1:9", "--key", "k"]) == 1
    err = capsys.readouterr().err
    assert message in err and "cannot reach" not in err


def test_the_bot_without_aiogram_says_which_extra_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "aiogram", None)  # what an install without the [bot] extra looks like
    for module in ("flux_client.telegram_bot", "flux_client.bot_jobs", "flux_client.bot_keyboards"):
        monkeypatch.delitem(sys.modules, module, raising=False)
    assert cli_main(["telegram"]) == 1
    assert capsys.readouterr().err.strip() == (
        "flux-serve telegram: the Telegram bot needs aiogram, which is not installed: pip install 'flux-serve[bot]'"
    )


def test_url_and_key_come_from_flags_then_env_then_the_local_key_file(tmp_path, monkeypatch):
    key_file = tmp_path / "api-key"
    key_file.write_text("file-key\n")
    monkeypatch.setenv("FLUX_SERVE_KEY_FILE", str(key_file))
    monkeypatch.delenv("FLUX_API_KEY", raising=False)
    monkeypatch.delenv("FLUX_API_URL", raising=False)
    assert client_config.api_key() == "file-key" and client_config.api_url() == "http://127.0.0.1:8000"
    monkeypatch.setenv("FLUX_API_KEY", "env-key")
    monkeypatch.setenv("FLUX_API_URL", "http://gpu-box:8000")
    assert client_config.api_key() == "env-key" and client_config.api_url() == "http://gpu-box:8000"
    assert client_config.api_key("flag-key") == "flag-key" and client_config.api_url("http://x") == "http://x"


# -- the bot's options, buttons and config -------------------------------------------------------


def test_gen_options_anywhere_over_the_chat_settings():
    settings = ChatSettings(model="flux-2-klein-9b", aspect_ratio="4:3", num_images=2)
    parsed = parse_prompt("a fox --n 4 in snow --seed=7 --lora mystyle:0.8 --lora other", settings)
    assert parsed.prompt == "a fox in snow" and parsed.num_images == 4 and parsed.seed == 7
    assert parsed.loras == [("mystyle", 0.8), ("other", 1.0)]
    assert (parsed.model, parsed.aspect_ratio) == ("flux-2-klein-9b", "4:3"), "settings fill what is not given"
    assert parse_prompt("a fox \u2014ar 16:9 \u2014model 4b", settings).aspect_ratio == "16:9", "phones' dashes"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a fox --size 3", "Unknown option --size"),
        ("a fox --n", "--n needs a value, e.g. --n 4"),
        ("a fox --seed seven", "--seed needs a whole number"),
        ("--n 2", "Write a prompt too"),
    ],
)
def test_gen_option_errors_show_the_right_form(text, message):
    with pytest.raises(OptionError, match=message):
        parse_prompt(text, ChatSettings())


def test_model_short_names_resolve_against_the_served_models():
    assert resolve_model("9b", MODELS) == "flux-2-klein-9b"
    assert resolve_model("flux-2-klein-4b", MODELS) == "flux-2-klein-4b"
    assert resolve_model("b", MODELS) == "b", "ambiguous or unknown: the API names the choices"


def test_again_draws_a_new_seed_and_more_continues_the_seed_series():
    past = {
        "model": "flux-2-klein-9b",
        "seed": 10,
        "request": {
            "prompt": "a fox",
            "num_images": 2,
            "width": 64,
            "height": 64,
            "steps": 4,
            "loras": [{"id": "s", "scale": 0.5}],
        },
    }
    again, more = repeat_job(past, same_seed=False), repeat_job(past, same_seed=True)
    assert (again.seed, again.num_images, again.model, again.loras) == (None, 2, "flux-2-klein-9b", [("s", 0.5)])
    assert (more.seed, more.num_images) == (12, 4)


SIGNER = CallbackSigner.for_token("123:abc-DEF")
CHAT = -100987


def test_buttons_fit_telegrams_64_bytes_and_unknown_data_is_ignored():
    keyboard = settings_keyboard(ChatSettings(), MODELS, Buttons(SIGNER, CHAT))
    assert all(len(b.callback_data.encode()) <= 64 for row in keyboard.inline_keyboard for b in row)
    assert keyboard.inline_keyboard[0][0].text == "\u2713 4b", "the current model is ticked"
    assert parse_callback(SIGNER.sign(CHAT, f"again:{JOB_ID}"), SIGNER, CHAT) == ("again", JOB_ID)
    assert parse_callback(SIGNER.sign(CHAT, "rm -rf"), SIGNER, CHAT) == ("", "")
    assert parse_callback(None, SIGNER, CHAT) == ("", "")
    settings = ChatSettings()
    assert apply_setting(settings, "n=4") == "images per prompt: 4" and settings.num_images == 4
    with pytest.raises(ValueError):
        apply_setting(settings, "n=1000")


def test_bot_config_from_env(monkeypatch):
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    for name in ("TELEGRAM_WEBHOOK_URL", "TELEGRAM_WEBHOOK_SECRET", "TELEGRAM_JOBS_PER_MINUTE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigError, match="@BotFather"):
        BotConfig.from_env()
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc-DEF")
    monkeypatch.setenv("TELEGRAM_ALLOWED_CHATS", "12, -100987")
    monkeypatch.setenv("TELEGRAM_API_URL", "http://127.0.0.1:8081")
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "s3cret")
    config = BotConfig.from_env(webhook_url="https://bot.example/hook")
    assert config.allowed_chats == {12, -100987} and config.allows(12) and not config.allows(13)
    assert config.telegram_api_url == "http://127.0.0.1:8081" and config.webhook_url == "https://bot.example/hook"
    monkeypatch.setenv("TELEGRAM_ALLOWED_CHATS", "12,me")
    with pytest.raises(ConfigError, match="TELEGRAM_ALLOWED_CHATS has 'me'"):
        BotConfig.from_env()
    monkeypatch.setenv("TELEGRAM_ALLOWED_CHATS", "*")
    assert BotConfig.from_env().allows(99), "*: anyone, said explicitly"
    monkeypatch.setenv("TELEGRAM_JOBS_PER_MINUTE", "3")
    assert BotConfig.from_env().jobs_per_minute == 3


@pytest.mark.parametrize("chats", [None, "", " , "])
def test_bot_config_refuses_an_unset_allow_list_and_says_how_to_allow_anyone(monkeypatch, chats):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc-DEF")
    if chats is None:
        monkeypatch.delenv("TELEGRAM_ALLOWED_CHATS", raising=False)
    else:
        monkeypatch.setenv("TELEGRAM_ALLOWED_CHATS", chats)
    with pytest.raises(
        ConfigError, match=r"TELEGRAM_ALLOWED_CHATS is not set: list the chat ids .* TELEGRAM_ALLOWED_CHATS=\*"
    ):
        BotConfig.from_env()
    with pytest.raises(ConfigError, match="allow_anyone=True"):
        BotConfig(token="123:abc-DEF")


def test_webhook_mode_refuses_to_start_without_a_secret_and_says_how_to_make_one(monkeypatch):
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", "123:abc-DEF")
    monkeypatch.setenv("TELEGRAM_ALLOWED_CHATS", "12")
    monkeypatch.delenv("TELEGRAM_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("TELEGRAM_WEBHOOK_URL", "https://bot.example/hook")
    with pytest.raises(ConfigError, match=r"TELEGRAM_WEBHOOK_SECRET is not set: .*secrets.token_urlsafe"):
        BotConfig.from_env()
    with pytest.raises(ConfigError, match="TELEGRAM_WEBHOOK_SECRET is not set"):
        BotConfig(token="123:abc-DEF", allowed_chats=frozenset({12}), webhook_url="https://bot.example/hook")
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "not a valid secret!")
    with pytest.raises(ConfigError, match="1-256 letters, digits, _ or -"):
        BotConfig.from_env()
    monkeypatch.setenv("TELEGRAM_WEBHOOK_SECRET", "s3cret-token")
    assert BotConfig.from_env().webhook_secret == "s3cret-token"
    monkeypatch.delenv("TELEGRAM_WEBHOOK_URL")
    monkeypatch.delenv("TELEGRAM_WEBHOOK_SECRET")
    assert BotConfig.from_env().webhook_url is None, "long polling needs no secret"
