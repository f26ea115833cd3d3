# shoal: one command for a local cluster, one for the tests.
set shell := ["bash", "-euo", "pipefail", "-c"]
# recipe arguments reach commands as "$@", each one word as given (just up --worker-args "--a b" keeps "--a b" whole)
set positional-arguments

python := env_var_or_default("PYTHON", "python3")

# install shoal and its dev tools (CPU torch from the local wheel cache when present)
setup:
    {{python}} -m pip install -q torch==2.13.0 -e '.[dev]' || {{python}} -m pip install -q -e '.[dev]'

# start nats-server (--nats-cluster 3: three, clustered), a worker and the frontend on 127.0.0.1:8000, then show a streamed completion
up *ARGS:
    {{python}} -m shared.cli up "$@"
    {{python}} -m shared.cli chat "Hello, shoal!" --max-tokens 24

# start a cluster of mock workers (no model math)
up-mock *ARGS:
    {{python}} -m shared.cli up --engine mock "$@"

# disaggregated: nats-server + 1 prefill + 1 decode + frontend (Ctrl-C stops it)
up-disagg *ARGS:
    bash deploy/disagg.sh "$@"

# multimodal (images by URL) on the tiny VLM: MODE=epd|e-pd|e-p-d (Ctrl-C stops it)
up-multimodal *ARGS:
    bash deploy/multimodal.sh "$@"

# a diffusion language model (iterative unmasking) on the tiny diffusion model (Ctrl-C stops it)
up-diffusion *ARGS:
    bash deploy/diffusion.sh "$@"

# stop exactly what `just up` started (workers drain first)
down:
    {{python}} -m shared.cli down

# lint, then the test suite (unit + integration + e2e on real processes); no tests collected fails
test *ARGS:
    {{python}} -m ruff check .
    {{python}} -m pytest -q "$@"

lint:
    {{python}} -m ruff check .

# benchmarks (not part of the tests); results go to docs/BENCHMARKS.md
bench *ARGS:
    {{python}} -m tests.bench.run_all "$@"
