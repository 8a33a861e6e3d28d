"""add-swap against the real sshd: really on where swapon is permitted, idempotent, refused
when the disk is too small, rolled back (no file, no fstab line) when swapon fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from runbook_fixtures import (
    Progress,
    actions,
    active_swaps,
    job,
    make_services,
    small_tmpfs,
    swap_cleanup,
    swapon_permitted,
)

from runbooks.engine import execute, lock_holder

HOST = "prod-web-01"


@pytest.fixture
def services(sshd, settings_factory, tmp_path):
    svc = make_services(settings_factory(hosts={HOST: sshd.host_config()}), tmp_path / "s.db")
    yield svc
    svc.close()


@pytest.fixture
def fstab(tmp_path) -> Path:
    path = tmp_path / "fstab"
    path.write_text("UUID=abc / ext4 defaults 0 1\n")
    return path


@pytest.fixture
def swapfile(tmp_path) -> Path:
    """A path for a real 1G swap file on disk; swapped off and removed whatever happens."""
    reason = swapon_permitted()
    if reason:
        pytest.skip(reason)
    path = tmp_path / "swapfile"
    try:
        yield path
    finally:
        swap_cleanup(path)


@pytest.mark.swap
async def test_add_swap_turns_swap_on_then_a_second_run_changes_nothing(services, swapfile, fstab):
    progress = Progress()
    first = job("add-swap", HOST, size="1G", path=swapfile, fstab=fstab)
    result = await execute(services, first, progress=progress)

    assert result.ok, result.error
    assert result.state == "succeeded"
    assert str(swapfile) in active_swaps()
    assert swapfile.stat().st_mode & 0o777 == 0o600
    assert fstab.read_text().splitlines() == [
        "UUID=abc / ext4 defaults 0 1",
        f"{swapfile} none swap sw 0 0",
    ]
    assert [s.name for s in result.steps] == [
        "preflight",
        "allocate",
        "chmod",
        "mkswap",
        "swapon",
        "fstab",
        "verify",
    ]
    assert "active" in result.summary
    assert "▶ 4/7 mkswap…" in progress.lines
    assert actions(services, first.request_id) == [
        "execution.started",
        *["execution.step"] * 7,
        "execution.succeeded",
    ]

    again = job("add-swap", HOST, size="1G", path=swapfile, fstab=fstab)
    second = await execute(services, again)
    assert second.ok and second.state == "succeeded"
    assert "nothing changed" in second.summary
    assert [s.name for s in second.steps] == ["preflight"]
    assert fstab.read_text().count(str(swapfile)) == 1  # never duplicated

    other = await execute(services, job("add-swap", HOST, size="2G", path=swapfile, fstab=fstab))
    assert other.state == "failed" and other.failed_step == "preflight"
    assert "swapoff" in other.error and "another path=" in other.error
    assert str(swapfile) in active_swaps()  # the refusal changed nothing
    assert services.audit.verify().ok


async def test_swapon_refused_by_the_filesystem_rolls_back_leaving_nothing(services, fstab):
    # tmpfs holds the file fine, but the kernel will not swap to it: swapon fails for real.
    with small_tmpfs("1200M") as folder:
        path = folder / "swapfile"
        progress = Progress()
        request = job("add-swap", HOST, size="1G", path=path, fstab=fstab)
        result = await execute(services, request, progress=progress)

        assert result.state == "rolled_back"
        assert result.failed_step == "swapon"
        assert "swapon" in result.error
        assert not path.exists()
        assert str(path) not in active_swaps()
        assert fstab.read_text() == "UUID=abc / ext4 defaults 0 1\n"
        assert "rolled back" in result.summary
        trail = services.audit.list(request_id=request.request_id)
        assert trail[-1]["action"] == "execution.rolled_back"
        assert any("rolling back" in line for line in progress.lines)


async def test_disk_too_small_is_refused_before_anything_changes(services, fstab):
    with small_tmpfs("64M") as folder:
        path = folder / "swapfile"
        result = await execute(services, job("add-swap", HOST, size="1G", path=path, fstab=fstab))

        assert result.state == "failed"
        assert result.failed_step == "preflight"
        assert "not enough free disk" in result.error and "size + 10 %" in result.error
        assert not path.exists()
        assert fstab.read_text() == "UUID=abc / ext4 defaults 0 1\n"
    assert lock_holder(services, HOST) is None


async def test_a_file_that_is_not_ours_is_left_alone(services, tmp_path, fstab):
    path = tmp_path / "swapfile"
    path.write_text("somebody's data\n")
    result = await execute(services, job("add-swap", HOST, size="1G", path=path, fstab=fstab))
    assert result.state == "failed"
    assert "already exists" in result.error and "not active swap" in result.error
    assert path.read_text() == "somebody's data\n"


async def test_a_missing_folder_names_the_fix(services, tmp_path, fstab):
    path = tmp_path / "nope" / "swapfile"
    result = await execute(services, job("add-swap", HOST, size="1G", path=path, fstab=fstab))
    assert result.state == "failed"
    assert "does not exist" in result.error and "path=" in result.error


def test_without_fallocate_the_file_is_written_with_dd(tmp_path):
    # Some filesystems refuse fallocate; the allocate step's own shell text must still
    # produce a full-size file. Run that exact text with a fallocate that always fails.
    from runbooks.add_swap import commands

    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "fallocate").write_text("#!/bin/sh\necho 'fallocate: not supported' >&2\nexit 1\n")
    (stubs / "fallocate").chmod(0o755)
    with small_tmpfs("1100M") as folder:
        path = folder / "swapfile"
        text = commands({"size": "1G", "path": str(path), "fstab": str(tmp_path / "fstab")})
        done = subprocess.run(
            ["sh", "-c", text["allocate"]],
            env={"PATH": f"{stubs}:{os.environ['PATH']}"},
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        assert path.stat().st_size == 1024**3
        assert path.stat().st_mode & 0o777 == 0o600  # umask 077: never readable by others


async def test_an_unreachable_host_fails_at_the_preflight_naming_the_fix(
    sshd, settings_factory, tmp_path
):
    from helpers import free_port

    config = sshd.host_config()
    config["ssh"]["port"] = free_port()  # nothing listens there
    svc = make_services(
        settings_factory(hosts={HOST: config}, ssh={"connect_timeout": "3s"}), tmp_path / "s.db"
    )
    result = await execute(svc, job("add-swap", HOST, size="1G", path=tmp_path / "swap"))
    assert result.state == "failed" and result.failed_step == "preflight"
    assert f"cannot run over ssh on {HOST}" in result.error
    assert f"check hosts.{HOST}.ssh" in result.error
    assert lock_holder(svc, HOST) is None
    svc.close()


async def test_the_host_is_reached_through_its_gateway(sshd, settings_factory, tmp_path):
    # The sshd is both the bastion and (through a tunnel) the host behind it.
    bastion = sshd.host_config()["ssh"]
    host = {"ssh": {**bastion, "gateway": "bastion"}}
    svc = make_services(
        settings_factory(hosts={HOST: host}, ssh={"gateways": {"bastion": bastion}}),
        tmp_path / "s.db",
    )
    mark = sshd.mark()
    result = await execute(svc, job("add-swap", HOST, size="1G", path=tmp_path / "no" / "swap"))
    assert result.failed_step == "preflight" and "does not exist" in result.error
    sshd.wait_for_log("Accepted publickey", count=2, since=mark)
    assert sshd.connections(mark) == 2  # one to the bastion, one through its tunnel
    svc.close()


async def test_an_unknown_host_key_stops_the_runbook_before_any_command(
    sshd, settings_factory, tmp_path, fstab
):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    settings = settings_factory(
        hosts={HOST: sshd.host_config()}, ssh={"known_hosts": str(known_hosts)}
    )
    svc = make_services(settings, tmp_path / "strict.db")
    try:
        mark = sshd.mark()
        path = tmp_path / "swapfile"
        result = await execute(svc, job("add-swap", HOST, size="1G", path=path, fstab=fstab))
        assert result.state == "failed"
        assert f"is not in ssh.known_hosts {known_hosts}" in result.error, result.error
        assert sshd.commands(mark) == 0
        assert not path.exists() and fstab.read_text() == "UUID=abc / ext4 defaults 0 1\n"
    finally:
        svc.close()
