#!/opt/moto/bin/python
"""The lab's S3 endpoint (DigitalOcean Spaces' stand-in): moto's server, HTTPS on 443.

What `moto_server` does, with one guard in front. moto's own /moto-api/ answers anyone: it can
wipe every bucket (/moto-api/reset) and switch its IAM authentication off (/moto-api/reset-auth),
and Spaces has no such door, so it is closed. A request that carries no SigV4 Authorization header
is refused with S3's 403 AccessDenied before moto sees it: moto's access check would fail on it
with a 500, and Spaces answers 403. Every other request is moto's, which checks the signature and
the key (lab/services/s3.py turns that on through INITIAL_NO_AUTH_ACTION_COUNT).
"""
from __future__ import annotations

import signal
import sys

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

TLS_DIR = "/etc/lab-s3/tls"
DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n'
          b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")


def guarded(app):
    def serve(environ, start_response):
        signed = environ.get("HTTP_AUTHORIZATION", "").startswith("AWS4-HMAC-SHA256 ")
        if environ.get("PATH_INFO", "").startswith("/moto-api") or not signed:
            start_response("403 Forbidden", [("Content-Type", "application/xml"),
                                              ("Content-Length", str(len(DENIED)))])
            return [DENIED]
        return app(environ, start_response)
    return serve


class Handler(MotoRequestHandler):
    def finish(self):
        super().finish()
        # werkzeug closes the connection after every response, and without TLS's close_notify.
        # pgBackRest reads a body of no announced length (a PUT's or DELETE's answer) up to the
        # close and takes a bare one for a cut-off response ("unexpected eof while reading"):
        # end TLS properly first. The timeout bounds a client that never answers the goodbye.
        try:
            self.connection.settimeout(5)
            self.connection.unwrap()
        except (OSError, ValueError):
            pass


if __name__ == "__main__":
    # PID 1 of its container: without a handler SIGTERM is ignored and `docker stop` waits 10 s.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    run_simple("0.0.0.0", 443, guarded(DomainDispatcherApplication(create_backend_app)), threaded=True,
               ssl_context=(f"{TLS_DIR}/cert.pem", f"{TLS_DIR}/key.pem"), request_handler=Handler)
