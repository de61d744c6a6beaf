"""Starting a network from a state dict file (``model.init``), checked tensor by tensor.

A file is a state dict: ``.pth``/``.pt``/``.bin`` read with ``torch.load(weights_only=True)``
(never unpickled; a ``state_dict`` or ``model`` entry and DDP's ``module.`` prefix are unwrapped)
or ``.safetensors``. Its keys may be named as the source library names them (timm's, or
torchvision's for ``resnet18``/``mobilenet_v2``: the family records ``source_names``) or as
onedge's plain student names them (``trunk.*``, ``body.*``, ``head.*``: an extracted branch's
state dict). Every copy of a layer takes the file's tensor: the shared trunk, and each branch's
stages and head, so all branches start from the same pretrained weights; the gate starts fresh,
and a method's auxiliary modules are built afterwards, fresh.

Per tensor: equal shapes load; the first convolution with another input-channel count is adapted
(summed over the channel axis to fewer channels, repeated and rescaled to more); a classifier
whose class count differs (or that the file lacks) keeps its fresh initialisation; batch-norm
counters missing from the file start at 0. Anything else (a tensor the model has and the file
lacks, a file tensor the model does not use, another shape) means the file holds another
architecture, and loading stops with one line saying what differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from onedge.errors import ConfigError, first_line
from onedge.files import sha256_file
from training.errors import CheckpointError

SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
BRANCH_PART = re.compile(r"^(?:members\.\d+\.)?(bodies|heads)\.\d+\.")


class InitWeightsError(CheckpointError):
    """A ``model.init`` file that cannot start the configured network."""


@dataclass
class InitReport:
    """What loading a ``model.init`` file did, tensor by tensor (model-side names)."""

    path: Path
    sha256: str
    total: int
    loaded: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)
    fresh: dict[str, str] = field(default_factory=dict)  # model key -> why it starts fresh
    unused: dict[str, str] = field(default_factory=dict)  # file key -> why it is not used

    def summary(self) -> str:
        reasons = sorted(set(self.fresh.values()) | set(self.adapted.values()))
        return (
            f"model.init {self.path.name} (sha256 {self.sha256[:12]}...): "
            f"{len(self.loaded) + len(self.adapted)} of {self.total} tensors from the file"
            + (f", {len(self.adapted)} adapted" if self.adapted else "")
            + (f", {len(self.fresh)} fresh" if self.fresh else "")
            + (f" ({'; '.join(reasons)})" if reasons else "")
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            "total": self.total,
            "loaded": len(self.loaded),
            "adapted": dict(self.adapted),
            "fresh": dict(self.fresh),
            "unused": dict(self.unused),
        }


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a state dict file, read without unpickling (bad file: InitWeightsError)."""
    path = Path(path)
    if not path.is_file():
        raise InitWeightsError(f"model.init {path} does not exist")
    if path.suffix not in SUFFIXES:
        raise InitWeightsError(
            f"model.init {path}: unknown suffix {path.suffix!r}; onedge reads {', '.join(SUFFIXES)}"
        )
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise InitWeightsError(
                f"model.init {path} is not a readable safetensors file (truncated or corrupt): "
                f"{first_line(exc)[:160]}"
            ) from None
    else:
        state = torch_state(path)
    return plain_tensors(unwrap(state), path)


def torch_state(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # the weights-only reader's failures: pickled code, bad bytes
        text = first_line(exc)
        if "Weights only load failed" in text or "Unsupported global" in str(exc):
            raise InitWeightsError(
                f"model.init {path} is not a weights-only state dict (it needs pickled code to "
                "load, which onedge never runs); save it with torch.save(model.state_dict()) "
                "or as .safetensors"
            ) from None
        raise InitWeightsError(
            f"model.init {path} cannot be read (truncated or corrupt torch file): {text[:160]}"
        ) from None


def unwrap(state: object) -> object:
    if isinstance(state, dict):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = state.get(key)
            if isinstance(inner, dict) and inner and not isinstance(inner, torch.Tensor):
                return inner
    return state


def plain_tensors(state: object, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(state, dict) or not state:
        raise InitWeightsError(f"model.init {path} holds no state dict (a mapping of tensors)")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            continue  # metadata beside the weights (epoch, arch name) is not a tensor
        out[str(key).removeprefix("module.")] = value
    if not out:
        raise InitWeightsError(f"model.init {path} holds no tensors")
    return out


def plain_key(key: str) -> str | None:
    """Model key -> onedge's plain student name (``trunk.``, ``body.``, ``head.``); gate: None."""
    key = re.sub(r"^members\.\d+\.", "", key)
    if key.startswith("gate."):
        return None
    return re.sub(r"^bodies\.\d+\.", "body.", re.sub(r"^heads\.\d+\.", "head.", key))


def source_key(plain: str, names: dict[str, str]) -> str | None:
    """onedge plain name -> the source library's name, by the longest matching prefix."""
    parts = plain.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        prefix = ".".join(parts[:cut])
        if prefix in names:
            return ".".join([names[prefix], *parts[cut:]])
    return None


def source_names(model: nn.Module) -> dict[str, str]:
    names = getattr(model, "source_names", None)
    if names is None and hasattr(model, "members"):
        names = getattr(model.members[0], "source_names", None)
    return dict(names or {})


def file_names(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Model key -> file key, in whichever naming (source or plain) the file matches better."""
    names = source_names(model)
    plain = {k: plain_key(k) for k in model.state_dict()}
    by_plain = {k: p for k, p in plain.items() if p is not None}
    by_source = {k: source_key(p, names) for k, p in by_plain.items()} if names else {}
    by_source = {k: s for k, s in by_source.items() if s is not None}
    hits_plain = sum(p in state for p in by_plain.values())
    hits_source = sum(s in state for s in by_source.values())
    return by_source if hits_source > hits_plain else by_plain


def classifier_keys(model: nn.Module) -> set[str]:
    """Model keys of each head's last linear layer (the one sized by the class count)."""
    keys: set[str] = set()
    last: dict[str, str] = {}
    for name, module in model.named_modules():
        match = BRANCH_PART.match(name + ".")
        if isinstance(module, nn.Linear) and match and match.group(1) == "heads":
            last[match.group(0)] = name
    for name in last.values():
        keys.update({f"{name}.weight", f"{name}.bias"})
    return keys


def first_conv_key(model: nn.Module) -> str | None:
    for key, value in model.state_dict().items():
        if value.ndim == 4:
            return key
    return None


def adapt_channels(tensor: torch.Tensor, channels: int) -> torch.Tensor:
    """A first convolution's weight for ``channels`` inputs: summed to 1, else repeated."""
    have = tensor.shape[1]
    if channels == 1:
        return tensor.sum(dim=1, keepdim=True)
    repeats = -(-channels // have)
    return tensor.repeat(1, repeats, 1, 1)[:, :channels] * (have / channels)


def init_network(model: nn.Module, path: Path, *, expected_sha256: str | None = None) -> InitReport:
    """Load ``path`` into ``model`` (every copy of each layer) and say what was done.

    Raises :class:`InitWeightsError` for an unreadable file, a sha256 other than
    ``expected_sha256``, or a file that holds another architecture.
    """
    path = Path(path)
    state = read_state_dict(path)
    sha = sha256_file(path)
    if expected_sha256 is not None and sha != expected_sha256:
        raise InitWeightsError(
            f"model.init {path} has sha256 {sha[:12]}..., model.init_sha256 says "
            f"{expected_sha256[:12]}...: another file than the one pinned"
        )
    own = model.state_dict()
    names = file_names(model, state)
    classifier, first = classifier_keys(model), first_conv_key(model)
    report = InitReport(path=path, sha256=sha, total=len(own))
    new: dict[str, torch.Tensor] = {}
    missing, wrong = [], []
    for key, mine in own.items():
        source = names.get(key)
        theirs = state.get(source) if source is not None else None
        if source is None:
            report.fresh[key] = "gate: starts fresh"
        elif theirs is None:
            if key in classifier:
                report.fresh[key] = "classifier: not in the file, re-initialised"
            elif key.endswith("num_batches_tracked"):
                report.fresh[key] = "batch-norm counter: starts at 0"
            else:
                missing.append(key)
        elif theirs.shape == mine.shape:
            new[key] = theirs.to(mine.dtype)
            report.loaded.append(key)
        elif key in classifier and theirs.shape[1:] == mine.shape[1:]:
            report.fresh[key] = (
                f"classifier re-initialised: the file has {theirs.shape[0]} classes, "
                f"this model {mine.shape[0]}"
            )
        elif (
            key == first
            and theirs.ndim == 4
            and theirs.shape[2:] == mine.shape[2:]
            and (theirs.shape[0] == mine.shape[0])
        ):
            how = "summed" if mine.shape[1] == 1 else "repeated"
            new[key] = adapt_channels(theirs, mine.shape[1]).to(mine.dtype)
            report.adapted[key] = (
                f"first convolution {how} from {theirs.shape[1]} to {mine.shape[1]} input channels"
            )
        else:
            wrong.append((key, source, tuple(theirs.shape), tuple(mine.shape)))
    used = {names[k] for k in new} | {names[k] for k in report.fresh if names.get(k) in state}
    report.unused = {k: "not a tensor of this model" for k in state if k not in used}
    check_fit(model, path, report, missing, wrong, state)
    model.load_state_dict({**own, **new})
    return report


def check_fit(
    model: nn.Module,
    path: Path,
    report: InitReport,
    missing: list[str],
    wrong: list[tuple[str, str, tuple[int, ...], tuple[int, ...]]],
    state: dict[str, torch.Tensor],
) -> None:
    """Refuse a file that fits nothing, or holds another architecture, in one line."""
    what = getattr(model, "source_format", None) or "the configured model"
    weights = [k for k in report.loaded if not k.endswith("num_batches_tracked")]
    if not weights and not report.adapted:  # batch-norm counters alone fit anything
        example = (
            f"; e.g. {wrong[0][1]}: file {wrong[0][2]} vs model {wrong[0][3]}" if wrong else ""
        )
        raise InitWeightsError(
            f"model.init {path} fits nothing in {what}: none of its {len(state)} tensors "
            f"matches a tensor of the model by name and shape (file keys look like "
            f"{next(iter(state))!r}){example}"
        )
    if missing or wrong or report.unused:
        detail = []
        if wrong:
            key, source, theirs, mine = wrong[0]
            detail.append(
                f"{len(wrong)} of another shape (e.g. {source}: file {theirs}, model {mine})"
            )
        if missing:
            detail.append(f"{len(missing)} missing from the file (e.g. {missing[0]})")
        if report.unused:
            detail.append(
                f"{len(report.unused)} not in the model (e.g. {next(iter(report.unused))})"
            )
        raise InitWeightsError(
            f"model.init {path} holds another architecture than {what}: " + "; ".join(detail)
        )


def freeze_stages(model: nn.Module, freeze: str | int | None) -> list[str]:
    """Stop gradients in the stem (``"stem"``) or the stem and stages 1..k (``k``); the names."""
    if freeze is None:
        return []
    count = 1 if freeze == "stem" else int(freeze) + 1
    networks = list(getattr(model, "members", [model]))
    taps = networks[0].tap_names()
    if count > len(taps):
        raise ConfigError(
            f"model.freeze {freeze!r}: the model has a stem and {len(taps) - 1} stage(s)"
        )
    frozen = taps[:count]
    for network in networks:
        pairs = list(zip(network.trunk, network.trunk_info, strict=True))
        for body, infos in zip(network.bodies, network.body_info, strict=True):
            pairs += list(zip(body, infos, strict=True))
        for module, info in pairs:
            if info.name in frozen:
                module.requires_grad_(False)
    return frozen


def start_from_init(model: nn.Module, config, *, load: bool):
    """Apply ``model.init`` and ``model.freeze`` to a freshly built network.

    ``load``: read the weights (a new stage); False on a resume or an ``init_from`` stage, where
    the file's sha256 is still checked and recorded. Returns the config with
    ``model.init_sha256`` set (what the checkpoint and the manifests record) and the report.
    """
    cfg = config.model
    if cfg.init is None:
        return config, None
    report = None
    if load:
        report = init_network(model, cfg.init, expected_sha256=cfg.init_sha256)
        print(report.summary(), flush=True)
        sha = report.sha256
    else:
        sha = sha256_file(cfg.init) if Path(cfg.init).is_file() else cfg.init_sha256
        if sha is None:
            raise InitWeightsError(f"model.init {cfg.init} does not exist")
        if cfg.init_sha256 is not None and sha != cfg.init_sha256:
            raise InitWeightsError(
                f"model.init {cfg.init} has sha256 {sha[:12]}..., the run started from "
                f"{cfg.init_sha256[:12]}...: another file than the one pinned"
            )
    freeze_stages(model, cfg.freeze)
    return config.model_copy(update={"model": cfg.model_copy(update={"init_sha256": sha})}), report
