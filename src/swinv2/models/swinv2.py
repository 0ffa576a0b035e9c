"""Swin Transformer V2 (Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022).

The image model is a hierarchy of stages over a token grid. Each stage (after the first) halves the grid
with patch merging, then runs blocks of window attention, every second one on windows shifted by half a
window so information crosses window borders. SwinV2 changes three things from Swin V1, each switchable
here for the paper's ablations:

* res-post-norm: the LayerNorm moves to the end of each residual branch (``x + norm(f(x))``), zero
  initialised, so activations no longer grow with depth (``norm="pre"`` restores V1);
* scaled cosine attention with a learned temperature per head (``attention="dot"`` restores V1);
* log-spaced continuous position bias, which transfers to larger windows (``position_bias="table"`` is
  V1's table, ``"linear_cpb"`` the linear-spaced CPB baseline).

H and G also get an extra LayerNorm on the main branch every ``extra_norm_every`` blocks.
Blocks work on channels-last maps ``(B, H, W, C)``; any image size is accepted (padding where needed).
"""

from collections.abc import Iterable

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import (
    DropPath,
    Mlp,
    PatchEmbed,
    PatchMerging,
    RelativePositionTable,
    WindowAttention,
    attention_mask,
    effective_window,
    pad_to_window,
    window_partition,
    window_reverse,
)
from ..layers import symbolic_windows as symbolic
from .config import SwinV2Config, to_pair
from .preprocess import model_preprocessing

Window = tuple[int, int]


class SwinV2Block(nn.Module):
    """One transformer block: (shifted) window attention then MLP, each a residual branch."""

    def __init__(
        self,
        cfg: SwinV2Config,
        dim: int,
        num_heads: int,
        window: Window,
        shifted: bool,
        pretrained_window: Window,
        drop_path: float,
        extra_norm: bool,
    ):
        super().__init__()
        self.post_norm = cfg.norm == "res_post"
        self.clip_windows = cfg.clip_windows
        self.mask_padding = cfg.mask_padding
        self.shifted = shifted
        self._masks: dict[tuple, torch.Tensor | None] = {}  # the stage shares one among its blocks
        self.set_window(window)
        self.attn = WindowAttention(
            dim,
            num_heads,
            window,
            pretrained_window,
            attention=cfg.attention,
            position_bias=cfg.position_bias,
            qkv_bias=cfg.qkv_bias,
            attn_drop=cfg.attn_drop_rate,
            proj_drop=cfg.drop_rate,
            fused=cfg.fused_attention,
            cpb_hidden=cfg.cpb_hidden,
        )
        self.norm1 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), drop=cfg.drop_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.extra_norm = nn.LayerNorm(dim) if extra_norm else None

    def set_window(self, window: Window) -> None:
        """Target window (clipped per input in :meth:`forward`); shifted blocks shift by half of it."""
        self.window = self._to_window(window)
        self.shift = tuple(w // 2 for w in self.window) if self.shifted else (0,) * len(self.window)
        self._masks.clear()
        if hasattr(self, "attn"):
            self.attn.clear_cache()

    # the window's axes and its mask: 2-D here, 3-D in the video block
    _to_window = staticmethod(to_pair)
    _make_mask = staticmethod(attention_mask)

    def _mask(
        self, padded: list[int], window: list[int], shift: list[int], valid: list[int], device: torch.device
    ) -> torch.Tensor | None:
        if torch.jit.is_scripting():  # TorchScript keeps no cache (and runs images only)
            return attention_mask(padded, window, shift, valid, self.mask_padding, device)
        if torch.compiler.is_compiling():  # traced with symbolic sizes (export): built in the graph, not cached
            return self._make_mask(padded, window, shift, valid, self.mask_padding, device)
        key = (tuple(padded), tuple(window), tuple(shift), tuple(valid), device)
        if key not in self._masks:
            with torch.inference_mode(False):  # cached: must stay usable by a later training pass
                self._masks[key] = self._make_mask(padded, window, shift, valid, self.mask_padding, device)
        return self._masks[key]

    def _window_attention(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.jit.is_scripting():  # noqa: SIM102 (nested: TorchScript then skips the inner test)
            if symbolic.is_symbolic(x.shape[1:-1]):
                return self._symbolic_window_attention(x)
        _, h, w, _ = x.shape
        window, shift = effective_window([h, w], list(self.window), list(self.shift), self.clip_windows)
        shifted = shift[0] != 0 or shift[1] != 0
        x, pad_h, pad_w = pad_to_window(x, window)
        padded = [h + pad_h, w + pad_w]
        if shifted:
            x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
        mask = self._mask(padded, window, shift, [h, w], x.device)
        windows = self.attn(window_partition(x, window), window, mask)  # (B * nW, N, C)
        x = window_reverse(windows, window, padded[0], padded[1])  # (B, Hp, Wp, C)
        if shifted:
            x = torch.roll(x, shifts=(shift[0], shift[1]), dims=(1, 2))
        return x[:, :h, :w] if pad_h > 0 or pad_w > 0 else x

    @torch.jit.unused
    def _symbolic_window_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Window attention whose geometry is computed in the graph from symbolic sizes (an export or
        compile for every input size; see :mod:`~swinv2.layers.symbolic_windows`), for any number of axes."""
        if isinstance(self.attn.rel_pos, RelativePositionTable) and self.attn.rel_pos.window != self.window:
            raise ValueError(
                f"a V1 position table built for window {self.attn.rel_pos.window} cannot be traced for every "
                f"input size at window {self.window}: export at a fixed size, or set the window to the table's"
            )
        batch, sizes, window = x.shape[0], list(x.shape[1:-1]), list(self.window)
        x, padded = symbolic.pad_always(x, window)
        shifts = symbolic.effective_shifts(sizes, window, list(self.shift), x.device) if self.shifted else None
        if shifts is not None:
            x = symbolic.roll(x, shifts)
        mask = self._traced_mask(padded, sizes, window, shifts, x.device)
        windows = self.attn(symbolic.partition(x, window), window, mask)
        x = symbolic.reverse(windows, window, padded, batch)
        if shifts is not None:
            x = symbolic.roll(x, shifts, back=True)
        return symbolic.crop(x, sizes)

    @torch.jit.unused
    def _traced_mask(self, padded: list, sizes: list, window: list[int], shifts, device: torch.device) -> torch.Tensor:
        """The mask in the graph, built once per stage and shift of a trace (the stage drops it after its
        blocks ran); on concrete sizes (the unit tests) built afresh."""
        if not symbolic.is_symbolic(sizes):
            return symbolic.attention_mask(padded, sizes, window, shifts, self.clip_windows, self.mask_padding, device)
        key = ("traced", self.shifted)
        if key not in self._masks:
            self._masks[key] = symbolic.attention_mask(
                padded, sizes, window, shifts, self.clip_windows, self.mask_padding, device
            )
        return self._masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            x = x + self.drop_path(self.norm1(self._window_attention(x)))
            x = x + self.drop_path(self.norm2(self.mlp(x)))
        else:
            x = x + self.drop_path(self._window_attention(self.norm1(x)))
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.extra_norm is not None:
            x = self.extra_norm(x)
        return x


class SwinV2Stage(nn.Module):
    """Optional patch merging followed by ``depth`` blocks alternating plain and shifted windows."""

    def __init__(
        self,
        cfg: SwinV2Config,
        index: int,
        window: Window,
        pretrained_window: Window,
        drop_paths: list[float],
    ):
        super().__init__()
        dim = cfg.embed_dim * 2**index
        self.downsample = PatchMerging(dim // 2) if index > 0 else nn.Identity()
        every = cfg.extra_norm_every
        self.blocks = nn.ModuleList(
            SwinV2Block(
                cfg,
                dim,
                cfg.num_heads[index],
                window,
                shifted=j % 2 == 1,
                pretrained_window=pretrained_window,
                drop_path=drop_paths[j],
                extra_norm=every > 0 and (j + 1) % every == 0,
            )
            for j in range(cfg.depths[index])
        )
        shared_masks: dict[tuple, torch.Tensor | None] = {}  # one shift mask per geometry, not per block
        for block in self.blocks:
            block._masks = shared_masks
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        traced = False
        if not torch.jit.is_scripting():
            traced = symbolic.is_symbolic(x.shape[1:-1])
        if traced:
            self._forget_traced_masks()
        for block in self.blocks:
            if torch.jit.is_scripting():  # activation checkpointing is eager only
                x = block(x)
            elif self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        if traced:
            self._forget_traced_masks()
        return x

    @torch.jit.unused
    def _forget_traced_masks(self) -> None:
        """Drop the masks a traced forward pass built in its graph (they belong to that trace only)."""
        masks = self.blocks[0]._masks
        for key in [k for k in masks if k[0] == "traced"]:
            del masks[key]


def resolve_windows(cfg: SwinV2Config) -> tuple[list[Window], list[Window]]:
    """Per stage: the window used at ``cfg.img_size`` and the window Log-CPB normalises by."""
    window = to_pair(cfg.window_size)
    used, pretrained = [], []
    for size, pws in zip(cfg.stage_feature_sizes(), cfg.pretrained_window_sizes):
        win = tuple(effective_window(size, window, (0, 0), cfg.clip_windows)[0])
        used.append(win)
        pretrained.append(to_pair(pws) if min(to_pair(pws)) > 0 else win)
    return used, pretrained


class SwinV2Base(nn.Module):
    """What the image and video classifiers share: initialisation, memory savers, weight-decay exclusions,
    head replacement, and the forward pass over ``patch_embed``, ``stages``, ``norm`` and ``head``.

    Subclasses build those modules and define ``_check_input`` for their input rank.
    """

    # TorchScript compiles the forward pass only: the config, the loaded preprocessing and timm's
    # descriptions stay Python-side
    __jit_ignored_attributes__ = ("cfg", "preprocessing", "_pretrained_windows")
    __jit_unused_properties__ = ("pretrained_cfg", "default_cfg", "num_classes", "head_hidden_size", "feature_info")
    preprocessing = None  # a swinv2.Preprocessing once loaded by from_pretrained (else the default)
    classes: list[str] | None = None  # class names, when the weights came with them

    def save_pretrained(self, directory, preprocessing=None, classes=None, layout: str = "swinv2"):
        """``config.json`` + ``model.safetensors`` in ``directory``, this project's layout or transformers'
        (see :func:`swinv2.save_pretrained`)."""
        from ..weights.saving import write_pretrained

        return write_pretrained(self, directory, preprocessing or model_preprocessing(self), classes, layout)

    @property
    def pretrained_cfg(self) -> dict:
        """timm's description of the weights: preprocessing, class count, first conv and classifier."""
        prep = model_preprocessing(self).to_dict()
        extra = {"num_classes": self.cfg.num_classes, "first_conv": "patch_embed.proj", "classifier": "head.fc"}
        extra["pool_size"] = self._final_map(prep["input_size"][1:])
        extra["fixed_input_size"] = False  # any size runs (padded to the patch and the windows)
        return {**prep, **extra, "label_names": self.classes}

    default_cfg = pretrained_cfg  # timm's older name

    def _final_map(self, img_size: tuple[int, int]) -> tuple[int, ...]:
        """The last stage's token grid for an input of ``img_size``, what the head pools over."""
        return self.cfg.stage_feature_sizes(img_size)[-1]

    def init_weights(self) -> None:
        """Official init: truncated-normal linears, then zeroed post-norms (every block starts as identity)."""
        self.apply(_init_module)
        if self.cfg.norm == "res_post":
            for stage in self.stages:
                for block in stage.blocks:
                    for norm in (block.norm1, block.norm2):
                        nn.init.zeros_(norm.weight)
                        nn.init.zeros_(norm.bias)

    def _resize_position_tables(self, windows: list) -> None:
        """Re-parameterise V1 tables for these per-stage windows (Log-CPB needs nothing)."""
        for stage, window in zip(self.stages, windows):
            for block in stage.blocks:
                if isinstance(block.attn.rel_pos, RelativePositionTable):
                    block.attn.rel_pos.resize_(window)

    def set_grad_checkpointing(self, enable: bool = True, stages: Iterable[int] | None = None) -> None:
        """Recompute each block's activations in the backward pass instead of storing them; the MLPs also
        recompute their GELU (:meth:`set_recompute_gelu`), which lowers the peak of a recomputed block's
        backward pass by one hidden-width tensor.

        ``stages`` limits it to those stages (the rest keep theirs); None means all.
        """
        for stage in self._select_stages(stages):
            stage.grad_checkpointing = enable
        self.set_recompute_gelu(enable, stages)

    def set_recompute_gelu(self, enable: bool = True, stages: Iterable[int] | None = None) -> None:
        """Have each MLP keep only its pre-activation for the backward pass, recompute GELU there and apply
        its derivative in place (:class:`~swinv2.layers.mlp.GeluLinear`): one 4x-wide tensor less at the
        MLP's backward peak, for a GELU per MLP. On with checkpointing; a step without it can turn it on."""
        for stage in self._select_stages(stages):
            for block in stage.blocks:
                block.mlp.recompute_gelu = enable

    def set_sequential_attention(self, enable: bool | int = True, stages: Iterable[int] | None = None) -> None:
        """Compute window attention a chunk of windows at a time (the paper's sequential self-attention).

        ``True`` sizes chunks automatically (about 4M attention scores each), an int is the number of
        windows per chunk, ``False`` / 0 turns it off. Only blocks with more windows than a chunk change,
        which in practice means the early, high-resolution stages. Outputs and gradients are unchanged.
        """
        _check_chunk(enable, "sequential attention takes True, False or a window count >= 1")
        for stage in self._select_stages(stages):
            for block in stage.blocks:
                block.attn.sequential = enable if enable else False

    def set_sequential_mlp(self, enable: bool | int = True, stages: Iterable[int] | None = None) -> None:
        """Run each block's MLP a chunk of tokens at a time, recomputing chunks in the backward pass.

        The companion of sequential attention at high resolution: after checkpointing and chunked
        attention, the MLP's 4x-wide hidden activations are the largest tensors a block's backward pass
        holds. ``True`` sizes chunks automatically (about 4M hidden activations), an int is tokens per chunk.
        """
        _check_chunk(enable, "sequential MLP takes True, False or a token count >= 1")
        for stage in self._select_stages(stages):
            for block in stage.blocks:
                block.mlp.sequential = enable if enable else False

    def _select_stages(self, stages: Iterable[int] | None) -> list[SwinV2Stage]:
        if stages is None:
            return list(self.stages)
        picked = sorted(set(stages))
        if any(not 0 <= i < len(self.stages) for i in picked):
            raise ValueError(f"stages must be in 0..{len(self.stages) - 1}, got {picked}")
        return [self.stages[i] for i in picked]

    def no_weight_decay(self) -> set[str]:
        """Parameters that the recipe excludes from weight decay (besides all 1-D params and biases)."""
        keywords = ("logit_scale", "rel_pos.")
        return {name for name, _ in self.named_parameters() if any(k in name for k in keywords)}

    @property
    def num_classes(self) -> int:
        return self.cfg.num_classes

    def get_classifier(self) -> nn.Module:
        return self.head.fc

    output_fmt = "NHWC"  # forward_features' layout (timm's convention for SwinV2)

    @property
    def head_hidden_size(self) -> int:
        """Width of the pooled features the classifier reads (``forward_head(x, pre_logits=True)``)."""
        return self.num_features

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new (re-initialised) classifier for ``num_classes`` (0: none); ``global_pool`` ``"avg"`` or
        ``""`` (no pooling: the head sees, and returns, the token map), as in timm."""
        self.head.reset(num_classes)
        if global_pool is not None:
            self.head.set_pool(global_pool)
        self.cfg = self.cfg.replace(num_classes=num_classes)

    def _check_input(self, x: torch.Tensor) -> None:
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs -> final normed channels-last token map (``(B, H/32, W/32, C)`` for images)."""
        if torch.jit.is_scripting():
            self._check_scripted_input(x)
        elif not isinstance(x, torch.fx.Proxy):  # symbolic tracing (torch.fx) has no shapes to check
            self._check_input(x)
        x = self.pos_drop(self.patch_embed(x))
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return self.head(x, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


class SwinV2(SwinV2Base):
    """SwinV2 image classifier: patch embedding, stages, final LayerNorm, average pool, linear head."""

    def __init__(self, cfg: SwinV2Config):
        super().__init__()
        used, pretrained = resolve_windows(cfg)
        # Keep the resolved pretrained windows in the config so a reloaded or resized model keeps them.
        self.cfg = cfg.replace(pretrained_window_sizes=tuple(p[0] if p[0] == p[1] else p for p in pretrained))
        self._pretrained_windows = pretrained
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        rates = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths), device="cpu").tolist()
        starts = [sum(cfg.depths[:i]) for i in range(len(cfg.depths))]
        # a Sequential (not a ModuleList), so that timm's list / dict / hook feature wrappers can run it
        self.stages = nn.Sequential(
            *(
                SwinV2Stage(cfg, i, to_pair(cfg.window_size), pretrained[i], rates[starts[i] : starts[i] + d])
                for i, d in enumerate(cfg.depths)
            )
        )
        self.num_features = cfg.num_features
        self.norm = nn.LayerNorm(self.num_features)
        self.head = ClassifierHead(self.num_features, cfg.num_classes, cfg.drop_rate)
        self._resize_position_tables(used)
        self.init_weights()

    def set_input_size(
        self, img_size: int | tuple[int, int] | None = None, window_size: int | tuple[int, int] | None = None
    ) -> None:
        """Change the nominal image size and/or window, keeping the pretrained windows (Log-CPB transfer).

        V1 position tables are bicubic-resized to the new windows, as V1 fine-tuning does.
        """
        cfg = self.cfg.replace(
            img_size=self.cfg.img_size if img_size is None else img_size,
            window_size=self.cfg.window_size if window_size is None else window_size,
        )
        used, _ = resolve_windows(cfg)
        self.cfg = cfg
        for stage in self.stages:
            for block in stage.blocks:
                block.set_window(to_pair(cfg.window_size))
        self._resize_position_tables(used)
        if self.preprocessing is not None:  # what predict / export resize images to follows the model
            from dataclasses import replace

            self.preprocessing = replace(self.preprocessing, input_size=(cfg.in_chans, *to_pair(cfg.img_size)))

    # --------------------------------------------------------------------------------------- forward
    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"expected images of shape (B, {self.cfg.in_chans}, H, W), got {type(x).__name__}")
        self._check_scripted_input(x)

    def _check_scripted_input(self, x: torch.Tensor) -> None:
        """The checks of a tensor input, written so that TorchScript compiles them too."""
        in_chans = self.patch_embed.proj.in_channels
        if x.dim() != 4 or x.shape[1] != in_chans:
            raise ValueError(f"expected images of shape (B, {in_chans}, H, W), got {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"expected a floating-point image tensor, got dtype {x.dtype}")

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        intermediates_only: bool = False,
        norm: bool = False,
        output_fmt: str = "NCHW",
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Per-stage feature maps (strides 4, 8, 16, 32), plus the final normed map unless
        ``intermediates_only``. ``indices`` picks stages (default: all; an int n: the last n). timm's
        keywords: ``output_fmt`` "NCHW" or "NHWC"; ``norm`` applies the final norm to the last stage."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be NCHW or NHWC, got {output_fmt!r}")
        self._check_input(x)
        n = len(self.stages)
        if indices is None or isinstance(indices, int):
            take = set(range(n) if indices is None else range(n - indices, n))
        else:
            if any(not -n <= i < n for i in indices):
                raise ValueError(f"indices must be stage numbers in -{n}..{n - 1}, got {list(indices)}")
            take = {i % n for i in indices}  # negative ones count from the last stage, as in timm
        x = self.pos_drop(self.patch_embed(x))
        features = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i in take:
                y = self.norm(x) if norm and i == n - 1 else x
                features.append(y.permute(0, 3, 1, 2) if output_fmt == "NCHW" else y)
        if intermediates_only:
            return features
        return self.norm(x), features

    @property
    def feature_info(self) -> list[dict]:
        """timm's per-stage description: channels, stride and module name."""
        p, c = self.cfg.patch_size, self.cfg.embed_dim
        return [{"num_chs": c * 2**i, "reduction": p * 2**i, "module": f"stages.{i}"} for i in range(len(self.stages))]


class ClassifierHead(nn.Module):
    """Global average pool over the token map (2-D or 3-D), dropout, linear classifier (Identity for 0
    classes)."""

    POOLS = ("avg", "")

    def __init__(self, in_features: int, num_classes: int, drop: float = 0.0):
        super().__init__()
        self.in_features = in_features
        self.pool = "avg"
        self.drop = nn.Dropout(drop)
        self.fc = nn.Linear(in_features, num_classes) if num_classes > 0 else nn.Identity()

    def set_pool(self, pool: str) -> None:
        """``"avg"``: average over the token map (the default); ``""``: none, the classifier runs per token."""
        if pool not in self.POOLS:
            raise ValueError(f"global_pool must be one of {self.POOLS}, got {pool!r}")
        self.pool = pool

    def reset(self, num_classes: int) -> None:
        device = next(self.parameters(), torch.empty(0)).device
        self.fc = nn.Linear(self.in_features, num_classes, device=device) if num_classes > 0 else nn.Identity()
        _init_module(self.fc)

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool == "avg":
            x = x.mean(dim=list(range(1, x.dim() - 1)))  # (B, H, W, C) or (B, T, H, W, C) -> (B, C)
        x = self.drop(x)
        return x if pre_logits else self.fc(x)


def _check_chunk(value: object, message: str) -> None:
    if not isinstance(value, bool) and (not isinstance(value, int) or value < 0):
        raise ValueError(f"{message}, got {value!r}")


def _init_module(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


__all__ = ["ClassifierHead", "SwinV2", "SwinV2Base", "SwinV2Block", "SwinV2Config", "SwinV2Stage", "resolve_windows"]
