"""The runner ↔ child channel: commands and reports both ways, and the lifeline."""

import contextlib
import os
import subprocess
import sys
import textwrap
import time

import psutil

from rrlab.runner.ipc import ControlServer

ECHO_CHILD = textwrap.dedent(
    """
    from rrlab.runner.ipc import ChildChannel
    channel = ChildChannel.from_environment()
    channel.send({"type": "ready"})
    while True:
        command = channel.next_command(timeout=1)
        if command is None:
            continue  # only a shutdown command or the lifeline ends this child
        if command.get("cmd") == "shutdown":
            break
        channel.send({"type": "echo", "got": command})
    """
)


def _next(server: ControlServer, kind: str, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = server.messages.get(timeout=deadline - time.monotonic())
        if message.body.get("type") == kind:
            return message
    raise AssertionError(f"no {kind} message")


def test_commands_and_reports_round_trip() -> None:
    server = ControlServer()
    env = {**os.environ, **server.child_environment("echo")}
    child = subprocess.Popen([sys.executable, "-c", ECHO_CHILD], env=env)
    try:
        assert _next(server, "ready").sender == "echo"
        assert server.send("echo", {"cmd": "phase", "rate": 1500})
        assert _next(server, "echo").body["got"] == {"cmd": "phase", "rate": 1500}
        server.send("echo", {"cmd": "shutdown"})
        assert child.wait(timeout=10) == 0
        assert _next(server, "disconnected").sender == "echo"
    finally:
        child.kill()
        server.close()


def test_a_wrong_token_is_refused() -> None:
    server = ControlServer()
    env = {**os.environ, **server.child_environment("intruder"), "RRLAB_CONTROL_TOKEN": "nope"}
    child = subprocess.Popen([sys.executable, "-c", ECHO_CHILD], env=env)
    try:
        assert child.wait(timeout=10) != 0  # the runner hung up: the child's lifeline broke
        assert not server.connected("intruder")
    finally:
        child.kill()
        server.close()


def test_child_exits_when_the_runner_dies() -> None:
    runner_script = textwrap.dedent(
        f"""
        import os, subprocess, sys, time
        from rrlab.runner.ipc import ControlServer
        server = ControlServer()
        env = {{**os.environ, **server.child_environment("orphan")}}
        child = subprocess.Popen([sys.executable, "-c", {ECHO_CHILD!r}], env=env)
        server.messages.get(timeout=10)
        print(child.pid, flush=True)
        time.sleep(60)
        """
    )
    runner = subprocess.Popen([sys.executable, "-c", runner_script], stdout=subprocess.PIPE)
    child_pid = int(runner.stdout.readline())
    runner.kill()
    runner.wait()
    with contextlib.suppress(psutil.NoSuchProcess):
        psutil.Process(child_pid).wait(timeout=10)
    assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == "zombie"
