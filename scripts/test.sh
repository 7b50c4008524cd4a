#!/usr/bin/env bash
# Set up (if needed, with the dev tools and the llm/fl/torchrec extras their tests need)
# and run the whole test suite: every tier, slow tests included (`pytest` alone
# runs the quick tier). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev,llm,fl,torchrec
. .venv/bin/activate
set +e
python -m pytest -q -m "" "$@"
rc=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
exit $rc
