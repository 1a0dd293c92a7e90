#!/usr/bin/env bash
# Measure the benchmark of the working tree and of git revision REV side by side, in one run:
#   bash benchmarks/compare.sh REV [--rounds N] [--json-dir DIR] [--module M] [--same-bench] [-- options of the benchmark]
# Provisions the farm once (workers/farm_env.sh) and the prefect-docker venv (benchmarks/prefect_venv.sh),
# checks REV out in a temporary `git worktree` (removed at the end, even after a failure), then runs
# `python -m benchmarks.run --json` alternately in the working tree and in the worktree (current, REV,
# current, REV... N rounds, default 2). Both sides use this checkout's .venv, but each imports its own
# tree's code (benchmarks and dockyard, or before the one-name layout tasks, config, workers): the run's working directory and PYTHONPATH are its
# tree, and the workers it starts run there too; every import of those packages is recorded and a run
# fails if one came from elsewhere. The benchmarks' output goes to stderr; the table (benchmarks/compare.py:
# medians per side, ratio current/REV) goes to stdout.
# --module M runs `python -m benchmarks.M --json` instead of benchmarks.run (M prints its figures and takes
# --json PATH). --same-bench copies this tree's benchmarks/ over REV's, so one benchmark code measures both
# trees' dockyard (for a benchmark REV does not have yet; it must drive the farm only through what REV has).
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO"

usage() { echo "usage: bash benchmarks/compare.sh REV [--rounds N] [--json-dir DIR] [--module M] [--same-bench] [-- benchmark options]" >&2; exit 2; }
rev="" rounds=2 json_dir="" module="run" same_bench=0 extra=()
while (($#)); do
  case "$1" in
    --rounds) (($# >= 2)) || usage; rounds="$2"; shift 2 ;;
    --rounds=*) rounds="${1#*=}"; shift ;;
    --json-dir) (($# >= 2)) || usage; json_dir="$2"; shift 2 ;;
    --json-dir=*) json_dir="${1#*=}"; shift ;;
    --module) (($# >= 2)) || usage; module="$2"; shift 2 ;;
    --module=*) module="${1#*=}"; shift ;;
    --same-bench) same_bench=1; shift ;;
    --) shift; extra=("$@"); break ;;
    -h|--help) sed -n '2,14p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "compare: unknown option $1" >&2; usage ;;
    *) [[ -z "$rev" ]] || usage; rev="$1"; shift ;;
  esac
done
[[ -n "$rev" ]] || usage
[[ "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "compare: --rounds takes a positive integer" >&2; exit 2; }
[[ "$module" =~ ^[a-z_]+$ && -f "benchmarks/$module.py" ]] || { echo "compare: no benchmark module benchmarks/$module.py" >&2; exit 2; }
commit="$(git rev-parse --verify --quiet "$rev^{commit}")" || { echo "compare: no commit $rev" >&2; exit 2; }
short="$(git rev-parse --short "$commit")"
for option in "${extra[@]}"; do
  [[ "$option" != --json && "$option" != --json=* ]] || { echo "compare: --json is set by compare.sh" >&2; exit 2; }
done

# shellcheck source=workers/farm_env.sh
. workers/farm_env.sh
# shellcheck source=benchmarks/prefect_venv.sh
. benchmarks/prefect_venv.sh
python="$REPO/.venv/bin/python"

scratch="$(cd "$(mktemp -d "${TMPDIR:-/tmp}/dockyard-compare-XXXXXX")" && pwd -P)"
worktree="$scratch/rev-$short"
cleanup() {
  local status=$?
  if [[ -d "$worktree" ]]; then
    git -C "$REPO" worktree remove --force "$worktree" >/dev/null 2>&1 || true
  fi
  git -C "$REPO" worktree prune >/dev/null 2>&1 || true
  rm -rf "$scratch"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP
git worktree add --detach --quiet "$worktree" "$commit"
if ((same_bench)); then
  cp -r "$REPO/benchmarks/." "$worktree/benchmarks/"
  echo "compare: $short runs this tree's benchmarks/ (--same-bench)" >&2
fi

# Records which file each process imports dockyard's top-level packages from (sitecustomize runs in
# every python started with this PYTHONPATH: the benchmark and the workers it starts).
mkdir "$scratch/import-check"
cat >"$scratch/import-check/sitecustomize.py" <<'EOF'
import importlib.machinery
import os
import sys

_LOG = os.environ.get("BENCH_COMPARE_IMPORT_LOG")
_TREE = os.environ.get("BENCH_COMPARE_TREE")
_MAPPED = {"dockyard.config", "dockyard.tasks", "dockyard.workers"}  # pyproject's package-dir: <tree>/config, tasks, workers
_NAMES = {"benchmarks", "config", "dockyard", "tasks", "workers"} | _MAPPED


class _TreeLayout:
    """dockyard.tasks, .config and .workers from this run's tree: the checkout's editable install maps them to
    the checkout, so without this a revision with the one-name layout would run the checkout's code."""

    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if _TREE and name in _MAPPED:
            return importlib.machinery.PathFinder.find_spec(name, [_TREE])
        return None


class _ImportRecorder:
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if not _LOG or name not in _NAMES:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is cls or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                where = spec.origin or ",".join(spec.submodule_search_locations or [])
                with open(_LOG, "a") as log:
                    log.write(f"{os.getpid()}\t{name}\t{where}\t{' '.join(sys.argv[:4])}\n")
                return spec
        return None


sys.meta_path.insert(0, _TreeLayout)
sys.meta_path.insert(0, _ImportRecorder)
EOF

# One benchmark run in tree $2, JSON to $3; output to stderr. Fails if a package came from outside the tree.
run_side() {
  local label="$1" tree="$2" json="$3"
  local imports="$scratch/imports-$label.tsv"
  : >"$imports"
  echo "compare: === $label ($tree) ===" >&2
  (
    cd "$tree"
    export PYTHONPATH="$tree:$scratch/import-check" BENCH_COMPARE_IMPORT_LOG="$imports" BENCH_COMPARE_TREE="$tree"
    "$python" -m "benchmarks.$module" --json "$json" "${extra[@]}"
  ) >&2
  local processes workers foreign
  processes="$(cut -f1 "$imports" | sort -u | wc -l)"
  workers="$(awk -F'\t' '($2 == "tasks" || $2 == "dockyard") && $4 ~ /cli\.py worker/ {print $1}' "$imports" | sort -u | wc -l)"
  foreign="$(awk -F'\t' -v tree="$tree/" 'index($3, tree) != 1' "$imports")"
  if [[ -n "$foreign" ]]; then
    echo "compare: $label imported code from outside its tree:" >&2
    echo "$foreign" >&2
    return 1
  fi
  echo "compare: $label: $processes processes ($workers workers) imported dockyard's packages, all from $tree" >&2
}

current=() previous=()
for ((round = 1; round <= rounds; round++)); do
  run_side "current-$round" "$REPO" "$scratch/current-$round.json"
  current+=("$scratch/current-$round.json")
  run_side "$short-$round" "$worktree" "$scratch/$short-$round.json"
  previous+=("$scratch/$short-$round.json")
done

if [[ -n "$json_dir" ]]; then
  mkdir -p "$json_dir"
  cp "${current[@]}" "${previous[@]}" "$json_dir/"
fi
"$python" -m benchmarks.compare --current "${current[@]}" --rev "${previous[@]}" \
  --current-label "working tree" --rev-label "$short"
