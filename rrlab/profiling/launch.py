"""Run a module under rrlab's profilers: ``python -m rrlab.profiling.launch [opts] -m MODULE``.

The runner inserts this in front of the consumer's ``-m rrlab.service.consumer`` (see
:func:`rrlab.profiling.wrappers.wrapper_for`). It arranges line profiling through the environment,
starts py-spy on its own process, then runs MODULE in this same process (the module may
be ``memray``, so memray and line-profiler can share one run), keeping its PID, signals
and channel to the runner.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from rrlab.profiling import flame
from rrlab.profiling.line_profile import profile_environment

USAGE = (
    "usage: python -m rrlab.profiling.launch [--line-profile FILE.lprof] "
    "[--line-target module:function]... [--flame FILE.svg] -m MODULE [ARGS...]"
)


def main(argv: list[str]) -> None:
    """Parse the options before ``-m``; everything after ``-m MODULE`` belongs to MODULE."""
    if "-m" not in argv or argv.index("-m") + 1 >= len(argv):
        sys.exit(USAGE)
    split = argv.index("-m")
    options, module, module_args = argv[:split], argv[split + 1], argv[split + 2 :]
    line_profile: str | None = None
    line_targets: list[str] = []
    flame_svg: str | None = None
    pairs = iter(options)
    for option in pairs:
        value = next(pairs, None)
        if value is None or option not in ("--line-profile", "--line-target", "--flame"):
            sys.exit(f"{USAGE}\nunexpected option {option!r}")
        if option == "--line-profile":
            line_profile = value
        elif option == "--line-target":
            line_targets.append(value)
        else:
            flame_svg = value
    if line_profile:
        os.environ.update(profile_environment(Path(line_profile), line_targets))
    if flame_svg:
        flame.record_self(Path(flame_svg))
    sys.argv = [module, *module_args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
