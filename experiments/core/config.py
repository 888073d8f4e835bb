"""The typed schema of the Hydra config, and its validation.

Hydra composes ``conf/``; ``validate`` merges the result into these
dataclasses so that a misspelled key or a value of the wrong type or outside
its choices fails at start-up, naming the key and listing what is valid; the
ranges and cross-field rules are in ``experiments/core/config_checks.py``.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from experiments.core.config_checks import check_values
from experiments.core.errors import ConfigError


class TaskKind(str, Enum):
    translation = "translation"
    summarization = "summarization"


class Loader(str, Enum):
    toy_reverse = "toy_reverse"
    multi30k = "multi30k"
    jsonl = "jsonl"
    hf = "hf"


class SubwordModel(str, Enum):
    unigram = "unigram"
    bpe = "bpe"


@dataclass
class ToyConfig:
    train_size: int = 20000
    eval_size: int = 500
    vocab: int = 20
    min_len: int = 3
    max_len: int = 12
    seed: int = 1234


@dataclass
class HFConfig:
    path: Optional[str] = None  # hub name, local folder, or a builder (json, parquet, csv)
    name: Optional[str] = None
    # split -> files; empty: the files of ``path``. Not Optional: OmegaConf cannot merge a dict into a None node.
    data_files: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class TokenizerConfig:
    model_type: SubwordModel = SubwordModel.unigram
    vocab_size: int = 8000
    joint: bool = True
    character_coverage: float = 1.0
    max_sentences: int = 400_000  # SentencePiece holds them while it trains: ~16 bytes a character


@dataclass
class TaskConfig:
    name: str = "???"
    kind: TaskKind = TaskKind.translation
    loader: Loader = Loader.toy_reverse
    data_root: Optional[str] = None  # default: $S2S_DATA_DIR, else ~/.cache/s2s-compare/data
    download: bool = True
    verify_checksums: bool = True
    # Our split name -> the upstream split name. "train" and "valid" are required;
    # "test" is reported; any other entry is an extra evaluation set.
    splits: dict[str, str] = field(default_factory=dict)
    src_lang: Optional[str] = None
    tgt_lang: Optional[str] = None
    dataset_dir: Optional[str] = None
    checksums: Optional[str] = None
    src_field: str = "src"
    tgt_field: str = "tgt"
    ref_fields: list[str] = field(default_factory=list)
    toy: ToyConfig = field(default_factory=ToyConfig)
    hf: HFConfig = field(default_factory=HFConfig)
    max_src_len: int = 128
    max_tgt_len: int = 128
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    num_proc: int = 1  # processes for tokenization (datasets.map)


class GRUAttention(str, Enum):
    bahdanau = "bahdanau"
    luong_dot = "luong_dot"
    luong_general = "luong_general"


class GRURecurrence(str, Enum):
    auto = "auto"  # packed on CUDA (cuDNN), batched on a CPU
    packed = "packed"  # nn.GRU over packed sequences
    batched = "batched"  # models/recurrence.py: both directions a step in one matmul


class GRUDecoderLoop(str, Enum):
    auto = "auto"  # hand-written on a CPU, autograd on CUDA
    autograd = "autograd"  # GRUSeq2Seq._step per target position, under autograd
    handwritten = "handwritten"  # models/decoder_loop.py: the backward written by hand


class DropoutMasks(str, Enum):
    auto = "auto"  # a CPU draws four units' masks from one 64-bit number (models/dropout.py); torch's elsewhere
    torch = "torch"  # torch's dropout everywhere (bernoulli_ on a CPU): the bench's torch-dropout row


@dataclass
class GRUConfig:
    name: str = "gru"
    emb_dim: int = 256
    hidden_size: int = 512
    enc_layers: int = 2
    dec_layers: int = 1
    attention: GRUAttention = GRUAttention.bahdanau
    dropout: float = 0.3
    input_feeding: bool = True
    tie_embeddings: bool = True
    share_embeddings: bool = True
    recurrence: GRURecurrence = GRURecurrence.auto
    decoder_loop: GRUDecoderLoop = GRUDecoderLoop.auto
    dropout_masks: DropoutMasks = DropoutMasks.auto
    copy: bool = False  # pointer-generator: mix the vocabulary with a copy of the attended source pieces


class Positions(str, Enum):
    sinusoidal = "sinusoidal"
    learned = "learned"


class EmbedInit(str, Enum):
    normal = "normal"
    xavier = "xavier"


class Norm(str, Enum):
    pre = "pre"
    post = "post"


@dataclass
class TransformerConfig:
    name: str = "transformer"
    d_model: int = 256
    heads: int = 4
    ff_size: int = 1024
    enc_layers: int = 3
    dec_layers: int = 3
    dropout: float = 0.1  # on each sub-layer's output before the residual add
    attention_dropout: float = 0.0  # on the attention weights
    activation_dropout: float = 0.0  # on the feed-forward's hidden units, after the ReLU
    embedding_dropout: Optional[float] = None  # on embeddings + positions; None: the same as dropout
    positions: Positions = Positions.sinusoidal
    norm: Norm = Norm.pre
    share_embeddings: bool = True
    tie_embeddings: bool = True
    max_positions: int = 1024
    embed_init: EmbedInit = EmbedInit.normal  # normal: N(0, d^-1/2); xavier: xavier-uniform (JoeyNMT's)
    dropout_masks: DropoutMasks = DropoutMasks.auto
    copy: bool = False  # pointer-generator: mix the vocabulary with a copy of the attended source pieces


MODEL_SCHEMAS = {"gru": GRUConfig, "transformer": TransformerConfig}


class Batching(str, Enum):
    sorted = "sorted"
    random = "random"


class Schedule(str, Enum):
    constant = "constant"
    inverse_sqrt = "inverse_sqrt"
    plateau = "plateau"


class Precision(str, Enum):
    auto = "auto"  # bf16 where the device has native bf16, fp32 elsewhere (experiments/evaluation/builders.py)
    fp32 = "fp32"
    bf16 = "bf16"


class AverageBy(str, Enum):
    best = "best"
    last = "last"


@dataclass
class TrainerConfig:
    max_steps: int = 10000
    max_tokens: int = 0  # also stop once this many real target tokens were trained on (0 = off): a budget that
                         # means the same for every batch size, as a search's trials need
    max_epochs: int = 1000
    batch_tokens: int = 4096
    accum_steps: int = 1
    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    weight_decay: float = 0.0
    schedule: Schedule = Schedule.inverse_sqrt
    warmup_steps: int = 1000
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_lr: float = 1e-6
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    precision: Precision = Precision.auto
    compile: bool = False
    skip_target_padding: bool = True  # logits (and the GRU's CPU decoder steps) at real target positions only
    fused_adamw: bool = True  # used where torch has it (CUDA, CPU: experiments/training/optim.py)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # CPU threads for torch; 0 = the cores this process may use
    pool_size: int = 0  # examples length-sorted together; 0 = the whole split
    batching: Batching = Batching.sorted  # sorted: length-bucketed (pool_size); random: unsorted, as JoeyNMT
    eval_every: int = 500
    eval_max_sentences: int = 0  # 0 = the whole validation split
    val_beam_size: int = 1
    early_stopping_patience: int = 10  # validations without improvement; 0 = off
    keep_checkpoints: int = 0  # weight snapshots kept per validation: the last N and the best N (for averaging)
    average_checkpoints: int = 0  # also test the mean of N kept snapshots (0 = off); N <= keep_checkpoints
    average_by: AverageBy = AverageBy.best  # which N: the best by validation metric, or the last
    log_every: int = 50
    resume: bool = False
    overwrite: bool = False  # a fresh start in a folder holding a run: move that run aside first (else: refused)
    change_budget: bool = False  # resume with another max_steps / max_epochs (else: refused; experiments/training/resume.py)
    progress: bool = True
    test_after_training: bool = True
    test_splits: list[str] = field(default_factory=list)  # decoded after training; empty: all but train, valid


@dataclass
class DecodingConfig:
    beam_size: int = 5
    length_penalty: float = 1.0
    max_len_a: float = 1.2
    max_len_b: int = 10
    min_len: int = 0
    n_best: int = 1  # hypotheses kept per sentence (s2s-eval writes them as TSV when > 1); at most beam_size
    # Values tried on the validation split after training; the best pair decodes the test splits
    # (experiments/evaluation/lengths.py). Empty: length_penalty and min_len above, as given.
    length_penalty_choices: list[float] = field(default_factory=list)
    min_len_choices: list[int] = field(default_factory=list)
    # Batch sizes are speed settings (outputs are the same). Measured with a converged Multi30k Transformer on a
    # 2-core CPU in paired runs: greedy is fastest at about 8000 source tokens a batch, beam 5 at about twice
    # as many rows (16000 source tokens x beam: ~10% faster than 8000 for both models).
    batch_tokens: int = 8000  # source tokens per greedy batch
    beam_batch_tokens: int = 16000  # source tokens x beam size per beam-search batch


class WandbMode(str, Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


@dataclass
class LoggerConfig:
    mode: WandbMode = WandbMode.offline
    project: str = "s2s-compare"
    entity: Optional[str] = None
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    samples: int = 20  # rows of the sample-output table


@dataclass
class SearchConfig:
    """A random search's space (experiments/training/search.py); a trial is a run whose seed is the trial's number."""

    name: Optional[str] = None  # None: this run is no search trial
    seed: int = 0  # with the model's name and the trial, fixes every draw
    param_budget: list[float] = field(default_factory=list)  # [min, max] parameters of a drawn model; [] = any
    space: dict[str, Any] = field(default_factory=dict)  # "shared" and model names -> {config key: distribution}


@dataclass
class TunedConfig:
    """A search's best trial per model, written by ``s2s-tuned`` (experiments/training/tuned.py) into conf/tuned/."""

    search: Optional[str] = None  # None: this run has no tuned recipe
    metric: Optional[str] = None  # what the trials were ranked on (greedy validation)
    trials: int = 0  # finished trials per model the best was chosen from
    best: dict[str, Any] = field(default_factory=dict)  # model -> {trial, score, best_step, run}
    settings: dict[str, Any] = field(default_factory=dict)  # model -> {config key: value}, the best trial's draws


@dataclass
class Config:
    task: TaskConfig = field(default_factory=TaskConfig)
    model: Any = None  # GRUConfig or TransformerConfig, chosen by model.name
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    seed: int = 1
    cache_dir: Optional[str] = None  # default: $S2S_CACHE_DIR, else ~/.cache/s2s-compare/cache
    experiment: Optional[str] = None  # the preset's name, recorded with the results
    # A preset that trains exactly what another preset trains (only its tests differ): s2s-grid starts its jobs
    # from that preset's finished run folders instead of training again (experiments/training/derive.py).
    trained_as: Optional[str] = None
    search: SearchConfig = field(default_factory=SearchConfig)
    tuned: TunedConfig = field(default_factory=TunedConfig)


def validate(cfg: DictConfig) -> DictConfig:
    """Merge ``cfg`` into the schema; raise ``ConfigError`` naming the bad key or value."""
    raw = OmegaConf.to_container(cfg, resolve=True)
    if "hydra" in raw:
        del raw["hydra"]
    model = raw.get("model") or {}
    model_name = model.get("name")
    if model_name not in MODEL_SCHEMAS:
        raise ConfigError(f"model.name={model_name!r} is not a model; valid: {sorted(MODEL_SCHEMAS)}")
    schema = OmegaConf.structured(Config)
    schema.model = OmegaConf.structured(MODEL_SCHEMAS[model_name])
    try:
        merged = OmegaConf.merge(schema, raw)
    except ConfigKeyError as e:
        full_key = str(e.full_key) if e.full_key else "?"
        *parent, key = full_key.split(".")
        node = OmegaConf.select(schema, ".".join(parent)) if parent else schema
        choices = list(node.keys()) if isinstance(node, DictConfig) else []
        hint = difflib.get_close_matches(key, choices, n=1)
        did_you_mean = f" Did you mean {'.'.join(parent + hint)!r}?" if hint else ""
        raise ConfigError(f"unknown config key {full_key!r}.{did_you_mean} Valid keys here: {choices}") from None
    except ValidationError as e:
        raise ConfigError(f"bad value for {e.full_key!r}: {str(e.msg).splitlines()[0]}") from None
    OmegaConf.set_struct(merged, True)
    check_values(merged)
    return merged


def register_schemas() -> None:
    """Put the schemas in Hydra's ConfigStore under ``schema/``.

    Each group file starts from its schema (``- /schema/task@_here_``), so every
    key exists in the composed config and Hydra checks types and choices of
    command-line overrides as it composes.
    """
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, node in (("task", TaskConfig), ("trainer", TrainerConfig), ("decoding", DecodingConfig),
                        ("logger", LoggerConfig), ("gru", GRUConfig), ("transformer", TransformerConfig)):
        store.store(group="schema", name=group, node=node)


def check_override_keys(overrides: list[str]) -> None:
    """Fail on a misspelled ``key=value`` override before Hydra does, listing the valid keys.

    Hydra's own message names the key but not the alternatives.
    """
    model = next((o.split("=", 1)[1] for o in overrides if o.startswith("model=")), "transformer")
    schema = OmegaConf.structured(Config)
    if model in MODEL_SCHEMAS:
        schema.model = OmegaConf.structured(MODEL_SCHEMAS[model])
    for override in overrides:
        key = override.split("=", 1)[0]
        if override[:1] in "+~" or "=" not in override or "." not in key or key.startswith("hydra"):
            continue
        *parent, leaf = key.split(".")
        node = OmegaConf.select(schema, ".".join(parent))
        # Only dataclass nodes have a fixed key set; free dicts (task.splits) take any key.
        # keys(), not ``in``: ``in`` is False for a key whose value is missing (task.name).
        if not isinstance(node, DictConfig) or OmegaConf.get_type(node) is dict or leaf in node.keys():
            continue
        choices = list(node.keys())
        hint = difflib.get_close_matches(leaf, choices, n=1)
        did_you_mean = f" Did you mean {'.'.join(parent + hint)!r}?" if hint else ""
        raise ConfigError(f"unknown config key {key!r}.{did_you_mean} Valid keys here: {choices}")


register_schemas()
