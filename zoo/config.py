"""The training recipe: one dataclass, one commented line per field. CLI options map 1:1 onto it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from zoo.errors import ZooError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "none")
AMP_DTYPES = ("float16", "bfloat16")
# Batch sizes when left unset, by the model's task: 28x28 classification batches are cheap,
# 256x256 segmentation batches are not (unet-small: ~1 s per 8 images on a 2-core CPU).
TASK_DEFAULTS = {
    "classification": {"batch_size": 128, "eval_batch_size": 1024},
    "segmentation": {"batch_size": 8, "eval_batch_size": 16},
}


@dataclass
class TrainConfig:
    model: str  # registry name, e.g. "baseline-cnn" (`zoo list`)
    dataset: str | None = None  # registry name; None = the model's default dataset
    epochs: int = 15  # passes over the training split
    batch_size: int | None = None  # images per optimizer step; None = 128, segmentation 8
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled for adamw, L2 for adam and sgd
    optimizer: str = "adam"  # adam | adamw | sgd (sgd uses Nesterov momentum 0.9)
    schedule: str = "cosine"  # cosine | onecycle | none, stepped every batch
    seed: int = 0  # model init, shuffling and augmentation
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    amp: bool = False  # mixed precision (CUDA; CPU only with native bf16)
    amp_dtype: str = "float16"  # float16 (with GradScaler) | bfloat16
    channels_last: bool = True  # NHWC memory format: 1.3-2.5x faster conv training on CPU
    compile: bool = False  # torch.compile the model
    augment: bool = False  # crop + flip; segmentation: joint flip, scale/crop, brightness/contrast
    augment_scale: float = 0.5  # segmentation --augment: smallest crop, share of area (1 = none)
    augment_color: float = 0.2  # segmentation --augment: brightness/contrast limit (0 = none)
    crop_size: int | None = None  # segmentation: train on random CxC crops (None = whole images)
    val_fraction: float = 0.1  # share of train held out for model selection
    split_seed: int = 0  # seeds the validation split only, so all runs share it
    limit_train: int | None = None  # use only the first N training images (quick runs)
    eval_batch_size: int | None = None  # images per evaluation pass; None = 1024, segm. 16
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    skip_bad: bool = False  # leave unusable image/mask files out (listed in the run record)
    data_dir: str | None = None  # data root; None = $ZOO_DATA or the user cache
    out: str = "results"  # runs go to <out>/<dataset>/<model>/<run-id>/
    pretrained: bool = False  # start from timm/smp ImageNet weights in the local hub cache
    weights: str | None = None  # start from this safetensors state dict (any model)

    def __post_init__(self) -> None:
        from zoo.registry import get_model_entry

        task = get_model_entry(self.model).task
        if self.batch_size is None:
            self.batch_size = TASK_DEFAULTS[task]["batch_size"]
        if self.eval_batch_size is None:
            self.eval_batch_size = TASK_DEFAULTS[task]["eval_batch_size"]
        if self.crop_size is not None and task != "segmentation":
            raise ZooError(
                f"--crop-size is for segmentation models and {self.model} classifies; drop it."
            )
        self.validate()

    def validate(self) -> None:
        """Reject a bad recipe before any work, each with one sentence naming the fix."""
        checks = [
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}."),
            (self.batch_size >= 1, f"--batch-size must be at least 1, got {self.batch_size}."),
            (
                self.eval_batch_size >= 1,
                f"eval_batch_size must be at least 1, got {self.eval_batch_size}.",
            ),
            (self.lr > 0, f"--lr must be greater than 0, got {self.lr}."),
            (self.weight_decay >= 0, f"--weight-decay must be 0 or more, got {self.weight_decay}."),
            (
                self.optimizer in OPTIMIZERS,
                f"Unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}.",
            ),
            (
                self.schedule in SCHEDULES,
                f"Unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}.",
            ),
            (
                self.amp_dtype in AMP_DTYPES,
                f"Unknown --amp-dtype {self.amp_dtype!r}; choose float16 or bfloat16.",
            ),
            (
                0 < self.val_fraction < 1,
                f"val_fraction must be in (0, 1), got {self.val_fraction}.",
            ),
            (
                self.limit_train is None or self.limit_train >= 1,
                f"--limit-train must be at least 1, got {self.limit_train}.",
            ),
            (
                0 < self.augment_scale <= 1,
                f"--augment-scale must be in (0, 1], got {self.augment_scale}.",
            ),
            (
                0 <= self.augment_color < 1,
                f"--augment-color must be in [0, 1), got {self.augment_color}.",
            ),
            (
                self.crop_size is None or self.crop_size >= 1,
                f"--crop-size must be at least 1, got {self.crop_size}.",
            ),
            (
                0 <= self.label_smoothing < 1,
                f"--label-smoothing must be in [0, 1), got {self.label_smoothing}.",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ZooError(message)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
