"""Policy networks for PLACE actions: ``policy: FactoredMlpPolicy`` or ``ScoredMlpPolicy`` in a
hyper-parameter file (both fall back to plain linear logits for ROUTE actions).

**FactoredMlpPolicy**.
The PLACE part of the action space has ``num_levels x L`` actions (``action = level * L + start``). A plain
linear head learns one logit per (level, start) pair, so what it learns about a good window for one level
says nothing about the same window at another level. The factored head writes the logit as

    logit[level, start] = a(z)[level] + b(z)[start] + c(z)[level, start]        (z: the policy latent)

(``c`` initialised near 0), so a policy can move probability to another level while keeping its window
preference. ROUTE actions (joint control) keep a plain linear head. Shapes: latent (batch, d) -> logits
(batch, num_levels * L + num_route).

**ScoredMlpPolicy**. Every PLACE action (level, start) gets a feature vector computed from the observation
(:class:`ScoredPlaceHead`): the level's row (block count, cache, sessions, built-in flag), the window
[start, start + m) and what it would cover -- the mean per-block ONLINE / LOADING coverage and free cache
slots in it, how many servers and how many *fast* servers (tau at most half the slowest GPU's) already
host (or are loading) each of its blocks, which share of the blocks no fast server covers it would cover,
whether it touches block 0 or L -- and one shared MLP scores it, together with the policy latent. What
the policy learns about one window therefore transfers to every window with similar coverage, whatever
its start: "put this server where no fast server is" is one direction of the scoring MLP, not 490 logits.

``num_levels``, ``num_blocks`` (and ``obs_layout`` for ScoredMlpPolicy: part -> [offset, rows, cols] of
the flat observation) are filled in by :func:`petalgym.agents.train.train` from the env. This module
imports torch and stable-baselines3: import it only when training or loading such a model.
"""

from __future__ import annotations

from typing import Any

import torch
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import MlpExtractor
from torch import nn

from petalgym.envs.features import PART_FEATURES


class FactoredPlaceHead(nn.Module):
    """Latent (batch, d) -> logits (batch, num_levels * num_blocks + num_route), see the module docstring."""

    def __init__(self, latent_dim: int, num_levels: int, num_blocks: int, num_route: int = 0):
        super().__init__()
        self.num_levels = int(num_levels)
        self.num_blocks = int(num_blocks)
        self.level = nn.Linear(latent_dim, self.num_levels)
        self.start = nn.Linear(latent_dim, self.num_blocks)
        self.pair = nn.Linear(latent_dim, self.num_levels * self.num_blocks)
        self.route = nn.Linear(latent_dim, num_route) if num_route > 0 else None
        for layer in (self.level, self.start, self.pair, self.route):
            if layer is not None:
                nn.init.orthogonal_(layer.weight, gain=0.01)
                nn.init.zeros_(layer.bias)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        n = latent.shape[0]
        place = self.level(latent)[:, :, None] + self.start(latent)[:, None, :]
        place = (place + self.pair(latent).view(n, self.num_levels, self.num_blocks)).reshape(n, -1)
        if self.route is None:
            return place
        return torch.cat([place, self.route(latent)], dim=1)


class _FactoredMixin:
    """Replaces ``action_net`` by a :class:`FactoredPlaceHead` after the standard build."""

    def _factored_init(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.num_levels = int(kwargs.pop("num_levels"))
        self.num_blocks = int(kwargs.pop("num_blocks"))
        return kwargs

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)  # type: ignore[misc]
        n = int(self.action_space.n)  # type: ignore[attr-defined]
        n_place = self.num_levels * self.num_blocks
        if n < n_place:
            raise ValueError(
                f"FactoredMlpPolicy: {n} actions < num_levels x num_blocks = {n_place} "
                "(not a PLACE action space)"
            )
        latent = self.mlp_extractor.latent_dim_pi  # type: ignore[attr-defined]
        self.action_net = FactoredPlaceHead(latent, self.num_levels, self.num_blocks, n - n_place)
        self.optimizer = self.optimizer_class(  # type: ignore[attr-defined]
            self.parameters(),  # type: ignore[attr-defined]
            lr=lr_schedule(1),
            **self.optimizer_kwargs,  # type: ignore[attr-defined]
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(num_levels=self.num_levels, num_blocks=self.num_blocks)
        return data


class FactoredMaskablePolicy(_FactoredMixin, MaskableActorCriticPolicy):
    """MaskablePPO's actor-critic MLP with a factored PLACE head (``num_levels``, ``num_blocks`` kwargs)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **self._factored_init(kwargs))


class FactoredActorCriticPolicy(_FactoredMixin, ActorCriticPolicy):
    """PPO / A2C's actor-critic MLP with a factored PLACE head (``num_levels``, ``num_blocks`` kwargs)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **self._factored_init(kwargs))


# --------------------------------------------------------------------------------------------------
# Scored windows
# --------------------------------------------------------------------------------------------------
def _col(part: str, name: str) -> int:
    return PART_FEATURES[part].index(name)


#: Tau (normalised by the slowest GPU's) at or below which a server counts as fast.
FAST_TAU = 0.5
#: Per-action features of :class:`ScoredPlaceHead`.
NUM_ACTION_FEATURES = 18


class ScoredPlaceHead(nn.Module):
    """(latent (batch, d) ++ flat observation (batch, obs_dim)) -> logits (batch, n_levels * L + n_route).

    ``obs_layout``: part name -> (offset, rows, cols) in the flat observation; it must hold ``levels``,
    ``blocks`` and ``servers``. Scores: ``score_mlp([action features (18), proj(latent) (16)])``.
    """

    def __init__(
        self,
        latent_dim: int,
        obs_layout: dict[str, Any],
        num_levels: int,
        num_blocks: int,
        num_route: int = 0,
        hidden: int = 32,
    ):
        super().__init__()
        for part in ("levels", "blocks", "servers"):
            if part not in obs_layout:
                raise ValueError(f"ScoredMlpPolicy needs the {part!r} part of the observation")
        self.latent_dim = int(latent_dim)
        self.layout = {k: tuple(int(x) for x in v) for k, v in obs_layout.items()}
        self.num_levels = int(num_levels)
        self.num_blocks = int(num_blocks)
        self.proj = nn.Linear(self.latent_dim, 16)
        self.score = nn.Sequential(
            nn.Linear(NUM_ACTION_FEATURES + 16, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh()
        )
        self.out = nn.Linear(hidden, 1)
        nn.init.orthogonal_(self.out.weight, gain=0.01)
        nn.init.zeros_(self.out.bias)
        self.route = nn.Linear(self.latent_dim, num_route) if num_route > 0 else None
        if self.route is not None:
            nn.init.orthogonal_(self.route.weight, gain=0.01)
            nn.init.zeros_(self.route.bias)
        L = self.num_blocks
        self.register_buffer("block_index", torch.arange(L, dtype=torch.float32), persistent=False)
        self.register_buffer("starts", torch.arange(L, dtype=torch.long), persistent=False)

    def _part(self, obs: torch.Tensor, name: str) -> torch.Tensor:
        off, rows, cols = self.layout[name]
        return obs[:, off : off + rows * cols].reshape(-1, rows, cols)

    def action_features(self, obs: torch.Tensor) -> torch.Tensor:
        """Per-action features (batch, n_levels, L, NUM_ACTION_FEATURES) of a flat observation batch."""
        L, n_lv = self.num_blocks, self.num_levels
        levels = self._part(obs, "levels")  # (B, n_lv, 5)
        blocks = self._part(obs, "blocks")  # (B, L, 3)
        srv = self._part(obs, "servers")  # (B, S, 16)
        c = {
            name: _col("servers", name)
            for name in ("present", "tau_per_max", "loading", "online", "is_joining")
        }
        start = torch.round(srv[..., _col("servers", "start_per_L")] * L)  # (B, S)
        m = torch.round(srv[..., _col("servers", "blocks_per_L")] * L)
        active = (
            srv[..., c["present"]] * (srv[..., c["online"]] + srv[..., c["loading"]]).clamp(max=1.0)
        ) * (1.0 - srv[..., c["is_joining"]])
        b = self.block_index.view(1, 1, L)
        cover = ((b >= start[..., None]) & (b < (start + m)[..., None])).float() * active[
            ..., None
        ]  # (B, S, L)
        fast = (srv[..., c["tau_per_max"]] <= FAST_TAU).float()[..., None]
        speed = (1.0 - srv[..., c["tau_per_max"]]).clamp(min=0.0)[..., None]
        n_cover = cover.sum(1)  # (B, L)
        fast_cover = (cover * fast).sum(1)
        best_speed = (cover * speed).amax(1)
        zero_fast = (fast_cover == 0).float()
        zero_any = (n_cover == 0).float()
        per_block = torch.stack(
            [
                blocks[..., 0],
                blocks[..., 1],
                blocks[..., 2],
                n_cover / 4.0,
                fast_cover,
                best_speed,
                zero_fast,
                zero_any,
            ],
            dim=-1,
        )  # (B, L, 8)
        cs = torch.cat([torch.zeros_like(per_block[:, :1]), per_block.cumsum(1)], dim=1)  # (B, L + 1, 8)
        m_lv = torch.round(levels[..., _col("levels", "blocks_per_L")] * L).clamp(min=1.0)  # (B, n_lv)
        s = self.starts.view(1, 1, L)
        end = torch.clamp(s + m_lv.long()[..., None], max=L)  # (B, n_lv, L)
        n_batch = obs.shape[0]
        idx_end = end.reshape(n_batch, -1, 1).expand(-1, -1, per_block.shape[-1])
        idx_start = s.expand(n_batch, n_lv, L).reshape(n_batch, -1, 1).expand(-1, -1, per_block.shape[-1])
        wsum = (cs.gather(1, idx_end) - cs.gather(1, idx_start)).view(n_batch, n_lv, L, -1)
        width = (end - s).clamp(min=1).float()[..., None]
        mean = wsum[..., :6] / width
        share_fast = wsum[..., 6] / zero_fast.sum(1).clamp(min=1.0)[:, None, None]
        share_any = wsum[..., 7] / zero_any.sum(1).clamp(min=1.0)[:, None, None]
        sf = s.float().expand(n_batch, n_lv, L)
        geo = torch.stack([sf / L, end.float() / L, (sf == 0).float(), (end == L).float()], dim=-1)
        lv = levels[:, :, None, :].expand(n_batch, n_lv, L, levels.shape[-1])
        return torch.cat([mean, share_fast[..., None], share_any[..., None], geo, lv, width / L], dim=-1)

    def forward(self, latent_and_obs: torch.Tensor) -> torch.Tensor:
        latent, obs = latent_and_obs[:, : self.latent_dim], latent_and_obs[:, self.latent_dim :]
        feats = self.action_features(obs)  # (B, n_lv, L, F)
        g = self.proj(latent)[:, None, None, :].expand(*feats.shape[:3], -1)
        logits = self.out(self.score(torch.cat([feats, g], dim=-1))).flatten(1)  # (B, n_lv * L)
        if self.route is None:
            return logits
        return torch.cat([logits, self.route(latent)], dim=1)


class PassObsMlpExtractor(MlpExtractor):
    """SB3's MlpExtractor whose actor latent also carries the features (the flat observation): the
    actor latent is (batch, hidden + feature_dim), read back by :class:`ScoredPlaceHead`."""

    def __init__(self, feature_dim: int, *args: Any, **kwargs: Any):
        super().__init__(feature_dim, *args, **kwargs)
        self.hidden_dim_pi = self.latent_dim_pi
        self.latent_dim_pi = self.latent_dim_pi + feature_dim

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_actor(features), self.forward_critic(features)

    def forward_actor(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.policy_net(features), features], dim=1)


class _ScoredMixin:
    """Builds a :class:`PassObsMlpExtractor` and a :class:`ScoredPlaceHead` (flat observations only)."""

    def _scored_init(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        self.num_levels = int(kwargs.pop("num_levels"))
        self.num_blocks = int(kwargs.pop("num_blocks"))
        self.obs_layout = {k: [int(x) for x in v] for k, v in dict(kwargs.pop("obs_layout")).items()}
        return kwargs

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = PassObsMlpExtractor(  # type: ignore[attr-defined]
            self.features_dim,  # type: ignore[attr-defined]
            net_arch=self.net_arch,  # type: ignore[attr-defined]
            activation_fn=self.activation_fn,  # type: ignore[attr-defined]
            device=self.device,  # type: ignore[attr-defined]
        )

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)  # type: ignore[misc]
        n = int(self.action_space.n)  # type: ignore[attr-defined]
        n_place = self.num_levels * self.num_blocks
        if n < n_place:
            raise ValueError(f"ScoredMlpPolicy: {n} actions < num_levels x num_blocks = {n_place}")
        self.action_net = ScoredPlaceHead(
            self.mlp_extractor.hidden_dim_pi,  # type: ignore[attr-defined]
            self.obs_layout,
            self.num_levels,
            self.num_blocks,
            n - n_place,
        )
        self.optimizer = self.optimizer_class(  # type: ignore[attr-defined]
            self.parameters(),  # type: ignore[attr-defined]
            lr=lr_schedule(1),
            **self.optimizer_kwargs,  # type: ignore[attr-defined]
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()  # type: ignore[misc]
        data.update(num_levels=self.num_levels, num_blocks=self.num_blocks, obs_layout=self.obs_layout)
        return data


class ScoredMaskablePolicy(_ScoredMixin, MaskableActorCriticPolicy):
    """MaskablePPO's actor-critic with a :class:`ScoredPlaceHead` (``num_levels``, ``num_blocks``,
    ``obs_layout`` kwargs)."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **self._scored_init(kwargs))


class ScoredActorCriticPolicy(_ScoredMixin, ActorCriticPolicy):
    """PPO / A2C's actor-critic with a :class:`ScoredPlaceHead`."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **self._scored_init(kwargs))


__all__ = [
    "FactoredActorCriticPolicy",
    "FactoredMaskablePolicy",
    "FactoredPlaceHead",
    "PassObsMlpExtractor",
    "ScoredActorCriticPolicy",
    "ScoredMaskablePolicy",
    "ScoredPlaceHead",
]
