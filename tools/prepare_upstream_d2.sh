#!/usr/bin/env bash
# Prepare an upstream detectron2 source checkout that `make test-upstream D2_SRC=DEST` runs the
# test suite against (with PYTHONPATH, no install): the README's compatibility table comes
# from such checkouts.
#
#   tools/prepare_upstream_d2.sh REF DEST
#
# REF is a tag or branch of detectron2 (v0.6, main). Environment:
#   D2_REPO      where to clone from (default: detectron2's GitHub repository, or a local mirror)
#   D2_OPS_FROM  the package folder of an installed detectron2 built for the same torch (say
#                .venv/lib/python3.10/site-packages/detectron2): its compiled ops (_C*.so) are
#                copied into the checkout instead of compiled. Faster R-CNN's ops have not
#                changed since v0.6 (only the rotated RoIAlign's argument types did). Unset:
#                the ops are compiled in place (`setup.py build_ext --inplace`, slow on a CPU).
#   D2_PINS      packages that REF needs older than the environment's, installed into
#                DEST/.deps (which test-upstream puts ahead of the environment's packages).
#                v0.6 needs "numpy<1.24 pillow<10": it uses np.int/np.bool and Image.LINEAR.
#   PYTHON       the Python to build with and pip-install through (default .venv/bin/python)
set -euo pipefail

if [ $# -ne 2 ]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
ref=$1
dest=$2
repo=${D2_REPO:-https://github.com/facebookresearch/detectron2.git}
# Absolute: the build runs inside the checkout.
python=$(realpath "${PYTHON:-.venv/bin/python}")

if [ ! -d "$dest/.git" ]; then
    git clone -q "$repo" "$dest"
fi
git -C "$dest" checkout -q "$ref"

if [ -n "${D2_OPS_FROM:-}" ]; then
    cp "$D2_OPS_FROM"/_C*.so "$dest/detectron2/"
else
    (cd "$dest" && "$python" setup.py build_ext --inplace)
fi

# detectron2's setup.py links the configs into the package at install time; model_zoo's
# get_config_file looks for them there.
ln -sfn ../../configs "$dest/detectron2/model_zoo/configs"

if [ -n "${D2_PINS:-}" ]; then
    # shellcheck disable=SC2086  # one argument per package
    "$python" -m pip install -q --no-deps --target "$dest/.deps" $D2_PINS
fi

echo "Prepared detectron2 $ref ($(git -C "$dest" rev-parse --short HEAD)) in $dest:" \
    "make test-upstream D2_SRC=$dest"
