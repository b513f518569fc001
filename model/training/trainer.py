"""Two-stage ASEN++ training on CPUs from cached backbone maps (the recipe: docs/results.md).

Stage 1 trains the global branch (or a baseline); stage 2 trains global and local branches jointly,
the local branch seeing RoI crops chosen by the current global attention (refreshed every epoch).
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm import tqdm

from asen_search.model.checkpoint import load_checkpoint, read_payload, save_checkpoint, update_extra
from asen_search.model.config import Preprocess
from asen_search.model.data.dataset import AttributeDataset, load_dataset
from asen_search.model.device import mixed_precision, resolve_device, to_device
from asen_search.model.nn.asen import ASENModel
from asen_search.model.nn.attention import channel_statistics
from asen_search.model.nn.losses import (
    LOCAL_WEIGHT,
    in_batch_negatives,
    joint_loss,
    proxy_loss,
    triplet_loss,
    triplet_violations,
    weighted_triplet_loss,
)
from asen_search.model.runtime import Stems, resolve_runtime
from asen_search.model.training.curves import plot_training_curve
from asen_search.model.training.evaluate import ValidationSet
from asen_search.model.training.instance import InstanceSampler, mirror_paths, reframed_paths, view_paths
from asen_search.model.training.map_cache import (
    ImageSet,
    Maps,
    MemoryBudget,
    build_image_set,
    default_cache_dir,
    local_maps,
    local_row_bytes,
)
from asen_search.model.training.retrieval_map import MapReport
from asen_search.model.training.sampling import TripletSampler
from asen_search.model.training.train_config import TrainConfig

Triple = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (anchor, positive, negative)
SCRATCH = ".scratch"  # per-run row files (crop maps that do not fit in memory), removed at the end
# --time-budget: the shares of the time left after caching (docs/results.md, "Under a time budget")
STAGE1_SHARE = 0.4  # stage 1; stage 2 has the rest
# of the whole budget, kept for the final prototype and copy-calibration pass: 75-88 s of a 10-minute
# budget on 2 cores since the calibration joined it (docs/results.md, "Under a time budget")
PROTOTYPE_SHARE = 0.15
# that pass encodes through the Encoder: with `--mirror-average images` every image twice, which took 1.79x
# as long in the default recipe (107.6 s against 60.2 s; docs/results.md, "Mirror-averaged embeddings")
MIRRORED_PASS_COST = 1.8
PROXY_LR = 1e-2  # --proxy-weight's proxies: ten times stage 1's rate, as proxy-based losses use
BUDGET_STAGE2_TRIPLETS = (
    0.5  # stage-2 epochs of this share of --triplets: more crop refreshes and validations
)


@dataclass
class TrainState:
    """Where a run stands: what `last.pt` keeps (as JSON, `train_state`) so `--resume` goes on."""

    stage: int = 1
    epoch: int = 0  # epochs done in `stage`
    best_map: float = -1.0  # the best validation MAP so far (best.pt)
    best_at: dict[str, Any] | None = None  # its stage, epoch and fusion weights
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch (log.jsonl)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(text).items() if k in known})


@dataclass
class TrainingData:
    """What a run prepares once before its first epoch: the backbone stems, the cached maps of the
    train and validation splits, and where the per-epoch crop maps of stage 2 go."""

    stems: Stems
    n_train: int  # training images (their augmented views follow them)
    train: ImageSet
    valid: ValidationSet
    pair_index: np.ndarray  # row of each (image, attribute) in the epoch's crop maps, -1: none
    local_scratch: Path | None  # a row file for the crop maps when they do not fit in memory
    memory_plan: dict[str, Any]
    mirror_offset: int = 0  # `--mirror`: the row of image i's mirror is mirror_offset + i (0: none)
    reframe_offset: int = 0  # `--reframe`: the row of image i's reframed photograph (0: none)
    local_cache: Maps | None = None  # the epoch's crop maps (stage 2), replaced every epoch


class Trainer:
    """Runs both stages, validating, checkpointing and logging after every epoch. Everything it holds
    is set up here: the configuration, the model, the run's `TrainState` (restored with `--resume`)
    and its `TrainingData`."""

    def __init__(self, cfg: TrainConfig, progress: bool = True) -> None:
        self.cfg = cfg
        self.progress = progress
        self.ds: AttributeDataset = load_dataset(cfg.data)
        self.labels = self.ds.train_labels()
        TripletSampler(self.labels, self.ds.n_values, cfg.seed)  # fail early on unusable labels
        for flag, share in (
            ("--attribute-focus", cfg.attribute_focus),
            ("--pair-focus", cfg.pair_focus),
            ("--reframe", cfg.reframe),
        ):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{flag} must be in [0, 1], got {share}")
        for flag, value in (("--proxy-weight", cfg.proxy_weight), ("--proxy-soft", cfg.proxy_soft)):
            if not value >= 0.0:
                raise ValueError(f"{flag} must be at least 0, got {value}")
        if not cfg.proxy_scale > 0.0:
            raise ValueError(f"--proxy-scale must be positive, got {cfg.proxy_scale}")
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        self.pre = cfg.preprocess([a.name for a in self.ds.attributes])
        self.model = ASENModel(
            cfg.model_config(len(self.ds.attributes)),
            pretrained=True,
            global_weights=cfg.global_weights,
            local_weights=cfg.local_weights,
        ).to(self.device)
        self.started = time.monotonic()
        # the value of each (train row, attribute), -1: none (`--mirror` adds its rows); and the epoch's
        # summed global triplet loss and count per (attribute, positive value, negative value), for --pair-focus
        self.value_of = np.full((int(self.labels.fids.max(initial=-1)) + 1, len(self.ds.n_values)), -1)
        self.value_of[self.labels.fids, self.labels.attrs] = self.labels.values
        cells = (len(self.ds.n_values), max(self.ds.n_values), max(self.ds.n_values))
        self.pair_loss, self.pair_count = np.zeros(cells), np.zeros(cells)
        self.ordered = ordered_attributes([a.name for a in self.ds.attributes], cfg.ordered)
        # --proxy-weight: learned proxies of each attribute's values [A, V, D], one set for both branches
        # (the alignment term keeps them in one space); trained, never saved in best.pt
        self.proxies: torch.nn.Parameter | None = None
        if cfg.proxy_weight > 0:
            shape = (len(self.ds.n_values), max(self.ds.n_values), self.model.cfg.global_branch.out_dim)
            self.proxies = torch.nn.Parameter(torch.randn(shape, device=self.device))
            self.proxy_counts = torch.tensor(self.ds.n_values, device=self.device)
            self.proxy_soft = torch.from_numpy(np.where(self.ordered, cfg.proxy_soft, 0.0)).to(self.device)
        self.optimizer: torch.optim.Optimizer | None = None
        self.state = self._restore() if cfg.resume else TrainState()
        self.data = self._prepare()
        self.prepare_seconds = round(time.monotonic() - self.started, 1)

    # ----------------------------------------------------------------- setup
    def _stages(self) -> list[int]:
        return [1, 2] if self.model.cfg.has_local else [1]

    def _epochs(self, stage: int) -> int:
        if self.cfg.time_budget is not None:
            return 10_000  # bounded by the clock
        return self.cfg.stage1_epochs if stage == 1 else self.cfg.stage2_epochs

    def _log(self, record: dict[str, Any]) -> None:
        with open(self.out / "log.jsonl", "a") as fh:
            fh.write(json.dumps(record) + "\n")
        plot_training_curve(self.out / "log.jsonl")  # curve.png beside the log, redrawn every epoch

    def _say(self, text: str) -> None:
        if self.progress:
            tqdm.write(text)

    def _prepare(self) -> TrainingData:
        cfg = self.cfg
        budget = MemoryBudget(None if cfg.max_memory_gb is None else cfg.max_memory_gb * 2**30)
        train_paths = list(self.ds.split("train").paths)
        stems = Stems.of(
            self.model, self.pre.global_size, self.pre.local_size, resolve_runtime(cfg.runtime, self.device)
        )
        n_train = len(train_paths)
        originals, cache = list(train_paths), Path(cfg.cache_dir or default_cache_dir())
        if cfg.instance_weight > 0:  # the views follow the originals: view v of image i is row n (1 + v) + i
            views = view_paths(originals, cfg.instance_views, cache, self.progress)
            train_paths += [p for view in views for p in view]
        labelled = self.value_of

        def follow(paths: list[Path]) -> int:
            """Rows for labelled copies of the originals (image i's at the offset + i, its values)."""
            offset = len(train_paths)
            train_paths.extend(paths)
            unlabelled = np.full((offset - len(self.value_of), self.value_of.shape[1]), -1)
            self.value_of = np.concatenate([self.value_of, unlabelled, labelled])
            return offset

        # then the mirror images, then the reframed ones: each a copy of an original with its values
        mirror_offset = follow(mirror_paths(originals, cache, self.progress)) if cfg.mirror else 0
        reframe_offset = follow(reframed_paths(originals, cache, self.progress)) if cfg.reframe > 0 else 0
        train = build_image_set(
            self.model,
            self.pre,
            train_paths,
            "train",
            cfg.cache_dir,
            budget,
            progress=self.progress,
            amp=cfg.amp,
            stem=stems.global_,
        )
        valid = ValidationSet.from_dataset(
            self.ds, "valid", self.model, self.pre, self.progress, cfg.cache_dir, budget, cfg.amp, stems
        )
        if self.state.epoch == 0 and self.state.stage == 1:
            with torch.no_grad():
                sample = to_device(train.global_maps[: min(512, len(train.global_maps))], self.device).float()
                mean, std = channel_statistics(self.model.global_backbone.tail(sample))
                self.model.global_head.set_standardisation(mean, std)
        # the row of each (image, attribute) pair in the epoch's crop maps (-1: not in this epoch's triplets)
        pair_index = np.full((len(train), len(self.ds.attributes)), -1, dtype=np.int64)
        local_scratch: Path | None = None
        if self.model.cfg.has_local:  # per-epoch crop maps, then the originals they are cut from
            n_pairs = len(np.unique(np.stack([self.labels.fids, self.labels.attrs], 1), axis=0))
            n_pairs = int(n_pairs * (1 + cfg.instance_share if cfg.instance_weight > 0 else 1)) * (
                1 + int(cfg.mirror) + int(cfg.reframe > 0)
            )
            per_epoch = (
                3 * cfg.triplets_per_epoch * (1 + (cfg.instance_share if cfg.instance_weight > 0 else 0))
            )
            if not budget.take(min(n_pairs, per_epoch) * local_row_bytes(self.model, self.pre)):
                local_scratch = self.out / SCRATCH / "local-train.f16"
            valid.plan_local(self.model, self.pre, budget, self.out / SCRATCH / "local-valid.f16")
            train.keep_originals(budget, "train", self.progress)
            valid.images.keep_originals(budget, "valid", self.progress)
        memory_plan = {
            "maps computed": train.computed + valid.images.computed,
            "global maps": "memory"
            if train.global_maps.in_memory and valid.images.global_maps.in_memory
            else "disk",
            **(
                {
                    "local maps": "disk" if local_scratch or valid.scratch else "memory",
                    "originals": "memory"
                    if train.kept is not None and valid.images.kept is not None
                    else "decoded per batch",
                }
                if self.model.cfg.has_local
                else {}
            ),
        }
        return TrainingData(
            stems,
            n_train,
            train,
            valid,
            pair_index,
            local_scratch,
            memory_plan,
            mirror_offset,
            reframe_offset,
        )

    def _make_optimizer(self, stage: int) -> torch.optim.Optimizer:
        groups = self.model.parameter_groups()
        if stage == 1:
            params = [{"params": groups["global"], "lr": self.cfg.lr}]
        else:
            params = [
                {"params": groups["global"], "lr": self.cfg.lr_global},
                {"params": groups["local"], "lr": self.cfg.lr_local},
            ]
        if self.proxies is not None:
            params.append({"params": [self.proxies], "lr": PROXY_LR})
        return torch.optim.Adam(params)

    def _lr_factor(self, stage: int, epoch: int) -> float:
        step = 3 if stage == 1 else 1  # StepLR step sizes of the reference recipe
        return self.cfg.lr_gamma ** (epoch // step)

    # ----------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        """Train both stages; returns a summary (best validation MAP, epochs, seconds)."""
        t0, data = self.started, self.data
        phases = {"prepare": self.prepare_seconds}
        budget = self.cfg.time_budget
        deadline = None if budget is None else t0 + 60.0 * budget * (1.0 - self._final_pass_share())
        self._say(
            f"prepared {len(data.train)} train and {len(data.valid.images)} valid images "
            f"in {self.prepare_seconds:.0f} s ("
            + ", ".join(f"{k}: {v}" for k, v in data.memory_plan.items())
            + ")"
        )
        for stage in self._stages():
            if stage < self.state.stage:
                continue
            started = time.monotonic()
            self._run_stage(stage, self._stage_deadline(stage, deadline))
            phases[f"stage{stage}"] = round(time.monotonic() - started, 1)
            self.state.stage, self.state.epoch = stage + 1, 0
            self.optimizer = None
        shutil.rmtree(self.out / SCRATCH, ignore_errors=True)
        if not (self.out / "best.pt").is_file():
            raise RuntimeError("training ended before any epoch finished: raise --time-budget")
        prototypes = self._add_prototypes() if self.cfg.prototypes else None
        if prototypes is not None:
            phases["prototypes"] = prototypes["seconds"]
        summary = {
            "best_valid_map": self.state.best_map,
            "best_at": self.state.best_at,
            "seconds": round(time.monotonic() - t0, 1),
            "phases": phases,
            "epochs": len(self.state.history),
            "best": str(self.out / "best.pt"),
            "prototypes": prototypes,
        }
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2))
        return summary

    def _add_prototypes(self) -> dict[str, Any]:
        """Value prototypes from the training split, tag temperatures and score-threshold curves from
        the validation split, computed with the best model through the Encoder and stored in best.pt
        (model/prototypes.py, model/thresholds.py)."""
        from asen_search.model.encoder import Encoder
        from asen_search.model.prototypes import compute_prototypes

        started = time.monotonic()
        encoder = Encoder.from_checkpoint(self.out / "best.pt", self.device, self.cfg.runtime)
        prototypes, report, thresholds = compute_prototypes(
            encoder, self.ds, self.cfg.prototype_samples, seed=self.cfg.seed, progress=self.progress
        )
        update_extra(
            self.out / "best.pt",
            prototypes=prototypes.to_extra(),
            thresholds=thresholds.to_json() if thresholds else None,
        )
        self._say(
            f"value prototypes and tag calibration stored in best.pt ({time.monotonic() - started:.0f} s)"
        )
        copies = self._calibrate_copies()
        return {"seconds": round(time.monotonic() - started, 1), **report, "copy_calibration": copies}

    def _calibrate_copies(self) -> dict[str, Any] | None:
        """The copy calibration beside best.pt (model/copy_calibration.py), made with the final
        checkpoint (its fingerprint); skipped, with the reason logged, where the validation split
        cannot calibrate (too few images sharing their values)."""
        from asen_search.model.copy_calibration import (
            CALIBRATION_IMAGES,
            calibrate_copies,
            save_copy_calibration,
        )
        from asen_search.model.encoder import Encoder

        started = time.monotonic()
        encoder = Encoder.from_checkpoint(self.out / "best.pt", self.device, self.cfg.runtime, extras=False)
        try:
            calibration = calibrate_copies(
                encoder,
                self.ds,
                "valid",
                max_images=CALIBRATION_IMAGES,
                seed=self.cfg.seed,
                progress=self.progress,
            )
        except ValueError as exc:
            self._say(
                f"copy calibration skipped: {exc} (asen calibrate-copies can run it later on other data)"
            )
            return None
        path = save_copy_calibration(self.out / "best.pt", calibration)
        self._say(f"copy calibration written to {path} ({time.monotonic() - started:.0f} s)")
        return {
            "seconds": round(time.monotonic() - started, 1),
            "lookalike_pairs": calibration.lookalike_pairs,
        }

    def _stage_deadline(self, stage: int, deadline: float | None) -> float | None:
        if deadline is None:
            return None
        if stage == 1 and self.model.cfg.has_local:
            return time.monotonic() + STAGE1_SHARE * max(0.0, deadline - time.monotonic())
        return deadline

    def _final_pass_share(self) -> float:
        """The share of a time budget kept for the final prototype and calibration pass."""
        if not self.cfg.prototypes:
            return 0.0
        return PROTOTYPE_SHARE * (MIRRORED_PASS_COST if self.cfg.mirror_average == "images" else 1.0)

    def _run_stage(self, stage: int, stage_deadline: float | None) -> None:
        if self.optimizer is None:
            self.optimizer = self._make_optimizer(stage)
        reserve, last_epoch = 0.0, 0.0
        while self.state.epoch < self._epochs(stage):
            # with a time budget, start another epoch only if one more (crop refresh included) fits
            if (
                stage_deadline is not None
                and time.monotonic() + max(2 * reserve, last_epoch) > stage_deadline
            ):
                break
            started = time.monotonic()
            reserve = self._epoch(stage, stage_deadline, reserve)
            last_epoch = time.monotonic() - started

    def _standardise_local(self) -> None:
        """Local-branch statistics from 512 of the first stage-2 crops (already in the cache)."""
        cache = self.data.local_cache
        assert cache is not None  # cut at the start of every stage-2 epoch
        n = min(512, len(cache))
        pick = torch.randperm(len(cache), generator=torch.Generator().manual_seed(self.cfg.seed))[:n]
        assert (
            self.model.local_backbone is not None and self.model.local_head is not None
        )  # stage 2: has_local
        with torch.no_grad():
            mean, std = channel_statistics(
                self.model.local_backbone.tail(to_device(cache[pick], self.device).float())
            )
        self.model.local_head.set_standardisation(mean, std)

    def _epoch(self, stage: int, stage_deadline: float | None, reserve: float) -> float:
        """One epoch + validation + checkpoints; returns the seconds validation and saving took."""
        cfg, data, epoch, t0 = self.cfg, self.data, self.state.epoch, time.monotonic()
        assert self.optimizer is not None  # made by _run_stage
        for group, base in zip(self.optimizer.param_groups, self._base_lrs(stage)):
            group["lr"] = base * self._lr_factor(stage, epoch)
        n_triplets = cfg.triplets_per_epoch
        if stage == 2 and cfg.time_budget is not None:
            n_triplets = max(cfg.batch_size, int(BUDGET_STAGE2_TRIPLETS * n_triplets))
        weights = self._attribute_weights()  # the ones this epoch's triplets were drawn with
        self.pair_loss[:], self.pair_count[:] = 0.0, 0.0
        triplets = torch.from_numpy(self._triplets(stage, epoch, n_triplets, weights))
        crop_record: dict[str, Any] = {}
        if stage == 2:
            # crops of the pairs this epoch's triplets use, by the current global attention: at most
            # 3 x triplets per epoch, whatever the size of the dataset
            fids_attrs = triplets.numpy()[:, :4]
            used = np.unique(
                np.concatenate([np.stack([fids_attrs[:, k], fids_attrs[:, 0]], 1) for k in (1, 2, 3)]), axis=0
            )
            data.pair_index.fill(-1)
            data.pair_index[used[:, 0], used[:, 1]] = np.arange(len(used))
            crop_start = time.monotonic()
            data.local_cache = local_maps(
                self.model,
                self.pre,
                data.train,
                torch.from_numpy(used[:, 0]),
                torch.from_numpy(used[:, 1]),
                "train",
                progress=self.progress,
                scratch=data.local_scratch,
                amp=cfg.amp,
                stem=data.stems.local,
            )
            crop_record = {"crops": len(used), "crop_seconds": round(time.monotonic() - crop_start, 1)}
            if epoch == 0:
                self._standardise_local()
        self.model.train()
        losses: list[float] = []
        bar = tqdm(
            range(0, len(triplets), cfg.batch_size),
            desc=f"stage {stage} epoch {epoch + 1}",
            unit="step",
            leave=False,
            disable=not self.progress,
            dynamic_ncols=True,
        )
        for start in bar:
            if stage_deadline is not None and time.monotonic() + reserve > stage_deadline:
                break
            loss = self._loss(stage, triplets[start : start + cfg.batch_size])
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
        bar.close()
        t_val = time.monotonic()
        report, pre = self._validate(stage)
        record = {
            "stage": stage,
            "epoch": epoch + 1,
            "steps": len(losses),
            "loss": float(np.mean(losses)) if losses else None,
            "valid_map": report.overall,
            "valid_per_attribute": report.per_attribute,
            **({"attribute_weights": [round(w, 4) for w in weights]} if weights else {}),
            **(
                {"pair_loss": self._pair_means(), "pair_triplets": self.pair_count.astype(int).tolist()}
                if cfg.pair_focus > 0
                else {}
            ),
            "seconds": round(time.monotonic() - t0, 1),
            **({"betas": dict(zip((a.name for a in self.ds.attributes), pre.betas))} if pre.betas else {}),
            **crop_record,
        }
        self.state.history.append(record)
        self._log(record)
        self.state.epoch = epoch + 1
        # best.pt: the best validated model of either stage, with the fusion weights it was validated at
        improved = report.overall > self.state.best_map
        if improved:
            self.state.best_map = report.overall
            self.state.best_at = {"stage": stage, "epoch": epoch + 1, "betas": record.get("betas")}
            save_checkpoint(
                self.out / "best.pt",
                self.model,
                pre,
                self.ds.attributes,
                {
                    "valid_map": report.to_json(),
                    "stage": stage,
                    "epoch": epoch + 1,
                    "train_config": _jsonable(asdict(cfg)),
                },
            )
        self._save_last(stage)
        self._say(
            f"stage {stage} epoch {epoch + 1}: loss {record['loss'] or float('nan'):.4f}  "
            f"valid MAP {100 * report.overall:.2f}{'  (best)' if improved else ''}  "
            f"[{record['seconds']:.0f} s]"
        )
        return time.monotonic() - t_val

    def _validate(self, stage: int) -> tuple[MapReport, Preprocess]:
        """Validation MAP after an epoch and the preprocessing to save with it. ASEN++ in stage 1 is
        its global branch alone (beta 1 for every attribute); in stage 2 each attribute's fusion
        weight is chosen on the validation split (beta 1 among the choices), so a stage-2 model is
        never validated below its own global branch."""
        cfg = self.cfg
        if stage == 1 or not self.model.cfg.has_local:
            report = self.data.valid.evaluate(
                self.model, self.pre, False, progress=self.progress, amp=cfg.amp
            )
            return report, replace(
                self.pre, betas=(1.0,) * len(self.ds.attributes)
            ) if self.model.cfg.has_local else self.pre
        if cfg.beta is not None:  # a fixed fusion weight
            return self.data.valid.evaluate(
                self.model, self.pre, True, progress=self.progress, amp=cfg.amp
            ), self.pre
        g, loc = self.data.valid.branch_vectors(
            self.model, self.pre, True, progress=self.progress, amp=cfg.amp
        )
        assert loc is not None
        betas, report = self.data.valid.choose_betas(self.model, g, loc)
        return report, replace(self.pre, betas=betas)

    def _base_lrs(self, stage: int) -> list[float]:
        lrs = [self.cfg.lr] if stage == 1 else [self.cfg.lr_global, self.cfg.lr_local]
        return lrs + ([PROXY_LR] if self.proxies is not None else [])

    def _triplets(self, stage: int, epoch: int, n: int, attribute_weights: list[float] | None) -> np.ndarray:
        """An epoch's triplets `[n (+ instance rows), 5]`: (attr, anchor, positive, negative, kind), kind
        0 for the class triplets, 1 for the instance-aware ones (shuffled among them)."""
        cfg = self.cfg
        rows = TripletSampler(self.labels, self.ds.n_values, [cfg.seed, stage, epoch]).sample(
            n, attribute_weights, self._pair_weights()
        )
        if self.data.mirror_offset:  # each image of a class triplet: its mirror with probability 0.5
            flip = np.random.default_rng([cfg.seed, stage, epoch, 3]).random((len(rows), 3)) < 0.5
            rows[:, 1:4] += flip * self.data.mirror_offset
        # each image of a class triplet: its reframed photograph with --reframe's chance
        if self.data.reframe_offset:
            originals = rows[:, 1:4] % self.data.n_train
            swap = np.random.default_rng([cfg.seed, stage, epoch, 4]).random((len(rows), 3)) < cfg.reframe
            rows[:, 1:4] = np.where(swap, originals + self.data.reframe_offset, rows[:, 1:4])
        rows = np.concatenate([rows, np.zeros((len(rows), 1), np.int64)], axis=1)
        if cfg.instance_weight <= 0:
            return rows
        instance = InstanceSampler(
            self.labels, self.data.n_train, cfg.instance_views, [cfg.seed, stage, epoch, 1]
        ).sample(int(round(cfg.instance_share * n)))
        rows = np.concatenate(
            [rows, np.concatenate([instance, np.ones((len(instance), 1), np.int64)], axis=1)]
        )
        return rows[np.random.default_rng([cfg.seed, stage, epoch, 2]).permutation(len(rows))]

    def _attribute_weights(self) -> list[float] | None:
        """How often each attribute is drawn this epoch (`--attribute-focus`): a share `focus` of the
        triplets goes to the attributes in proportion to their validation error (1 - MAP) after the
        last epoch, the rest uniformly; None (uniform) before the first validation or with focus 0."""
        focus = self.cfg.attribute_focus
        if focus <= 0 or not self.state.history:
            return None
        valid = self.state.history[-1]["valid_per_attribute"]
        errors = np.array([max(1.0 - valid.get(a.name, 0.0), 1e-3) for a in self.ds.attributes])
        return list((1.0 - focus) / len(errors) + focus * errors / errors.sum())

    def _pair_means(self) -> list[list[list[float | None]]]:
        """The epoch's mean global triplet loss per (attribute, positive value, negative value), None
        where no triplet had that pair (JSON for the log and for resuming)."""
        means = self.pair_loss / np.maximum(self.pair_count, 1)
        return [
            [[round(float(m), 5) if c else None for m, c in zip(mr, cr)] for mr, cr in zip(ma, ca)]
            for ma, ca in zip(means, self.pair_count)
        ]

    def _pair_weights(self) -> list[np.ndarray | None] | None:
        """The value-pair weights of this epoch's triplets (`--pair-focus`; None before the first epoch)."""
        if self.cfg.pair_focus <= 0 or not self.state.history or "pair_loss" not in self.state.history[-1]:
            return None
        return focus_pair_weights(self.state.history[-1]["pair_loss"], self.ds.n_values, self.cfg.pair_focus)

    def _record_pairs(self, batch: torch.Tensor, g: Triple) -> None:
        """Add a batch's per-triplet global loss to its (attribute, positive value, negative value)."""
        with torch.no_grad():
            loss = triplet_violations(*g, margin=self.cfg.margin).cpu().numpy()
        rows = batch.numpy()
        keep = rows[:, 4] == 0  # class triplets only
        attr, vp, vn = (
            rows[keep, 0],
            self.value_of[rows[keep, 2], rows[keep, 0]],
            self.value_of[rows[keep, 3], rows[keep, 0]],
        )
        np.add.at(self.pair_loss, (attr, vp, vn), loss[keep])
        np.add.at(self.pair_count, (attr, vp, vn), 1.0)

    def _loss(self, stage: int, batch: torch.Tensor) -> torch.Tensor:
        """Loss of a batch of triplets `[B, 5]` (attr, anchor, positive, negative, kind): the class
        triplets' loss plus `instance_weight` times the instance-aware ones' (model/training/instance.py)."""
        cfg = self.cfg
        kind = batch[:, 4]
        margins: torch.Tensor | None = None
        weights: torch.Tensor | None = None
        if cfg.instance_weight > 0 and bool((kind == 1).any()):
            margins = torch.where(kind == 1, cfg.instance_margin, cfg.margin).float().to(self.device)
            weights = torch.where(kind == 1, cfg.instance_weight, 1.0).float().to(self.device)
        fids = batch[:, 1:4].T.reshape(-1)  # anchors, positives, negatives
        attrs = batch[:, 0].repeat(3)[:, None]  # [3B, 1]
        device = self.device
        with mixed_precision(device, self.cfg.amp):
            # the 3B rows: anchors, then positives, then the sampled negatives
            g_rows = self.model.global_embed(
                to_device(self.data.train.global_maps[fids], device).float(), attrs.to(device)
            )[0][:, 0].float()
            # each triplet's negative(s): with --negatives, the sampled one and the mined one, two
            # triplets of the same anchor and positive (the sampled half keeps every attribute learning
            # from the first step: mined negatives alone collapsed an attribute, docs/results.md); mining
            # starts after --negatives-after stage-1 epochs (from the first step it stalled one)
            negatives = self._negatives(
                batch, g_rows, mine=stage == 2 or self.state.epoch >= cfg.negatives_after
            )
            n = len(batch)
            take = torch.arange(len(negatives), device=g_rows.device) % n
            g = cast(Triple, (g_rows[take], g_rows[n + take], g_rows[negatives]))
            if margins is not None and weights is not None:
                margins, weights = margins[take], weights[take]
            if cfg.ordinal > 0:
                margins = self._ordinal_margins(
                    batch[take.cpu()], fids.numpy()[negatives.cpu().numpy()], margins
                )
                weights = torch.ones(len(negatives), device=device) if weights is None else weights
            if self.cfg.pair_focus > 0:
                self._record_pairs(batch, cast(Triple, g_rows.chunk(3)))  # the sampled triplets
            proxy = self._proxy_term(g_rows, fids, attrs[:, 0])
            if stage == 1:
                if margins is None or weights is None:
                    return triplet_loss(*g, margin=self.cfg.margin) + proxy
                return weighted_triplet_loss(*g, margins, weights) + proxy
            rows = torch.from_numpy(self.data.pair_index[fids.numpy(), attrs[:, 0].numpy()])
            assert self.data.local_cache is not None  # cut at the start of every stage-2 epoch
            loc_rows = self.model.local_embed(
                to_device(self.data.local_cache[rows], device).float(), attrs.to(device)
            )[:, 0].float()
            loc = cast(Triple, (loc_rows[take], loc_rows[n + take], loc_rows[negatives]))
            proxy = proxy + LOCAL_WEIGHT * self._proxy_term(loc_rows, fids, attrs[:, 0])
            if margins is None or weights is None:
                return joint_loss(g, loc, margin=self.cfg.margin) + proxy
            return joint_loss(g, loc, margin=margins, weights=weights) + proxy

    def _proxy_term(self, rows: torch.Tensor, fids: torch.Tensor, attrs: torch.Tensor) -> torch.Tensor:
        """`--proxy-weight` times the proxy classification loss of a batch's embedded rows `[3B, D]`
        (train rows `fids`, each under `attrs`; derived rows without a value are left out); 0 when off."""
        if self.proxies is None:
            return rows.new_zeros(())
        values = torch.from_numpy(self._values(fids.numpy(), attrs.numpy())).to(rows.device)
        return self.cfg.proxy_weight * proxy_loss(
            rows,
            attrs.to(rows.device),
            values,
            self.proxies,
            self.proxy_counts,
            self.cfg.proxy_scale,
            self.proxy_soft,
        )

    def _values(self, fids: np.ndarray, attrs: np.ndarray) -> np.ndarray:
        """The value of train rows under attributes (broadcast), -1 where unknown: unlabelled, or a
        derived row (an instance view) beyond the labelled ones."""
        fids, attrs = np.broadcast_arrays(fids, attrs)
        known = fids < len(self.value_of)
        return np.where(known, self.value_of[np.where(known, fids, 0), attrs], -1)

    def _ordinal_margins(
        self, batch: torch.Tensor, negative_fids: np.ndarray, margins: torch.Tensor | None
    ) -> torch.Tensor:
        """Per-triplet margins `[B]` with `--ordinal`: a class triplet of an ordered attribute whose
        negative is k value steps from its anchor gets `margin * (1 + ordinal * (k - 1))`; the others
        keep theirs (`margins`, else `--margin`)."""
        cfg, rows = self.cfg, batch.numpy()
        base = np.full(len(rows), cfg.margin, np.float32) if margins is None else margins.cpu().numpy()
        attr = rows[:, 0]
        anchor_v, negative_v = self._values(rows[:, 1], attr), self._values(negative_fids, attr)
        steps = np.abs(anchor_v - negative_v)
        scale = np.where(
            self.ordered[attr] & (rows[:, 4] == 0) & (anchor_v >= 0) & (negative_v >= 0),
            1.0 + cfg.ordinal * np.maximum(steps - 1, 0),
            1.0,
        )
        return torch.from_numpy((base * scale).astype(np.float32)).to(self.device)

    def _negatives(self, batch: torch.Tensor, g_rows: torch.Tensor, mine: bool = True) -> torch.Tensor:
        """The negatives' rows among the batch's `[3B]` global embeddings: `[B]`, each triplet's sampled
        one; with `--negatives` (and `mine`: past `--negatives-after`), `[2B]`: the sampled ones, then
        the mined ones (the hardest or semi-hard row of another value under the triplet's attribute; an
        instance-aware triplet keeps its own)."""
        n = len(batch)
        own = (torch.arange(n) + 2 * n).to(g_rows.device)
        if self.cfg.negatives == "none" or not mine:
            return own
        rows = batch.numpy()
        fids = rows[:, 1:4].T.reshape(-1)
        values = self._values(fids[None, :], rows[:, 0][:, None])  # [n, 3n]
        mined = in_batch_negatives(
            g_rows,
            batch[:, 0].repeat(3).to(g_rows.device),
            torch.from_numpy(values).to(g_rows.device),
            n,
            self.cfg.negatives,
        )
        mined = torch.where(torch.from_numpy(rows[:, 4] == 0).to(g_rows.device), mined, own)
        return torch.cat([own, mined])

    # ----------------------------------------------------------------- resume
    def _save_last(self, stage: int) -> None:
        assert self.state.stage == stage and self.optimizer is not None
        save_checkpoint(
            self.out / "last.pt",
            self.model,
            self.pre,
            self.ds.attributes,
            {
                "train_state": self.state.to_json(),
                "optimizer": self.optimizer.state_dict(),
                "proxies": None if self.proxies is None else self.proxies.detach().cpu(),
                "train_config": _jsonable(asdict(self.cfg)),
            },
        )

    def _restore(self) -> TrainState:
        path = self.out / "last.pt"
        if not path.is_file():
            raise FileNotFoundError(f"--resume: no {path} to resume from")
        ckpt = load_checkpoint(path)
        if ckpt.model.cfg != self.model.cfg:
            raise ValueError(f"--resume: {path} was trained with a different model configuration")
        self.model.load_state_dict(ckpt.model.state_dict())
        state = TrainState.from_json(ckpt.extra["train_state"])
        if self.proxies is not None:
            saved = ckpt.extra.get("proxies")  # the checkpoint already read above: no second read
            if saved is None or tuple(saved.shape) != tuple(self.proxies.shape):
                raise ValueError(
                    f"--resume: {path} was trained without --proxy-weight (runs started before it became "
                    "the default) or for other values; resume it with --proxy-weight 0"
                )
            with torch.no_grad():
                self.proxies.copy_(saved)
        stage = state.stage
        if state.epoch < self._epochs(stage) or stage == self._stages()[-1]:
            self.optimizer = self._make_optimizer(stage)
            self.optimizer.load_state_dict(read_payload(path)["extra"]["optimizer"])
        else:
            state.stage, state.epoch = stage + 1, 0
        self._say(f"resumed from {path}: stage {state.stage}, {state.epoch} epochs done")
        return state


def focus_pair_weights(
    pair_loss: list[list[list[float | None]]], n_values: list[int], focus: float
) -> list[np.ndarray | None]:
    """How often each (positive value, negative value) pair of each attribute is drawn: a share
    `focus` in proportion to the pair's mean global triplet loss in the last epoch (`pair_loss`, None
    where the pair was not drawn: the attribute's mean; the pairs the model still confuses, on an
    ordered attribute the neighbours), the rest uniformly over the pairs of two different values."""
    out: list[np.ndarray | None] = []
    for a, k in enumerate(n_values):
        loss = np.array(pair_loss[a], dtype=np.float64)[:k, :k]  # None -> nan
        off = ~np.eye(k, dtype=bool)
        seen = off & np.isfinite(loss)
        if k < 2 or not seen.any():
            out.append(None)
            continue
        loss = np.where(seen, loss, loss[seen].mean())
        uniform = off / off.sum()
        total = loss[off].sum()
        hard = np.where(off, loss, 0.0) / total if total > 0 else uniform
        out.append((1.0 - focus) * uniform + focus * hard)
    return out


def ordered_attributes(names: list[str], patterns: str) -> np.ndarray:
    """Which attributes `--ordered` names (comma-separated names or glob patterns), as a mask."""
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    return np.array([any(fnmatch.fnmatchcase(n, p) for p in wanted) for n in names], dtype=bool)


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in data.items()}


def train(cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    return Trainer(cfg, progress).run()
