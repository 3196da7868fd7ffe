"""``sknet predict``: classify image files with a trained model, optionally explained.

Prints a table (up to :data:`TABLE_MAX` images; a progress bar for more when ``--out`` is
given), writes one row per image to ``--out`` (CSV, JSON or JSONL, chosen by the suffix),
and with ``--explain DIR`` one PNG per image of what every SK unit selected. Files that cannot
be read are reported (row with the reason, and on stderr) and skipped: the exit status is 1 when
any image failed, after the others have been predicted and written.

Every output path is checked before any work (:func:`sknet._files.check_output`): an empty
``--out``/``--explain``, an existing file of the run directory the source belongs to, a file
name or path too long for the file system are one-line errors. Figure names that would be too
long (images deep in nested folders) are shortened with a hash (:func:`sknet.predict.
explain_names`). ``--out`` is written before the figures, so a figure that cannot be written
never loses the predictions.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from tqdm import tqdm

import sknet
from sknet._device import resolve_device
from sknet._files import (
    atomic_save,
    atomic_write_text,
    check_out_arg,
    check_output,
    check_path_length,
    csv_cell,
    name_max,
)
from sknet.cli import DEVICE_HELP, examples
from sknet.cli._source import add_checkpoint_path, checkpoint_path_of
from sknet.dense import draw_result, is_dense_source, load_dense, predict_files
from sknet.errors import ConfigError, OutputError
from sknet.hub.load import is_random_source, load, random_weights_hint, resolve_source
from sknet.predict import expand_inputs, explain_names, predict, save_explanation

#: Up to this many images the results are printed as a table without a progress bar.
TABLE_MAX = 20

OUT_SUFFIXES = (".csv", ".json", ".jsonl")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="classify images (files, folders, globs), optionally with SK attention figures",
        description=(
            "Classify image files with a trained model, using the weights' own preprocessing "
            "and class names. INPUT may be files, folders (searched recursively for images) "
            "and glob patterns. Unreadable files are reported and skipped; the exit status is "
            "1 if any image failed. --explain writes, per image, a figure of the mean attention "
            "of every SK unit on each branch."
        ),
        epilog=examples(
            "sknet predict runs/demo shapes/",
            "sknet predict runs/demo 'photos/**/*.jpg' --topk 3 --out predictions.csv",
            "sknet predict sknet50.ra_in1k cat.jpg --explain explain/ --out cat.json",
        ),
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="run directory, checkpoint .pt, .safetensors file or registry name[.tag]",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="allow a bare model name (random weights, for smoke tests)",
    )
    p.add_argument(
        "inputs", metavar="INPUT", nargs="+", help="image files, folders or glob patterns"
    )
    p.add_argument("--topk", type=int, default=5, help="classes listed per image")
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="write the predictions to FILE.csv, FILE.json or FILE.jsonl",
    )
    p.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    p.add_argument(
        "--explain",
        default=None,
        metavar="DIR",
        help="write one PNG per image of the SK units' mean attention per branch into DIR "
        "(and the numbers into --out)",
    )
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument(
        "--score-threshold",
        type=float,
        default=0.3,
        metavar="S",
        help="detectors: keep detections scoring at least S (default 0.3)",
    )
    p.add_argument(
        "--force", action="store_true", help="replace existing --out and --explain files"
    )
    # issue 17: CLI parity with the Python API
    add_checkpoint_path(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_out_arg(args.out, "--out")
    check_out_arg(args.explain, "--explain")
    if args.topk < 1:
        raise ConfigError(f"--topk must be positive, got {args.topk}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {args.batch_size}")
    device = resolve_device(args.device)  # an unknown device is an error before any work
    checkpoint_path_of(args)  # --checkpoint-path checked before any work
    files = expand_inputs(args.inputs)
    out, figures = _check_outputs(args, files)  # before any work
    if is_dense_source(args.source):
        return _predict_dense(args, files, out, figures, device)
    if not args.random_weights and is_random_source(args.source):
        raise ConfigError(random_weights_hint(args.source))
    model, record = load(args.source, checkpoint_path=checkpoint_path_of(args), random_weights=True)
    many = len(files) > TABLE_MAX
    results = _predict(args, model, record, files, device, many)
    if out is not None:  # the predictions first: a figure that fails cannot lose them
        _write_out(args, results, record, out)
    written = _write_figures(results, figures, record, many)
    return _report(args, results, record, out, written, many)


def _check_outputs(args: argparse.Namespace, files: list[Path]) -> tuple[Path | None, dict]:
    """The --out file and the --explain figure of each image, checked before any work: never
    the source or an existing file of its run directory (however the source was named, see
    :func:`sknet._files.check_output`), never an input image, existing files only with
    --force, names the file system can hold."""
    src = Path(args.source).expanduser()
    sources: list[Path] = []
    protected: list[Path] = []
    if (copy := checkpoint_path_of(args)) is not None:
        sources.append(copy)
    if src.exists():
        sources.append(src)  # its run directory, if any, is protected by check_output
        if src.is_dir():  # a folder source is a run directory, whatever it holds
            sources.append(resolve_source(src)[0])
            protected.append(src)
    out = None
    if args.out is not None:
        out = check_output(
            args.out,
            sources=sources,
            protected_dirs=protected,
            force=args.force,
            suffixes=OUT_SUFFIXES,
            what="--out",
        )
    figures: dict[str, Path] = {}
    if args.explain is not None:
        folder = Path(args.explain).expanduser()
        check_path_length(folder, "--explain")
        if folder.exists() and not folder.is_dir():
            raise OutputError(f"--explain {folder} is a file; give a folder")
        inputs = {os.path.realpath(f) for f in files}
        names = explain_names([str(f) for f in files], max_bytes=name_max(folder))
        for f, name in zip(files, names):
            if os.path.realpath(folder / name) in inputs:
                raise OutputError(
                    f"--explain {folder / name} would overwrite an input image (even with "
                    "--force): choose another folder"
                )
            figures[str(f)] = check_output(
                folder / name,
                sources=sources,
                protected_dirs=protected,
                force=args.force,
                suffixes=(".png",),
                what="--explain",
            )
    return out, figures


def _predict(
    args: argparse.Namespace, model: Any, record: Any, files: list[Path], device: Any, many: bool
) -> list[Any]:
    """Run the model over ``files`` (a progress bar when there are many)."""
    bar = None
    if many:
        bar = tqdm(total=len(files), unit="img", desc="predict", file=sys.stderr, disable=None)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.update(done - bar.n)

    try:
        return predict(
            (model, record),
            files,
            topk=args.topk,
            batch_size=args.batch_size,
            explain=bool(args.explain),
            device=device,
            progress=progress,
        )
    finally:
        if bar is not None:
            bar.close()


def _write_figures(results: list[Any], figures: dict, record: Any, many: bool) -> int:
    todo = [r for r in results if r.ok and r.path in figures]
    if many and todo:
        todo = tqdm(todo, unit="fig", desc="explain", file=sys.stderr, disable=None)
    written = 0
    for r in todo:
        save_explanation(r, r.path, figures[r.path], record.preprocess)
        written += 1
    return written


def _write_out(args: argparse.Namespace, results: list[Any], record: Any, out: Path) -> None:
    atomic_write_text(out, format_results(results, out.suffix.lower(), record, args.topk))


def _report(
    args: argparse.Namespace,
    results: list[Any],
    record: Any,
    out: Path | None,
    written: int,
    many: bool,
) -> int:
    """Print the table (or a summary) and the failures; the exit status."""
    failed = [r for r in results if not r.ok]
    print(
        f"{record.name} ({record.num_classes} classes, {record.preprocess.input_size}px) "
        f"from {record.source}"
    )
    if not many or out is None:
        print(format_table(results))
    else:
        print(f"predicted {len(results) - len(failed)} of {len(results)} images")
    if out is not None:
        print(f"wrote {out}")
    if args.explain:
        print(f"wrote {written} figure(s) to {args.explain}")
    if failed:
        print(f"sknet predict: {len(failed)} of {len(results)} image(s) failed:", file=sys.stderr)
        for r in failed:
            print(f"  {r.path}: {r.error}", file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------------- dense


def _predict_dense(
    args: argparse.Namespace, files: list[Path], out: Path | None, figures: dict, device: Any
) -> int:
    """Detections (or a semantic map) per image; with --explain, a drawing per image and, for
    detectors with SK units, what each SK unit selected inside every detected box (the
    attention on its larger-kernel branch, see sknet.analysis.dense_scale)."""
    from sknet.analysis.dense_scale import object_attention  # matplotlib: only when asked

    model, record = load_dense(args.source)
    classes = record["classes"]
    results = predict_files(
        model,
        files,
        classes,
        score_threshold=args.score_threshold,
        device=device,
        keep_inputs=bool(args.explain),
    )
    notes: dict[str, list[str]] = {}
    selection: dict[str, Any] = {}
    if args.explain and model.task == "detect" and sknet.sk_units(model.backbone):
        for r in results:
            if r.error or r.model_boxes is None or r.model_input is None:
                continue
            if not len(r.model_boxes):
                continue
            target = {
                "boxes": r.model_boxes,
                "labels": torch.ones(len(r.model_boxes), dtype=torch.int64),
            }
            att = object_attention(
                model, [(r.model_input[None], [target])], image_size=int(model.geometry.image_size)
            )
            # one row per detected box (in order): the unit -> attention on its larger branch
            per_box = [
                {u: round(float(att.large[u][i]), 4) for u in att.units}
                for i in range(att.num_objects)
            ]
            selection[r.path] = per_box
            notes[r.path] = ["SK>" + "/".join(f"{v:.2f}" for v in row.values()) for row in per_box]
    rows: list[dict[str, Any]] = []
    for r in results:
        if r.error:
            rows.append({"image": r.path, "error": r.error})
            continue
        if r.semantic is not None:
            counts = torch.bincount(r.semantic.flatten(), minlength=len(classes) + 1)
            rows.append(
                {
                    "image": r.path,
                    **{f"pixels_{c}": int(counts[i + 1]) for i, c in enumerate(classes)},
                }
            )
            continue
        sel = selection.get(r.path) or [None] * len(r.boxes)
        for row, s in zip(r.rows(), sel):
            if s is not None:
                row["sk_large_attention"] = s
            rows.append(row)
    if out is not None:
        atomic_write_text(out, _dense_text(rows, out.suffix.lower(), args.source, model))
    written = 0
    if args.explain:
        for r in results:
            if r.error or r.path not in figures:
                continue
            path = figures[r.path]
            path.parent.mkdir(parents=True, exist_ok=True)
            drawn = draw_result(r, classes, notes.get(r.path)).permute(1, 2, 0).numpy()
            atomic_save(_png_writer(drawn), path)
            written += 1
    head = f"{model.task} {model.head} over {model.backbone_name} ({len(classes)} classes, "
    print(head + f"{model.geometry.image_size}px) from {args.source}")
    for r in results[:TABLE_MAX]:
        if r.error:
            print(f"{r.path}: error: {r.error}")
        elif r.semantic is not None:
            present = [classes[i - 1] for i in r.semantic.unique().tolist() if i > 0]
            print(f"{r.path}: {', '.join(present) or 'background only'}")
        else:
            found = ", ".join(f"{lab} {s:.2f}" for lab, s in zip(r.labels, r.scores))
            print(f"{r.path}: {len(r.boxes)} object(s){': ' + found if found else ''}")
    if out is not None:
        print(f"wrote {out}")
    if args.explain:
        print(f"wrote {written} figure(s) to {args.explain}")
    failed = [r for r in results if r.error]
    if failed:
        print(f"sknet predict: {len(failed)} of {len(results)} image(s) failed", file=sys.stderr)
        return 1
    return 0


def _png_writer(pixels: Any) -> Any:
    def write(tmp: str) -> None:
        Image.fromarray(pixels).save(tmp, format="PNG")

    return write


def _dense_text(rows: list[dict[str, Any]], suffix: str, source: str, model: Any) -> str:
    if suffix == ".jsonl":
        return "".join(json.dumps(r) + "\n" for r in rows)
    if suffix == ".json":
        doc = {
            "format": "sknet-predict-dense/1",
            "source": str(source),
            "task": model.task,
            "head": model.head,
            "backbone": model.backbone_name,
            # detectors: one row per detection; segmenters: one row per image (pixels per class)
            ("detections" if model.task == "detect" else "images"): rows,
        }
        return json.dumps(doc, indent=2) + "\n"
    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(k for k in r if k != "sk_large_attention"))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(k) for k in keys])
    for r in rows:
        w.writerow(
            [csv_cell(r.get(k, "")) if isinstance(r.get(k), str) else r.get(k, "") for k in keys]
        )
    return buf.getvalue()


# ----------------------------------------------------------------------------------- output


def _display_paths(paths: list[str]) -> tuple[str | None, list[str]]:
    """The folder all ``paths`` share, and each path relative to it (for the table)."""
    try:
        common = os.path.commonpath([os.path.dirname(os.path.abspath(p)) for p in paths])
    except ValueError:  # different drives
        return None, paths
    return common, [os.path.relpath(os.path.abspath(p), common) for p in paths]


def format_table(results: list[Any]) -> str:
    """A plain-text table: one line per image (its path relative to the folder the images
    share, named in the first line) with its top-k labels and probabilities."""
    k = max((len(r.labels) for r in results), default=1)
    folder, paths = _display_paths([r.path for r in results])
    pw = max([len("image"), *map(len, paths)])
    cells = [[f"{lab} {s:.1%}" for lab, s in zip(r.labels, r.scores)] for r in results]
    cw = max([8, *(len(c) for row in cells for c in row)])
    header = f"{'image':<{pw}}  " + "  ".join(f"{f'top-{i + 1}':<{cw}}" for i in range(k))
    lines = [f"images in {folder}:"] if folder else []
    lines.append(header.rstrip())
    for r, p, row in zip(results, paths, cells):
        text = "  ".join(f"{c:<{cw}}" for c in row) if r.ok else f"error: {r.error}"
        lines.append(f"{p:<{pw}}  {text}".rstrip())
    return "\n".join(lines)


def _attention_columns(results: list[Any]) -> list[tuple[str, str]]:
    cols: dict[tuple[str, str], None] = {}
    for r in results:
        for unit, branches in (r.attention or {}).items():
            for b in branches:
                cols[(unit, b)] = None
    return list(cols)


def format_results(results: list[Any], suffix: str, record: Any, topk: int) -> str:
    """The text of the ``--out`` file: ``.csv`` (one row per image, top-k label/score pairs,
    the error, and with attention one column per unit and branch), ``.jsonl`` (one prediction
    object per line) or ``.json`` (the model, its preprocessing and all predictions).

    In the CSV, a path, class name or error that a spreadsheet would run as a formula (it
    begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return) is written with a single
    quote in front (:func:`sknet._files.csv_cell`); JSON and JSONL hold the names unchanged."""
    if suffix == ".jsonl":
        return "".join(json.dumps(r.to_dict()) + "\n" for r in results)
    if suffix == ".json":
        doc = {
            "format": "sknet-predict/1",
            "model": record.name,
            "source": record.source,
            "num_classes": record.num_classes,
            "preprocess": record.preprocess.to_dict(),
            "topk": min(topk, record.num_classes),
            "num_images": len(results),
            "num_failed": sum(1 for r in results if not r.ok),
            "predictions": [r.to_dict() for r in results],
        }
        return json.dumps(doc, indent=2) + "\n"
    if suffix != ".csv":
        raise OutputError(f"unknown output format {suffix!r}; expected one of {OUT_SUFFIXES}")
    k = min(topk, record.num_classes)
    att_cols = _attention_columns(results)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    head: list[Any] = ["path", "status"]
    for i in range(1, k + 1):
        head += [f"label_{i}", f"score_{i}"]
    head += ["error", *(csv_cell(f"{u} {b}") for u, b in att_cols)]
    w.writerow(head)
    for r in results:  # names (files, classes, errors) are escaped; the numbers are not
        row: list[Any] = [csv_cell(r.path), "ok" if r.ok else "error"]
        for i in range(k):
            if i < len(r.labels):
                row += [csv_cell(r.labels[i]), f"{r.scores[i]:.6f}"]
            else:
                row += ["", ""]
        row.append(csv_cell(r.error or ""))
        for u, b in att_cols:
            v = (r.attention or {}).get(u, {}).get(b)
            row.append("" if v is None else f"{v:.6f}")
        w.writerow(row)
    return buf.getvalue()
