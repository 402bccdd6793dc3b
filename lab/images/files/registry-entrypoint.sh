#!/bin/sh
# The lab registry (distribution) with its output passed through a mask: distribution names the
# authenticated user on its error lines ("error authenticating user ...", a 404 while a push
# probes for a blob) and the lab's user name is the API token, which `docker logs` must never
# show. awk reads the user names from the htpasswd file itself: no secret on a command line.
set -eu
docker-registry serve /etc/docker/registry/lab.yml 2>&1 | awk -F: '
    NR == FNR { if ($1 != "") names[$1] = 1; next }
    {
        line = $0
        for (name in names) {
            out = ""
            while ((at = index(line, name)) > 0) {
                out = out substr(line, 1, at - 1) "***"
                line = substr(line, at + length(name))
            }
            line = out line
        }
        print line
        fflush()
    }' /etc/docker/registry/auth/htpasswd -
