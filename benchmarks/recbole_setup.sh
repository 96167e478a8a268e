#!/usr/bin/env bash
# Benchmark-only environment for RecBole 1.2.1 (SASRec, GRU4Rec baselines of benchmarks/models.py).
#
#   bash benchmarks/recbole_setup.sh          # creates benchmarks/out/venv-recbole (git-ignored)
#
# RecBole 1.2.1 predates numpy 2, pandas 3 and setuptools 81 (it imports pkg_resources through its
# dependencies), hence the caps. torch is pinned to the CPU build the project's `models` extra uses:
# a bare `pip install torch` from PyPI pulls a multi-GB CUDA build. pip finds the CPU wheel through
# its find-links (PIP_FIND_LINKS, /opt/wheels here); TORCH_WHEEL=path/to/wheel overrides that.
# torch >= 2.6 loads checkpoints with weights_only=True, which RecBole's own best-model checkpoint
# does not pass: run it with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (benchmarks/models.py does).
# The run itself: benchmarks/recbole_runner.py (called by benchmarks/models.py --models recbole-*).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${RECBOLE_VENV:-$here/out/venv-recbole}"
python="${PYTHON:-python3}"

"$python" -c 'import sys; assert sys.version_info[:2] >= (3, 9), sys.version' \
    || { echo "RecBole 1.2.1 needs Python >= 3.9" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip)
"${pip[@]}" install --quiet --upgrade "pip" "setuptools<81" "wheel"

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
    "recbole==1.2.1" \
    "setuptools<81" "numpy<2" "pandas<3"

# fail here, not in the middle of a benchmark
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 "$venv/bin/python" - <<'EOF'
import numpy, pandas, torch, recbole
from recbole.model.sequential_recommender import SASRec, GRU4Rec  # noqa: F401
print(f"recbole {recbole.__version__}, torch {torch.__version__}, numpy {numpy.__version__}, "
      f"pandas {pandas.__version__}")
EOF
echo "RecBole environment ready: $venv"
