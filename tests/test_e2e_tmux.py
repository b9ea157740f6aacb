"""End to end: the real pvtui command in tmux, keys sent, the screen read back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, Engine


def capture(session: str) -> str:
    return subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True).stdout


def wait_screen(session: str, *needles: str, timeout: float = 20.0) -> str:
    deadline = time.monotonic() + timeout
    screen = ""
    while time.monotonic() < deadline:
        screen = capture(session)
        if all(needle in screen for needle in needles):
            return screen
        time.sleep(0.2)
    raise AssertionError(f"{needles} not on screen:\n{screen}")


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux (apt-get install -y tmux)")
def test_pvtui_in_tmux(engine: Engine):
    engine.ok("create", engine.define("tmuxdom", "workload: {type: chatty, lines_per_sec: 5}\n"))
    session = f"pvtui-e2e-{os.getpid()}"
    env = " ".join(f"{k}={v}" for k, v in {**engine.env, "PYTHONPATH": str(REPO), "TERM": "xterm-256color"}.items())
    command = f"cd {REPO} && env {env} {sys.executable} -m pvtui"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30", command], check=True)
    try:
        wait_screen(session, "NAME", "tmuxdom", "host:")
        subprocess.run(["tmux", "send-keys", "-t", session, "?"], check=True)
        wait_screen(session, "pvtui keys", "command palette")
        subprocess.run(["tmux", "send-keys", "-t", session, "Escape"], check=True)
        time.sleep(0.5)
        subprocess.run(["tmux", "send-keys", "-t", session, "Enter"], check=True)
        wait_screen(session, "Hypercall log", "console_io")
        subprocess.run(["tmux", "send-keys", "-t", session, "p"], check=True)  # pause from the domain view
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and "paused" not in engine.ok("list", "--json"):
            time.sleep(0.2)
        assert '"state": "paused"' in engine.ok("list", "--json")
        subprocess.run(["tmux", "send-keys", "-t", session, "Escape"], check=True)
        time.sleep(0.5)  # a bare Escape followed at once by q would arrive as alt+q
        subprocess.run(["tmux", "send-keys", "-t", session, "q"], check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if subprocess.run(["tmux", "has-session", "-t", session], capture_output=True).returncode != 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("pvtui did not quit on q")
        assert '"name": "tmuxdom"' in engine.ok("list", "--json"), "quitting the UI leaves domains running"
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True)
        engine.ok("destroy", "tmuxdom")
