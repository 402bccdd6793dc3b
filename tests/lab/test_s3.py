"""The lab's S3 endpoint (DigitalOcean Spaces' stand-in), for real: moto's server in its container on
a throwaway lab network, reached from the host over HTTPS verified against the lab CA, by boto3 (a
client apart from the lab's own signer) as pgBackRest will use it: path style, SigV4, region nyc3.
No droplet is started."""
from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import boto3
import botocore.exceptions
import pytest
import requests
from botocore.config import Config
from dotenv import dotenv_values

from lab import config as labconfig
from lab import control
from lab.docker import inspect
from lab.droplets.network import ensure_network
from lab.images import builder, recipes
from lab.services import labca, registry, s3
from lab.services.containers import container_name
from tests.lab.conftest import make_cfg, require_docker

pytestmark = [pytest.mark.docker]
INV = str(Path(sys.executable).with_name("inv"))
REPO = Path(__file__).resolve().parents[2]


def quiet(_message: str) -> None:
    return None


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    require_docker()
    builder.ensure_image(recipes.S3, log=print)
    cfg = make_cfg(tmp_path_factory.mktemp("s3"))
    logged: list[str] = []
    try:
        ensure_network(cfg)
        s3.ensure(cfg, log=logged.append)
        yield cfg, logged
    finally:
        control.down(cfg, log=quiet)


def client(cfg: labconfig.LabConfig, key: str, secret: str, **config):
    return boto3.client("s3", endpoint_url=f"https://{s3.address(cfg)}", region_name=s3.REGION,
                        aws_access_key_id=key, aws_secret_access_key=secret, verify=str(s3.ca_path(cfg)),
                        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4",
                                      retries={"max_attempts": 1}, **config))


def good(cfg: labconfig.LabConfig, **config):
    creds = s3.read_credentials(cfg)
    return client(cfg, creds.key, creds.secret, **config)


def refused(call) -> tuple[int, str]:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        call()
    return err.value.response["ResponseMetadata"]["HTTPStatusCode"], err.value.response["Error"]["Code"]


def started_at(cfg: labconfig.LabConfig) -> str:
    return (inspect("container", container_name(cfg, s3.ROLE)) or {}).get("State", {}).get("StartedAt", "")


def test_the_address_is_the_fourth_highest_below_the_other_services():
    cfg = labconfig.LabConfig(subnet="10.77.0.0/24")
    assert s3.address(cfg) == "10.77.0.251"
    assert len({s3.address(cfg), registry.address(cfg), cfg.dns_ip, cfg.pebble_ip}) == 4
    assert s3.address(labconfig.LabConfig(subnet="10.90.16.0/28")) == "10.90.16.11"


def test_https_only_with_the_lab_ca(lab, tmp_path):
    cfg, _ = lab
    url = f"https://{s3.address(cfg)}/{s3.BUCKET}"
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, timeout=10)                        # not a publicly trusted certificate
    other = tmp_path / "other-ca.pem"                        # nor one any other lab CA signed
    labca.ensure_server_tls(tmp_path / "tls", other, "another lab CA", s3.ROLE, s3.address(cfg))
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url, verify=str(other), timeout=10)
    unsigned = requests.get(url, verify=str(s3.ca_path(cfg)), timeout=10)
    assert unsigned.status_code == 403 and b"<Code>AccessDenied</Code>" in unsigned.content


def test_the_key_puts_lists_gets_and_deletes_objects_in_the_bucket_path_style(lab):
    cfg, _ = lab
    c = good(cfg)
    c.put_object(Bucket=s3.BUCKET, Key="archive/db/000000010000000000000001", Body=b"wal segment")
    listed = c.list_objects_v2(Bucket=s3.BUCKET, Prefix="archive/", Delimiter="/")
    assert [p["Prefix"] for p in listed["CommonPrefixes"]] == ["archive/db/"]
    assert c.get_object(Bucket=s3.BUCKET, Key="archive/db/000000010000000000000001")["Body"].read() == b"wal segment"
    assert c.head_object(Bucket=s3.BUCKET, Key="archive/db/000000010000000000000001")["ContentLength"] == 11
    assert c.get_bucket_location(Bucket=s3.BUCKET)["LocationConstraint"] == s3.REGION
    c.delete_object(Bucket=s3.BUCKET, Key="archive/db/000000010000000000000001")
    assert c.list_objects_v2(Bucket=s3.BUCKET, Prefix="archive/")["KeyCount"] == 0


def test_a_multipart_upload_is_one_object(lab):
    cfg, _ = lab
    c = good(cfg)
    upload = c.create_multipart_upload(Bucket=s3.BUCKET, Key="backup/full.tar")["UploadId"]
    chunks = [b"a" * (5 * 1024 * 1024), b"b" * 1000]         # every part but the last: 5 MiB or more
    parts = [{"PartNumber": n, "ETag": c.upload_part(Bucket=s3.BUCKET, Key="backup/full.tar", PartNumber=n,
                                                     UploadId=upload, Body=chunk)["ETag"]}
             for n, chunk in enumerate(chunks, start=1)]
    c.complete_multipart_upload(Bucket=s3.BUCKET, Key="backup/full.tar", UploadId=upload,
                                MultipartUpload={"Parts": parts})
    assert c.get_object(Bucket=s3.BUCKET, Key="backup/full.tar")["Body"].read() == b"".join(chunks)
    c.delete_object(Bucket=s3.BUCKET, Key="backup/full.tar")


def test_a_wrong_key_or_a_wrong_secret_is_refused_with_403(lab):
    cfg, _ = lab
    creds = s3.read_credentials(cfg)
    good(cfg).put_object(Bucket=s3.BUCKET, Key="private", Body=b"x")
    wrong_secret = client(cfg, creds.key, creds.secret[:-4] + "AAAA")
    wrong_key = client(cfg, "AKIA" + "Z" * 16, creds.secret)
    for c in (wrong_secret, wrong_key):
        for call in (lambda: c.list_objects_v2(Bucket=s3.BUCKET), lambda: c.get_object(Bucket=s3.BUCKET, Key="private"),
                     lambda: c.put_object(Bucket=s3.BUCKET, Key="planted", Body=b"x")):
            assert refused(call)[0] == 403
    assert refused(lambda: wrong_secret.list_objects_v2(Bucket=s3.BUCKET)) == (403, "SignatureDoesNotMatch")
    assert refused(lambda: wrong_key.list_objects_v2(Bucket=s3.BUCKET)) == (403, "InvalidAccessKeyId")
    assert "Contents" not in good(cfg).list_objects_v2(Bucket=s3.BUCKET, Prefix="planted")
    good(cfg).delete_object(Bucket=s3.BUCKET, Key="private")


def test_moto_api_cannot_switch_authentication_off(lab):
    cfg, _ = lab
    creds = s3.read_credentials(cfg)
    base, ca = f"https://{s3.address(cfg)}", str(s3.ca_path(cfg))
    assert requests.post(f"{base}/moto-api/reset-auth", data=b"1000", verify=ca, timeout=10).status_code == 403
    assert requests.get(f"{base}/moto-api/data.json", verify=ca, timeout=10).status_code == 403
    assert refused(lambda: client(cfg, creds.key, "x" * 40).list_objects_v2(Bucket=s3.BUCKET))[0] == 403
    assert s3.works(cfg, creds)


def test_the_key_is_private_and_never_logged(lab):
    cfg, logged = lab
    creds = s3.read_credentials(cfg)
    assert stat.S_IMODE(s3.credentials_path(cfg).stat().st_mode) == 0o600
    assert stat.S_IMODE(s3.s3_dir(cfg).stat().st_mode) == 0o700
    assert creds.secret not in repr(creds)
    logs = subprocess.run(["docker", "logs", container_name(cfg, s3.ROLE)], capture_output=True, text=True,
                          timeout=30)
    for text in (logs.stdout + logs.stderr, "\n".join(logged)):
        assert creds.key not in text and creds.secret not in text
    assert logged == [f"lab s3: {container_name(cfg, s3.ROLE)} at {s3.address(cfg)}"]


def test_up_again_keeps_a_running_endpoint_its_key_and_objects(lab):
    cfg, _ = lab
    creds, first = s3.read_credentials(cfg), started_at(cfg)
    good(cfg).put_object(Bucket=s3.BUCKET, Key="kept", Body=b"still here")
    assert s3.ensure(cfg, log=quiet) == s3.address(cfg)
    assert started_at(cfg) == first and s3.read_credentials(cfg) == creds
    assert good(cfg).get_object(Bucket=s3.BUCKET, Key="kept")["Body"].read() == b"still here"
    good(cfg).delete_object(Bucket=s3.BUCKET, Key="kept")


@pytest.mark.parametrize("how,fails", [("unreachable", requests.ConnectionError), ("frozen", requests.Timeout)])
def test_an_outage_makes_the_endpoint_unreachable_and_it_comes_back_as_it_was(lab, how, fails):
    cfg, _ = lab
    creds = s3.read_credentials(cfg)
    good(cfg).put_object(Bucket=s3.BUCKET, Key="before", Body=b"kept")
    with s3.outage(cfg, how):
        assert s3.state_of(cfg) == ("paused" if how == "frozen" else "unreachable")
        started = time.monotonic()
        with pytest.raises(fails):
            s3.request(cfg, "HEAD", f"/{s3.BUCKET}", creds, timeout=3)
        assert time.monotonic() - started < 10
    assert s3.state_of(cfg) == "running" and s3.works(cfg, creds)
    assert good(cfg).get_object(Bucket=s3.BUCKET, Key="before")["Body"].read() == b"kept"
    good(cfg).delete_object(Bucket=s3.BUCKET, Key="before")


def test_up_after_an_interrupted_outage_brings_the_same_endpoint_back(lab):
    cfg, _ = lab
    creds, first = s3.read_credentials(cfg), started_at(cfg)
    outage = s3.outage(cfg)
    outage.__enter__()                  # a test that died inside the block never leaves it
    assert s3.state_of(cfg) == "unreachable"
    s3.ensure(cfg, log=quiet)
    assert s3.state_of(cfg) == "running" and started_at(cfg) == first and s3.works(cfg, creds)


def test_an_endpoint_that_lost_its_memory_is_replaced_with_a_new_key(lab):
    cfg, _ = lab
    old = s3.read_credentials(cfg)
    subprocess.run(["docker", "restart", "-t", "1", container_name(cfg, s3.ROLE)], check=True, capture_output=True)
    # What the engine brings back after its own restart: moto again, without the user, key or bucket.
    assert not s3.works(cfg, old)
    s3.ensure(cfg, log=quiet)
    new = s3.read_credentials(cfg)
    assert new.key != old.key and s3.works(cfg, new) and not s3.works(cfg, old)
    assert refused(lambda: client(cfg, old.key, old.secret).list_objects_v2(Bucket=s3.BUCKET))[0] == 403


# The client the endpoint is for: Debian 12's pgBackRest (2.45) beside PostgreSQL 15, as the stack's
# postgres image would have it.
PGBACKREST = recipes.Recipe(
    tag="stackdeploy-lab/pgbackrest-client:bookworm",
    pre="mkdir -p /etc/postgresql-common && echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf",
    packages=("postgresql-15", "pgbackrest"),
    post="pgbackrest version",
)
PG_FLOW = """set -e
su postgres -c '/usr/lib/postgresql/15/bin/initdb -D /tmp/pg' >/dev/null
printf '%s\\n' "archive_mode = on" "archive_command = 'pgbackrest --stanza=lab archive-push %p'" \\
    "unix_socket_directories = '/tmp'" >> /tmp/pg/postgresql.conf
su postgres -c '/usr/lib/postgresql/15/bin/pg_ctl -D /tmp/pg -l /tmp/pg.log -w start' >/dev/null
su postgres -c 'pgbackrest --stanza=lab stanza-create && pgbackrest --stanza=lab check'
"""


def pgbackrest(cfg: labconfig.LabConfig, key: str, secret: str, script: str) -> subprocess.CompletedProcess:
    """``script`` in a pgBackRest container on the lab network, its repository the lab's bucket;
    the key and secret reach it through the environment, never a command line."""
    options = {"TYPE": "s3", "S3_ENDPOINT": s3.address(cfg), "S3_URI_STYLE": "path", "S3_REGION": s3.REGION,
               "S3_BUCKET": s3.BUCKET, "PATH": "/pgbackrest", "STORAGE_CA_FILE": "/ca.pem",
               "S3_KEY": key, "S3_KEY_SECRET": secret}
    env = {f"PGBACKREST_REPO1_{k}": v for k, v in options.items()}
    env.update(PGBACKREST_STANZA="lab", PGBACKREST_PG1_PATH="/tmp/pg", PGBACKREST_PG1_SOCKET_PATH="/tmp",
               PGBACKREST_LOG_LEVEL_FILE="off", PGBACKREST_LOG_LEVEL_CONSOLE="info",
               PGBACKREST_IO_TIMEOUT="10")
    args = [a for name in env for a in ("-e", name)]
    return subprocess.run(["docker", "run", "--rm", "--network", cfg.network, "-v", f"{s3.ca_path(cfg)}:/ca.pem:ro",
                           *args, PGBACKREST.tag, "bash", "-c", script], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def test_debian_12s_pgbackrest_archives_to_the_bucket_and_is_refused_a_wrong_secret(lab):
    """pgBackRest checks the certificate's names itself (2.45: DNS names only, even for an IP
    endpoint), and reads a bodiless answer up to the connection's close, which must be a TLS one."""
    cfg, _ = lab
    builder.ensure_image(PGBACKREST, log=print)
    creds = s3.read_credentials(cfg)
    done = pgbackrest(cfg, creds.key, creds.secret, PG_FLOW)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "successfully archived to '/pgbackrest/archive/lab/" in done.stdout
    keys = [o["Key"] for o in good(cfg).list_objects_v2(Bucket=s3.BUCKET, Prefix="pgbackrest/")["Contents"]]
    assert "pgbackrest/archive/lab/archive.info" in keys and "pgbackrest/backup/lab/backup.info" in keys
    for text in (done.stdout, done.stderr):
        assert creds.secret not in text
    wrong = pgbackrest(cfg, creds.key, "x" * 40, "pgbackrest repo-ls")
    assert wrong.returncode != 0 and "403" in wrong.stdout + wrong.stderr


@pytest.mark.lab
def test_inv_lab_up_status_env_and_down_handle_the_endpoint(tmp_path, images):
    cfg = make_cfg(tmp_path)
    (tmp_path / "tasks.py").write_text(
        "from invoke import Collection\nimport lab.tasks\nns = Collection()\nns.add_collection(lab.tasks.ns)\n")

    def inv(*args: str) -> subprocess.CompletedProcess:
        # PYTHONPATH: this checkout's lab, whichever checkout the venv's editable install names
        proc = subprocess.run([INV, "--search-root", str(tmp_path), *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600, env={**os.environ, **cfg.to_env(), "PYTHONPATH": str(REPO)})
        assert proc.returncode == 0, proc.stderr
        return proc

    try:
        up = inv("lab.up")
        endpoint = f"https://{s3.address(cfg)}/{s3.BUCKET}"
        assert f"S3 {endpoint}" in up.stderr
        env = dotenv_values(stream=io.StringIO(inv("lab.env").stdout))
        assert {k: env[k] for k in s3.ENV_NAMES if k not in ("SPACES_KEY", "SPACES_SECRET")} == {
            "SPACES_ENDPOINT": s3.address(cfg), "SPACES_REGION": "nyc3", "SPACES_BUCKET": "stackdeploy-backups",
            "SPACES_TEST_CA_ROOT": str(s3.ca_path(cfg))}
        assert env["SPACES_TEST_CA_ROOT"].startswith("/") and env["SPACES_KEY"].startswith("AKIA")
        for text in (up.stdout, up.stderr):
            assert env["SPACES_KEY"] not in text and env["SPACES_SECRET"] not in text
        c = client(cfg, env["SPACES_KEY"], env["SPACES_SECRET"])
        c.put_object(Bucket=env["SPACES_BUCKET"], Key="from-env", Body=b"ok")
        assert f"S3: {endpoint} (running)" in inv("lab.status").stdout
        with s3.outage(cfg):
            assert f"S3: {endpoint} (unreachable)" in inv("lab.status").stdout
        assert json.loads(inv("lab.status", "--json").stdout)["s3"]["state"] == "running"
        inv("lab.up")                                        # kept: the same key, the object still there
        assert dotenv_values(stream=io.StringIO(inv("lab.env").stdout))["SPACES_KEY"] == env["SPACES_KEY"]
        assert c.get_object(Bucket=env["SPACES_BUCKET"], Key="from-env")["Body"].read() == b"ok"
        inv("lab.down")
        assert inspect("container", container_name(cfg, s3.ROLE)) is None
        assert not s3.s3_dir(cfg).exists()
        assert f"S3: {endpoint} (missing)" in inv("lab.status").stdout
    finally:
        control.down(cfg, log=quiet)
