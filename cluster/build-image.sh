#!/usr/bin/env bash
# Build the cluster image from cluster/Dockerfile, where Docker exists (push it to your registry
# yourself). Run from anywhere; the build context is the repository root.
#
#   cluster/build-image.sh [TAG]    # default TAG: simgan-ray:<ray version>-gpu, e.g. simgan-ray:2.60.0-gpu
#
# Without Docker, tests/unit/test_cluster_env.py still checks the Dockerfile's syntax and pins.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v docker >/dev/null 2>&1; then
    echo "build-image.sh: docker not found; install Docker (with BuildKit) to build the image" >&2
    exit 2
fi
if ! docker info >/dev/null 2>&1; then
    echo "build-image.sh: the docker client cannot reach a Docker daemon (docker info fails)" >&2
    exit 2
fi
# The pins must be the ones CI tests; the check needs the dev virtualenv (.ci/setup builds it).
if [[ -x .venv/bin/python ]]; then
    .venv/bin/python cluster/requirements.py --check
else
    echo "build-image.sh: no .venv here; requirements-cluster.txt not checked against .ci/constraints.txt" >&2
fi
ray_version=$(sed -n 's/^ray==//p' .ci/constraints.txt)
tag=${1:-simgan-ray:${ray_version}-gpu}
DOCKER_BUILDKIT=1 docker build --file cluster/Dockerfile --tag "$tag" .
echo "built $tag"
