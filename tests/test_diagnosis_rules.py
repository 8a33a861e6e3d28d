"""The diagnosis rules over fixture fact sets: what an operator reads and which runbooks
(with which parameters) the buttons would ask for."""

from __future__ import annotations

from dataclasses import replace

import pytest
from diagnosis_fixtures import facts

from bot.diagnosis_rules import evaluate
from bot.diagnosis_sizing import swap_size_g
from bot.facts import KIB_PER_GIB, Disk, Memory


def recs(name: str) -> list[tuple[str, dict[str, str]]]:
    return [(r.runbook, r.params) for r in evaluate(facts(name)).recommendations]


def titles(name: str) -> list[str]:
    return [f"{f.severity}: {f.title}" for f in evaluate(facts(name)).findings]


def test_oom_kills_without_swap_recommend_swap_sized_from_ram():
    result = evaluate(facts("oom_no_swap"))
    top = result.findings[0]
    assert top.severity == "critical"
    assert top.title == "OOM killer ran 2× in the last 24 h and there is no swap"
    assert any("killed mysqld (pid 812, 393 MiB anon RSS)" in e for e in top.evidence)
    assert "swap: none (/proc/swaps lists no device)" in top.evidence
    # 0.93 GiB of RAM → a 1G swap file: relief first, then the resize for the pressure.
    assert result.recommendations[0].runbook == "add-swap"
    assert result.recommendations[0].params == {"size": "1G"}
    assert "2 OOM kill(s)" in result.recommendations[0].reason


def test_swap_size_grows_with_ram_and_is_capped_by_free_disk():
    f = facts("oom_no_swap")
    sizes = {}
    for ram_g in (1, 2, 4, 8, 16, 64, 256):
        f.memory = Memory(int(ram_g * KIB_PER_GIB * 0.97), KIB_PER_GIB)
        f.disk_root = Disk("/", 1000 * KIB_PER_GIB, 900 * KIB_PER_GIB)
        sizes[ram_g] = swap_size_g(f)[0]
    assert sizes == {1: 1, 2: 2, 4: 4, 8: 4, 16: 8, 64: 32, 256: 64}
    # 4 GiB wanted, 5 GiB free of 10: keeping 10 % (1 GiB) free leaves room for 4G … 3G.
    f.memory = Memory(4 * KIB_PER_GIB, KIB_PER_GIB)
    f.disk_root = Disk("/", 10 * KIB_PER_GIB, int(4.5 * KIB_PER_GIB))
    size, note = swap_size_g(f)
    assert size == 3
    assert "capped" in note


def test_oom_with_a_full_disk_says_why_there_is_no_swap_button():
    result = evaluate(facts("oom_no_swap_disk_full"))
    assert "add-swap" not in [r.runbook for r in result.recommendations]
    evidence = " ".join(result.findings[0].evidence)
    assert "no swap: / has 1.2 GiB free of 8.0 GiB" in evidence


def test_memory_pressure_on_a_small_type_resizes_within_the_family_by_measured_need():
    result = evaluate(facts("memory_pressure_small"))
    finding = next(f for f in result.findings if f.title.startswith("Memory pressure"))
    assert finding.title == "Memory pressure: 4 % of 0.9 GiB available"
    assert any(e.startswith("top RSS: node (pid 400)") for e in finding.evidence)
    # used 0.9 GiB + swap 0.6 GiB, at 75 % fill → 2 GiB is not enough: t3.medium.
    assert recs("memory_pressure_small") == [("resize-instance", {"type": "t3.medium"})]
    assert "t3.micro → t3.medium" in result.recommendations[0].reason


def test_memory_pressure_on_a_big_box_advises_instead_of_buying_memory():
    result = evaluate(facts("memory_pressure_large"))
    finding = result.findings[0]
    assert finding.title.startswith("Memory pressure: 6 %")
    assert any("look for a leak" in a for a in finding.advice)
    assert result.recommendations == []


def test_swap_thrashing_warns_swap_is_a_band_aid_and_recommends_the_resize():
    result = evaluate(facts("swap_thrashing"))
    thrash = next(f for f in result.findings if f.title.startswith("Swap thrashing"))
    assert thrash.title == "Swap thrashing: 85 % of swap in use and load 6.3 on 2 CPUs"
    assert any("band-aid" in a for a in thrash.advice)
    assert recs("swap_thrashing") == [("resize-instance", {"type": "t3.large"})]


def test_sustained_cpu_on_an_asg_member_scales_out_enough_to_get_under_70():
    result = evaluate(facts("cpu_asg"))
    assert result.findings[0].title.startswith("CPU sustained at 92 %")
    # 2 instances at 92 % → 184 % of work; 3 instances give 61 %.
    assert recs("cpu_asg") == [("scale-asg", {"by": "1"})]
    assert "to about 61 %" in result.recommendations[0].reason


def test_scaling_is_capped_by_max_size_and_says_so():
    result = evaluate(facts("cpu_asg_capped"))
    assert recs("cpu_asg_capped") == [("scale-asg", {"by": "1"})]
    assert "capped by MaxSize 5; wanted +2" in result.recommendations[0].reason
    at_max = facts("cpu_asg_capped")
    assert at_max.asg is not None
    at_max.asg = replace(at_max.asg, desired=5, in_service=5)
    result = evaluate(at_max)
    assert result.recommendations == []
    assert any("at MaxSize 5" in a for a in result.findings[0].advice)


def test_colocated_database_is_advice_without_a_button():
    result = evaluate(facts("colocated_db"))
    finding = result.findings[0]
    assert finding.title == "Database mysqld runs next to the app tier (nginx, php-fpm)"
    assert "mysqld: 410 MiB RSS" in finding.evidence
    advice = " ".join(finding.advice)
    assert "managed service" in advice and "mysqldump" in advice and "env" in advice
    assert result.recommendations == []
    assert finding.to_dict()["evidence"][-1].startswith("Advice: checklist")


def test_a_healthy_host_says_so_plainly():
    result = evaluate(facts("healthy"))
    assert [f.severity for f in result.findings] == ["info"]
    assert result.findings[0].title.startswith("Healthy")
    assert "no OOM kills in the last 24 h" in result.findings[0].evidence
    assert result.recommendations == []


def test_ssh_timeout_still_diagnoses_from_aws_and_recommends_a_resize():
    result = evaluate(facts("ssh_timeout"))
    top = result.findings[0]
    assert top.severity == "critical"
    assert top.title.startswith("SSH timed out")
    assert any("CPUUtilization last hour: average 97 %" in e for e in top.evidence)
    runbooks = [r.runbook for r in result.recommendations]
    assert runbooks == ["resize-instance"]
    assert "needs no SSH" in result.recommendations[0].reason


def test_ssh_timeout_without_aws_facts_names_why_there_is_no_button():
    f = facts("ssh_timeout")
    f.instance, f.family_types, f.cpu = None, None, None
    result = evaluate(f)
    assert result.recommendations == []
    assert any("instance type is unknown" in e for e in result.findings[0].evidence)


@pytest.mark.parametrize(
    "name",
    [
        "oom_no_swap",
        "oom_no_swap_disk_full",
        "memory_pressure_small",
        "memory_pressure_large",
        "swap_thrashing",
        "cpu_asg",
        "cpu_asg_capped",
        "colocated_db",
        "healthy",
        "ssh_timeout",
    ],
)
def test_every_finding_has_a_severity_a_one_line_title_and_evidence(name):
    result = evaluate(facts(name))
    assert result.findings
    for f in result.findings:
        assert f.severity in ("critical", "warning", "info")
        assert f.title and "\n" not in f.title
        assert f.evidence
    for r in result.recommendations:
        assert all(isinstance(v, str) for v in r.params.values())
        assert r.reason


def test_unknown_facts_never_crash_the_rules():
    from bot.facts import Facts

    result = evaluate(Facts(host="x"))
    assert [f.title for f in result.findings] == [
        "Not enough facts to judge this host (see errors)"
    ]


def test_without_host_facts_the_cloudwatch_agent_shows_memory_pressure():
    from bot.facts import MetricStats

    f = facts("ssh_timeout")
    f.cwagent = {"swap_used_percent": MetricStats(average=80.0, maximum=90.0, datapoints=[80.0])}
    result = evaluate(f)
    titles = [x.title for x in result.findings]
    assert "Memory pressure: 80 % of swap used (CloudWatch agent)" in titles
    assert [r.runbook for r in result.recommendations] == ["resize-instance"]


def test_services_are_recognised_by_name_not_by_prefix():
    from bot.facts import Process

    f = facts("healthy")
    names = ["node_exporter", "postgres_exporter", "php-fpm8.1", "nodejs", "javac", "redis-server"]
    f.processes = [Process(n, 1000, name) for n, name in enumerate(names, 1)]
    assert f.services == ["php-fpm", "node", "redis-server"]
    result = evaluate(f)
    assert (
        result.findings[0].title
        == "Database redis-server runs next to the app tier (node, php-fpm)"
    )


@pytest.mark.parametrize(
    "name, among, expected",
    [
        ("postgres", None, "postgres"),
        ("postgres: writer", None, "postgres"),
        ("postgres_exporter", None, None),
        ("mysqld_safe", None, "mysqld"),
        ("mysqld-8.0", None, "mysqld"),
        ("php-fpm8.1", None, "php-fpm"),
        ("php-fpm", ("nginx",), None),
        ("nginx", ("nginx",), "nginx"),
        ("nginx:", ("mysqld", "nginx"), "nginx"),
        ("nodejs", ("node",), "node"),
        ("node2", None, "node"),
        ("nodes", None, None),
        ("java", None, "java"),
        ("javac", None, None),
        ("Xnginx", None, None),
        ("", None, None),
        ("redis-server", None, "redis-server"),
        ("redis-server.x", ("redis-server",), "redis-server"),
        ("redis", None, None),
    ],
)
def test_a_process_name_maps_to_its_service(name, among, expected):
    from bot.facts import service_of

    assert (service_of(name, among) if among else service_of(name)) == expected
