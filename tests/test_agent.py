"""``stabilize agent`` as a real process: prepared /proc files and a kernel log that OOM
lines are appended to, posting to a receiver on loopback that verifies every signature."""

# ruff: noqa: F811 - pytest fixtures imported from test_agent_receiver

from __future__ import annotations

import json
import time

from helpers import free_port, wait_until
from test_agent_receiver import Receiver, box, receiver, replace_file, run_agent  # noqa: F401


def test_an_oom_kill_arrives_within_2s_naming_the_victim(box, receiver, run_agent):
    box.oom("oom-4.15.log")  # already in the log before the agent started: old news
    agent = run_agent(receiver.url, "--services", "nginx,mysqld")
    wait_until(receiver.hellos)

    box.oom("oom-5.15.log")
    appended = time.monotonic()
    receiver.wait_for("oom_kill")
    assert time.monotonic() - appended < 2.0

    [alert] = receiver.alerts("oom_kill")
    assert alert["host"] == "prod-web-01"
    assert alert["severity"] == "critical"
    assert "mysqld" in alert["summary"] and "1.5 GiB" in alert["summary"]
    details = alert["details"]
    assert details["victim"] == "mysqld"
    assert details["pid"] == 1234
    assert details["rss_kb"] == 1603456
    assert details["cgroup"] == "/system.slice/mysql.service"
    assert details["invoked_by"] == "mysqld"

    box.oom("oom-memcg-syslog.log")  # the next kill is sent too, every time
    receiver.wait_for("oom_kill", 2)
    victims = [a["details"]["victim"] for a in receiver.alerts("oom_kill")]
    assert victims == ["mysqld", "node"]
    assert receiver.alerts("oom_kill")[1]["details"]["constraint"] == "CONSTRAINT_MEMCG"
    assert "old news" not in agent.log()
    assert all(a["kind"] == "oom_kill" for a in receiver.alerts())


def test_memory_pressure_fires_once_and_resolves_once(box, receiver, run_agent):
    run_agent(receiver.url)
    wait_until(receiver.hellos)

    box.pressure(high=True)
    [fired] = receiver.wait_for("memory_pressure")
    time.sleep(1.0)  # it stays high for several more checks: still one open alert
    box.pressure(high=False)
    receiver.wait_for("memory_pressure", 2)
    time.sleep(1.0)  # and stays calm: nothing more

    alerts = receiver.alerts("memory_pressure")
    assert len(alerts) == 2
    fired, resolved = alerts
    assert not fired.get("resolved")
    assert fired["severity"] == "critical"  # PSI full avg10 21% is past the 5% default
    assert "39%" in fired["summary"]
    assert fired["details"]["source"] == "psi"
    assert resolved["resolved"] is True
    assert "over" in resolved["summary"]
    assert receiver.alerts() == alerts


def test_bot_down_for_a_while_then_everything_arrives_in_order_once(box, run_agent):
    bot = Receiver(port=free_port())  # not started yet: the bot is down
    agent = run_agent(bot.url)
    agent.wait_for_log("cannot reach")

    box.oom_kill(2001, "php-fpm")
    wait_until(lambda: len(box.spooled()) == 1)
    box.pressure(high=True)
    wait_until(lambda: len(box.spooled()) == 2)
    box.oom_kill(2002, "mysqld")
    wait_until(lambda: len(box.spooled()) == 3)
    box.pressure(high=False)
    wait_until(lambda: len(box.spooled()) == 4)
    box.oom_kill(2003, "redis-server")
    wait_until(lambda: len(box.spooled()) == 5)
    time.sleep(1.0)  # a few failed retries while down

    bot.start()
    try:
        bot.wait_for(count=5)
        wait_until(lambda: not box.spooled())
        time.sleep(1.0)  # nothing is sent twice
        story = [
            (a["kind"], a["details"].get("victim") or bool(a.get("resolved"))) for a in bot.alerts()
        ]
        assert story == [
            ("oom_kill", "php-fpm"),
            ("memory_pressure", False),
            ("oom_kill", "mysqld"),
            ("memory_pressure", True),
            ("oom_kill", "redis-server"),
        ]
        assert set(bot.answers()) == {200}
    finally:
        bot.stop()


def test_a_wrong_key_is_a_clear_error_at_start_and_alerts_wait_in_the_spool(
    box, receiver, run_agent
):
    agent = run_agent(receiver.url, token="not-the-bot-key")
    log = agent.wait_for_log("error:")
    assert "rejected the signature (401" in log and "STABILIZE_WEBHOOK_TOKEN" in log
    assert "not-the-bot-key" not in log

    box.oom_kill(3001, "java")
    wait_until(lambda: box.spooled())
    assert agent.proc.poll() is None  # it keeps running and keeps the alert
    agent.stop()

    run_agent(receiver.url)  # the key fixed: the spooled alert goes out
    [alert] = receiver.wait_for("oom_kill")
    assert alert["details"]["victim"] == "java"


def test_a_wrong_url_is_a_clear_error_at_start(receiver, run_agent):
    agent = run_agent(receiver.url + "/wrong/path")
    log = agent.wait_for_log("error:")
    assert "has no agent endpoint (404)" in log


def test_an_alert_the_bot_refuses_for_good_does_not_block_the_rest(box, receiver, run_agent):
    receiver.refuse = lambda body: 422 if body["details"].get("victim") == "badproc" else None
    agent = run_agent(receiver.url)
    wait_until(receiver.hellos)
    box.oom_kill(4001, "badproc")
    box.oom_kill(4002, "goodproc")
    [alert] = receiver.wait_for("oom_kill")
    assert alert["details"]["victim"] == "goodproc"
    assert "refused alert" in agent.wait_for_log("refused alert")
    wait_until(lambda: not box.spooled())


def test_the_spool_is_bounded_and_counts_what_it_dropped(box, run_agent):
    bot = Receiver(port=free_port())
    agent = run_agent(bot.url, "--spool-max", "3")
    agent.wait_for_log("cannot reach")
    for n in range(5):
        box.oom_kill(5000 + n, f"worker{n}")
        wait_until(lambda n=n: f"worker{n}" in agent.log())
    bot.start()
    try:
        alerts = bot.wait_for(count=3)
        time.sleep(0.5)
        assert [a["details"]["victim"] for a in bot.alerts()] == ["worker2", "worker3", "worker4"]
        assert [a["details"].get("spool_dropped") for a in alerts] == [None, 1, 1]
    finally:
        bot.stop()


def test_without_psi_it_judges_memavailable_and_says_so_once(box, receiver, run_agent):
    (box.proc / "pressure" / "memory").unlink()
    box.proc.joinpath("pressure").rmdir()
    box.meminfo("meminfo-low")
    agent = run_agent(receiver.url)
    [alert] = receiver.wait_for("memory_pressure")
    assert alert["details"]["source"] == "meminfo"
    assert "3% of RAM available" in alert["summary"]
    swap = receiver.wait_for("swap_exhausted")[0]
    assert "Swap exhausted" in swap["summary"]
    time.sleep(0.6)
    assert agent.log().count("PSI unavailable") == 1


def test_no_swap_at_all_is_said_in_the_memory_alert(box, receiver, run_agent):
    box.meminfo("meminfo-noswap")
    run_agent(receiver.url)
    wait_until(receiver.hellos)
    box.pressure(high=True)
    [alert] = receiver.wait_for("memory_pressure")
    assert alert["details"]["swap"] == "none configured"
    assert "no swap" in alert["summary"]
    assert receiver.alerts("swap_exhausted") == []


def test_a_service_that_disappears_is_down_until_it_comes_back(box, receiver, run_agent):
    run_agent(receiver.url, "--services", "nginx,mysqld")
    wait_until(receiver.hellos)
    comm = (box.proc / "1234" / "comm").read_text()
    (box.proc / "1234" / "comm").unlink()
    (box.proc / "1234").rmdir()  # mysqld is gone
    [down] = receiver.wait_for("service_down")
    assert down["details"]["missing"] == ["mysqld"]
    assert "mysqld not running" in down["summary"]
    (box.proc / "4321").mkdir()
    (box.proc / "4321" / "comm").write_text(comm)  # restarted under a new pid
    up = receiver.wait_for("service_down", 2)[1]
    assert up["resolved"] is True


def test_sustained_cpu_fires_after_it_holds(box, receiver, run_agent):
    run_agent(receiver.url, "--cpu-hold", "600ms")
    wait_until(receiver.hellos)
    stat = box.proc / "stat"
    busy, idle = 1203944, 48893215

    def tick() -> bool:  # 95% busy since the last look
        nonlocal busy, idle
        busy, idle = busy + 95, idle + 5
        replace_file(stat, f"cpu  {busy} 0 0 {idle} 0 0 0 0 0 0\n")
        return bool(receiver.alerts("cpu_high"))

    wait_until(tick, interval=0.1)
    [alert] = receiver.alerts("cpu_high")
    assert alert["details"]["cpu_busy_percent"] == 95.0
    assert alert["severity"] == "warning"


def test_an_open_alert_survives_a_restart_and_still_resolves(box, receiver, run_agent):
    agent = run_agent(receiver.url)
    box.pressure(high=True)
    receiver.wait_for("memory_pressure")
    agent.stop()
    box.pressure(high=False)
    run_agent(receiver.url)
    alerts = receiver.wait_for("memory_pressure", 2)
    assert [bool(a.get("resolved")) for a in alerts] == [False, True]
    time.sleep(0.5)
    assert len(receiver.alerts("memory_pressure")) == 2


def test_once_prints_what_it_would_send_without_sending(box, receiver, run_agent):
    box.meminfo("meminfo-low")
    box.pressure(high=True)
    box.oom("oom-5.15.log")  # 33 s before the prepared uptime
    agent = run_agent(receiver.url, "--once", "--interval", "1m", "--services", "nginx,redis")
    assert agent.proc.wait(15) == 0
    lines = [json.loads(line) for line in agent.log().splitlines() if line.startswith("{")]
    kinds = sorted(a["kind"] for a in lines)
    assert kinds == ["memory_pressure", "oom_kill", "service_down", "swap_exhausted"]
    oom = next(a for a in lines if a["kind"] == "oom_kill")
    assert oom["details"]["victim"] == "mysqld"
    assert receiver.answers() == []  # nothing was sent, not even the hello


def test_a_kernel_log_that_appears_later_is_waited_for_and_read(box, receiver, run_agent):
    later = box.root / "not-yet.log"
    agent = run_agent(receiver.url, "--kernel-log", str(later))
    wait_until(receiver.hellos)
    later.write_text("[    0.000000] Linux version 6.1.0-18-amd64\n")  # created after start
    box.kern_log = later
    box.oom("oom-4.15.log")
    [alert] = receiver.wait_for("oom_kill")
    assert alert["details"]["victim"] == "java"
    assert agent.log().count("is not readable yet") == 1


def test_a_spool_it_cannot_create_is_a_clear_error(receiver, run_agent, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    agent = run_agent(receiver.url, "--spool", str(blocker / "spool"))
    assert agent.proc.wait(15) == 2
    assert "error: cannot use the spool" in agent.log()


def test_oom_kills_resolve_after_a_quiet_spell_so_the_next_is_a_new_incident(
    box, receiver, run_agent
):
    run_agent(receiver.url, "--oom-clear", "800ms")
    wait_until(receiver.hellos)
    box.oom_kill(6001, "php-fpm")
    box.oom_kill(6002, "php-fpm")
    receiver.wait_for("oom_kill", 3)  # two kills, each sent, then quiet
    first, second, quiet = receiver.alerts("oom_kill")
    assert [first["details"]["pid"], second["details"]["pid"]] == [6001, 6002]
    assert quiet["resolved"] is True and quiet["details"]["kills"] == 2
    assert "No more OOM kills" in quiet["summary"]
    box.oom_kill(6003, "mysqld")
    assert not receiver.wait_for("oom_kill", 4)[3].get("resolved")
