"""Train RLlib PPO (new API stack) on PetalRouting-v0 with several env runners and action masking.

What it does:

* :func:`petalgym.distributed.register_rllib_envs` registers ``PetalAlloc-v0``, ``PetalPlacement-v0`` and
  ``PetalRouting-v0`` with Ray Tune's registry; ``env_config`` holds the env's keyword arguments
  (``scenario``, ``obs_mode``, ``scenario_overrides``, ...), so every env runner builds its own env.
* ``obs_mode="rllib"`` makes the observation ``{"observations": Box, "action_mask": Box(0, 1)}``, the
  layout of RLlib's action-masking RLModule (``ActionMaskingTorchRLModule`` in ``ray.rllib.examples``).
  :class:`MaskedPPOTorchRLModule` below is the same idea on RLlib's public ``DefaultPPOTorchRLModule``
  (the example class subclasses a deprecated base): the networks see only ``"observations"`` and the
  logits of masked actions are set to the float minimum, so PPO never samples an invalid candidate chain
  and the env keeps ``invalid_action="raise"``. RLlib's own example module works with these spaces too
  (``module_class=ActionMaskingTorchRLModule``). Without masking, use ``obs_mode="flat"`` with
  ``invalid_action="default"``: a masked choice is replaced by the built-in decider's and penalised.
* It trains for ``--iters`` iterations with ``--env-runners`` remote env runners (sampling in parallel;
  each runner is one Ray actor, one CPU), prints the steps, episodes and mean episode return of each
  iteration (the return is minus the episode's summed per-token times and penalties), then scores the
  greedy policy with ``petalgym.simulate`` via :class:`petalgym.envs.PolicyDecider` on a held-out seed,
  next to the built-in decider. ``--env PetalAlloc-v0`` (or ``PetalPlacement-v0``) trains the other
  control modes the same way.

Run (a few minutes on 2 cores)::

    python examples/rllib_ppo.py --iters 5 --env-runners 2
    python examples/rllib_ppo.py --address auto      # on a running Ray cluster

Versions (tested: ray 2.60.0, torch 2.13 CPU, Python 3.11): ``pip install "petalgym[ray]"`` installs
``ray[rllib]``, and Ray pins ``gymnasium==1.2.2`` in that extra, so installing it downgrades a newer
Gymnasium to 1.2.2. petalgym itself supports ``gymnasium>=1.2,<2`` and its test suite passes on 1.2.2,
and RLlib 2.60 also ran this example with Gymnasium 1.4.0 (installed against the pin); keep the pinned
1.2.2 in an environment you train in, or put RLlib in its own virtualenv if other tools need a newer
Gymnasium. The evaluation harness's Ray backend needs only ``ray`` (core), which pins no Gymnasium.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np

import petalgym
from petalgym.distributed import ensure_ray, register_rllib_envs
from petalgym.envs import PolicyDecider

ENV_ID = "PetalRouting-v0"


def masked_module_class() -> type:
    """:class:`MaskedPPOTorchRLModule`, defined on first use (importing this file needs no Ray)."""
    global MaskedPPOTorchRLModule
    if MaskedPPOTorchRLModule is not None:
        return MaskedPPOTorchRLModule
    import gymnasium as gym
    import torch
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
    from ray.rllib.core.columns import Columns
    from ray.rllib.utils.torch_utils import FLOAT_MIN

    def split(batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """(mask, a shallow copy of ``batch`` whose observation is the flat part); the input is untouched."""
        obs = batch[Columns.OBS]
        if isinstance(obs, dict):
            out = dict(batch)
            out[Columns.OBS] = obs["observations"]
            return obs["action_mask"], out
        return batch["action_mask"], batch

    def masked(out: dict[str, Any], mask: Any) -> dict[str, Any]:
        logits = out[Columns.ACTION_DIST_INPUTS]
        out[Columns.ACTION_DIST_INPUTS] = logits.masked_fill(mask < 0.5, FLOAT_MIN)
        return out

    class _Masked(DefaultPPOTorchRLModule):
        """PPO's default torch module over ``Dict(observations, action_mask)``: the encoder and heads are
        built for ``observations``; masked logits become the float minimum (probability 0)."""

        def __init__(self, *args: Any, observation_space: gym.Space | None = None, **kwargs: Any):
            if not isinstance(observation_space, gym.spaces.Dict) or set(observation_space.spaces) != {
                "observations",
                "action_mask",
            }:
                raise ValueError(
                    "MaskedPPOTorchRLModule needs a Dict(observations, action_mask) observation space: "
                    f'make the env with obs_mode="rllib", got {observation_space}'
                )
            self.observation_space_with_mask = observation_space
            super().__init__(*args, observation_space=observation_space["observations"], **kwargs)

        def setup(self) -> None:
            super().setup()  # networks for the flat observations
            self.observation_space = self.observation_space_with_mask

        def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            mask, batch = split(batch)
            return masked(super()._forward(batch, **kwargs), mask)

        def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
            mask, batch = split(batch)
            return masked(super()._forward_train(batch, **kwargs), mask)

        def compute_values(self, batch: dict[str, Any], embeddings: Any = None) -> torch.Tensor:
            if embeddings is None:
                _, batch = split(batch)
            return super().compute_values(batch, embeddings)

    # a local class (qualname "...<locals>...") is pickled by value, so remote env runners need not import
    # this file
    _Masked.__name__ = "MaskedPPOTorchRLModule"
    MaskedPPOTorchRLModule = _Masked
    return _Masked


MaskedPPOTorchRLModule: type | None = None


def build_config(
    *,
    env_id: str = ENV_ID,
    scenario: str = "clustered-9",
    num_requests: int = 40,
    env_runners: int = 2,
    envs_per_runner: int = 1,
    batch: int = 256,
    minibatch: int = 64,
    epochs: int = 4,
    seed: int = 0,
) -> Any:
    """A PPOConfig for ``env_id`` (default PetalRouting-v0) with action masking (``obs_mode="rllib"``).

    ``batch`` env steps are sampled per iteration, split over the env runners (``rollout_fragment_length``
    = batch / (runners x envs per runner)); ``num_requests`` shortens the episodes (one step per routed
    request).
    """
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.rl_module import RLModuleSpec

    env_config = {
        "scenario": scenario,
        "obs_mode": "rllib",
        "scenario_overrides": {"workload.num_requests": num_requests},
        "invalid_action": "raise",  # strict: the masking module must never sample a masked action
    }
    fragment = max(1, math.ceil(batch / max(1, env_runners * envs_per_runner)))
    return (
        PPOConfig()
        .environment(env_id, env_config=env_config)
        .env_runners(
            num_env_runners=env_runners,
            num_envs_per_env_runner=envs_per_runner,
            num_cpus_per_env_runner=1,
            rollout_fragment_length=fragment,
        )
        .learners(num_learners=0)  # learn in the driver process (CPU)
        .training(
            train_batch_size_per_learner=batch,
            minibatch_size=minibatch,
            num_epochs=epochs,
            lr=3e-4,
            gamma=0.99,
        )
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=masked_module_class(),
                model_config={"fcnet_hiddens": [64, 64], "head_fcnet_hiddens": [64]},
            )
        )
        .debugging(seed=seed)
    )


def iteration_summary(result: dict[str, Any]) -> dict[str, float]:
    """Steps sampled so far, mean episode return and episodes finished in one ``algo.train()`` result."""
    runners = result.get("env_runners", {})
    return {
        "steps": float(runners.get("num_env_steps_sampled_lifetime", math.nan)),
        "return": float(runners.get("episode_return_mean", math.nan)),
        "episodes": float(runners.get("num_episodes", math.nan)),
    }


def greedy_policy(module: Any) -> Any:
    """``policy(obs, mask) -> action``: the argmax of the masked logits of an RLlib RLModule (``obs`` is
    the flat observation; the mask is applied here, as in the module)."""
    import torch
    from ray.rllib.core.columns import Columns

    def policy(obs: np.ndarray, mask: np.ndarray) -> int:
        batch = {
            Columns.OBS: {
                "observations": torch.as_tensor(obs[None], dtype=torch.float32),
                "action_mask": torch.as_tensor(mask[None], dtype=torch.float32),
            }
        }
        with torch.no_grad():
            logits = module.forward_inference(batch)[Columns.ACTION_DIST_INPUTS][0].numpy()
        logits = np.where(np.asarray(mask, dtype=bool), logits, -np.inf)
        return int(np.argmax(logits))

    return policy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env", default=ENV_ID, help="PetalRouting-v0, PetalPlacement-v0 or PetalAlloc-v0")
    parser.add_argument("--scenario", default="clustered-9")
    parser.add_argument("--num-requests", type=int, default=40, help="requests per training episode")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--env-runners", type=int, default=2)
    parser.add_argument("--envs-per-runner", type=int, default=1)
    parser.add_argument("--batch", type=int, default=256, help="env steps per training iteration")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-seed", type=int, default=1000)
    parser.add_argument("--address", help="a running Ray cluster (default: start a local Ray)")
    args = parser.parse_args(argv)

    ensure_ray(args.address)
    register_rllib_envs()
    config = build_config(
        env_id=args.env,
        scenario=args.scenario,
        num_requests=args.num_requests,
        env_runners=args.env_runners,
        envs_per_runner=args.envs_per_runner,
        batch=args.batch,
        seed=args.seed,
    )
    algo = config.build_algo()
    try:
        for it in range(1, args.iters + 1):
            s = iteration_summary(algo.train())
            steps, episodes = s["steps"], s["episodes"]
            print(f"iter {it}: {steps:.0f} steps, {episodes:.0f} episodes, mean return {s['return']:.3f}")
        module = algo.get_module()
    finally:
        algo.stop()

    import gymnasium as gym

    env = gym.make(args.env, scenario=args.scenario, obs_mode="flat")
    scenario = env.unwrapped.scenario
    decider = PolicyDecider.from_env(greedy_policy(module), env, name="rllib-ppo")
    learned = petalgym.simulate(scenario, decider, seed=args.eval_seed).summary()
    builtin = petalgym.simulate(scenario, petalgym.make_decider("cg-bp-ws-rr"), seed=args.eval_seed).summary()
    print(
        f"{scenario.name}, seed {args.eval_seed}: per-token time {learned['per_token_s']:.3f} s (PPO) vs "
        f"{builtin['per_token_s']:.3f} s (built-in cg-bp-ws-rr); failed {learned['failed']:.0f} vs "
        f"{builtin['failed']:.0f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
