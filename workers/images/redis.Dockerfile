# Redis for compose.yaml (the farm's Redis and the context store): Debian's redis-server on the
# farm's Debian base. Built by workers/images/build.sh (with --network host, to reach the mirror).
ARG BASE=dockyard-base:bookworm
FROM ${BASE}
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && apt-get update && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /data
WORKDIR /data
EXPOSE 6379
CMD ["redis-server"]
