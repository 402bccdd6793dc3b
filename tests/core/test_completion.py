"""`inv` tab completion, as the README documents it: Invoke's own completion script, completing
this project's task names and flags."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def inv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", *args], cwd=REPO, capture_output=True, text=True, timeout=60)


def test_bash_completion_script_comes_out():
    res = inv("--print-completion-script", "bash")
    assert res.returncode == 0, res.stderr
    assert "_complete_invoke()" in res.stdout and "invoke --complete --" in res.stdout
    assert "complete -F _complete_invoke -o default invoke inv" in res.stdout


def test_complete_lists_the_tasks_and_a_tasks_flags():
    tasks = inv("--complete", "--", "inv").stdout.split()
    assert {"deploy", "verify", "provision", "rollback", "releases", "lock.status", "runs.diff"} <= set(tasks)
    flags = inv("--complete", "--", "inv", "deploy", "--").stdout.split()
    assert {"--update-only", "--skip-allowlist", "--env-file", "--no-timestamp"} <= set(flags)


def test_tab_in_bash_completes_a_task_and_its_flag():
    # What bash does on TAB: the sourced script's function fills COMPREPLY from the words so far.
    script = inv("--print-completion-script", "bash").stdout
    probe = script + '\nCOMP_WORDS=(inv "$@"); _complete_invoke inv "${@: -1}" inv; printf "%s\\n" "${COMPREPLY[@]}"\n'
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}

    def tab(*words: str) -> list[str]:
        done = subprocess.run(["bash", "-c", probe, "bash", *words], cwd=REPO, env=env, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()

    assert tab("depl") == ["deploy"]
    assert tab("deploy", "--upd") == ["--update-only"]
