"""What the Dockerfile builds, without a Docker engine (this machine has none): its COPY
lines staged as the build context, the `pip install .` as a wheel installed on its own,
then its CMD serving and its HEALTHCHECK passing, on a loopback port instead of
0.0.0.0:3000. Only the base image is left out."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import clean_environ, free_port, stop_process, wait_for_port, write_config

ROOT = Path(__file__).resolve().parent.parent


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's instructions, continuation lines joined: (KEYWORD, rest)."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def exec_form(rest: str) -> list[str]:
    assert rest.startswith("["), f"not exec form: {rest}"
    return json.loads(rest)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> dict:
    """The build: the context the COPY lines name, a wheel of it, installed into a folder."""
    base = tmp_path_factory.mktemp("image")
    context, dist, site = base / "app", base / "dist", base / "site"
    env: dict[str, str] = {}
    for keyword, rest in instructions():
        if keyword == "COPY":
            *sources, _ = rest.split()
            for source in sources:
                src = ROOT / source
                if src.is_dir():
                    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
                    shutil.copytree(src, context / source, ignore=ignore)
                else:
                    context.mkdir(exist_ok=True)
                    shutil.copy(src, context / source)
        elif keyword == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(rest)))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    build = subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", dist, context],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    [wheel] = dist.glob("stabilize-*.whl")
    install = subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", site, wheel],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert install.returncode == 0, install.stdout + install.stderr
    return {"base": base, "context": context, "wheel": wheel, "site": site, "env": env}


def test_the_wheel_holds_every_module_of_the_build_context(image):
    names = set(zipfile.ZipFile(image["wheel"]).namelist())
    sources = {
        p.relative_to(ROOT).as_posix()
        for top in ("bot", "commands", "runbooks")
        for p in (ROOT / top).rglob("*")
        if p.is_file() and p.suffix in {".py", ".json", ".yaml", ".pem"}
    }
    assert sources - names == set(), "left out of the image"
    assert any(n.startswith("bot/migrations/m2") for n in names)


def test_the_cmd_serves_and_the_healthcheck_passes(image, tmp_path):
    steps = dict(instructions())
    cmd = exec_form(steps["CMD"])
    assert cmd[:2] == ["stabilize", "serve"] and cmd[cmd.index("--port") + 1] == "3000"
    healthcheck = exec_form(steps["HEALTHCHECK"].split(" CMD ", 1)[1])
    port = str(free_port())
    cmd[cmd.index("--host") + 1] = "127.0.0.1"  # loopback only, never 0.0.0.0
    cmd[cmd.index("--port") + 1] = port
    cmd[0] = str(image["site"] / "bin" / "stabilize")

    workdir = tmp_path / "app"  # WORKDIR /app, with the config mounted as in docs/deploy.md
    workdir.mkdir()
    write_config(workdir, {"slack": {"channel": "C0ALERTS"}})
    data = tmp_path / "data"
    data.mkdir()
    env = clean_environ()
    env.update(image["env"])
    env.update(
        STABILIZE_DB=str(data / Path(image["env"]["STABILIZE_DB"]).name),
        PYTHONPATH=str(image["site"]),
        SLACK_BOT_TOKEN="xoxb-image-test",
        SLACK_SIGNING_SECRET="image-test-secret",
        SLACK_API_URL="http://127.0.0.1:9/api/",  # nothing is posted in this test
    )
    where = subprocess.run(
        [sys.executable, "-c", "import bot, commands, runbooks as r; print(bot, commands, r)"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    # this venv also has the source tree installed (editable): the image's copy must win
    assert where.stdout.count(f"from '{image['site']}/") == 3, where.stdout

    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(int(port), alive=lambda: proc.poll() is None, timeout=60)
        probe = [sys.executable if healthcheck[0] == "python" else healthcheck[0]]
        probe += [arg.replace(":3000/", f":{port}/") for arg in healthcheck[1:]]
        check = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
    finally:
        stop_process(proc, timeout=20)
        log.close()
    printed = (tmp_path / "serve.log").read_text()
    assert "Traceback" not in printed, printed
    assert (data / "stabilize.db").exists(), "the database is not where STABILIZE_DB says"
