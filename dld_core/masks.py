"""Layer masks: which gated modules run. The one home of mask policies, parsing, validation and names.

A mask says, for each gated module of a model, whether it runs. Its value type is :class:`Mask` (one bool
per module and the modules' names: hashable, a sequence of bools, text through ``Mask.parse`` /
``Mask.format``). Functions here also take the two plain forms callers hold: one bool per module, or the
sorted indices of the kept modules (the form the evaluation JSON stores); None means every module.
`as_bools` / `kept` convert; every policy below returns kept indices. A student's protected modules (never
dropped) are a Mask too: its True modules.

Module names come from the model family (`ModelConfig.module_names`: L1..L12 for a conformer, A1 M1 ..
A4 M4 for Whisper sub-blocks). Users name modules by those names or by 0-based index.

The policies (`POLICIES`): all, every other, first k, only k, best k (the best of `candidate_masks`, ranked
by `best_k`), random, custom, and the training gates of LD / DLD (`training_gates`).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import numpy as np
import torch


@dataclass(frozen=True)
class Mask:
    """One layer mask as a value: `bools` (one per gated module, True = the module runs; for protected
    modules: True = never dropped) and the modules' `names`. Hashable (a cache key), and a sequence of its
    bools, so it goes wherever a mask goes (`forward(active=mask)`, `as_bools`, `sum(mask)`). A mask is
    true when it keeps at least one module. Text: `Mask.parse("A1,M4", names)` / `mask.format()` -> "A1,M4"."""
    bools: tuple[bool, ...]
    names: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "bools", tuple(bool(b) for b in self.bools))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))
        if len(self.bools) != len(self.names):
            raise ValueError(f"layer mask has {len(self.bools)} entries but the model has {len(self.names)} modules")

    @classmethod
    def of(cls, active, names: Sequence[str]) -> "Mask":
        """Any form of a mask (None: every module; bools; kept indices; a Mask of the same modules)."""
        if isinstance(active, Mask) and active.names != tuple(names):
            raise ValueError(f"a mask of modules {' '.join(active.names)} does not fit modules {' '.join(names)}")
        return cls(tuple(as_bools(active, len(names))), tuple(names))

    @classmethod
    def full(cls, names: Sequence[str]) -> "Mask":
        """Every module on (full depth)."""
        return cls((True,) * len(names), tuple(names))

    @classmethod
    def parse(cls, text, names: Sequence[str]) -> "Mask":
        """The modules named in `text` on, the others off: "A1,M4" / "L2 L10" (names, any case) or "0 3"
        (0-based indices); "" (or None) names none. A list of names or indices is read the same way."""
        if text is None:
            text = ""
        elif not isinstance(text, str):
            text = " ".join(str(t) for t in text)
        return cls.of(parse_modules(text, names), names)

    def format(self) -> str:
        """The kept modules' names, comma-separated ("A1,M4"; "" for none): what `parse` reads back."""
        return ",".join(self.kept_names)

    @property
    def kept(self) -> tuple[int, ...]:
        return tuple(i for i, on in enumerate(self.bools) if on)

    @property
    def kept_names(self) -> tuple[str, ...]:
        return tuple(self.names[i] for i in self.kept)

    def describe(self) -> str:
        return describe(self.bools, self.names)

    def __len__(self) -> int:
        return len(self.bools)

    def __iter__(self) -> Iterator[bool]:
        return iter(self.bools)

    def __getitem__(self, i):
        return self.bools[i]

    def __bool__(self) -> bool:
        return any(self.bools)


def as_bools(active, n: int) -> list[bool]:
    """None, one bool per module, or kept module indices -> one bool per module (validated)."""
    if active is None:
        return [True] * n
    if hasattr(active, "tolist"):                      # a tensor or an array
        active = active.tolist()
    active = list(active)
    if active and all(isinstance(a, (bool, np.bool_)) for a in active):
        if len(active) != n:
            raise ValueError(f"layer mask has {len(active)} entries but the model has {n} modules")
        return [bool(a) for a in active]
    if len(active) == n == 0:
        return []
    idx = [int(i) for i in active]
    if any(i < 0 or i >= n for i in idx) or len(set(idx)) != len(idx):
        raise ValueError(f"kept module indices {idx} are not distinct indices in 0..{n - 1}")
    return [i in idx for i in range(n)]


def kept(active, n: int) -> list[int]:
    """Sorted indices of the kept modules."""
    return [i for i, on in enumerate(as_bools(active, n)) if on]


def _check_level(n: int, k: int) -> None:
    if not 0 <= k <= n:
        raise ValueError(f"cannot keep {k} of {n} modules")


def every_other(n: int, k: Optional[int] = None) -> list[int]:
    """k modules spread evenly over the depth, always keeping the last one. The default k = n // 2 keeps
    every second module: the 2nd, 4th, ... (0-based indices 1, 3, 5, ...)."""
    k = n // 2 if k is None else k
    _check_level(n, k)
    return sorted({(j + 1) * n // k - 1 for j in range(k)}) if k else []


def first_k(n: int, k: int) -> list[int]:
    _check_level(n, k)
    return list(range(k))


def only_k(n: int, k: int) -> list[int]:
    """Only module k (1-based), every other module dropped."""
    if not 1 <= k <= n:
        raise ValueError(f"there is no module {k} in a {n}-module model")
    return [k - 1]


def random_masks(n: int, k: int, num_masks: int = 4, seed: int = 0, protected=()) -> list[list[int]]:
    """`num_masks` distinct masks keeping k modules, drawn with a generator seeded by (seed, k); all such
    masks in lexicographic order when there are no more than `num_masks` of them. `protected` modules (a
    Mask or indices: a student trained never to drop them) are in every mask; the other k - len(protected)
    are drawn."""
    _check_level(n, k)
    if num_masks < 1:
        raise ValueError("num_masks must be at least 1")
    protected = kept(protected, n)
    free = [i for i in range(n) if i not in protected]
    need = k - len(protected)
    if need < 0:
        raise ValueError(f"cannot keep {k} modules: {len(protected)} are protected")
    if math.comb(len(free), need) <= num_masks:
        return [sorted(protected + list(c)) for c in itertools.combinations(free, need)]
    rng = np.random.default_rng([seed, k])
    masks: list[list[int]] = []
    while len(masks) < num_masks:
        mask = sorted(protected + [free[i] for i in rng.choice(len(free), need, replace=False).tolist()])
        if mask not in masks:
            masks.append(mask)
    return masks


def custom_masks(custom) -> list:
    """custom: a list of masks, or one mask (a flat list of kept indices or bools)."""
    custom = list(custom or [])
    if custom and all(isinstance(x, (bool, int, np.integer, np.bool_)) for x in custom):
        return [custom]
    return custom


def level_masks(n: int, k: int, policy: str = "random", num_masks: int = 4, seed: int = 0,
                custom: Optional[Sequence] = None, protected=()) -> list[list[int]]:
    """The masks that evaluate the dropping level "k kept" under a policy (kept-index lists); random masks
    keep the `protected` modules."""
    _check_level(n, k)
    if policy == "random":
        return random_masks(n, k, num_masks, seed, protected)
    if policy == "every_other":
        return [every_other(n, k)]
    if policy == "first_k":
        return [first_k(n, k)]
    if policy == "custom":
        masks = []
        for mask in custom_masks(custom):
            idx = kept(mask, n)
            if len(idx) == k and idx not in masks:
                masks.append(idx)
        if not masks:
            raise ValueError(f"no custom mask keeps exactly {k} of {n} modules")
        return masks
    raise ValueError(f"unknown mask policy {policy!r} (expected one of {', '.join(LEVEL_POLICIES)})")


def levels(n: int, keep: Optional[Sequence[int]] = None, policy: str = "random", custom=None,
           protected=()) -> list[int]:
    """The kept counts to evaluate: `keep`, or the custom masks' sizes, or every level n..1 (random masks of
    a student with protected modules: n..max(1, number protected))."""
    if keep is not None:
        out = [int(k) for k in keep]
    elif policy == "custom":
        out = sorted({len(kept(m, n)) for m in custom_masks(custom)}, reverse=True)
    else:
        lowest = max(1, len(kept(protected, n))) if policy == "random" else 1
        out = list(range(n, lowest - 1, -1))
    bad = [k for k in out if not 0 <= k <= n]
    if bad:
        raise ValueError(f"kept levels {bad} are outside 0..{n}")
    return out


def every_other_block(blocks: Sequence[int], m: Optional[int] = None) -> list[int]:
    """Whole blocks, every second one (`every_other` over the blocks: the 2nd, 4th, ...; m of them, default
    half): the kept module indices. `blocks` is the block of each module (ModelConfig.module_blocks), so the
    attention and MLP sub-blocks of a block are kept together; one module per block is `every_other`."""
    ids = list(dict.fromkeys(blocks))
    chosen = {ids[j] for j in every_other(len(ids), m)}
    return [i for i, b in enumerate(blocks) if b in chosen]



def half_mask(blocks: Sequence[int], protected=()) -> list[int]:
    """Half the depth in whole blocks, every second one, keeping the protected modules (a Mask or indices): the
    students' validation mask. Of the two phases (the 2nd, 4th, ... blocks, as `every_other_block`, or the 1st,
    3rd, ...) the first that holds every protected module; when neither does, the first plus those modules.
    Whisper's 8 sub-blocks give A2 M2 A4 M4, and A1 M1 A3 M3 with A1 protected."""
    ids = list(dict.fromkeys(blocks))
    keep = set(kept(protected, len(blocks)))
    phases = [set(every_other_block(blocks)), {i for i, b in enumerate(blocks) if ids.index(b) % 2 == 0}]
    chosen = next((p for p in phases if keep <= p), phases[0] | keep)
    return sorted(chosen)

def _paired(blocks: Optional[Sequence[int]]) -> bool:
    return blocks is not None and len(set(blocks)) < len(blocks)


def candidate_masks(n: int, k: int, blocks: Optional[Sequence[int]] = None, num_random: int = 8,
                    seed: int = 0, first: Sequence[Sequence[int]] = ()) -> list[list[int]]:
    """The masks the best-k policy compares (kept-index lists, no duplicates): `first` (e.g. a greedy drop
    path's k-module mask), every_other, first_k, whole blocks when k is a whole number of them (every choice
    of blocks when there are at most 8, else every second block) and `num_random` random ones."""
    out = [list(m) for m in first] + level_masks(n, k, "every_other") + level_masks(n, k, "first_k")
    if _paired(blocks):
        ids = list(dict.fromkeys(blocks))
        size = len(blocks) // len(ids)
        if k % size == 0 and all(list(blocks).count(b) == size for b in ids):
            m = k // size
            picks = (itertools.combinations(ids, m) if math.comb(len(ids), m) <= 8 else
                     [[ids[j] for j in every_other(len(ids), m)]])
            out += [[i for i, b in enumerate(blocks) if b in set(p)] for p in picks]
    if num_random > 0:
        out += random_masks(n, k, num_random, seed)
    return [list(c) for c in dict.fromkeys(tuple(c) for c in out)]


# ------------------------------------------------------------------------------ the policies

@dataclass(frozen=True)
class Policy:
    """A named way to choose a mask."""
    key: str
    label: str
    help: str
    uses_k: bool = False     # reads the number k
    explicit: bool = False   # a probe the user asks for by name (one module alone): it may well be unusable
    preset: bool = False     # one of the app's preset buttons (`preset`)


POLICIES: dict[str, Policy] = {p.key: p for p in (
    Policy("all", "All", "Every module on (full depth)", preset=True),
    Policy("every_other", "Every 2nd", "Every second module on; with attention and MLP sub-blocks, every "
           "second block (both its sub-blocks): half the compute", preset=True),
    Policy("first_k", "First k", "Modules 1 … k on", uses_k=True, preset=True),
    Policy("only_k", "Only k", "None but one: module k alone", uses_k=True, explicit=True, preset=True),
    Policy("best_k", "Best k", "Best k for this budget: the k-module mask with the lowest KL to the teacher on this "
           "clip, among every second, the first k, whole blocks and random masks "
           "(dld_core.layers.best_mask_for_budget)", uses_k=True, preset=True),
    Policy("random", "Random", "k modules drawn at random (seeded; a student's protected modules always kept)",
           uses_k=True),
    Policy("custom", "Custom", "Masks given one by one"),
    Policy("training", "Training gates", "LD / DLD training: one Bernoulli(keep probability) gate per module and "
           "step, at least one kept, protected modules always kept (training_gates)"),
)}
PRESETS: dict[str, Policy] = {key: p for key, p in POLICIES.items() if p.preset}     # the app's buttons, in order
LEVEL_POLICIES = ("random", "every_other", "first_k", "custom")      # policies that evaluate a kept count
POLICY_LABELS = {key: p.label for key, p in POLICIES.items()}


def best_k(scored: Sequence[dict], criterion: str = "kl") -> dict:
    """The best-k policy's pick among scored candidates ({"active", "wer", "kl"}; e.g. `candidate_masks` run
    on some clips): the lowest KL, ties broken by WER (criterion "kl"), or the lowest WER, ties broken by KL
    ("wer"); a missing score counts as infinite; among equals the first."""
    def key(s):
        kl, wer = (s["kl"] if s["kl"] is not None else math.inf), (s["wer"] if s["wer"] is not None else math.inf)
        return (wer, kl) if criterion == "wer" else (kl, wer)

    return min(scored, key=key)


def preset_label(policy: str, blocks: Optional[Sequence[int]] = None) -> str:
    """The button text of a preset for a model: "Every 2nd block" where modules pair up into blocks."""
    label = PRESETS[policy].label
    return f"{label} block" if policy == "every_other" and _paired(blocks) else label


def preset(policy: str, n: int, k: int, blocks: Optional[Sequence[int]] = None,
           choose: Optional[Callable[[int], Optional[Sequence]]] = None, protected=()) -> list[bool]:
    """A mask chosen by name (the app's preset buttons, `PRESETS`): all, every_other, first_k, only_k, best_k.

    blocks: the block of each module (ModelConfig.module_blocks). Where modules pair up (Whisper's attention
    and MLP sub-blocks), "every_other" keeps every second *block*: every second sub-block would keep the MLPs
    alone, which no model can read. protected: the modules the model was trained never to drop (Checkpoint.
    protected): "every_other" takes the phase that keeps them (`half_mask`: A1 M1 A3 M3 for a Whisper student
    with A1 protected, A2 M2 A4 M4 without). best_k: `choose(k)` returns the best k-module mask (e.g.
    dld_core.layers.best_mask_for_budget over `candidate_masks`); without it best_k raises ValueError."""
    k = max(1, min(n, int(k)))
    if blocks is not None and len(blocks) != n:
        raise ValueError(f"blocks has {len(blocks)} entries but the model has {n} modules")
    if policy == "all":
        return [True] * n
    if policy == "every_other":
        return as_bools(half_mask(blocks if _paired(blocks) else range(n), protected), n)
    if policy == "first_k":
        return as_bools(first_k(n, k), n)
    if policy == "only_k":
        return as_bools(only_k(n, k), n)
    if policy == "best_k":
        best = choose(k) if choose is not None else None
        if best is None:
            raise ValueError("“Best k” needs a clip to score its candidates")
        return as_bools(best, n)
    raise ValueError(f"unknown mask preset {policy!r} (expected {', '.join(PRESETS)})")


# ------------------------------------------------------------------------------ training gates

def training_gates(keep_probs: Sequence[float], seed: int, step: int, protected=()) -> list[bool]:
    """The training policy of LD and DLD: one Bernoulli(keep_probs[i]) gate per module, at least one kept;
    `protected` modules (a Mask or indices) always kept. Seeded by (seed, step), so every DDP rank and every
    resumed run draws the same mask; equal probabilities give the draws of a single shared keep probability."""
    n = len(keep_probs)
    gen = torch.Generator().manual_seed(seed * 1000003 + step)
    gates = torch.rand(n, generator=gen) < torch.tensor(list(keep_probs), dtype=torch.float32)
    if not gates.any():
        gates[torch.randint(n, (1,), generator=gen)] = True
    gates[kept(protected, n)] = True
    return gates.tolist()


def keep_probabilities(names: Sequence[str], keep_prob: float, per_module: str = "") -> list[float]:
    """One keep probability per module: `keep_prob`, except the modules named in `per_module`
    ("A2=0.6,M3=0.9"; names or 0-based indices)."""
    probs = [float(keep_prob)] * len(names)
    for item in per_module.replace(",", " ").split():
        module, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"per-module keep probability {item!r} is not NAME=P (e.g. A2=0.6)")
        try:
            p = float(value)
        except ValueError:
            raise ValueError(f"keep probability {value!r} of {module} is not a number") from None
        if not 0.0 < p <= 1.0:
            raise ValueError(f"keep probability {p} of {module} is not in (0, 1]")
        for i in parse_modules(module, names):
            probs[i] = p
    return probs


def keep_probabilities_from_costs(costs: Sequence[Optional[float]], protected=(),
                                  low: float = 0.6, high: float = 0.9) -> dict[int, float]:
    """Per-module keep probabilities from drop-one costs (e.g. ΔWER): the cheapest module to drop gets
    `low`, the costliest `high`, linear in between; protected modules (a Mask or indices: never dropped) are
    left out."""
    never = set(kept(protected, len(costs)))
    free = {i: float(c) for i, c in enumerate(costs) if i not in never and c is not None}
    if not free:
        return {}
    lo, hi = min(free.values()), max(free.values())
    return {i: (low + high) / 2 if hi == lo else low + (high - low) * (c - lo) / (hi - lo) for i, c in free.items()}


def scheduled_keep_probabilities(probs: Sequence[float], start: float, progress: float) -> list[float]:
    """A keep-probability schedule: every probability moves linearly from `start` (progress 0) to its own
    value (progress >= 0.5, the second half of training), e.g. start 1.0 trains the full network first.
    start 0 means no schedule."""
    if not start:
        return list(probs)
    t = min(1.0, max(0.0, progress / 0.5))
    return [start + (p - start) * t for p in probs]


# ------------------------------------------------------------------------------ names and parsing

def parse_modules(text: str, names: Sequence[str]) -> list[int]:
    """"1,5,9" (0-based indices) or "A1,M4" / "L2 L10" (module names, any case) -> sorted indices."""
    lookup = {name.lower(): i for i, name in enumerate(names)}
    out = []
    for token in text.replace(",", " ").split():
        if token.lower() in lookup:
            out.append(lookup[token.lower()])
        elif token.lstrip("-").isdigit():
            i = int(token)
            if not 0 <= i < len(names):
                raise ValueError(f"module index {i} is out of range for a {len(names)}-module model "
                                 f"(0..{len(names) - 1}, or names {names[0]}..{names[-1]})")
            out.append(i)
        else:
            raise ValueError(f"unknown module {token!r} (expected 0-based indices or names {' '.join(names)})")
    return sorted(set(out))


def from_keep_drop(names: Sequence[str], keep: Optional[int] = None, drop: Optional[str] = None) -> list[bool]:
    """The CLI's --keep K (K modules, every_other spread) or --drop LIST (indices or names); neither: all."""
    n = len(names)
    if drop:
        return [not d for d in Mask.parse(drop, names)]
    if keep is not None:
        return as_bools(every_other(n, keep), n)
    return [True] * n


def describe(active, names: Sequence[str]) -> str:
    """Display text: "all 12 modules", or the kept modules by name ("A1 M1 A2 (3 of 8)")."""
    n = len(names)
    idx = kept(active, n)
    if len(idx) == n:
        return f"all {n} modules"
    if not idx:
        return f"no modules (0 of {n})"
    return f"{' '.join(names[i] for i in idx)} ({len(idx)} of {n})"
