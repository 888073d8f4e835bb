"""``s2s-bench``: training and decoding speed of both models, their fast paths, and JoeyNMT beside them.

What is measured (each training configuration in a fresh worker process, so
that its peak memory, thread setting and compile caches are its own):

* training: ``Trainer.train_step`` over real token-budget batches of the
  training split, ``--steps`` of them run once as the warm-up and then again
  measured (so that no measured update meets a new batch shape, as from a
  run's second epoch on; ``--fresh-shapes``: ``--warmup`` updates, then
  ``--steps`` measured ones on new batches, a first epoch's case);
  throughput is real (non-pad) target tokens per second of wall time, batch
  collation included (JoeyNMT's "Tokens per Sec" counts its data loading too);
  step time; peak memory (RSS on CPU, ``torch.cuda.max_memory_allocated`` on a
  GPU); the padding of a whole epoch's batches;
* against the machine's limit: each training configuration's model FLOP/s
  (the matmul FLOPs of its batches, counted from their shapes, padded and over
  real tokens) and MFU, against torch's matmul rate measured in the same worker
  right after the timed updates (same threads, same dtype), at a large square
  and at the model's own dominant shapes;
* decoding: greedy and beam search over the test split with the model as it is
  after the measured updates of the plain configuration (barely trained, so
  its outputs tend to run to the length limit: the report gives their mean
  length beside the references'), or with a trained run (``--decode-run``);
* the fast paths, each measured off and on: bf16 autocast, ``torch.compile``
  (Transformer), the CPU thread count, sorted token-budget batches (against a
  small sorting pool and unsorted random batches), fused AdamW (CUDA and CPU),
  the Transformer's KV cache (against re-running the decoder over the whole
  prefix at every step, a baseline that exists only here) and batched beam
  search (against one sentence at a time);
* a scaling plot: tokens/s against the batch budget;
* time to BLEU (``--time-to-bleu``): updates and seconds until validation BLEU
  reaches a threshold, beside JoeyNMT's BLEU-by-update curve;
* time to quality (``--time-to-quality``): wall, training and validation
  seconds until validation BLEU reaches JoeyNMT's best, each model with its
  recipe (a conf/experiment preset), against JoeyNMT's seconds per update in
  the same run times the updates its curve needs;
* JoeyNMT (``--joeynmt``): its own "Tokens per Sec" log lines, for a config
  matched to ours;
* threads under load (``--load``, ``load``): the Transformer beside a busy
  one-thread process at several thread settings, and a two-job sweep side by
  side against one after the other.

The modules, in the order a run uses them: ``cli`` (flags, the run),
``plan`` (the configurations as Specs), ``runner`` (worker processes),
``measure`` (one Spec: ``batches``, ``flops``, ``peak``, ``decode``, ``ttb``),
``joeynmt`` and ``joeynmt_config`` (the peer), ``load`` (busy processes, sweeps), ``analysis`` (fast paths,
ratios, targets, with the reference numbers in ``targets``; time to quality's in
``ttq``), ``report`` (Markdown, JSON, README; cells in ``markdown``) and ``plots``.
"""
