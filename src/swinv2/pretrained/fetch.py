"""Released weights brought onto this machine through the caches their publishers use: the Hugging Face
Hub cache (``huggingface_hub``; honours ``HF_HUB_OFFLINE``, ``cache_dir`` and ``revision``) for Hub
repositories, torch.hub's ``checkpoints/`` folder (``TORCH_HOME``) for the official and torchvision files.

Nothing is downloaded when ``HF_HUB_OFFLINE`` is set; a file that is not cached then raises
:class:`WeightsNotFound` with one line: what was looked for, where, and how to get it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .tags import PretrainedTag

HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")  # a repository's weights, the safe format first
CONFIG = "config.json"


class WeightsNotFound(FileNotFoundError):
    """Released weights that are neither cached nor downloadable now; the message says how to get them."""


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as it is now: huggingface_hub reads it once, when it is first imported (often by
    transformers or timm, before a user sets it), and would then try the network for 20 s or more."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "on", "yes", "true")


def fetch(
    tag: PretrainedTag, source: str, cache_dir: str | None = None, revision: str | None = None
) -> tuple[Path, Path | None]:
    """``(weights file, config.json or None)`` of ``tag`` from ``source`` (one of ``tag.sources``)."""
    where = tag.sources[source]
    if source in ("timm", "hf"):
        return hub_files(where, cache_dir, revision, what=tag.name)
    return hub_checkpoint(where, what=tag.name), None


def hub_files(
    repo: str, cache_dir: str | None = None, revision: str | None = None, what: str | None = None
) -> tuple[Path, Path | None]:
    """A Hub repository's weights (``model.safetensors``, else ``pytorch_model.bin``) and its ``config.json``."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError as exc:
        raise WeightsNotFound(
            f"{what or repo} lives on the Hugging Face Hub ({repo}), and huggingface_hub is not installed: "
            "pip install 'swinv2[hub]'"
        ) from exc
    offline = hub_offline()
    options = {"revision": revision, "cache_dir": cache_dir, "local_files_only": offline}
    missing = []
    for name in HUB_WEIGHTS:
        try:
            weights = Path(hf_hub_download(repo, name, **options))
            break
        except Exception as exc:  # no such file, not cached offline, no network, no such repository or revision
            if _no_such_file(exc, offline):  # try the next format
                missing.append(name)
                continue
            raise WeightsNotFound(_hub_failure(what or repo, repo, exc, cache_dir, revision, offline)) from exc
    else:
        raise WeightsNotFound(_hub_miss(what or repo, repo, missing, cache_dir, revision, offline))
    try:
        config = Path(hf_hub_download(repo, CONFIG, **options))
    except Exception:  # weights without a config: the caller knows the model by name
        config = None
    return weights, config


def hub_extra(repo: str, name: str, cache_dir: str | None = None, revision: str | None = None) -> Path | None:
    """An optional file of a Hub repository (None where it has none or it cannot be fetched now)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, name, revision=revision, cache_dir=cache_dir, local_files_only=hub_offline()))
    except Exception:
        return None


def _no_such_file(exc: Exception, offline: bool) -> bool:
    """Whether ``exc`` says only that this one file is absent: on the Hub, or (offline) from the cache. A
    cache miss while online means the network failed, which another file name would not mend."""
    kind = type(exc).__name__
    return kind in ("RemoteEntryNotFoundError", "EntryNotFoundError") or (offline and kind == "LocalEntryNotFoundError")


def _cache_folder(cache_dir: str | None) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    try:
        from huggingface_hub import constants

        return constants.HF_HUB_CACHE
    except ImportError:
        return "~/.cache/huggingface/hub"


def _hub_miss(what: str, repo: str, names: list[str], cache_dir, revision, offline: bool) -> str:
    at = f" at revision {revision}" if revision else ""
    if offline:
        return (
            f"{what}: {repo}{at} is not in the Hugging Face cache {_cache_folder(cache_dir)} (looked for "
            f"{' or '.join(names)}) and HF_HUB_OFFLINE=1 forbids downloading; fetch it once online "
            f"(`hf download {repo}`), or give pretrained= a local file"
        )
    return f"{what}: {repo}{at} holds none of {', '.join(names)} on the Hugging Face Hub"


def _hub_failure(what: str, repo: str, exc: Exception, cache_dir, revision, offline: bool = False) -> str:
    at = f" at revision {revision}" if revision else ""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if offline:
        return (
            f"{what}: could not read {repo}{at} from the Hugging Face cache {_cache_folder(cache_dir)} "
            f"({type(exc).__name__}: {reason[:200]}; HF_HUB_OFFLINE=1 keeps the Hub out of it)"
        )
    return (
        f"{what}: could not fetch {repo}{at} from the Hugging Face Hub into {_cache_folder(cache_dir)} "
        f"({type(exc).__name__}: {reason[:200]}); check the name and the network, or set HF_HUB_OFFLINE=1 to "
        "use the cache alone"
    )


def checkpoint_folder() -> Path:
    """torch.hub's folder of downloaded checkpoints (``$TORCH_HOME/hub/checkpoints``)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def hub_checkpoint(url: str, what: str | None = None) -> Path:
    """The file of ``url`` in torch.hub's checkpoint folder, downloaded there first where allowed (the
    ``-<hash>`` suffix of torchvision's file names is checked, as torch.hub does)."""
    import torch

    name = url.rsplit("/", 1)[-1]
    path = checkpoint_folder() / name
    if path.is_file():
        return path
    if hub_offline():
        raise WeightsNotFound(
            f"{what or name}: {name} is not in torch.hub's checkpoint folder {path.parent} and HF_HUB_OFFLINE=1 "
            f"forbids downloading; download {url} into that folder, or give pretrained= a local file"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = re.search(r"-([a-f0-9]{8,})\.", name)
    try:
        torch.hub.download_url_to_file(url, str(path), hash_prefix=digest.group(1) if digest else None)
    except Exception as exc:  # URLError, a hash mismatch, a full disk
        path.unlink(missing_ok=True)
        raise WeightsNotFound(
            f"{what or name}: could not download {url} into {path.parent} ({type(exc).__name__}: {exc}); "
            "download it there by hand, or give pretrained= a local file"
        ) from exc
    return path
