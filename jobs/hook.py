"""`python -m jobs.hook receive …`: the command git hooks installed before the hook moved to
jobs/ci/ run on every push; kept so those hooks go on working. New hooks run jobs.ci.hook_receive."""

import sys

from jobs.ci import hook_receive

if __name__ == "__main__":
    given = sys.argv[1:]
    raise SystemExit(hook_receive.main(given[1:] if given[:1] == ["receive"] else given))
