"""Training settings read by ``tools/lazyconfig_train_net.py`` (detectron2's ``configs/common/train.py``).

A leaf config imports ``train`` and edits fields, e.g. ``train.max_iter = 270000``.
"""

train = dict(
    output_dir="./output",
    # weights loaded before training (ignored on --resume when output_dir has a checkpoint); "" = none
    init_checkpoint="",
    max_iter=90000,
    # mixed precision: precision is "float16" (with a grad scaler) or "bfloat16"
    amp=dict(enabled=False, precision="float16"),
    # options of DistributedDataParallel (see libdet.engine.create_ddp_model)
    ddp=dict(broadcast_buffers=False, find_unused_parameters=False, fp16_compression=False),
    # PeriodicCheckpointer: save every `period` iterations, keep the last `max_to_keep` (None: all)
    checkpointer=dict(period=5000, max_to_keep=100),
    eval_period=5000,  # 0: evaluate only after training
    log_period=20,
    # iterations in the median that smooths losses in the log, metrics.json and TensorBoard (1: raw values)
    smoothing_window=20,
    # "auto": cuda when available, else cpu; or an explicit torch device string ("cpu", "cuda", "cuda:1")
    device="auto",
    # < 0: a random seed (logged); >= 0: every RNG seeded with seed + rank
    seed=-1,
    cudnn_benchmark=False,
    # exponential moving average of the weights; evaluation uses the EMA weights when enabled
    ema=dict(enabled=False, decay=0.9998),
    # keep the weights of the best evaluation (needs eval_period > 0); val_metric None disables it
    best_checkpointer=dict(val_metric=None, mode="max"),
    # stop when `metric` has not improved for `patience` evaluations; metric None disables it
    early_stopping=dict(metric=None, mode="max", patience=3, min_delta=0.0),
    # gradient transforms applied in order between the backward and the optimizer step (libdet.engine.optimizer_step),
    # e.g. [L(ClipGradNorm)(max_norm=1.0)] (one norm over all parameters) or, DETR-style,
    # [L(ClipGradNormPerGroup)(max_norm=0.1)] (one norm per optimizer parameter group)
    grad_transforms=[],
    # batches whose gradients make one optimizer step (each batch's loss divided by it); 1: no accumulation
    grad_accumulation_steps=1,
    # experiment trackers beside the terminal, metrics.json and TensorBoard (off unless listed): "wandb", "mlflow"
    # (MLflow's default tracking URI, e.g. from $MLFLOW_TRACKING_URI), or lazy calls such as
    # L(WandbWriter)(project="detection") / L(MLflowWriter)(tracking_uri=..., experiment_name=...) from
    # libdet.utils.tracking_writers; needs the extra: pip install 'libdet[wandb]' / 'libdet[mlflow]'
    writers=[],
)
