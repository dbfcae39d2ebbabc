"""Train a zprl workspace (offline imitation or online steering), chosen by --config-name.

    python train.py --config-name=train_flow_match_vib_unet_image_workspace task=lift_image_abs
    python train.py --config-name=train_online_vib_robomimic_workspace online_task=can_lowdim_abs \
        online_task.base_ckpt=path/to/latest.ckpt

The offline workspace also runs data-parallel in N processes (docs/scaling.md):

    accelerate launch --multi_gpu --num_processes N train.py --config-name=train_flow_match_vib_unet_image_workspace ...
"""

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from zprl.common.config import command_line_error  # (also registers our OmegaConf resolvers)
from zprl.common.errors import NonFiniteLoss, UserInputError, find_user_error
from zprl.workspace.cleanup import remove_if_only_hydra_files
from zprl.workspace.launch import hydra_args_for_this_process, launched_world

# Under accelerate launch every process runs this file; the main one (rank 0) owns the run dir and speaks.
RANK, WORLD = launched_world()


@hydra.main(version_base=None, config_path="config", config_name=None)
def main(cfg: DictConfig) -> None:
    OmegaConf.resolve(cfg)
    workspace_cls = hydra.utils.get_class(cfg._target_)
    from hydra.core.hydra_config import HydraConfig

    output_dir = HydraConfig.get().runtime.output_dir  # other processes than the main one: "." (not theirs)
    try:
        if WORLD > 1 and not getattr(workspace_cls, "multi_process", False):
            raise UserInputError(f"{cfg._target_} runs in one process: start it with python train.py, not with "
                                 f"{WORLD} processes (accelerate launch --num_processes 1 also works)")
        workspace = workspace_cls(cfg, output_dir=output_dir)
        workspace.run()
    except NonFiniteLoss as err:  # one line: the step, the loss term and the checkpoint to resume from
        if RANK == 0:
            print(f"error: {err}", file=sys.stderr)
        sys.exit(3)
    except Exception as err:
        user_error = find_user_error(err)
        if user_error is None:
            raise
        # One line for the person; the run directory Hydra made is removed if we wrote nothing in it.
        if RANK == 0:
            remove_if_only_hydra_files(output_dir)
            print(f"error: {user_error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    refusal = command_line_error(sys.argv[1:])  # before Hydra writes anything
    if refusal is None and WORLD > 1 and any(a in ("-m", "--multirun") for a in sys.argv[1:]):
        refusal = f"--multirun with {WORLD} processes: accelerate launch starts one run; launch each run of a sweep on its own"
    if refusal:
        if RANK == 0:
            print(f"error: {refusal}", file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = hydra_args_for_this_process(sys.argv[1:])
    main()
