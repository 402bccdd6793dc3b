"""AWS Signature Version 4 for the few requests the lab makes to its own S3 endpoint.

The lab sets its S3 service up (IAM user, access key, bucket) and checks it with plain
`requests`; this is the signing those requests need (header-signed, payload hashed), so the lab
does not depend on boto3. moto checks these signatures with botocore's own signer, and
tests/lab/test_s3_units.py compares this one with botocore's.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping
from urllib.parse import parse_qsl, quote, urlsplit

ALGORITHM = "AWS4-HMAC-SHA256"


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def _quote(text: str, safe: str = "-_.~") -> str:
    return quote(text, safe=safe)


def signed_headers(method: str, url: str, region: str, service: str, key: str, secret: str,
                   body: bytes = b"", headers: Mapping[str, str] | None = None,
                   now: datetime.datetime | None = None) -> dict[str, str]:
    """The headers to send with this request: ``headers``, x-amz-date, x-amz-content-sha256 and
    Authorization. ``url`` as sent: its query already URI-encoded (``prefix=a%2Fb``), as an S3
    client sends it; the lab's own paths need no escaping."""
    parts = urlsplit(url)
    stamp = (now or datetime.datetime.now(datetime.timezone.utc)).strftime("%Y%m%dT%H%M%SZ")
    payload = hashlib.sha256(body).hexdigest()
    sent = {k.lower(): str(v).strip() for k, v in (headers or {}).items()}
    sent.update({"host": parts.netloc, "x-amz-date": stamp, "x-amz-content-sha256": payload})
    names = sorted(sent)
    query = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted(parse_qsl(parts.query, keep_blank_values=True)))
    canonical = "\n".join([method.upper(), _quote(parts.path or "/", safe="/-_.~"), query,
                           *(f"{name}:{' '.join(sent[name].split())}" for name in names), "",
                           ";".join(names), payload])
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join([ALGORITHM, stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    signing_key = ("AWS4" + secret).encode()
    for part in (stamp[:8], region, service, "aws4_request"):
        signing_key = _hmac(signing_key, part)
    signature = hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest()
    sent["authorization"] = (f"{ALGORITHM} Credential={key}/{scope}, SignedHeaders={';'.join(names)}, "
                             f"Signature={signature}")
    sent.pop("host")          # requests sends the same Host itself (port 443: no port in it)
    return sent
