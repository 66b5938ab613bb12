# The platform's own image: `racetrack serve` driving the host's Docker engine through its socket.
#
#   scripts/setup-docker                                  # the engine and the offline base image
#   docker build --network host -t racetrack/platform .
#   docker run -d --name racetrack --network host \
#       -v /var/run/docker.sock:/var/run/docker.sock -v racetrack-data:/data \
#       -v ~/.ssh/id_ed25519.pub:/admin.pub:ro \
#       racetrack/platform --admin-key /admin.pub --python-base-image racetrack/python3-base:bookworm
#
# Host networking lets the platform reach job containers on their loopback ports. Behind a
# TLS-intercepting proxy, put its CA bundle in build-ca/ca.crt before building: pip trusts it.
ARG BASE_IMAGE=racetrack/python3-base:bookworm
FROM ${BASE_IMAGE}

COPY build-ca/ /etc/racetrack/build-ca/
COPY pyproject.toml README.md /opt/racetrack/src/
COPY gitreceiver /opt/racetrack/src/gitreceiver
COPY buildpacks /opt/racetrack/src/buildpacks
COPY router /opt/racetrack/src/router
COPY controller /opt/racetrack/src/controller
RUN if [ -f /etc/racetrack/build-ca/ca.crt ]; then export PIP_CERT=/etc/racetrack/build-ca/ca.crt; fi \
    && python3 -m venv /opt/racetrack/venv \
    && /opt/racetrack/venv/bin/pip install --no-cache-dir --disable-pip-version-check /opt/racetrack/src

ENV PYTHONUNBUFFERED=1
VOLUME /data
EXPOSE 2222 7102 7105
ENTRYPOINT ["/opt/racetrack/venv/bin/racetrack", "serve", "--data-dir", "/data", "--runtime", "docker", "--host", "0.0.0.0"]
