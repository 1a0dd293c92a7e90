# The registry of compose.yaml: Debian's docker-registry (CNCF distribution 2.8) on the farm's
# Debian base, with htpasswd authentication. Built by workers/images/build.sh.
ARG BASE=dockyard-base:bookworm
FROM ${BASE}
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && apt-get update && apt-get install -y --no-install-recommends docker-registry \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /var/lib/registry /auth
COPY registry.yml /etc/docker/registry/config.yml
EXPOSE 5000
# REGISTRY_* variables override the file (REGISTRY_HTTP_ADDR: where it listens)
CMD ["docker-registry", "serve", "/etc/docker/registry/config.yml"]
