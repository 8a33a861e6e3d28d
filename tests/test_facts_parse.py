"""Parsing the one command's output: real output from this machine, recorded outputs with
OOM kills, and garbled output that must leave facts unknown (named in errors), never crash."""

from __future__ import annotations

import asyncio
from pathlib import Path

from diagnosis_fixtures import output
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.facts import Facts
from bot.facts_parse import parse_into
from bot.facts_ssh import LocalRunner, command, gather_ssh


def parsed(text: str) -> Facts:
    f = Facts(host="h")
    parse_into(f, text)
    return f


def test_this_machine_through_the_local_runner():
    f = Facts(host="demo")
    asyncio.run(gather_ssh(f, LocalRunner()))
    assert f.source == "this machine, local runner"
    assert f.errors == []
    meminfo = dict(
        line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
    )
    assert f.memory is not None
    assert f.memory.total_kib == int(meminfo["MemTotal"].split()[0])
    assert f.swap is not None and f.swap.total_kib == int(meminfo["SwapTotal"].split()[0])
    assert f.cpus is not None and f.cpus >= 1
    assert f.processes and all(p.rss_kib >= 0 for p in f.processes)
    assert f.disk_root is not None and f.disk_root.mount == "/"
    assert f.kernel_log in ("journalctl", "dmesg")
    assert isinstance(f.oom_kills, list)


def test_journal_oom_kills_with_both_timestamp_styles_and_cgroup_kills():
    f = parsed(output("journal_oom"))
    assert f.errors == []
    assert f.kernel_log == "journalctl"
    assert [(k.process, k.pid, k.anon_rss_kib, k.when) for k in f.oom_kills or []] == [
        ("mysqld", 812, 402000, "2026-12-04T08:11:02.000000Z"),
        ("php-fpm8.1", 3001, 98000, "2026-12-04T09:02:40.000000Z"),
    ]
    assert f.memory is not None and round(f.memory.available_pct) == 6
    assert f.swap is not None and f.swap.total_kib == 0 and f.swap.devices == []
    assert f.processes is not None and f.processes[0].name == "mysqld"
    assert "Web Content" in [p.name for p in f.processes]
    assert f.services == ["mysqld", "php-fpm", "nginx"]
    assert f.disk_root is not None and f.disk_root.free_kib == 20971520


def test_dmesg_kills_older_than_24h_are_left_out():
    f = parsed(output("dmesg_oom"))
    assert f.kernel_log == "dmesg"
    assert [(k.process, k.when) for k in f.oom_kills or []] == [
        ("node", "2026-12-04T09:26:40.000000Z")
    ]
    assert f.swap is not None
    assert [(d.path, d.size_kib, d.used_kib) for d in f.swap.devices] == [
        ("/swap file", 1048572, 848572)
    ]


def test_a_non_linux_box_gives_unknown_facts_each_named():
    f = parsed(output("freebsd"))
    assert f.kernel == "FreeBSD 14.0-RELEASE"
    assert f.memory is None and f.load is None and f.cpus is None and f.processes is None
    assert f.oom_kills is None
    assert f.disk_root is not None  # df -Pk is POSIX: still read
    text = "\n".join(f.errors)
    assert "memory (/proc/meminfo): could not be read" in text
    assert "No such file or directory" in text
    assert "OOM kills (kernel log): could not be read" in text
    assert "adm or systemd-journal group" in text


def test_cut_short_output_keeps_what_arrived():
    f = parsed(output("truncated"))
    assert f.memory is None
    assert any("cut short" in e for e in f.errors)
    assert any("load (/proc/loadavg): missing" in e for e in f.errors)


def test_nothing_usable_is_one_error():
    f = parsed("Welcome to the appliance shell\n> ")
    assert f.memory is None
    assert len(f.errors) == 1 and "printed nothing usable" in f.errors[0]


def test_the_command_is_one_read_only_sh_invocation():
    cmd = command()
    assert cmd.startswith("sh -c '")
    for verb in ("rm ", "mkswap", "swapon", "kill ", "> /", "tee "):
        assert verb not in cmd


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["now", "uname", "meminfo", "swaps", "loadavg", "uptime", "nproc", "ps", "df", "kernel"]
        ),
        st.text(max_size=200),
    )
)
def test_garbled_sections_never_crash(sections):
    text = "".join(f"@@stabilize:{k}@@\n{v}\n" for k, v in sections.items())
    f = parsed(text)
    f.to_dict()
    f.summary()
