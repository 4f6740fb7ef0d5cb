"""A trained policy as plain arrays: run with numpy, loaded without torch and without unpickling.

``petalgym export MODEL.zip OUT.npz`` (or ``petalgym train --export OUT.npz``) writes the actor of an SB3 /
sb3-contrib model -- its hidden layers and its action head, nothing of the critic or the optimiser -- as
an ``.npz`` of float32 arrays, with the model's petalgym metadata embedded (UTF-8 JSON as a uint8 array)
and beside it as a ``.json`` sidecar. :class:`ExportedPolicy` reads it back with ``allow_pickle=False``
(a file can hold arrays only, never code) and computes the same masked logits as the torch policy, in
float32: the deterministic action (argmax over the valid actions) is torch's, and the tests check it on
many observations.

Supported networks (the ones ``petalgym train`` builds with flat observations): ``MlpPolicy`` (hidden
layers, then one linear head) and ``FactoredMlpPolicy`` (logit[level, start] = a[level] + b[start] +
c[level, start], then the ROUTE logits; :mod:`petalgym.agents.networks`). Exporting needs torch; running
an export does not.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from petalgym.agents.policy import AgentLoadError

__all__ = [
    "EXPORT_FORMAT",
    "ExportError",
    "ExportedPolicy",
    "export_file",
    "export_model",
    "read_export_metadata",
]

#: The ``network.format`` of an export; bumped if its layout changes.
EXPORT_FORMAT = "petalgym-policy/1"
#: Name of the array that holds the metadata (UTF-8 JSON bytes).
METADATA_ARRAY = "__metadata__"
#: Activation name -> function (the torch modules SB3 builds the hidden layers from).
ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "identity": lambda x: x,
}
_TORCH_ACTIVATIONS = {"Tanh": "tanh", "ReLU": "relu", "Identity": "identity"}


class ExportError(AgentLoadError):
    """A model that cannot be exported, or an export file that is missing or malformed."""


def read_export_metadata(path: str | Path) -> dict[str, Any]:
    """The petalgym metadata embedded in an export (ExportError if the file is not one)."""
    return _read(Path(path))[0]


def _read(path: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    if not path.is_file():
        raise ExportError(f"policy file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ExportError(f"{path.name} is not a numpy policy export ({exc})") from None
    if METADATA_ARRAY not in arrays:
        raise ExportError(f"{path.name} has no {METADATA_ARRAY!r} array: not written by `petalgym export`")
    try:
        meta = json.loads(arrays.pop(METADATA_ARRAY).astype(np.uint8).tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path.name}: its metadata is not valid JSON ({exc})") from None
    network = meta.get("network")
    if not isinstance(network, dict) or network.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path.name}: its metadata has no network of format {EXPORT_FORMAT!r}")
    return meta, arrays


class ExportedPolicy:
    """The actor of an exported model: ``logits(obs)`` and ``action(obs, mask)``, in float32 numpy.

    Args:
        network: the export's ``network`` description (``kind``, ``activation``, ``hidden``, and for
            ``factored`` ``num_levels``, ``num_blocks``).
        arrays: its weights (``hidden.<i>.weight`` / ``.bias`` of shape (out, in) / (out,), ``head.*``).
    """

    def __init__(self, network: dict[str, Any], arrays: dict[str, np.ndarray]):
        self.network = dict(network)
        kind = self.network.get("kind")
        if kind not in ("mlp", "factored"):
            raise ExportError(f"unknown network kind {kind!r} (known: mlp, factored)")
        activation = self.network.get("activation")
        if activation not in ACTIVATIONS:
            raise ExportError(f"unknown activation {activation!r} (known: {', '.join(ACTIVATIONS)})")
        self.kind: str = kind
        self._act = ACTIVATIONS[activation]

        def get(name: str) -> np.ndarray:
            if name not in arrays:
                raise ExportError(f"the export lacks the array {name!r}")
            return np.asarray(arrays[name], dtype=np.float32)

        self.hidden = [
            (get(f"hidden.{i}.weight"), get(f"hidden.{i}.bias")) for i in range(int(self.network["hidden"]))
        ]
        names = ("head",) if kind == "mlp" else ("head.level", "head.start", "head.pair", "head.route")
        self.heads = {
            n: (get(f"{n}.weight"), get(f"{n}.bias"))
            for n in names
            if n != "head.route" or f"{n}.weight" in arrays
        }
        if kind == "factored":
            self.num_levels = int(self.network["num_levels"])
            self.num_blocks = int(self.network["num_blocks"])

    @classmethod
    def load(cls, path: str | Path) -> ExportedPolicy:
        """The policy in an export file (ExportError if it is not one)."""
        meta, arrays = _read(Path(path))
        return cls(meta["network"], arrays)

    @property
    def observation_size(self) -> int:
        """Length of the flat observation the policy reads."""
        return int(self.hidden[0][0].shape[1]) if self.hidden else int(self.heads["head"][0].shape[1])

    def logits(self, obs: np.ndarray) -> np.ndarray:
        """Unmasked action logits of one flat observation, shape (n_actions,)."""
        z = np.asarray(obs, dtype=np.float32).reshape(-1)
        for weight, bias in self.hidden:
            z = self._act(weight @ z + bias)
        if self.kind == "mlp":
            weight, bias = self.heads["head"]
            return weight @ z + bias
        (wl, bl), (ws, bs), (wp, bp) = (self.heads[n] for n in ("head.level", "head.start", "head.pair"))
        place = (wl @ z + bl)[:, None] + (ws @ z + bs)[None, :]
        place = (place + (wp @ z + bp).reshape(self.num_levels, self.num_blocks)).reshape(-1)
        if "head.route" not in self.heads:
            return place
        wr, br = self.heads["head.route"]
        return np.concatenate([place, wr @ z + br])

    def action(
        self,
        obs: np.ndarray,
        mask: np.ndarray,
        deterministic: bool = True,
        rng: np.random.Generator | None = None,
    ) -> int:
        """The most likely valid action (``deterministic``), else one drawn from the masked softmax."""
        logits = self.logits(obs).astype(np.float64)
        valid = np.asarray(mask, dtype=bool).reshape(-1)
        if not valid.any():
            valid = np.ones_like(valid)
        logits = np.where(valid, logits, -np.inf)
        if deterministic:
            return int(np.argmax(logits))
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return int((rng or np.random.default_rng()).choice(len(p), p=p))

    def __call__(self, obs: np.ndarray, mask: np.ndarray) -> int:
        """``policy(obs, mask) -> action``, deterministic (:class:`~petalgym.envs.adapter.PolicyDecider`)."""
        return self.action(obs, mask)


def _linear(module: Any, name: str) -> dict[str, np.ndarray]:
    return {
        f"{name}.weight": module.weight.detach().cpu().numpy().astype(np.float32),
        f"{name}.bias": module.bias.detach().cpu().numpy().astype(np.float32),
    }


def export_model(model: Any, path: str | Path, metadata: dict[str, Any]) -> Path:
    """Write the actor of an SB3 actor-critic ``model`` (with its petalgym ``metadata``) to ``path``
    (``.npz``) and the metadata, with the network description added, to the ``.json`` beside it.

    Raises ExportError for a model whose actor is not an MlpPolicy / FactoredMlpPolicy over flat
    observations (e.g. DQN, dict observations, ScoredMlpPolicy)."""
    from torch import nn

    policy = getattr(model, "policy", None)
    extractor = getattr(policy, "mlp_extractor", None)
    head = getattr(policy, "action_net", None)
    if extractor is None or head is None or not hasattr(extractor, "policy_net"):
        raise ExportError(f"cannot export a {type(model).__name__} model: only actor-critic MLP policies")
    if type(policy.features_extractor).__name__ != "FlattenExtractor":
        raise ExportError("cannot export a policy over dict observations (obs_mode 'flat' only)")
    if type(extractor).__name__ != "MlpExtractor":
        raise ExportError(f"cannot export a {type(policy).__name__}: MlpPolicy and FactoredMlpPolicy only")
    arrays: dict[str, np.ndarray] = {}
    layers = [m for m in extractor.policy_net if isinstance(m, nn.Linear)]
    activations = {
        _TORCH_ACTIVATIONS.get(type(m).__name__, type(m).__name__)
        for m in extractor.policy_net
        if not isinstance(m, nn.Linear)
    } or {"identity"}
    if len(activations) != 1 or not activations <= set(ACTIVATIONS):
        raise ExportError(
            f"cannot export hidden activations {sorted(activations)} (known: {', '.join(ACTIVATIONS)})"
        )
    for i, layer in enumerate(layers):
        arrays.update(_linear(layer, f"hidden.{i}"))
    network: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "activation": activations.pop(),
        "hidden": len(layers),
    }
    if isinstance(head, nn.Linear):
        network["kind"] = "mlp"
        arrays.update(_linear(head, "head"))
    elif type(head).__name__ == "FactoredPlaceHead":
        network.update(kind="factored", num_levels=head.num_levels, num_blocks=head.num_blocks)
        for part in ("level", "start", "pair", "route"):
            if getattr(head, part) is not None:
                arrays.update(_linear(getattr(head, part), f"head.{part}"))
    else:
        raise ExportError(
            f"cannot export the action head {type(head).__name__}: MlpPolicy and FactoredMlpPolicy only"
        )
    meta = {**metadata, "network": network}
    path = _npz_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(meta, indent=1)
    np.savez_compressed(path, **arrays, **{METADATA_ARRAY: np.frombuffer(text.encode(), dtype=np.uint8)})
    path.with_suffix(".json").write_text(text + "\n")
    return path


def _npz_path(path: str | Path) -> Path:
    """``path`` as a Path if it names a ``.npz`` file (where exports are written), else ExportError."""
    path = Path(path)
    if path.suffix != ".npz":
        raise ExportError(f"an export is written to a .npz file, not {path.name}")
    return path


def export_file(model_path: str | Path, path: str | Path) -> Path:
    """Export the model zip at ``model_path`` (written by ``petalgym train``) to ``path`` (``.npz``); the
    zip is unpickled to read it, so it must come from a trusted source."""
    from petalgym.agents.policy import _load_model, read_metadata

    model_path = Path(model_path)
    path = _npz_path(path)  # (before anything is unpickled)
    meta = read_metadata(model_path)
    if model_path.suffix == ".npz":
        raise ExportError(f"{model_path.name} is already a numpy export")
    model = _load_model(str(model_path.resolve()), model_path.stat().st_mtime_ns, meta["algo"])
    return export_model(model, path, {**meta, "export_command": f"petalgym export {model_path} {path}"})
