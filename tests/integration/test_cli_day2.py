"""The day-2 tasks through the real `inv` command line: stdout holds only what the task prints
(the status screen, pure JSON), the Run's own lines go to stderr, and bad inputs end with exit 2
and their fix."""
import json

from lab.ports import free_port


def test_status_with_ssh_refused_prints_the_screen_on_stdout_and_exits_2(cli):
    port = free_port()      # nothing listens there: SSH refused
    res = cli.run("status", env_extra={"DROPLET_IP": "127.0.0.1", "SSH_PORT": str(port)})
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout.startswith("stackdeploy: UNKNOWN (1 droplet, Docker Compose)")
    assert "(SSH: no answer)" in res.stdout and "[connect]" not in res.stdout
    assert "could not tell" in res.stderr and "run folder:" in res.stderr
    assert (cli.runs()[-1] / "status.txt").read_text() == res.stdout


def test_status_json_is_the_only_thing_on_stdout(cli):
    port = free_port()
    res = cli.run("status", "--json", env_extra={"DROPLET_IP": "127.0.0.1", "SSH_PORT": str(port)})
    assert res.returncode == 2
    data = json.loads(res.stdout)            # nothing else on stdout
    assert data["health"] == "unknown" and data["droplets"][0]["ip"] == "127.0.0.1"


def test_an_unknown_service_is_refused_with_the_list(cli):
    for args in (("logs", "-s", "nginx"), ("exec", "nginx")):
        res = cli.run(*args)
        assert res.returncode == 2 and res.stdout == ""
        assert "nginx is not a service of the stack" in res.stderr
        assert "name one of: traefik, frontend, api, django, worker, beat, flower, redis, postgres" in res.stderr


def test_logs_with_no_droplet_yet_exits_2(cli):
    res = cli.run("logs")
    assert res.returncode == 2 and "nothing is deployed yet" in res.stderr
