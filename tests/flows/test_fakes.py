"""The fake droplet's shell keeps the contract of a real SSH command: exit code, streams, timeout."""
import pytest

from tests.flows.fakes import FakeDocker, _shell


def test_a_hung_command_times_out_and_the_next_command_still_runs():
    hung = _shell().run("sleep 30", 0.5)
    assert hung.exited == 124 and "timed out" in hung.stderr
    after = _shell().run("echo out; echo err >&2; exit 3", 5)
    assert (after.exited, after.stdout, after.stderr) == (3, "out\n", "err\n")


@pytest.mark.parametrize("argv", [["docker", "compose", "-p", "stack", "down", "-v"],
                                  ["docker", "volume", "rm", "stack_pg-data"], ["docker", "volume", "prune", "-f"],
                                  ["docker", "system", "prune", "-af", "--volumes"]])
def test_the_fake_engine_records_every_command_that_removes_a_volume(argv):
    """What the fault matrix's "nothing lost" rests on: a deploy sending any of these is caught."""
    docker = FakeDocker(volumes={"stack_pg-data", "stack_redis-data"})
    docker.handle(argv, " ".join(argv))
    assert docker.volume_removals == [argv] and "stack_pg-data" not in docker.volumes


def test_the_fake_engine_keeps_volumes_through_what_a_deploy_sends():
    docker = FakeDocker(volumes={"stack_pg-data"})
    for argv in (["docker", "compose", "-p", "stack", "rm", "-f"], ["docker", "image", "prune", "-f"],
                 ["docker", "builder", "prune", "-f"]):
        docker.handle(argv, " ".join(argv))
    assert docker.volume_removals == [] and docker.volumes == {"stack_pg-data"}
