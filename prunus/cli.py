"""The `prunus` command line: `prunus train ...`, `prunus eval ...` (a checkpoint or a compressed
.pnz model), `prunus export ...` and `prunus compress ...` (Deep Compression of a checkpoint into
a .pnz file).

Bad arguments end with one line `prunus <cmd>: error: ...` and exit code 2 (argparse's
convention); a prunus error at run time (missing dataset, corrupted checkpoint, ...) ends with one
line `prunus: error: ...` and exit code 1. Never a traceback for the user's mistakes.
"""

from __future__ import annotations

import argparse
import os
import sys

from prunus.errors import ArgumentError, PrunusError

DATASETS = ("mnist", "fashion-mnist")
OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad")


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (with a pointer to --help), not usage + message."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _number(cast, minimum, strict=False):
    """An argparse type: `cast(text)` that is >= minimum (> minimum when strict), else one line."""
    what = f"{'a positive' if strict else 'a'} {'integer' if cast is int else 'number'}"
    bound = "" if strict else f" >= {minimum}"

    def parse(text):
        try:
            value = cast(text)
        except ValueError:
            value = None
        ok = value is not None and (value > minimum if strict else value >= minimum)  # nan fails
        if not ok:
            raise argparse.ArgumentTypeError(f"expected {what}{bound}, got {text!r}")
        return value

    return parse


_positive_int = _number(int, 0, strict=True)
_non_negative_int = _number(int, 0)
_non_negative_float = _number(float, 0.0)


def _milestones(text):
    try:
        return [int(m) for m in text.split(",") if m.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated epochs like 5,10, got {text!r}") from None


def _model_names():
    from prunus.models import MODELS

    return sorted(MODELS)


def build_parser() -> argparse.ArgumentParser:
    from prunus.train.recipes import LR_POLICIES, RECIPES

    parser = _Parser(
        prog="prunus",
        description="prunus: train, evaluate, compress and export neural networks from the command line.",
        epilog="Run 'prunus <command> --help' for a command's options. Datasets are read from "
               "$PRUNUS_DATA (or ~/.cache/prunus); see README.md.",
    )
    sub = parser.add_subparsers(dest="command", metavar="<command>", required=True)
    models = _model_names()

    t = sub.add_parser(
        "train", help="train a model", description=(
            "Train a reference model. Options not given take the model's recipe defaults "
            f"(prunus/train/recipes.py; recipes exist for {', '.join(sorted(RECIPES))}: SGD, "
            "momentum 0.9, batch 64, 20 epochs, lr x0.1 after epochs 10 and 15; docs/training.md)."),
        epilog="example: prunus train --model lenet5 --dataset mnist --checkpoint-dir ckpt/lenet5")
    t.add_argument("--model", required=True, choices=models, help="model to train")
    t.add_argument("--dataset", choices=DATASETS, help="dataset (default: mnist)")
    t.add_argument("--epochs", type=_positive_int, help="epochs to train")
    t.add_argument("--batch-size", type=_positive_int, help="samples per step")
    t.add_argument("--optimizer", choices=OPTIMIZERS, help="optimizer (default: sgd)")
    t.add_argument("--lr", type=_non_negative_float, help="base learning rate")
    t.add_argument("--momentum", type=_non_negative_float, help="momentum (sgd, rmsprop)")
    t.add_argument("--weight-decay", type=_non_negative_float, help="L2 weight decay")
    t.add_argument("--lr-policy", choices=LR_POLICIES,
                   help="inv: base_lr*(1+gamma*iter)^-power per step; step: *gamma every "
                        "--lr-step-epochs; multistep: *gamma at --lr-milestones; fixed")
    t.add_argument("--lr-gamma", type=_non_negative_float, help="gamma of the LR policy")
    t.add_argument("--lr-power", type=_non_negative_float, help="power of the inv policy")
    t.add_argument("--lr-step-epochs", type=_positive_int, help="period of the step policy")
    t.add_argument("--lr-milestones", type=_milestones, help="epochs of the multistep policy, e.g. 5,10")
    t.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default: 0)")
    t.add_argument("--logdir", help="write TensorBoard event files here (needs prunus[tensorboard])")
    t.add_argument("--checkpoint-dir", help="save checkpoints here (every epoch and at the end)")
    t.add_argument("--checkpoint-every", type=_positive_int, metavar="STEPS",
                   help="also save every STEPS optimizer steps")
    t.add_argument("--keep-last", type=_positive_int, default=3, help="checkpoints to keep (default: 3)")
    t.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --checkpoint-dir (bit-exact)")
    t.add_argument("--limit-steps", type=_positive_int, metavar="N",
                   help="stop after N optimizer steps in total (for smoke runs)")
    t.add_argument("--no-val", action="store_true", help="skip evaluating the test set each epoch")
    t.add_argument("--compile", action="store_true",
                   help="run the model as a captured graph (prunus.compile: forward and its "
                        "backward; the same results as eager, bit for bit)")
    t.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    t.add_argument("--data-root", help="folder with the dataset files (default: $PRUNUS_DATA)")
    t.add_argument("--download", action="store_true", help="download missing dataset files")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a checkpoint or a compressed model on a test set",
                       description="Print the loss and top-1/top-5 accuracy of a checkpoint "
                                   "written by 'prunus train', or of a compressed .pnz model "
                                   "(prunus.compression.save, 'prunus compress'), on a dataset's "
                                   "test split.",
                       epilog="examples: prunus eval --checkpoint ckpt/lenet5/checkpoint-step00018760.safetensors; "
                              "prunus eval --compressed lenet300.pnz --dataset mnist")
    source = e.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="checkpoint file written by 'prunus train'")
    source.add_argument("--compressed", metavar="FILE",
                        help="compressed model file (.pnz) to evaluate")
    e.add_argument("--dataset", choices=DATASETS, help="dataset (default: the one it was trained on)")
    e.add_argument("--batch-size", type=_positive_int, default=1000, help="samples per batch (default: 1000)")
    e.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    e.add_argument("--data-root", help="folder with the dataset files (default: $PRUNUS_DATA)")
    e.add_argument("--download", action="store_true", help="download missing dataset files")
    e.set_defaults(func=cmd_eval)

    x = sub.add_parser("export", help="export a checkpoint's or a .pnz file's model to ONNX or a prunus program",
                       description="Capture the model of a checkpoint written by 'prunus train', "
                                   "or of a compressed .pnz file (its weights as dense tensors, "
                                   "pruned zeros and shared values kept), in eval mode, and write "
                                   "it as an ONNX model or as a prunus program (a file "
                                   "prunus.load_program runs without the model's code). The "
                                   "format follows the file extension unless --format says "
                                   "otherwise.",
                       epilog="example: prunus export --checkpoint ckpt/lenet5/checkpoint-step00018760.safetensors -o lenet5.onnx")
    src = x.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint file written by 'prunus train'")
    src.add_argument("--compressed", metavar="FILE", help="compressed model file (.pnz)")
    x.add_argument("-o", "--output", required=True, help="file to write (.onnx or .prunus)")
    x.add_argument("--format", choices=("onnx", "program"), help="default: from the extension")
    x.add_argument("--batch-size", type=_positive_int, default=1,
                   help="batch size of the example input (default: 1)")
    x.add_argument("--dynamic-batch", action="store_true",
                   help="ONNX: leave the batch dimension symbolic")
    x.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset (default: 17)")
    x.set_defaults(func=cmd_export)

    c = sub.add_parser("compress", help="Deep Compression of a checkpoint into a .pnz file",
                       description="Prune, retrain, quantize (weight sharing), fine-tune the "
                                   "centroids and Huffman-code a model trained by 'prunus train' "
                                   "(Han et al. 2016), with the model's recipe "
                                   "(prunus/compression/pipeline.py: LeNet-300-100, LeNet-5); "
                                   "prints the per-layer table and the accuracy after each stage.",
                       epilog="example: prunus compress --checkpoint lenet300.safetensors --dataset "
                              "mnist --recipe deep-compression -o lenet300.pnz")
    c.add_argument("--checkpoint", required=True, help="checkpoint file written by 'prunus train'")
    c.add_argument("--dataset", choices=DATASETS, help="dataset (default: the one it was trained on)")
    c.add_argument("--recipe", choices=("deep-compression",), default="deep-compression",
                   help="compression recipe (default: deep-compression)")
    c.add_argument("-o", "--output", required=True, help="compressed model file to write (.pnz)")
    c.add_argument("--epochs-retrain", type=_non_negative_int, metavar="N",
                   help="retrain epochs after pruning (default: the recipe's; 0: no retraining)")
    c.add_argument("--prune-scope", choices=("layer", "global"),
                   help="layer: each layer keeps the recipe's fraction; global: the same total, "
                        "placed by one magnitude threshold over the layers (default: the recipe's)")
    c.add_argument("--index-bits", type=_positive_int, metavar="B",
                   help="bits per relative index in the file (default: the recipe's)")
    c.add_argument("--limit-steps", type=_positive_int, metavar="N",
                   help="stop each training stage after N optimizer steps (for smoke runs)")
    c.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default: 0)")
    c.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default: cpu)")
    c.add_argument("--data-root", help="folder with the dataset files (default: $PRUNUS_DATA)")
    c.add_argument("--download", action="store_true", help="download missing dataset files")
    c.add_argument("--plots", metavar="DIR",
                   help="write each layer's weight histograms before pruning, after pruning and "
                        "after quantization as PNG files here (needs prunus[plot])")
    c.add_argument("--logdir", help="write the same histograms as TensorBoard event files here")
    c.add_argument("--quiet", action="store_true", help="no progress output")
    c.set_defaults(func=cmd_compress)
    return parser


def _dataset(name, train, args):
    from prunus.data.datasets import MNIST, FashionMNIST

    cls = {"mnist": MNIST, "fashion-mnist": FashionMNIST}[name]
    return cls(root=args.data_root, train=train, download=args.download)


def _optimizer(name, params, cfg):
    from prunus import optim

    lr, wd, mom = cfg["lr"], cfg["weight_decay"], cfg["momentum"]
    if name == "sgd":
        return optim.SGD(params, lr=lr, momentum=mom, weight_decay=wd)
    if name == "rmsprop":
        return optim.RMSprop(params, lr=lr, momentum=mom, weight_decay=wd)
    cls = {"adam": optim.Adam, "adamw": optim.AdamW, "adagrad": optim.Adagrad}[name]
    return cls(params, lr=lr, weight_decay=wd)


def cmd_train(args) -> int:
    import prunus
    from prunus.data import DataLoader
    from prunus.models import get_model
    from prunus.train import ModelCheckpoint, ProgressBar, Trainer, latest_checkpoint
    from prunus.train.recipes import make_scheduler, recipe

    cfg = recipe(args.model)
    for key in ("dataset", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
                "lr_policy", "lr_gamma", "lr_power", "lr_step_epochs", "lr_milestones"):
        if getattr(args, key) is not None:
            cfg[key] = getattr(args, key)
    if args.resume and not args.checkpoint_dir:
        raise ArgumentError("--resume needs --checkpoint-dir (where to find the checkpoint)")

    prunus.manual_seed(args.seed)
    train_set = _dataset(cfg["dataset"], True, args)
    val_set = None if args.no_val else _dataset(cfg["dataset"], False, args)
    model = get_model(args.model, num_classes=len(train_set.classes)).to(args.device)
    opt = _optimizer(cfg["optimizer"], model.parameters(), cfg)
    sched, interval = make_scheduler(cfg["lr_policy"], opt, gamma=cfg.get("lr_gamma"),
                                     power=cfg.get("lr_power"), step_epochs=cfg.get("lr_step_epochs"),
                                     milestones=cfg.get("lr_milestones"))
    loader = DataLoader(train_set, batch_size=cfg["batch_size"], shuffle=True,
                        generator=prunus.Generator().manual_seed(args.seed + 1))
    val_loader = None if val_set is None else DataLoader(val_set, batch_size=1000)

    callbacks = [ProgressBar(quiet=args.quiet)]
    ckpt = None
    if args.checkpoint_dir:
        ckpt = ModelCheckpoint(args.checkpoint_dir, every_n_steps=args.checkpoint_every,
                               every_n_epochs=1, keep_last=args.keep_last)
        callbacks.append(ckpt)
    if args.logdir:
        from prunus.train.tensorboard import TensorBoardLogger

        callbacks.append(TensorBoardLogger(args.logdir))
    meta = {"model": args.model, "num_classes": len(train_set.classes), "seed": args.seed,
            **{k: v for k, v in cfg.items() if v is not None}}
    net = prunus.compile(model) if args.compile else model  # checkpoints hold the same state
    trainer = Trainer(net, opt, scheduler=sched, scheduler_interval=interval or "epoch",
                      callbacks=callbacks, device=args.device, topk=(1, 5), meta=meta)
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    if args.resume:
        path = latest_checkpoint(args.checkpoint_dir)
        if path is None:
            raise ArgumentError(f"--resume: no checkpoint in {args.checkpoint_dir!r} to resume from")
        saved = trainer.load_checkpoint(path)
        if saved.get("model") != args.model:
            raise ArgumentError(f"--resume: {path} holds a {saved.get('model')!r} model, not {args.model!r}")
        trainer.meta = meta
        say(f"resumed from {path} at step {trainer.step} (epoch {trainer.epoch + 1}, batch {trainer.batch_in_epoch})")
    say(f"training {args.model}{' (compiled)' if args.compile else ''} on {cfg['dataset']}: {cfg['epochs']} epochs, batch {cfg['batch_size']}, "
        f"{cfg['optimizer']} lr {cfg['lr']} (policy {cfg['lr_policy']}), weight decay {cfg['weight_decay']}")
    trainer.fit(loader, val_loader, epochs=cfg["epochs"], max_steps=args.limit_steps)
    if ckpt is not None and ckpt.last_saved is not None:
        say(f"checkpoint: {ckpt.last_saved}")
    return 0


def cmd_eval(args) -> int:
    from prunus.data import DataLoader
    from prunus.train import Trainer

    if args.compressed is not None:
        model, meta, name = _compressed_model(args.compressed, args.device)
    else:
        model, meta = _checkpoint_model(args.checkpoint, args.device)
        name = meta["model"]
    dataset = args.dataset or meta.get("dataset", "mnist")
    if dataset not in DATASETS:
        raise ArgumentError(f"{args.compressed or args.checkpoint}: its metadata names dataset {dataset!r}; pass "
                            f"--dataset ({', '.join(DATASETS)})")
    test_set = _dataset(dataset, False, args)
    trainer = Trainer(model, None, device=args.device, topk=(1, 5))
    m = trainer.evaluate(DataLoader(test_set, batch_size=args.batch_size))
    print(f"{name} on {dataset} test ({len(test_set)} images): loss {m['loss']:.4f}  "
          f"top-1 accuracy {100 * m['acc']:.2f}% (error {100 * (1 - m['acc']):.2f}%)  "
          f"top-5 accuracy {100 * m['acc@5']:.2f}%")
    return 0


def _checkpoint_model(path, device="cpu"):
    """The model of a 'prunus train' checkpoint with its weights, and the checkpoint's metadata."""
    from prunus import serialization
    from prunus.models import get_model

    ckpt = serialization.load(path, map_location=device)
    meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or "model" not in meta or "model" not in ckpt:
        raise ArgumentError(f"{path}: not a checkpoint written by 'prunus train' "
                            "(it has no model name in its metadata)")
    model = get_model(meta["model"], num_classes=int(meta.get("num_classes", 10))).to(device)
    model.load_state_dict(ckpt["model"])
    return model, meta


def _compressed_model(path, device="cpu"):
    """The model of a .pnz file (still pruned and quantized), its metadata, and a name for it:
    'lenet_300_100 [compressed, 27,397 bytes]'."""
    from prunus.compression import container

    info = container.read_info(path)
    model, meta = container.load(path, map_location=device)
    return model, meta, f"{info.arch['model']} [compressed, {info.file_bytes:,} bytes]"


def cmd_export(args) -> int:
    import prunus

    fmt = args.format or ("onnx" if args.output.endswith(".onnx") else
                          "program" if args.output.endswith(".prunus") else None)
    if fmt is None:
        raise ArgumentError(f"export: can't tell the format of {args.output!r} from its "
                            "extension; name it .onnx or .prunus, or pass --format")
    if args.compressed:
        from prunus.compression import container
        from prunus.nn.utils.parametrize import remove_all_parametrizations

        model, meta, _ = _compressed_model(args.compressed)
        meta = {**meta, "model": container.read_info(args.compressed).arch["model"]}
        remove_all_parametrizations(model)  # runtimes want plain weights: decode once, here
    else:
        model, meta = _checkpoint_model(args.checkpoint)
    model.eval()
    # MNIST-style datasets are 1x28x28; the small VGG/ResNet take 3x32x32 images
    shape = (1, 28, 28) if meta.get("dataset", "mnist") in ("mnist", "fashion_mnist", "fashion-mnist") \
        else (3, 32, 32)
    x = prunus.zeros((args.batch_size, *shape))
    if fmt == "onnx":
        import prunus.onnx

        dyn = {"x": {0: "batch"}} if args.dynamic_batch else None
        prunus.onnx.export(model, (x,), args.output, opset=args.opset, dynamic_axes=dyn,
                           input_names=["x"])
    else:
        compiled = prunus.compile(model)
        with prunus.no_grad():
            compiled(x)
        prunus.save_program(compiled, args.output, module=model)
    print(f"{meta['model']}: wrote {args.output} ({fmt}, input {list(x.shape)})")
    return 0


def cmd_compress(args) -> int:
    import os

    import prunus
    from prunus.compression import report
    from prunus.compression.pipeline import deep_compression, get_recipe
    from prunus.data import DataLoader

    model, meta = _checkpoint_model(args.checkpoint, args.device)
    recipe = get_recipe(meta["model"])
    if args.index_bits is not None:
        recipe = recipe.replace(index_bits=args.index_bits)
    if args.prune_scope is not None:
        recipe = recipe.replace(scope=args.prune_scope)
    dataset = args.dataset or meta.get("dataset", "mnist")
    if dataset not in DATASETS:
        raise ArgumentError(f"{args.checkpoint}: its metadata names dataset {dataset!r}; pass "
                            f"--dataset ({', '.join(DATASETS)})")
    prunus.manual_seed(args.seed)
    train_set, test_set = _dataset(dataset, True, args), _dataset(dataset, False, args)
    loader = DataLoader(train_set, batch_size=recipe.batch_size, shuffle=True,
                        generator=prunus.Generator().manual_seed(args.seed + 1))
    arch = {"model": meta["model"], "kwargs": {"num_classes": int(meta.get("num_classes", 10))}}
    file_meta = {"dataset": dataset, "checkpoint": os.path.basename(args.checkpoint),
                 "seed": args.seed, "method": args.recipe}
    snapshots = _WeightSnapshots(list(recipe.bits), enabled=bool(args.plots or args.logdir))
    result = deep_compression(model, recipe, loader, DataLoader(test_set, batch_size=1000),
                              args.output, arch=arch, meta=file_meta,
                              epochs_retrain=args.epochs_retrain, max_steps=args.limit_steps,
                              quiet=args.quiet, on_stage=snapshots.record)
    snapshots.write(args.plots, args.logdir)
    print(report.format_table(result.info, result.accuracies))
    print(result.format_stages())
    return 0


class _WeightSnapshots:
    """The compressed layers' weights before pruning, after pruning and after quantization (the
    lecture's pictures), written as PNG histograms and/or TensorBoard histograms."""

    STAGES = (("baseline", "before pruning"), ("retrained", "after pruning"),
              ("fine-tuned", "after quantization"))

    def __init__(self, layers, enabled):
        self.layers, self.enabled, self.values = layers, enabled, {}

    def record(self, stage, model):
        label = dict(self.STAGES).get(stage)
        if self.enabled and label is not None:
            from prunus.compression import report

            for layer in self.layers:
                self.values.setdefault(layer, {})[label] = report.layer_weights(model, f"{layer}.weight")

    def write(self, plots, logdir):
        from prunus.compression import report

        for layer, stages in self.values.items():
            if plots:
                report.plot_weight_histograms(stages, os.path.join(plots, f"{layer}_weights.png"),
                                              title=f"{layer} weights")
            if logdir:
                report.log_weight_histograms(stages, logdir, layer=layer)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (PrunusError, FileNotFoundError) as e:  # prunus.load raises FileNotFoundError
        print(f"prunus: error: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("prunus: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
