# The dockyard worker image of compose.yaml (the worker, Flower and the ACL maker): Debian's
# python3, dockyard with Flower installed from this checkout, and the docker CLI with buildx
# (Debian 13's packages: docker-py talks to the engine's socket, the buildx backend runs the CLI
# and its plugin). Built by workers/images/build.sh with --network host (Debian's mirror, PyPI);
# its staging directory is the context: source/ (the package's files) and docker/ (the CLI and
# the plugin, unpacked).
ARG BASE=dockyard-base:bookworm
FROM ${BASE}
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d \
 && apt-get update && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/dockyard
ENV PATH=/opt/dockyard/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
COPY docker/ /
# the dependencies first, from pyproject.toml alone: a change of the sources reuses this layer.
# pip trusts the certificates the build host trusts (a secret mount: nothing of it stays in the image)
COPY source/pyproject.toml /tmp/dockyard/pyproject.toml
RUN --mount=type=secret,id=ca-bundle python3 -c 'import tomllib; p = tomllib.load(open("/tmp/dockyard/pyproject.toml", "rb")); \
print("\n".join(p["project"]["dependencies"] + p["project"]["optional-dependencies"]["ops"] \
+ p["build-system"]["requires"]))' >/tmp/dockyard/requirements.txt \
 && PIP_CERT=/run/secrets/ca-bundle pip install --no-cache-dir -r /tmp/dockyard/requirements.txt
COPY source/ /tmp/dockyard/
RUN pip install --no-cache-dir --no-deps --no-build-isolation /tmp/dockyard && rm -rf /tmp/dockyard \
 && dockyard --version && docker --version && docker buildx version
CMD ["dockyard", "worker"]
