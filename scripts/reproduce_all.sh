#!/usr/bin/env bash
# Every experiment of both papers at one profile, in dependency order (awnn_fixed_plus reads the
# widths awnn_table1 learned). Finished runs are skipped, so the script can be rerun after a kill.
#   scripts/reproduce_all.sh [PROFILE] [DATA_ROOT] [extra overrides...]
#   scripts/reproduce_all.sh quick /data hydra/launcher=joblib hydra.launcher.n_jobs=2 run.threads=1
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:-quick}
root=${2:-${BW_DATA_ROOT:-datasets}}
shift $(( $# > 2 ? 2 : $# ))
python=${PYTHON:-.venv/bin/python}
experiments="nb_toy nb_table1 nb_fb_start nb_fashion nb_limited nb_dfa nb_rnn_imdb nb_transformer_imdb
  awnn_table1 awnn_fixed_plus awnn_difficulty awnn_stability awnn_compression awnn_truncation awnn_init"
for exp in $experiments; do
  echo "== $exp (profile=$profile)"
  "$python" -m experiments.run -m "experiment=$exp" "profile=$profile" "data.root=$root" "$@"
done
echo "tables: results/tables/  figures: results/figures/"
