# ruff: noqa: F811  (fixtures imported from intake_fixtures are used as parameters)
"""/alerts/sns: CloudWatch alarms over SNS, verified like AWS documents, or refused."""

from __future__ import annotations

import json
import re

import boto3
import pytest
from intake_fixtures import (  # noqa: F401
    TOPIC,
    _sns_keys,
    diagnoses,
    payload,
    sns_cert_server,
    start_bot,
    top_level,
    until,
)


@pytest.fixture
async def sns_bot(tmp_path, slack_api, settings_factory, sns_cert_server, diagnoses):
    settings = settings_factory(
        sns={
            "topics": [TOPIC],
            "cert_url_pattern": "^" + re.escape(sns_cert_server.signer.base_url) + "/",
        },
        hosts={
            "prod-web-01": {"instance_id": "i-0123456789abcdef0"},
            "web-7": {"instance_id": "i-0abcdef0123456789", "asg": "web-asg"},
        },
    )
    server, runner = await start_bot(tmp_path, slack_api, settings)
    try:
        yield server
    finally:
        await server.session.close()
        await runner.cleanup()
        server.services.close()


def alarm(name: str = "cloudwatch_cpu_alarm.json", **changes):
    return {**payload(name), **changes}


@pytest.mark.parametrize("version", ["1", "2"])
@pytest.mark.parametrize("subject", ['ALARM: "prod-web-01 high CPU" in US East', None])
async def test_a_signed_alarm_opens_an_incident_for_the_inventory_host(
    sns_bot, sns_cert_server, slack_api, version, subject
):
    signer = sns_cert_server.signer
    message = signer.sign(signer.notification(alarm(), subject=subject), version=version)
    status, answer = await sns_bot.post("/alerts/sns", message)
    assert status == 200, answer
    [incident] = sns_bot.incidents()
    assert (incident["host"], incident["alarm"]) == ("prod-web-01", "prod-web-01 high CPU")
    [message_posted] = await until(lambda: top_level(slack_api))
    assert "prod-web-01 high CPU on prod-web-01" in message_posted["text"]
    assert "Threshold Crossed" in json.dumps(message_posted["blocks"])


async def test_ok_resolves_and_the_certificate_is_fetched_once(sns_bot, sns_cert_server, slack_api):
    signer = sns_cert_server.signer
    await sns_bot.post("/alerts/sns", signer.sign(signer.notification(alarm())))
    ok = alarm(NewStateValue="OK", OldStateValue="ALARM", NewStateReason="Threshold Crossed: back")
    status, _ = await sns_bot.post("/alerts/sns", signer.sign(signer.notification(ok)))
    assert status == 200
    assert sns_bot.incidents()[0]["state"] == "resolved"
    await until(
        lambda: top_level(slack_api) and top_level(slack_api)[0]["text"].startswith("Resolved")
    )
    assert sns_cert_server.count("/SimpleNotificationService") == 1  # cached


async def test_a_redelivered_message_is_acknowledged_and_counted_once(sns_bot, sns_cert_server):
    signer = sns_cert_server.signer
    message = signer.sign(signer.notification(alarm()))
    for _ in range(3):
        status, _ = await sns_bot.post("/alerts/sns", message)
        assert status == 200
    assert [i["count"] for i in sns_bot.incidents()] == [1]
    assert len(sns_bot.audit("alert.received")) == 1


async def test_an_asg_memory_alarm_maps_to_the_inventory_host_of_the_group(
    sns_bot, sns_cert_server
):
    signer = sns_cert_server.signer
    message = signer.sign(signer.notification(alarm("cloudwatch_mem_asg_alarm.json")), version="2")
    status, answer = await sns_bot.post("/alerts/sns", message)
    assert status == 200, answer
    [incident] = sns_bot.incidents()
    assert (incident["host"], incident["alarm"]) == ("web-7", "web-asg memory")
    [row] = sns_bot.services.db.query("SELECT details FROM alerts")
    assert json.loads(row["details"])["metric"] == "mem_used_percent"


async def test_an_unknown_instance_is_named_by_its_ec2_name_tag(sns_bot, sns_cert_server, aws_env):
    ec2 = boto3.client("ec2")
    instance = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "batch-3"}]}
        ],
    )["Instances"][0]["InstanceId"]
    signer = sns_cert_server.signer
    tagged = alarm()
    tagged["Trigger"] = {
        **tagged["Trigger"],
        "Dimensions": [{"value": instance, "name": "InstanceId"}],
    }
    untagged = alarm(AlarmName="other")
    untagged["Trigger"] = {
        **untagged["Trigger"],
        "Dimensions": [{"value": "i-0fffffffffffffff0", "name": "InstanceId"}],
    }
    for body in (tagged, untagged):
        status, answer = await sns_bot.post("/alerts/sns", signer.sign(signer.notification(body)))
        assert status == 200, answer
    assert [i["host"] for i in sns_bot.incidents()] == ["batch-3", "i-0fffffffffffffff0"]


async def test_forged_resigned_wrong_host_and_foreign_topic_are_refused(sns_bot, sns_cert_server):
    signer = sns_cert_server.signer
    good = signer.sign(signer.notification(alarm()))
    forged = {**good, "Message": good["Message"].replace("97.5", "12.0")}
    other_key = signer.sign(signer.notification(alarm()), key=signer.other_key)
    port = signer.base_url.rsplit(":", 1)[1]
    wrong_hosts = [
        signer.sign(signer.notification(alarm()), cert_url=url)
        for url in (
            f"http://localhost:{port}/SimpleNotificationService-test.pem",
            "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        )
    ]
    foreign = signer.sign(signer.notification(alarm(), topic=TOPIC.replace("alarms", "other")))
    v1_as_v2 = {**good, "SignatureVersion": "2"}
    unknown_version = {**good, "SignatureVersion": "3"}
    subject_dropped = {k: v for k, v in good.items() if k != "Subject"}
    unsigned = {k: v for k, v in good.items() if k != "Signature"}
    not_a_cert = signer.sign(signer.notification(alarm()), cert_url=f"{signer.base_url}/x.txt")
    cases = [
        forged,
        other_key,
        *wrong_hosts,
        foreign,
        v1_as_v2,
        unknown_version,
        subject_dropped,
        unsigned,
        not_a_cert,
    ]
    for message in cases:
        status, answer = await sns_bot.post("/alerts/sns", message)
        assert status == 403, (message, answer)
        assert "\n" not in answer["error"]
    assert sns_bot.incidents() == []
    assert len(sns_bot.audit("auth.rejected")) == len(cases)
    # The certificate was only ever fetched from the allowed host.
    assert all(
        hit.startswith(("/SimpleNotificationService", "/x.txt")) for hit in sns_cert_server.hits
    )


async def test_a_subscription_is_confirmed_only_when_it_verifies(sns_bot, sns_cert_server):
    signer = sns_cert_server.signer
    forged = signer.sign(signer.subscription())
    forged["Token"] = "0" * 56
    status, _ = await sns_bot.post("/alerts/sns", forged)
    assert status == 403
    outside = signer.sign(
        signer.subscription(subscribe_url="https://attacker.example/confirm?Token=1")
    )
    status, answer = await sns_bot.post("/alerts/sns", outside)
    assert status == 403 and "SubscribeURL" in answer["error"]
    assert sns_cert_server.count("/confirm") == 0

    status, answer = await sns_bot.post(
        "/alerts/sns", signer.sign(signer.subscription(), version="2")
    )
    assert status == 200, answer
    assert sns_cert_server.count("/confirm?Token=") == 1
    assert sns_bot.incidents() == []


async def test_bad_bodies_are_400_and_insufficient_data_is_ignored(sns_bot, sns_cert_server):
    signer = sns_cert_server.signer
    not_an_alarm = signer.sign({**signer.notification(alarm()), "Message": "hello"})
    missing = {
        k: v for k, v in signer.sign(signer.notification(alarm())).items() if k != "MessageId"
    }
    for body in (b"<xml/>", json.dumps({"Type": "Nope"}).encode(), missing, not_an_alarm):
        status, answer = await sns_bot.post("/alerts/sns", body)
        assert status == 400, answer
    assert len(sns_bot.audit("input.rejected")) == 4
    quiet = signer.sign(signer.notification(alarm(NewStateValue="INSUFFICIENT_DATA")))
    status, _ = await sns_bot.post("/alerts/sns", quiet)
    assert status == 200
    assert sns_bot.incidents() == []
