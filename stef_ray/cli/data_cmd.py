"""``stef-ray data``: write a built-in dataset."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    from stef_ray.data.builtin import DATASETS

    parser = subparsers.add_parser(
        "data",
        help="write a built-in real dataset to a file",
        description="Write a built-in dataset.\n\n" + "\n".join(f"  {k}: {v}" for k, v in DATASETS.items())
        + "\n\nexample:\n  stef-ray data vic-elec --out data/vic_elec.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("name", choices=sorted(DATASETS), help="dataset name")
    parser.add_argument("--out", required=True, metavar="PATH", help="output .csv or .parquet")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from stef_ray.data.builtin import write_dataset

    path = write_dataset(args.name, args.out)
    print(f"wrote {args.name} to {path}")
    return 0
