"""Pure parts of the lab's S3 endpoint: the lab's SigV4 signer against botocore's (which moto verifies
with)."""
from __future__ import annotations

import datetime
import json

import pytest
from botocore.auth import S3SigV4Auth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from lab.services import sigv4

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
