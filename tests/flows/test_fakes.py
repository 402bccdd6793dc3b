"""The fake droplet's shell keeps the contract of a real SSH command: exit code, streams, timeout."""
from tests.flows.fakes import _shell


def test_a_hung_command_times_out_and_the_next_command_still_runs():
    hung = _shell().run("sleep 30", 0.5)
    assert hung.exited == 124 and "timed out" in hung.stderr
    after = _shell().run("echo out; echo err >&2; exit 3", 5)
    assert (after.exited, after.stdout, after.stderr) == (3, "out\n", "err\n")
