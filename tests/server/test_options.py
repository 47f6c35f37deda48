"""The option table is the one definition of `fastredis serve`'s options: the command
line, `Settings` and docs/guides/options.md all follow it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from fastredis.cli import build_parser
from fastredis.server.run.options import OPTIONS, Option, add_arguments, reference
from fastredis.server.run.settings import Settings

PAGE = Path(__file__).resolve().parents[2] / "docs" / "guides" / "options.md"


def test_the_reference_page_is_made_from_the_table() -> None:
    assert PAGE.read_text("utf-8") == reference(), (
        "docs/guides/options.md is out of date: "
        "python -m fastredis.server.run.options > docs/guides/options.md"
    )


def test_every_option_is_on_the_command_line_and_the_page() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {s for action in parser._actions for s in action.option_strings} - {"-h", "--help"}
    assert flags == {opt.flag for opt in OPTIONS}
    page = PAGE.read_text("utf-8")
    for opt in OPTIONS:
        assert f"`{opt.flag}`" in page
        if opt.env:
            assert f"`{opt.env}`" in page


def test_settings_take_their_defaults_from_the_table() -> None:
    settings = Settings()
    for opt in OPTIONS:
        if opt.setting:
            expected = list(opt.default) if opt.many else opt.default
            assert getattr(settings, opt.setting) == expected, opt.flag
            assert getattr(Settings.from_env({}), opt.setting) == expected, opt.flag


SAMPLES = {
    "--redis-url": ("redis://a:1/0", "redis://b:2/0"),
    "--forwarded-allow-ips": ("10.0.0.1", "10.0.0.0/8,192.168.1.1"),
    "--root-path": ("/a", "/b/c"),
    "--offsets": ("end", "start"),
    "--splice-pulls": ("off", "on"),
    "--producer-ttl": ("90", "0.5"),
    "--drain-seconds": ("2.5", "0"),
}
NEEDS = {"--ssl-keyfile": {"FASTREDIS_SSL_CERTFILE": "/cert.pem"}}  # a key needs its cert


@pytest.mark.parametrize("opt", [o for o in OPTIONS if o.env], ids=lambda o: o.flag)
def test_flag_beats_environment_beats_default(opt: Option) -> None:
    assert opt.setting and opt.env
    numeric = opt.kind.name.startswith(("integer", "size"))
    from_env, from_flag = SAMPLES.get(opt.flag, ("12", "13") if numeric else ("e1", "f1"))

    def value(text: str) -> object:
        return [text] if opt.many else opt.kind.parse(text)

    env = {opt.env: from_env, **NEEDS.get(opt.flag, {})}
    assert getattr(Settings.from_env(env), opt.setting) == value(from_env)
    unset = build_parser().parse_args(["serve"])
    assert getattr(unset, opt.dest) is None  # so the environment, then the default, decide
    given = getattr(build_parser().parse_args(["serve", opt.flag, from_flag]), opt.dest)
    settings = Settings.from_env(env, **{opt.setting: given})
    assert getattr(settings, opt.setting) == value(from_flag)


def test_a_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ValueError, match="FASTREDIS_MAX_SOCKETS: not an integer: 'lots'"):
        Settings.from_env({"FASTREDIS_MAX_SOCKETS": "lots"})
    with pytest.raises(ValueError, match="FASTREDIS_MAX_HEADER_SIZE: not a size in bytes"):
        Settings.from_env({"FASTREDIS_MAX_HEADER_SIZE": "big"})
    assert Settings.from_env({"FASTREDIS_API_KEYS": " a, ,b "}).api_keys == ["a", "b"]
    with pytest.raises(ValueError, match="FASTREDIS_FORWARDED_ALLOW_IPS: not an IP address"):
        Settings.from_env({"FASTREDIS_FORWARDED_ALLOW_IPS": "10.0.0.1,proxy.local"})
    with pytest.raises(ValueError, match="FASTREDIS_ROOT_PATH: a root path looks like"):
        Settings.from_env({"FASTREDIS_ROOT_PATH": "fastredis"})
    assert Settings.from_env({"FASTREDIS_ROOT_PATH": "/fastredis/"}).root_path == "/fastredis"
