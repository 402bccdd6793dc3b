"""Images the lab builds from Debian's packages: the droplet machine and the stand-ins
for the Docker Hub images the stack uses (Docker Hub is not reachable from here)."""
