#!/usr/bin/env bash
# One memlab population trained by a Slurm job array: array task i trains shard i of N
# into the same run directory (on the cluster's shared file system); the last task to
# finish builds the records. Submit with
#
#     sbatch --array=0-3 examples/slurm/train_array.sh
#
# and when the array is done (or one task failed and was re-run): memlab consolidate "$RUN"
# checks every chunk and names any that is missing. A task killed by Slurm (time limit,
# preemption) is resumed by submitting that task again: sbatch --array=2 ...
#SBATCH --job-name=memlab-population
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=memlab-%A_%a.out
set -euo pipefail

RUN=${RUN:-runs/population}
# The population: the same settings in every task (a shard refuses a run with others).
MEMLAB_ARGS=${MEMLAB_ARGS:---data mnist1d --models 4096 --epochs 30 --quiet}
: "${SLURM_ARRAY_TASK_ID:?submit with sbatch --array=0-(N-1)}"
: "${SLURM_ARRAY_TASK_COUNT:?submit with sbatch --array=0-(N-1)}"

# shellcheck disable=SC2086  # MEMLAB_ARGS is a list of options
exec memlab train $MEMLAB_ARGS --workers "${SLURM_CPUS_PER_TASK:-1}" \
    --shard "$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT" --out "$RUN"
