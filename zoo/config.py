"""The training recipe: one dataclass, one commented line per field. CLI options map 1:1 onto it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from zoo.errors import ZooError

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("cosine", "onecycle", "none")
AMP_DTYPES = ("float16", "bfloat16")


@dataclass
class TrainConfig:
    model: str  # registry name, e.g. "baseline-cnn" (`zoo list`)
    dataset: str | None = None  # registry name; None = the model's default dataset
    epochs: int = 15  # passes over the training split
    batch_size: int = 128  # images per optimizer step
    lr: float = 1e-3  # peak learning rate
    weight_decay: float = 0.0  # decoupled for adamw, L2 for adam and sgd
    optimizer: str = "adam"  # adam | adamw | sgd (sgd uses Nesterov momentum 0.9)
    schedule: str = "cosine"  # cosine | onecycle | none, stepped every batch
    seed: int = 0  # model init, shuffling and augmentation
    device: str = "auto"  # auto (CUDA when present) | cpu | cuda | cuda:N
    amp: bool = False  # mixed precision (CUDA; CPU only with native bf16)
    amp_dtype: str = "float16"  # float16 (with GradScaler) | bfloat16
    channels_last: bool = True  # NHWC memory format: ~2.5x faster conv training on CPU
    compile: bool = False  # torch.compile the model
    augment: bool = False  # random crop (padding 2) + horizontal flip on training batches
    val_fraction: float = 0.1  # share of train held out for model selection
    split_seed: int = 0  # seeds the validation split only, so all runs share it
    limit_train: int | None = None  # use only the first N training images (quick runs)
    eval_batch_size: int = 1024  # images per forward pass when evaluating
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    data_dir: str | None = None  # data root; None = $ZOO_DATA or the user cache
    out: str = "results"  # runs go to <out>/<dataset>/<model>/<run-id>/
    pretrained: bool = False  # start from timm/smp ImageNet weights in the local hub cache
    weights: str | None = None  # start from this safetensors state dict (any model)

    def __post_init__(self) -> None:
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
