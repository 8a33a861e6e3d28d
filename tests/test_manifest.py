"""`stabilize manifest`: a Slack app manifest with only what the bot needs."""

from __future__ import annotations

import yaml
from click.testing import CliRunner

from commands.cli import main


def run(*args: str):
    return CliRunner().invoke(main, ["manifest", *args])


def test_default_manifest_parses_and_asks_for_the_minimum():
    result = run()
    assert result.exit_code == 0, result.output
    data = yaml.safe_load(result.output)
    assert data["oauth_config"]["scopes"] == {
        "bot": [
            "commands",
            "chat:write",
            "chat:write.public",
            # The outbox's duplicate check after a crash reads the channel's history.
            "channels:history",
            "groups:history",
        ]
    }
    [command] = data["features"]["slash_commands"]
    assert command["command"] == "/stabilize"
    assert command["url"].endswith("/slack/events")
    settings = data["settings"]
    assert settings["socket_mode_enabled"] is False
    assert settings["interactivity"] == {"is_enabled": True, "request_url": command["url"]}
    assert "event_subscriptions" not in settings  # no events: nothing to subscribe to
    assert "user" not in data["oauth_config"]["scopes"]


def test_url_variant_points_slack_at_our_events_route():
    data = yaml.safe_load(run("--url", "https://bot.example.org").output)
    url = "https://bot.example.org/slack/events"
    assert data["features"]["slash_commands"][0]["url"] == url
    assert data["settings"]["interactivity"]["request_url"] == url
    again = yaml.safe_load(run("--url", "https://bot.example.org/x/slack/events/").output)
    assert (
        again["settings"]["interactivity"]["request_url"]
        == "https://bot.example.org/x/slack/events"
    )


def test_socket_mode_variant_has_no_urls():
    data = yaml.safe_load(run("--socket-mode").output)
    assert data["settings"]["socket_mode_enabled"] is True
    assert "url" not in data["features"]["slash_commands"][0]
    assert data["settings"]["interactivity"] == {"is_enabled": True}
    assert "https://" not in run("--socket-mode").output


def test_bad_urls_are_one_line_exit_2():
    for url in ("http://bot.example.org", "bot.example.org", "https://", "https://x.org/?a=1"):
        result = run("--url", url)
        assert result.exit_code == 2
        assert result.output.startswith("error: --url must")
        assert result.output.count("\n") == 1
    result = run("--socket-mode", "--url", "https://bot.example.org")
    assert result.exit_code == 2 and "exclude each other" in result.output
