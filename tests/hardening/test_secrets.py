# ruff: noqa: F811  (fixtures imported from intake_fixtures are used as parameters)
"""Secrets never leave: after driving every route — good requests, bad ones, requests that
carry a secret in the wrong place, a diagnosis over SSH with the key, a failing one — no bot
token, signing secret, app token, webhook token or SSH private key shows up in the logs, the
audit rows, what reached the Slack stand-in, or any HTTP answer."""

from __future__ import annotations

import logging

from helpers.signers import AgentSigner, SlackSigner
from intake_fixtures import _sns_keys, payload, sns_cert_server  # noqa: F401


def private_key_pieces(path) -> list[str]:
    """Lines of the key's base64 body: any one of them in the open is a leak."""
    lines = path.read_text().splitlines()
    return [line for line in lines if line and not line.startswith("-----") and len(line) > 20]


async def test_no_secret_reaches_logs_audit_slack_or_answers(
    hostile, slack_signer, agent_signer, sshd
):
    APP_TOKEN = hostile.services.secrets.slack_app_token  # noqa: N806
    assert APP_TOKEN
    secrets = {
        "SLACK_BOT_TOKEN": hostile.slack.token,
        "SLACK_SIGNING_SECRET": slack_signer.secret,
        "SLACK_APP_TOKEN": APP_TOKEN,
        "STABILIZE_WEBHOOK_TOKEN": agent_signer.token,
    }
    for n, piece in enumerate(private_key_pieces(sshd.key_path)):
        secrets[f"ssh key line {n}"] = piece
    answers: list[str] = []

    async def post(route, body, headers=None, method="POST"):
        status, text = await hostile.post(route, body, headers or {}, method=method)
        answers.append(text)
        return status

    token = agent_signer.token
    # Good requests on every route: an alert that opens an incident (→ diagnosis over SSH).
    assert await post("/alerts/agent", *agent_signer.sign(agent_signer.alert())) == 200
    am = payload("alertmanager_group.json")
    bearer = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    assert await post("/alerts/alertmanager", am, bearer) == 200
    signer = hostile.certs.signer
    sns_ok = signer.sign(signer.notification(payload("cloudwatch_cpu_alarm.json")))
    assert await post("/alerts/sns", sns_ok, {"Content-Type": "application/json"}) == 200
    for text in ("help", "audit", "run add-swap prod-web-01 size=2G", "prod-web-01"):
        body = slack_signer.slash_command(text)
        assert await post("/slack/events", body, slack_signer.headers(body)) == 200
    await post("/healthz", b"", method="GET")
    await post("/metrics", b"", method="GET")

    # Bad requests: near-miss credentials, refusals, a diagnosis that fails.
    near = token[:-1] + ("x" if token[-1] != "x" else "y")
    await post("/alerts/alertmanager", am, {**bearer, "Authorization": f"Bearer {near}"})
    await post("/alerts/alertmanager", am, {**bearer, "Authorization": f"Basic {token}"})
    await post("/alerts/agent", *AgentSigner(near).sign(agent_signer.alert()))
    body = slack_signer.slash_command("help")
    wrong = SlackSigner(slack_signer.secret[::-1], response_url=lambda: "http://127.0.0.1:9/")
    await post("/slack/events", body, wrong.headers(body))
    await post("/slack/events", body, {**slack_signer.headers(body), "X-Slack-Signature": near})
    await post("/alerts/sns", {**sns_ok, "Signature": near}, {"Content-Type": "application/json"})
    body = slack_signer.slash_command("run add-swap prod-web-01 size=1T")
    await post("/slack/events", body, slack_signer.headers(body))
    await post("/alerts/agent", *agent_signer.sign(agent_signer.alert(host="nowhere-01")))
    await hostile.settle()
    # The diagnosis really went over SSH with the key.
    assert sshd.connections() >= 1

    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    places = {
        "logs": [formatter.format(r) for r in hostile.log_records],
        "audit rows": [str(row) for row in hostile.services.audit.list()],
        "Slack calls": [f"{c.method} {c.args} {c.raw!r}" for c in hostile.slack.calls()],
        "HTTP answers": answers,
        "outbox": [str(r) for r in hostile.services.db.query("SELECT * FROM outbox")],
    }
    assert all(places.values()), {k: len(v) for k, v in places.items()}
    leaks = [
        f"{name} found in {place}: {text[:300]!r}"
        for place, texts in places.items()
        for text in texts
        for name, secret in secrets.items()
        if secret in text
    ]
    assert not leaks, "\n".join(leaks[:20])


async def test_a_secret_typed_where_it_does_not_belong_is_scrubbed_from_the_audit_detail(
    hostile, slack_signer, agent_signer
):
    """Somebody pastes a token into a command: the refusal is audited without it."""
    secrets = [hostile.slack.token, slack_signer.secret, agent_signer.token]
    for secret in secrets:
        for text in (
            f"run add-swap prod-web-01 size={secret}",
            f"run add-swap prod-web-01 {secret}",
        ):
            body = slack_signer.slash_command(text)
            status, _ = await hostile.post("/slack/events", body, slack_signer.headers(body))
            assert status == 200
        bad = {**agent_signer.alert(), "kind": secret}
        status, _ = await hostile.post("/alerts/agent", *agent_signer.sign(bad))
        assert status == 400
    await hostile.settle()
    rows = hostile.services.audit.list(action="input.rejected")
    assert len(rows) >= 3 * len(secrets)
    leaks = [(s[:6], r["detail"]) for r in rows for s in secrets if s in r["detail"]]
    assert not leaks, leaks
    assert hostile.services.audit.verify().ok
