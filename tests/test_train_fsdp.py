"""FSDP (torch fully_shard) on 2 CPU processes: the same weights as one process, checkpoints gathered in full
(they load as an agent), and an exact resume from a checkpoint of the sharded optimizer state."""

from __future__ import annotations

from agents import load_agent
from tests.train_helpers import (  # noqa: F401  (fixtures)
    DIST_RUN, assert_close_weights, cli, dataset, losses, run_cli, single)

FSDP = (*DIST_RUN, "trainer.batch_size=2", "trainer.strategy=fsdp")


def test_fsdp_matches_one_process_and_its_checkpoint_loads_as_an_agent(dataset, tmp_path, single):
    out = tmp_path / "fsdp"
    run_cli(cli(dataset, out, *FSDP), torchrun=2)
    assert_close_weights(out, single, atol=1e-5)
    agent = load_agent(out / "checkpoints" / "last")  # full weights gathered from the shards
    assert agent.spec.name == "vla"

    # resume from the step-2 checkpoint into a new folder: the sharded optimizer state was saved in full and
    # is re-sharded on load, so steps 3 and 4 are exactly those of the run above
    resumed = tmp_path / "resumed"
    proc = run_cli(cli(dataset, resumed, *FSDP, f"resume={out / 'checkpoints' / 'step_0000002'}"), torchrun=2)
    assert "resuming after step 2" in proc.stdout
    straight = losses(out)
    assert losses(resumed) == {s: straight[s] for s in (3, 4)}
    assert_close_weights(resumed, out, atol=0)
