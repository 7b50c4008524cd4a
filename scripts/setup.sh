#!/usr/bin/env bash
# Create .venv and install hotpipe into it. Torch's CPU wheel is installed
# first and pinned, so pip never pulls a multi-GB CUDA build; the package
# itself only asks for torch>=2.4 (GPU users bring their own build).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
python -m pip show torch >/dev/null 2>&1 || python -m pip install -q "torch==2.13.0" 2>&1 | grep -v '^WARNING: Location' || true
python -m pip show torch >/dev/null
# Build-backend chatter goes to a log; a failure still stops the script below.
python -m pip install -q -e ".${EXTRAS:+[$EXTRAS]}" >.venv/install.log 2>&1 || { cat .venv/install.log; exit 1; }
python -c "import hotpipe" >/dev/null
# The torchrec extra: torchrec's own metadata asks for the CUDA fbgemm-gpu build and an
# exact torchmetrics, neither of which it needs on CPU; the extra brings what it does need.
case ",$EXTRAS," in
  *,torchrec,*) python -m pip install -q --no-deps "torchrec==1.8.0" >>.venv/install.log 2>&1 \
                  || { cat .venv/install.log; exit 1; } ;;
esac
