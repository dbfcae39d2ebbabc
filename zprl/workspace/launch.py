"""How this process was launched (plain ``python train.py`` or one of N under accelerate / torchrun).

Read by train.py before Hydra starts, so it imports neither torch nor accelerate: env worker
processes import train.py again (multiprocessing's forkserver and spawn load the main module) and
must stay slim.
"""

from __future__ import annotations

import os


def launched_world() -> tuple[int, int]:
    """(this process's rank, number of processes) as the launcher (torchrun / accelerate launch, mpirun)
    set them; (0, 1) for a plain ``python train.py``. Read before anything is initialised."""

    def first(names, default):
        for name in names:
            if os.environ.get(name, "").strip():
                return int(os.environ[name])
        return default

    rank = first(("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "MV2_COMM_WORLD_RANK"), 0)
    world = first(("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE"), 1)
    return rank, world


def hydra_args_for_this_process(argv: list[str]) -> list[str]:
    """train.py's command line for Hydra in this process.

    Every process runs Hydra, and each would resolve ``hydra.run.dir``'s timestamp at its own moment
    and make its own directory. The main process keeps the command line; the others get a run dir of
    ``.`` with no ``.hydra/`` and no log file, so they create and write nothing, and the workspace
    hands them the main process's directory (``broadcast_output_dir``)."""
    rank, world = launched_world()
    if world <= 1 or rank == 0:
        return list(argv)
    mine = ("hydra.run.dir=", "hydra.output_subdir=", "hydra/job_logging=")
    kept = [a for a in argv if not a.lstrip("+~").startswith(mine)]
    return kept + ["hydra.run.dir=.", "hydra.output_subdir=null", "hydra/job_logging=none"]
