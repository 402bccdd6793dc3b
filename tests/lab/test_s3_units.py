"""Pure parts of the lab's S3 endpoint: the lab's SigV4 signer against botocore's (which moto verifies
with), and the Spaces settings `inv lab.env` prints: from the S3 service, never generated."""
from __future__ import annotations

import datetime
import json

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lab import config as labconfig
from lab import control, state
from lab.errors import LabError
from lab.services import s3, sigv4

NOW = datetime.datetime(2026, 3, 1, 12, 30, 5, tzinfo=datetime.timezone.utc)
KEY, SECRET = "AKIAEXAMPLEEXAMPLE01", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def botocore_signature(auth_cls, method: str, url: str, region: str, service: str, body: bytes,
                       headers: dict[str, str]) -> str:
    """What moto computes for a request carrying these headers (moto.iam.access_control)."""
    names = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
    sent = {"host": url.split("/")[2], **headers}
    request = AWSRequest(method=method, url=url, data=body, headers={k: v for k, v in sent.items() if k in names})
    request.context["timestamp"] = headers["x-amz-date"]
    auth = auth_cls(Credentials(KEY, SECRET), service, region)
    return auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)


@pytest.mark.parametrize("method,url,region,service,body,extra,auth_cls", [
    ("PUT", "https://10.77.0.251/stackdeploy-backups", "nyc3", "s3", b"<CreateBucketConfiguration/>", {}, S3SigV4Auth),
    ("HEAD", "https://10.77.0.251/stackdeploy-backups", "nyc3", "s3", b"", {}, S3SigV4Auth),
    ("GET", "https://10.77.0.251/stackdeploy-backups?list-type=2&prefix=archive%2F&delimiter=%2F", "nyc3", "s3", b"",
     {}, S3SigV4Auth),
    ("POST", "https://10.77.0.251/", "us-east-1", "iam", b"Action=CreateUser&UserName=spaces&Version=2010-05-08",
     {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"}, SigV4Auth),
])
def test_the_lab_signer_signs_as_botocore_does(method, url, region, service, body, extra, auth_cls):
    headers = sigv4.signed_headers(method, url, region, service, KEY, SECRET, body, extra, now=NOW)
    assert headers["x-amz-date"] == "20260301T123005Z"
    assert headers["authorization"].startswith(f"AWS4-HMAC-SHA256 Credential={KEY}/20260301/{region}/{service}/aws4_request, ")
    ours = headers["authorization"].rsplit("Signature=", 1)[1]
    assert ours == botocore_signature(auth_cls, method, url, region, service, body, headers)
    assert SECRET not in json.dumps(headers)


def test_a_wrong_secret_makes_another_signature():
    url = "https://10.77.0.251/stackdeploy-backups"
    right = sigv4.signed_headers("GET", url, "nyc3", "s3", KEY, SECRET, now=NOW)["authorization"]
    assert sigv4.signed_headers("GET", url, "nyc3", "s3", KEY, SECRET + "x", now=NOW)["authorization"] != right


def up_lab(tmp_path, creds: bool = True) -> labconfig.LabConfig:
    """The state folder of a lab that is up, without any container."""
    cfg = labconfig.LabConfig(subnet="10.77.0.0/24", state_dir=tmp_path / ".lab")
    state.write(cfg.state_dir, {"token": "t" * 64, "api_url": "http://127.0.0.1:8777/v2/", "domain": cfg.domain,
                                "ssh_key": str(tmp_path / "id"), "port": 8777, "operator_ip": cfg.gateway})
    if creds:
        s3.s3_dir(cfg).mkdir(parents=True)
        state.write_private(s3.credentials_path(cfg), json.dumps({"key": "AKIALABKEY", "secret": "lab-secret"}))
    return cfg


def test_lab_env_takes_the_spaces_settings_from_the_s3_service_never_from_the_example(tmp_path):
    cfg = up_lab(tmp_path)
    example = tmp_path / ".env.example"
    example.write_text("DOMAIN=example.com\nPOSTGRES_PASSWORD=change-me\nBACKUP_CIPHER_PASS=change-me-cipher\n"
                       "SPACES_ENDPOINT=nyc3.digitaloceanspaces.com\nSPACES_REGION=nyc3\nSPACES_BUCKET=my-backups\n"
                       "SPACES_KEY=change-me-key\nSPACES_SECRET=change-me-secret\nSPACES_TEST_CA_ROOT=\n")
    values = control.env_values(cfg, stack_example=example)
    assert {k: values[k] for k in s3.ENV_NAMES} == {
        "SPACES_ENDPOINT": "10.77.0.251", "SPACES_REGION": "nyc3", "SPACES_BUCKET": "stackdeploy-backups",
        "SPACES_KEY": "AKIALABKEY", "SPACES_SECRET": "lab-secret",
        "SPACES_TEST_CA_ROOT": str((tmp_path / ".lab" / "s3" / "ca.pem").resolve())}
    # The backup passphrase is the stack's own secret: generated once, then kept.
    assert len(values["BACKUP_CIPHER_PASS"]) >= 32 and "change-me" not in values["BACKUP_CIPHER_PASS"]
    assert control.env_values(cfg, stack_example=example)["BACKUP_CIPHER_PASS"] == values["BACKUP_CIPHER_PASS"]
    kept = (cfg.state_dir / "stack.env").read_text()
    assert "SPACES_" not in kept and "lab-secret" not in kept


def test_lab_env_without_an_s3_key_says_to_run_lab_up(tmp_path):
    cfg = up_lab(tmp_path, creds=False)
    with pytest.raises(LabError, match="inv lab.up"):
        control.env_values(cfg, stack_example=tmp_path / "none")
