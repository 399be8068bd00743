"""``parm train-base``, ``parm train-parity``, ``parm eval``, ``parm import-model`` and ``parm train-demo``: thin
argument parsing over train_base.py, train.py, evaluate.py, import_model.py and demo.py (torch is imported
inside each command)."""
from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

ARCH_CHOICES = ("mlp", "lenet5", "resnet18")
PARITY_ARCH_CHOICES = ("same", *ARCH_CHOICES, "tiled", "collage")
DATASET_CHOICES = ("mnist", "fashion-mnist", "cifar10")
DATASET_HELP = ("mnist, fashion-mnist, cifar10, or your own images: folder:PATH (PATH/<class>/*.png, or "
                "PATH/train/<class> + PATH/test/<class>) or npz:PATH (x_train, y_train[, x_test, y_test] or x, y); "
                "a bare path works too")
LOSS_CHOICES = ("mse", "kl", "kl-ce", "ce-base")  # losses.LOSSES, spelled out here so --help needs no torch
LOSS_HELP = ("mse: onto the summed base outputs (ParM); kl: each decoded output's softmax onto the base model's; "
             "kl-ce: kl plus cross-entropy of each decoded output with its true label; ce-base: cross-entropy of "
             "each decoded output with the base model's top class")
TABLE_COLUMNS = ("dataset", "k", "code", "groups", "base_top1", "degraded_top1", "recon_top1",
                 "base_top5", "degraded_top5", "recon_top5", "parity_cost", "overhead")
ERASURE_COLUMNS = ("dataset", "code", "k", "r", "missing", "groups", "patterns", "base_top1", "degraded_top1",
                   "recon_top1", "degraded_top5")


def _quiet_openmp() -> None:
    """Let idle OpenMP threads sleep rather than spin: on a shared 2-core machine spinning made training
    epochs up to 8x slower. Only takes effect if torch is not imported yet; an explicit setting wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _friendly(func: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Report a missing dataset, a bad checkpoint, a mismatched pair or settings that do not go together in one
    line, exit status 2."""
    @functools.wraps(func)
    def run(args: argparse.Namespace) -> int:
        from parity_models.checkpoint import CheckpointError
        from parity_models.data import DatasetError
        from parity_models.errors import SetupError

        try:
            return func(args)
        except (CheckpointError, DatasetError, SetupError) as exc:
            print(f"parm {getattr(args, 'command', '')}: {exc}", file=sys.stderr)
            return 2
    return run


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    p.add_argument("--data-dir", default=None, help="folder holding <dataset>/ (else $PARM_DATA, ...)")


def _train_base(args: argparse.Namespace) -> int:
    _quiet_openmp()
    from parity_models.train_base import BaseConfig, train_base

    ckpt = train_base(BaseConfig(args.dataset, args.model, args.out, epochs=args.epochs, batch_size=args.batch_size,
                                 lr=args.lr, device=args.device, seed=args.seed, data_dir=args.data_dir,
                                 progress=not args.quiet))
    print(f"saved {args.out}: val acc {ckpt['meta']['val_acc']:.2f}, test acc {ckpt['meta']['test_acc']:.2f}")
    return 0


def _train_parity(args: argparse.Namespace) -> int:
    _quiet_openmp()
    from parity_models.train import ParityConfig, last_path, train_parity

    cfg = ParityConfig(args.base, args.k, args.code, args.out, parity_index=args.parity_index, arch=args.arch,
                       init=args.init, cost_budget=args.cost_budget, epochs=args.epochs,
                       time_budget=args.time_budget, loss=args.loss,
                       dataset=args.dataset, resume=args.resume, device=args.device, seed=args.seed,
                       batch_size=args.batch_size, lr=args.lr, data_dir=args.data_dir, progress=not args.quiet)
    ckpt = train_parity(cfg)
    print(f"saved best {args.out} (epoch {ckpt['meta']['epochs']}, val degraded top-1 "
          f"{ckpt['meta']['val']['degraded_top1']:.2f}); last: {last_path(args.out)}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from parity_models.evaluate import evaluate, evaluate_learned, format_table

    if args.code == "berrut":
        if args.parity or args.k is None:
            raise SystemExit("parm eval: --code berrut needs --k (and --r), no --parity: the base model is its parity")
        from parity_models.evaluate_berrut import evaluate_berrut

        rows = evaluate_berrut(args.base, args.k, args.r, missing=args.missing, data_dir=args.data_dir,
                               device=args.device, dataset=args.dataset)
    elif not args.parity:
        raise SystemExit("parm eval: --parity is required (or --code berrut --k K --r R)")
    elif len(args.parity) == 1 and not args.missing:
        rows = [evaluate(args.base, args.parity[0], data_dir=args.data_dir, device=args.device, split=args.split,
                         dataset=args.dataset)]
    else:
        rows = evaluate_learned(args.base, args.parity, missing=args.missing, data_dir=args.data_dir,
                                device=args.device, dataset=args.dataset)
    print(format_table(rows, TABLE_COLUMNS if "split" in rows[0] else ERASURE_COLUMNS))
    result = rows[0] if len(rows) == 1 else rows
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0


def _import_model(args: argparse.Namespace) -> int:
    from parity_models import checkpoint
    from parity_models.import_model import import_model, parse_shape, parse_stats

    try:
        shape, mean, std = parse_shape(args.input_shape), parse_stats(args.mean, 0.0), parse_stats(args.std, 1.0)
    except ValueError as exc:
        raise SystemExit(f"parm import-model: {exc}") from None
    ckpt = import_model(args.model, args.out, input_shape=shape, num_classes=args.num_classes, mean=mean, std=std,
                        dataset=args.dataset, data_dir=args.data_dir, device=args.device)
    meta = ckpt["meta"]
    scored = f", test acc {meta['test_acc']:.2f} on {meta['dataset']}" if "test_acc" in meta else ""
    print(f"saved {args.out}: {meta['program_format']} model {checkpoint.model_id(ckpt)}, inputs "
          f"{ckpt['input_shape']}, {ckpt['num_classes']} classes{scored}")
    return 0


def _train_demo(args: argparse.Namespace) -> int:
    _quiet_openmp()
    from parity_models.demo import ensure_demo_models

    base, parity = ensure_demo_models(args.cache_dir, args.dataset, args.k, args.code, time_budget=args.time_budget,
                                      device=args.device, data_dir=args.data_dir, progress=not args.quiet)
    print(f"base: {base}\nparity: {parity}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train-base", help="train a base model and save a self-describing checkpoint")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--model", required=True, choices=ARCH_CHOICES)
    p.add_argument("--out", required=True)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=_friendly(_train_base))

    p = subparsers.add_parser("train-parity", help="train a parity model for a base checkpoint; writes OUT (best "
                                                   "by val degraded accuracy) and OUT's stem + .last (resumable)")
    p.add_argument("--base", required=True, help="base model: a checkpoint, or a torch.export .pt2 file")
    p.add_argument("--k", type=int, required=True)
    p.add_argument("--code", required=True, choices=("sum", "concat", "collage"))
    p.add_argument("--out", required=True)
    p.add_argument("--parity-index", type=int, default=0,
                   help="which parity of a code with r >= 2 parities this model is (0..r-1; train one model each)")
    p.add_argument("--arch", default="same", choices=PARITY_ARCH_CHOICES,
                   help="same: the base model's; tiled (concat only): one MLP shared by the k tiles, summed; "
                        "collage (code collage only): the same MLP answering each tile on its own")
    p.add_argument("--init", default=None, choices=("base", "scratch"),
                   help="starting weights: base (the base model's own; the default with --arch same) or scratch "
                        "(the default for any other --arch)")
    p.add_argument("--cost-budget", type=float, default=None, metavar="C",
                   help="tiled/collage: size the per-tile network (hidden h, h/2) so a parity query costs at most "
                        "C base queries in MACs, e.g. 1 for ParM's cost (default: hidden 256, 128)")
    p.add_argument("--epochs", type=int, default=None, help="default: 30, or unbounded with --time-budget")
    p.add_argument("--time-budget", type=float, default=None, help="seconds of training (the lr decays to 0 then)")
    p.add_argument("--loss", default="mse", choices=LOSS_CHOICES, help=LOSS_HELP)
    p.add_argument("--dataset", default=None, help="training images (default: the base model's dataset); "
                                                   + DATASET_HELP)
    p.add_argument("--resume", default=None, help="a .last checkpoint to continue from")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=_friendly(_train_parity))

    p = subparsers.add_parser("eval", help="degraded-mode accuracy of a base model and its parity model(s), or of "
                                           "the training-free Berrut code, on the test set")
    p.add_argument("--base", required=True)
    p.add_argument("--parity", nargs="+", default=None,
                   help="parity checkpoint(s): one, or r of them (parity_index 0..r-1) for r >= 2")
    p.add_argument("--code", default=None, choices=("berrut",), help="berrut: no parity model (training-free)")
    p.add_argument("--k", type=int, default=None, help="group size for --code berrut")
    p.add_argument("--r", type=int, default=1, help="parities per group for --code berrut")
    p.add_argument("--missing", type=int, default=None, help="evaluate with this many data outputs missing "
                                                             "(default: each of 1..r)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--split", default="test", choices=("test", "val"))
    p.add_argument("--dataset", default=None, help="default: the base model's dataset; " + DATASET_HELP)
    _common(p)
    p.set_defaults(func=_friendly(_eval))

    p = subparsers.add_parser("import-model", help="make your own torch.export (.pt2) or TorchScript model a "
                                                   "parm base checkpoint (a .pt2 also works as it is)")
    p.add_argument("model", help="a file saved by torch.export.save (.pt2) or torch.jit.save (.ts/.pt)")
    p.add_argument("--out", required=True, help="the base checkpoint to write")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="one query's shape (default: read from a .pt2; TorchScript needs it)")
    p.add_argument("--num-classes", type=int, default=None, help="check the model returns this many scores")
    p.add_argument("--mean", default=None, help="normalisation applied to raw [0, 1] pixels before the model, "
                                                "(x - mean) / std: one value or one per channel (default: none, "
                                                "the model normalises itself)")
    p.add_argument("--std", default=None, help="see --mean (default 1)")
    p.add_argument("--dataset", default=None, help="record this dataset (parm train-parity then needs no --dataset) "
                                                   "and score the model on it; " + DATASET_HELP)
    _common(p)
    p.set_defaults(func=_friendly(_import_model))

    p = subparsers.add_parser("train-demo", help="train (or reuse cached) demo base + parity models")
    p.add_argument("--cache-dir", default=".cache/parm-demo")
    p.add_argument("--dataset", default="fashion-mnist", choices=DATASET_CHOICES)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--code", default="concat", choices=("sum", "concat"))
    p.add_argument("--time-budget", type=float, default=100.0, help="at most this many seconds of parity training")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _common(p)
    p.set_defaults(func=_friendly(_train_demo))
