"""add-swap: create, enable and persist a swap file, over SSH (or SSM).

Idempotent: an active swap file of the requested size at the path is reported and left alone;
one of another size is refused with advice. The preflight also refuses a path that already
holds a file, and a filesystem without size + 10 % free. Rollback undoes only what this run
did: swapoff, remove the file, remove the fstab line it added.
"""

from __future__ import annotations

import shlex
from pathlib import PurePosixPath
from typing import Any

from bot.errors import ExecutionError, InputError
from runbooks.executors import describe_target, run_checked, wrap_command
from runbooks.model import AlreadyDone, PlanStep, Refused, Runbook, RunContext, Step, Target
from runbooks.params import Param, format_size, human_size, parse_size

NAME = "add-swap"
HEADROOM = 1.10  # free disk needed: size + 10 %


def fstab_line(path: str) -> str:
    return f"{path} none swap sw 0 0"


def commands(params: dict[str, Any]) -> dict[str, str]:
    """The shell commands of every step, before any sudo wrapping (one source for plan and run)."""
    path, fstab = params["path"], params["fstab"]
    size = parse_size(params["size"])
    p, f = shlex.quote(path), shlex.quote(fstab)
    folder = shlex.quote(path.rsplit("/", 1)[0] or "/")
    line = shlex.quote(fstab_line(path))
    tmp = shlex.quote(fstab + ".stabilize-tmp")
    mib = size // (1024 * 1024)
    return {
        "preflight": (
            f"echo exists=$(test -e {p} && echo yes || echo no);"
            f" echo bytes=$(stat -c %s {p} 2>/dev/null || echo 0);"
            f' echo active=$(awk -v p={p} \'$1==p{{f=1}} END{{print f?"yes":"no"}}\' /proc/swaps);'
            f" echo avail=$(df -P -B1 {folder} 2>/dev/null | awk 'NR==2{{print $4}}');"
            f' echo fstab=$(awk -v p={p} \'$1==p{{f=1}} END{{print f?"yes":"no"}}\' {f}'
            " 2>/dev/null || echo no)"
        ),
        "allocate": (
            f"umask 077; fallocate -l {size} {p} 2>/dev/null"
            f" || {{ rm -f {p}; dd if=/dev/zero of={p} bs=1M count={mib} status=none; }}"
        ),
        "chmod": f"chmod 600 {p}",
        "mkswap": f"mkswap {p}",
        "swapon": f"swapon {p}",
        "fstab": (
            f"if awk -v p={p} '$1==p{{f=1}} END{{exit !f}}' {f} 2>/dev/null;"
            f" then echo present; else printf '%s\\n' {line} >> {f} && echo added; fi"
        ),
        "verify": "swapon --show=NAME,SIZE --noheadings --raw --bytes; echo ---; cat /proc/swaps",
        "rollback-swapoff": f"swapoff {p} 2>/dev/null; rm -f {p}; test ! -e {p}",
        "rollback-fstab": f"grep -vxF {line} {f} > {tmp}; cat {tmp} > {f} && rm -f {tmp}",
    }


PARAMS = (
    Param("size", "size", "size of the swap file", default="4G", minimum="1G", maximum="64G"),
    Param("path", "path", "where the swap file goes", default="/swapfile"),
    Param("fstab", "path", "the fstab that persists it across reboots", default="/etc/fstab"),
)


def check(target: Target, params: dict[str, Any]) -> dict[str, Any]:
    """The fstab step appends a line to ``fstab``: refuse anything that is not an fstab (a
    typo or a hostile ``fstab=/etc/passwd`` would otherwise get a swap line appended)."""
    name = PurePosixPath(params["fstab"]).name
    if "fstab" not in name:
        raise InputError(
            f"fstab={params['fstab']}: not an fstab file (its name must contain 'fstab',"
            " e.g. /etc/fstab)"
        )
    if params["fstab"] == params["path"]:
        raise InputError(
            f"path and fstab are both {params['path']}: give the swap file its own path"
        )
    return params


def plan(target: Target, params: dict[str, Any]) -> list[PlanStep]:
    cmds = commands(params)

    def wrap(name: str) -> str:
        return wrap_command(target.host, cmds[name])

    where = describe_target(target.services, target.name, target.host)
    return [
        PlanStep("target", "note", f"on {target.name} {where}"),
        PlanStep("preflight", "shell", wrap("preflight")),
        PlanStep(
            "preflight",
            "check",
            f"stop if {params['path']} exists (report if it is already {params['size']} of"
            f" active swap); need {human_size(int(parse_size(params['size']) * HEADROOM))}"
            " free on its filesystem",
        ),
        *[PlanStep(n, "shell", wrap(n)) for n in ("allocate", "chmod", "mkswap", "swapon")],
        PlanStep("fstab", "shell", wrap("fstab")),
        PlanStep("verify", "shell", wrap("verify")),
        PlanStep("rollback", "shell", wrap("rollback-swapoff"), on_failure=True),
        PlanStep("rollback", "shell", wrap("rollback-fstab"), on_failure=True),
    ]


def _facts(text: str) -> dict[str, str]:
    return dict(
        line.split("=", 1) for line in text.splitlines() if "=" in line and line[:1].isalpha()
    )


def _preflight(ctx: RunContext) -> str:
    params = ctx.params
    size = parse_size(params["size"])
    facts = _facts(_sh(ctx, "preflight"))
    if not facts.get("exists"):
        raise ExecutionError("the host gave no answer to the preflight (no output)")
    path = params["path"]
    if facts["exists"] == "yes":
        current = int(facts.get("bytes") or 0)
        if facts.get("active") == "yes" and current == size:
            raise AlreadyDone(f"{path} is already {params['size']} of active swap; nothing changed")
        if facts.get("active") == "yes":
            raise Refused(
                f"{path} is already active swap of {format_size(current)}, not {params['size']}:"
                f" to change it, run `swapoff {path} && rm {path}` on {ctx.host_name} first,"
                " or choose another path="
            )
        raise Refused(
            f"{path} already exists on {ctx.host_name} and is not active swap:"
            " move it away or choose another path="
        )
    avail = facts.get("avail", "")
    if not avail.isdigit():
        folder = path.rsplit("/", 1)[0] or "/"
        raise Refused(f"folder {folder} does not exist on {ctx.host_name}: choose another path=")
    need = int(size * HEADROOM)
    if int(avail) < need:
        raise Refused(
            f"not enough free disk for {params['size']} at {path}: {human_size(int(avail))}"
            f" free, {human_size(need)} needed (size + 10 %); choose a smaller size= or"
            " another path="
        )
    return f"{human_size(int(avail))} free; {path} is free"


def _sh(ctx: RunContext, name: str) -> str:
    assert ctx.shell is not None
    return run_checked(
        ctx.shell, ctx.host, commands(ctx.params)[name], timeout=ctx.timing.command_timeout
    )


def _allocate(ctx: RunContext) -> str:
    ctx.state["created"] = True
    _sh(ctx, "allocate")
    return f"{ctx.params['size']} allocated at {ctx.params['path']}"


def _fstab(ctx: RunContext) -> str:
    out = _sh(ctx, "fstab").strip()
    ctx.state["fstab_added"] = out.endswith("added")
    return f"{ctx.params['fstab']}: line {'added' if out.endswith('added') else 'already there'}"


def steps(ctx: RunContext) -> list[Step]:
    return [
        Step("preflight", _preflight, changes=False),
        Step("allocate", _allocate),
        Step("chmod", lambda c: _sh(c, "chmod") or "mode 600"),
        Step("mkswap", lambda c: _sh(c, "mkswap").strip().splitlines()[0]),
        Step("swapon", lambda c: _sh(c, "swapon") or f"{c.params['path']} enabled"),
        Step("fstab", _fstab),
    ]


def verify(ctx: RunContext) -> str:
    path, size = ctx.params["path"], parse_size(ctx.params["size"])
    shown, _, proc = _sh(ctx, "verify").partition("---")
    listed = {line.split()[0]: line.split()[1] for line in shown.splitlines() if line.strip()}
    in_proc = any(line.split()[:1] == [path] for line in proc.splitlines())
    if path not in listed or not in_proc:
        raise ExecutionError(f"{path} is not in `swapon --show` and /proc/swaps after swapon")
    # The kernel keeps one page for the header: active swap is a little under the file size.
    if int(listed[path]) < size * 0.99:
        raise ExecutionError(f"{path} is active with {listed[path]} bytes, expected {size}")
    return f"{path} active: {format_size(int(listed[path]) + 4096)} of swap"


def rollback(ctx: RunContext) -> str:
    done = []
    if ctx.state.get("created"):
        _sh(ctx, "rollback-swapoff")
        done.append(f"swap off and {ctx.params['path']} removed")
    if ctx.state.get("fstab_added"):
        _sh(ctx, "rollback-fstab")
        done.append(f"our line removed from {ctx.params['fstab']}")
    return "; ".join(done) or "nothing to undo"


RUNBOOK = Runbook(
    name=NAME,
    description="Create, enable and persist a swap file (fallocate, chmod 600, mkswap, swapon,"
    " one fstab line), verified with swapon --show",
    risk="medium",
    target="shell",
    params=PARAMS,
    plan=plan,
    steps=steps,
    verify=verify,
    rollback=rollback,
    check=check,
)
